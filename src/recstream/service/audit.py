"""The audit log: one JSON object per line, for every decryption, refusal and listing.

Each line says who (user, how authenticated, client address), what (the
recording's ID, tenant and archive name, or the request refused and why),
with which certificate ID the data key was unwrapped, how many plaintext
bytes left, and the result.  Never key material, credentials or plaintext.

* Lines are pure printable ASCII: everything else in a value (controls, DEL,
  U+2028/U+2029 line separators, any non-ASCII letter of a header field) is
  written as a JSON ``\\uXXXX`` escape, so a field can never start a line of
  its own in a reader that splits on Unicode line ends.
* Lines are written with one ``write(2)`` on an ``O_APPEND`` descriptor, so
  concurrent writers never interleave.
* :meth:`AuditLog.write` (decryptions, settings changes, tokens) is never
  dropped.  :meth:`AuditLog.write_limited` (authentication failures,
  refusals, listings, settings reads: what anyone can cause at will) goes
  through token buckets, one per key (a client address or a user) and one for
  the whole server, so a flood cannot fill the disk: what a bucket drops is
  counted and reported in an ``audit_suppressed`` line when it next admits one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

__all__ = ["AuditLog", "TokenBucket"]

# Per key: a burst of 20 records, then one every 2 s; the whole server: a burst
# of 200, then 20 a second.  At ~300 bytes a line a sustained flood writes at
# most ~6 KB/s (~0.5 GB a day), against which log rotation is an operator's
# ordinary tool; a single client gets ~13 MB a day.
KEY_BURST: Final = 20.0
KEY_RATE: Final = 0.5  # records per second
GLOBAL_BURST: Final = 200.0
GLOBAL_RATE: Final = 20.0
MAX_KEYS: Final = 10_000


@dataclass(slots=True)
class TokenBucket:
    """A token bucket (pure: time is an argument)."""

    capacity: float
    rate: float  # tokens per second
    tokens: float
    stamp: float
    dropped: int = 0

    def take(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.dropped += 1
        return False


def _printable_ascii(line: str) -> str:
    # json.dumps(ensure_ascii=True) escapes controls and everything over 0x7E
    # except DEL (0x7F), which it leaves raw.
    return line.replace("\x7f", "\\u007f")


class AuditLog:
    """Append-only JSON-lines log at ``path`` (owner-only permissions when created).

    Args:
        clock: monotonic seconds, for the rate limits (a seam for tests).
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()
        self._clock = clock
        now = clock()
        self._global = TokenBucket(GLOBAL_BURST, GLOBAL_RATE, GLOBAL_BURST, now)
        self._keys: OrderedDict[str, TokenBucket] = OrderedDict()
        self.suppressed = 0  # records dropped by the limits since start

    def write(self, event: str, **fields: Any) -> None:
        """Append one record: ``{"ts": ..., "event": event, **fields}`` (never dropped)."""
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        record.update(fields)
        line = json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str)
        data = (_printable_ascii(line) + "\n").encode("ascii")
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, data)

    def write_limited(self, event: str, key: str, **fields: Any) -> bool:
        """Append one record unless ``key`` or the server is over its audit rate.

        Returns:
            Whether the record was written.  A dropped record is counted, and the
            count is written (``audit_suppressed``) before the key's next record.
        """
        with self._lock:
            now = self._clock()
            bucket = self._keys.pop(key, None)
            if bucket is None:
                bucket = TokenBucket(KEY_BURST, KEY_RATE, KEY_BURST, now)
            self._keys[key] = bucket
            while len(self._keys) > MAX_KEYS:
                _, old = self._keys.popitem(last=False)
                self._global.dropped += old.dropped  # not lost: reported globally
            admitted = bucket.take(now) and self._global.take(now)
            if not admitted:
                self.suppressed += 1
                return False
            pending, bucket.dropped = bucket.dropped, 0
            pending_all, self._global.dropped = self._global.dropped, 0
        if pending or pending_all:
            self.write("audit_suppressed", key=key, dropped=pending, dropped_elsewhere=pending_all)
        self.write(event, **fields)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

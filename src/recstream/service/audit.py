"""The audit log: one JSON object per line, appended for every decryption and settings change.

Each line says who (user, how authenticated, client address), what (the
recording's ID, tenant and archive name), with which certificate ID the data
key was unwrapped, how many plaintext bytes left, and the result.  Never key
material, credentials or plaintext.  Lines are written with one ``write(2)``
on an ``O_APPEND`` descriptor, so concurrent writers never interleave.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["AuditLog"]


class AuditLog:
    """Append-only JSON-lines log at ``path`` (owner-only permissions when created)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()

    def write(self, event: str, **fields: Any) -> None:
        """Append one record: ``{"ts": ..., "event": event, **fields}``."""
        record = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event}
        record.update(fields)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
        data = line.encode("utf-8", "replace")
        with self._lock:
            os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

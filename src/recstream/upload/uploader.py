"""The background uploader: spool -> archive store, retried until it is there.

Events go to the ``recstream.upload`` logger (uploads at INFO, outages at WARNING,
refusals at ERROR); no line holds a credential.

One :class:`Uploader` per spool, in its own thread (the store clients block; the media
path never waits for them).  Each round it scans the spool (:mod:`.spool`), uploads every
ready recording whose turn has come (:func:`.put.put_verified` for each file, then removes
it from the spool) and sleeps until the next is due or :meth:`Uploader.notify` wakes it.

* The store down or failing (:class:`StoreUnavailableError`): the whole round stops and
  the next waits a capped exponential back-off with jitter (every recording would fail
  the same way; hammering a store that is coming back up helps nobody).
* Refused (401/403, :class:`StoreRefusedError`), a conflict or a failed verification:
  reported once per recording, kept, retried only after ``RetryPolicy.refused_seconds``.
* A new recording is refused with :class:`SpoolFullError` when the spool holds more than
  ``max_spool_bytes`` or its filesystem has less than ``min_free_bytes`` free: the
  recordings already kept are never dropped to make room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Final

from recstream.errors import (
    SpoolFullError,
    StorageError,
    StoreRefusedError,
    StoreUnavailableError,
)
from recstream.storage import Store, StoreURL, open_store
from recstream.upload.put import PutResult, put_verified
from recstream.upload.spool import (
    SpoolItem,
    empty_trash,
    locked_item,
    read_state,
    retire,
    scan,
    spool_usage,
    write_state,
)

__all__ = ["DEFAULT_MIN_FREE_BYTES", "RetryPolicy", "UploadStatistics", "Uploader"]

# Free space kept on the spool's filesystem by default: room for the recordings in
# progress to finish (a refused new call is better than a truncated one).
DEFAULT_MIN_FREE_BYTES: Final = 256 * 2**20
RESCAN_SECONDS: Final = 30.0  # a lost wake-up costs at most this long
log = logging.getLogger("recstream.upload")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Back-off between attempts: ``min(cap, initial * 2**failures)``, half of it jittered.

    Attributes:
        initial_seconds: the first wait after a failure.
        cap_seconds: the longest wait while the store is unavailable.
        refused_seconds: the wait before retrying a recording the store refused (403),
            that conflicted or failed verification: someone has to fix something.
    """

    initial_seconds: float = 1.0
    cap_seconds: float = 300.0
    refused_seconds: float = 900.0

    def delay(self, failures: int, rng: random.Random) -> float:
        base = min(self.cap_seconds, self.initial_seconds * 2.0 ** min(failures, 30))
        return base / 2 + rng.uniform(0, base / 2)  # "equal jitter": never a hot retry


@dataclass(frozen=True, slots=True)
class UploadStatistics:
    """The backlog and what became of uploads (for metrics and ``recstream status``)."""

    archive: str
    pending: int = 0  # ready recordings waiting for the store
    pending_bytes: int = 0
    recording: int = 0  # recordings still being written (not ready)
    uploaded: int = 0  # since this uploader started
    uploaded_bytes: int = 0
    already_there: int = 0  # found committed by an earlier attempt: not written again
    failures: int = 0  # attempts that failed (any reason)
    store_available: bool = True
    next_attempt_in: float = 0.0
    spool_bytes: int = 0
    last_error: str = ""
    held: dict[str, str] = field(default_factory=dict)  # item -> why (403, conflict ...)


class Uploader:
    """Upload the recordings in ``spool`` to ``archive``; see the module docstring.

    Args:
        spool: the local directory the recorder writes into.
        archive: the store URL (``s3://...``, ``webdav+https://...``).
        max_spool_bytes: refuse new recordings above this many bytes in the spool.
        min_free_bytes: refuse new recordings below this much free space.
        retry: the back-off policy.
        only: upload just these items (paths relative to the spool).

    Raises:
        ValueError: a bad store URL, or a local path.
        StorageError: the store's client cannot be set up (library missing, credentials
            half-given).
    """

    def __init__(
        self,
        spool: str | Path,
        archive: str,
        *,
        max_spool_bytes: int | None = None,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
        retry: RetryPolicy | None = None,
        only: frozenset[str] | None = None,
    ) -> None:
        self.spool = Path(spool)
        self.url = StoreURL.parse(archive)
        if self.url.is_local:
            msg = "the archive must be a store URL (s3://BUCKET/PREFIX, webdav+https://HOST/PATH)"
            raise ValueError(msg)
        self.store: Store = open_store(self.url)
        self.max_spool_bytes = max_spool_bytes
        self.min_free_bytes = min_free_bytes
        self.retry = retry or RetryPolicy()
        self._only = only
        self._rng = random.Random()  # noqa: S311 - jitter, not secrecy
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._store_failures = 0
        self._store_next = 0.0
        self._item_next: dict[str, float] = {}
        self._stats = UploadStatistics(str(self.url))
        self._spool_bytes = spool_usage(self.spool) if self.spool.is_dir() else 0

    # --- running -----------------------------------------------------------------

    def start(self) -> None:
        """Start the background thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recstream-upload", daemon=True)
            self._thread.start()

    def notify(self) -> None:
        """A recording was finished: look at the spool now (thread-safe, never blocks)."""
        self._wake.set()

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop after the file being uploaded (what is pending stays in the spool)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def drain(self, deadline: float | None = None) -> UploadStatistics:
        """Upload in this thread until nothing ready is pending, or ``deadline``
        (``time.monotonic()``) passes while the store keeps failing.  Returns the stats."""
        while True:
            wait = self.run_once()
            stats = self.statistics()
            if stats.pending == len(stats.held) or wait is None:
                return stats
            now = time.monotonic()
            if deadline is not None and now + wait > deadline:
                return stats
            if self._stopping.wait(wait):
                return stats

    def _run(self) -> None:
        while not self._stopping.is_set():
            wait = self.run_once()
            self._wake.wait(RESCAN_SECONDS if wait is None else min(wait, RESCAN_SECONDS))
            self._wake.clear()

    # --- one round ----------------------------------------------------------------

    def run_once(self) -> float | None:
        """Upload what is due; return seconds until something is due next (None: idle)."""
        empty_trash(self.spool)
        items = scan(self.spool, self._only) if self.spool.is_dir() else []
        now = time.monotonic()
        for item in items:
            if self._stopping.is_set() or now < self._store_next:
                break
            if not item.ready or now < self._item_next.get(item.rel, 0.0):
                continue
            if not self._attempt(item):
                break  # the store is unavailable: stop this round
            now = time.monotonic()
        self._spool_bytes = spool_usage(self.spool) if self.spool.is_dir() else 0
        items = scan(self.spool, self._only) if self.spool.is_dir() else []
        return self._publish(items)

    def _attempt(self, item: SpoolItem) -> bool:
        """Upload one item; False if the store is unavailable (stop the round)."""
        try:
            with locked_item(self.spool, item) as mine:
                if not mine:
                    return True  # another uploader has it, or it is gone
                results = [put_verified(self.store, self.spool / f, f) for f in item.files]
                retire(self.spool, item)
        except StoreUnavailableError as exc:
            self._store_failed(exc)
            return False
        except (StorageError, OSError) as exc:
            self._hold(item, exc)
            return True
        self._store_failures = 0
        self._item_next.pop(item.rel, None)
        with self._lock:
            held = {k: v for k, v in self._stats.held.items() if k != item.rel}
            again = sum(r is PutResult.ALREADY_THERE for r in results)
            self._stats = replace(
                self._stats,
                uploaded=self._stats.uploaded + 1,
                uploaded_bytes=self._stats.uploaded_bytes + item.size,
                already_there=self._stats.already_there + again,
                store_available=True,
                held=held,
            )
        log.info("uploaded %s (%d bytes) to %s", item.rel, item.size, self.url.join(item.rel))
        return True

    def _store_failed(self, exc: StoreUnavailableError) -> None:
        delay = self.retry.delay(self._store_failures, self._rng)
        self._store_failures += 1
        self._store_next = time.monotonic() + delay
        if self._store_failures == 1 or self._store_failures % 10 == 0:
            log.warning("%s; recordings stay in the spool, retrying in %.1f s", exc, delay)
        with self._lock:
            self._stats = replace(
                self._stats,
                failures=self._stats.failures + 1,
                store_available=False,
                last_error=str(exc),
            )

    def _hold(self, item: SpoolItem, exc: BaseException) -> None:
        self._item_next[item.rel] = time.monotonic() + self.retry.refused_seconds
        why = str(exc) if isinstance(exc, StorageError) else f"local file: {exc}"
        with self._lock:
            first = self._stats.held.get(item.rel) != why
            self._stats = replace(
                self._stats,
                failures=self._stats.failures + 1,
                store_available=self._stats.store_available
                and not isinstance(exc, StoreRefusedError),
                last_error=why,
                held={**self._stats.held, item.rel: why},
            )
        if first:
            log.error(
                "%s kept in the spool: %s (next attempt in %g s)",
                item.rel,
                why,
                self.retry.refused_seconds,
            )

    def _publish(self, items: list[SpoolItem]) -> float | None:
        now = time.monotonic()
        ready = [i for i in items if i.ready]
        dues = [max(self._store_next, self._item_next.get(i.rel, 0.0)) for i in ready]
        wait = max(0.0, min(dues) - now) if dues else None
        with self._lock:
            present = {i.rel for i in items}
            self._stats = replace(
                self._stats,
                pending=len(ready),
                pending_bytes=sum(i.size for i in ready),
                recording=len(items) - len(ready),
                next_attempt_in=wait or 0.0,
                spool_bytes=self._spool_bytes,
                held={k: v for k, v in self._stats.held.items() if k in present},
            )
            stats = self._stats
        if self.spool.is_dir():
            # the spool gone read-only stops the report, not the uploads
            with contextlib.suppress(OSError):
                write_state(self.spool, {**asdict(stats), "written": time.time()})
        return wait

    # --- queries -------------------------------------------------------------------

    def statistics(self) -> UploadStatistics:
        with self._lock:
            return self._stats

    def check_admission(self) -> None:
        """Refuse a new recording when the spool is full (call before starting one).

        Raises:
            SpoolFullError: over ``max_spool_bytes``, or under ``min_free_bytes`` free.
        """
        used = self._spool_bytes
        if self.max_spool_bytes is not None and used >= self.max_spool_bytes:
            msg = (
                f"spool {self.spool} is full ({used} bytes waiting, max_spool_bytes "
                f"{self.max_spool_bytes}): new recordings are refused until the archive "
                f"{self.url} takes the backlog"
            )
            raise SpoolFullError(msg, used, self.max_spool_bytes)
        try:
            st = os.statvfs(self.spool)
        except OSError:
            return  # the hook's own open will say what is wrong with the directory
        free = st.f_bavail * st.f_frsize
        if free < self.min_free_bytes:
            msg = (
                f"spool {self.spool} has {free} bytes free, under min_free_bytes "
                f"{self.min_free_bytes}: new recordings are refused until the archive "
                f"{self.url} takes the backlog"
            )
            raise SpoolFullError(msg, free, self.min_free_bytes)

    def recording_added(self, size: int) -> None:
        """Count a finished recording's bytes now, before the next scan does."""
        self._spool_bytes += size
        self.notify()


def spool_status(spool: Path) -> dict[str, object]:
    """What ``recstream status --spool`` shows: a fresh scan plus the uploader's last report."""
    items = scan(spool) if spool.is_dir() else []
    ready = [i for i in items if i.ready]
    state = read_state(spool)
    return {
        "spool": str(spool),
        "pending": len(ready),
        "pending_bytes": sum(i.size for i in ready),
        "recording": [{"item": i.rel, "why": i.why_not} for i in items if not i.ready],
        "spool_bytes": spool_usage(spool) if spool.is_dir() else 0,
        "uploader": state,
    }

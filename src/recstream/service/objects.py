"""The recordings archive on an object store or WebDAV server: listing and ranged reads.

``[recordings] root`` may be a store URL (``s3://bucket/prefix``,
``webdav+https://host/path``).  :class:`StoreArchive` is the local
:class:`~recstream.service.archive.Archive`'s counterpart over an fsspec
filesystem, and :class:`StoreIndex` the header index over it:

* **Playback** reads with ranged GETs only: one ``HEAD`` for the size and
  version, then :class:`SegmentReader`'s reads: the first :data:`HEAD_BYTES`
  (header and body prefix in one GET), the final segment, then the segments a
  Range covers, :data:`STORE_READ_CHUNK` per GET.  The first two are kept per
  object version (:class:`RangedSource`), so a player's next Range costs a
  ``HEAD`` and its data.  Nothing is buffered beyond one read, so memory stays
  flat whatever the object's size.
* **Listing** is what stores allow: the whole prefix is listed on every rescan
  (S3: one ``ListObjectsV2`` per 1,000 keys; WebDAV: one ``PROPFIND`` per
  directory), and only objects whose stamp (size, ETag, modification time)
  changed have their header read, with one ranged GET each.
* **Errors** from the store become recstream's :class:`StoreUnavailableError` or
  :class:`StoreRefusedError` (502), or the service's :class:`StoreTimeoutError`
  (504), classified by :func:`recstream.storage.storage_error`; a missing
  object is a :class:`NotFoundError` (404).  Names are checked exactly as on
  disk, so a temporary (``.partial``) object never shows up as a recording.

Credentials never pass through here: the filesystem takes them from the
environment or the store's own configuration files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, Final

from recstream.errors import (
    RecstreamError,
    StorageError,
    StoreRefusedError,
    StoreUnavailableError,
)
from recstream.format import SEGMENT_SIZE, SEGMENT_WIRE_SIZE, BodyLayout, Header
from recstream.reader import read_header_at
from recstream.service.archive import SUFFIX, Opened, check_name, missing_message
from recstream.service.errors import NotFoundError, ServiceConfigError, StoreTimeoutError
from recstream.service.index import Entry, HeaderIndex, make_entry
from recstream.service.metrics import Counter
from recstream.storage import storage_error, url_to_fs

__all__ = [
    "HEAD_BYTES",
    "STORE_READ_CHUNK",
    "TAIL_BYTES",
    "RangedSource",
    "StoreArchive",
    "StoreIndex",
    "StoreStats",
    "open_store",
    "store_errors",
]

log = logging.getLogger("recstream.service")

# The first GET of an object asks for this much: a header with one RSA-2048 recipient
# is ~450 bytes and with four RSA-4096 ones ~2.4 KiB, so one request almost always
# holds it; a longer header (up to format.MAX_HEADER_BYTES) costs a second one.
HEAD_BYTES: Final = 4096
_HEADER_CACHE_ENTRIES: Final = 20_000
TAIL_BYTES: Final = SEGMENT_WIRE_SIZE  # the final segment, authenticated on every open
# Heads and tails of this many recently played object versions (~20 KiB each).
_SPAN_CACHE_ENTRIES: Final = 256
# Plaintext per store request on playback: 64 segments.  Each GET costs a request's
# signing, parsing and round trip; 1 MiB keeps that a small share and memory flat.
STORE_READ_CHUNK: Final = 64 * SEGMENT_SIZE

_Stamp = tuple[int | str, ...]


class StoreStats:
    """Requests made to the store and bytes it served (thread-safe counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes_read = 0
        self.failures = 0

    def count(self, n: int) -> None:
        with self._lock:
            self.requests += 1
            self.bytes_read += n

    def failed(self) -> None:
        with self._lock:
            self.failures += 1

    def render(self) -> list[str]:
        """These counters in the Prometheus text format (for ``/metrics``)."""
        out: list[str] = []
        for name, text, value in (
            (
                "recstream_store_requests_total",
                "Requests the RCS made to its store.",
                self.requests,
            ),
            (
                "recstream_store_read_bytes_total",
                "Bytes the store served to the RCS.",
                self.bytes_read,
            ),
            ("recstream_store_failures_total", "Store requests that failed.", self.failures),
        ):
            counter = Counter(name, text)
            counter.inc(value)
            out.extend(counter.render())
        return out


@contextlib.contextmanager
def store_errors(
    op: str, name: str, url: str, stats: StoreStats | None = None, *, missing: str = "404"
) -> Iterator[None]:
    """Turn what a filesystem raises into the service's errors (the one place that does).

    Args:
        missing: what a missing object means: ``"404"`` (a recording), or
            ``"store"`` (the archive's root: the store is misconfigured).

    Raises:
        NotFoundError: the object does not exist (or is a "directory").
        StoreTimeoutError: the store did not answer in time.
        StoreRefusedError: the store refused the RCS's credentials (401/403).
        StoreUnavailableError: anything else the store or the network did.
    """
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        if missing == "404":
            raise NotFoundError(missing_message(name)) from None
        if stats is not None:
            stats.failed()
        raise _store_failure(op, name, url, exc) from None
    except RecstreamError:
        raise
    except Exception as exc:  # the edge: every client library has its own exceptions
        if stats is not None:
            stats.failed()
        raise _store_failure(op, name, url, exc) from None


def _store_failure(op: str, name: str, url: str, exc: Exception) -> StorageError:
    """The error a client is told, built from :func:`recstream.storage.storage_error`'s
    classification; its detail (the client library's words) goes to the log only."""
    found = storage_error(exc, url, f"{op} {name}")
    log.warning("recordings store: %s", found)
    what = f"the recordings store failed to {op} {name!r}"
    if isinstance(exc, TimeoutError) or "timeout" in type(exc).__name__.lower():
        return StoreTimeoutError(f"{what}: it did not answer in time", url)
    if isinstance(exc, FileNotFoundError):  # before "refused": storage calls it that on S3
        return StoreUnavailableError(f"{what}: the archive's bucket or folder does not exist", url)
    if isinstance(found, StoreRefusedError):
        return StoreRefusedError(
            f"{what}: access denied (check the server's store credentials)", url
        )
    return StoreUnavailableError(f"{what}: it cannot be reached or failed", url)


def open_store(url: str) -> StoreArchive:
    """The :class:`StoreArchive` for a checked ``[recordings] root`` URL (nothing is contacted).

    The filesystem is :mod:`recstream.storage`'s (credentials from the environment
    only; bounded retries and timeouts), or fsspec's for ``memory://``.

    Raises:
        ServiceConfigError: the store's client library is missing, or credentials are
            half-given.
    """
    try:
        fs, root = url_to_fs(url)
    except (StorageError, ValueError) as exc:
        msg = f"[recordings] root: the store cannot be used: {exc}"
        raise ServiceConfigError(msg) from None
    return StoreArchive(url, fs, str(root))


class RangedSource:
    """A :class:`~recstream.reader.Source` over one object, read with ranged GETs.

    Each :meth:`read_at` is one request for exactly the bytes asked, except at
    both ends: the first read at offset 0 asks for at least :data:`HEAD_BYTES`
    (the header and the body prefix in one request), and that block and the
    final segment are kept in ``spans``, which the archive shares between
    playbacks of the same object version (a player sends many Range requests;
    each needs both, and :class:`SegmentReader` authenticates them every time).
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        size: int,
        name: str,
        stats: StoreStats,
        *,
        url: str = "",
        spans: list[tuple[int, bytes]] | None = None,
    ) -> None:
        self.url = url  # the archive's, for messages
        self.fs = fs
        self.path = path
        self.size = size
        self.name = name
        self.stats = stats
        self.spans = [] if spans is None else spans

    def read_at(self, offset: int, n: int) -> bytes:
        end = min(self.size, offset + n)
        if offset >= end:
            return b""
        for start, data in self.spans:
            if start <= offset and end <= start + len(data):
                return data[offset - start : end - start]
        if offset == 0:
            data = self._get(0, min(self.size, max(end, HEAD_BYTES)))
            if len(data) <= HEAD_BYTES:
                self.spans.append((0, data))
            return data[:end]
        data = self._get(offset, end)
        if end == self.size and len(data) <= TAIL_BYTES:
            self.spans.append((offset, data))
        return data

    def _get(self, start: int, end: int) -> bytes:
        with store_errors("read", self.name, self.url, self.stats):
            data = read_range(self.fs, self.path, start, end)
        self.stats.count(len(data))
        return data  # short only if the object changed meanwhile: the reader says so


def read_range(fs: Any, path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of an object, with one ranged GET.

    s3fs's ``cat_file`` sends ``Range: bytes=start-(end-1)``.  webdav4's opens the
    object from 0 and then seeks with an open-ended ``bytes=start-``, so the server
    streams to the end of the object while the client reads what it needs: for
    WebDAV the exact range is asked for here instead.

    Raises:
        FileNotFoundError: no such object.
        OSError, or the client library's errors: see :func:`store_errors`.
    """
    if not type(fs).__module__.startswith("webdav4"):
        return bytes(fs.cat_file(path, start=start, end=end))
    client = fs.client
    headers = {"Range": f"bytes={start}-{end - 1}"}
    with client.http.stream("GET", client.join_url(path), headers=headers) as resp:
        if resp.status_code == 404:
            raise FileNotFoundError(errno.ENOENT, "no such object", path)
        if resp.status_code == 416:
            return b""  # the object is shorter now: the reader reports it
        resp.raise_for_status()
        if resp.status_code != 206:
            # A 200 would stream the whole object: refuse rather than read it all.
            msg = f"the WebDAV server ignored a Range request (HTTP {resp.status_code})"
            raise OSError(errno.EPROTO, msg)
        out = bytearray()
        for chunk in resp.iter_bytes():
            out += chunk
            if len(out) > end - start:
                raise OSError(errno.EPROTO, "the WebDAV server sent more than the range asked")
        return bytes(out)


def stamp_of(info: dict[str, Any]) -> _Stamp:
    """What tells one version of an object from another, from what the store reports.

    S3 gives ``ETag`` and ``LastModified``, WebDAV ``etag`` and ``modified``, local
    and memory filesystems ``mtime``/``created``: whichever are there, with the size.
    """
    etag = info.get("ETag") or info.get("etag") or ""
    when = next(
        (
            info[k]
            for k in ("LastModified", "last_modified", "modified", "mtime", "created")
            if info.get(k) is not None
        ),
        "",
    )
    # One version must stamp alike from a listing and from a HEAD: fsspec's memory
    # store, for one, gives a float from find() and a datetime from info().
    if isinstance(when, dt.datetime):
        when = when.timestamp()
    if isinstance(when, (int, float)):
        when = repr(float(when))
    return (int(info.get("size") or 0), str(etag), str(when))


class StoreArchive:
    """Read-only access to the recordings under a store URL.

    Args:
        url: the configured URL (shown in messages; holds no credentials).
        fs: the fsspec filesystem for it.
        root: the path of the archive's prefix inside ``fs``.
    """

    def __init__(self, url: str, fs: Any, root: str) -> None:
        self.url = url
        self.fs = fs
        self.root = root.rstrip("/")
        self.stats = StoreStats()
        self.read_chunk = STORE_READ_CHUNK
        self._headers: OrderedDict[tuple[str, _Stamp], Header] = OrderedDict()
        self._spans: OrderedDict[tuple[str, _Stamp], list[tuple[int, bytes]]] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, name: str) -> str:
        return f"{self.root}/{name}" if self.root else name

    def open_recording(self, name: str) -> Opened:
        """Look ``name`` up (one HEAD request) and return it for ranged reads.

        Raises:
            NotFoundError: invalid name, missing, or not an object.
            StoreUnavailableError, StoreTimeoutError: the store failed.
        """
        check_name(name)
        with store_errors("look up", name, self.url, self.stats):
            info = self.fs.info(self.path(name))
        self.stats.count(0)
        if info.get("type") != "file":
            raise NotFoundError(missing_message(name))
        stamp = stamp_of(info)
        with self._lock:
            spans = self._spans.pop((name, stamp), [])
            self._spans[(name, stamp)] = spans  # most recently used last
            while len(self._spans) > _SPAN_CACHE_ENTRIES:
                self._spans.popitem(last=False)
        size = int(info["size"])
        return Opened(
            name,
            RangedSource(
                self.fs, self.path(name), size, name, self.stats, url=self.url, spans=spans
            ),
            stamp,
        )

    def recording_header(self, rec: Opened) -> Header:
        """The header of an opened recording (cached by name and stamp).

        Raises:
            EnvelopeFormatError, TruncatedStreamError: not a readable envelope.
            StoreUnavailableError, StoreTimeoutError: the store failed.
        """
        key = (rec.name, rec.stamp)
        with self._lock:
            cached = self._headers.get(key)
        if cached is not None:
            return cached
        header = read_header_at(rec.source)
        with self._lock:
            self._headers[key] = header
            while len(self._headers) > _HEADER_CACHE_ENTRIES:
                self._headers.popitem(last=False)
        return header

    def check(self) -> None:
        """The health check: the store answers, and the archive's bucket (S3) or top
        folder (WebDAV) exists.  An empty prefix is an empty archive, not a fault: on
        S3 a prefix exists only once an object is under it.

        Raises:
            StorageError: the store does not answer, refuses, or has no such bucket.
        """
        with store_errors("look up", "the archive", self.url, self.stats, missing="store"):
            try:
                self.fs.info(self.root or "/")
            except FileNotFoundError:
                self.fs.info(self.root.split("/", 1)[0] or "/")  # the bucket, the top folder

    def scan(self) -> dict[str, _Stamp]:
        """Every recording under the root with its stamp: one listing of the prefix.

        Raises:
            StoreUnavailableError, StoreTimeoutError: the store failed.
        """
        self.fs.invalidate_cache()  # a rescan (and what follows) must see the store, not a cache
        with store_errors("list", "the archive", self.url, self.stats, missing="store"):
            found = self.fs.find(self.root, detail=True)
        self.stats.count(0)
        out: dict[str, _Stamp] = {}
        # Paths come back without the protocol, with or without a leading "/"
        # (memory:// and local ones have it, s3fs's not): compare without it.
        prefix = f"{self.root.lstrip('/')}/" if self.root.lstrip("/") else ""
        for path, info in found.items():
            rel = str(path).lstrip("/")
            if not rel.startswith(prefix) or info.get("type") != "file":
                continue
            rel = rel[len(prefix) :]
            if not rel.endswith(SUFFIX):
                continue
            try:
                check_name(rel)
            except NotFoundError:
                continue  # temporaries (.NAME.partial), odd names: not recordings
            out[rel] = stamp_of(info)
        return out

    def read_entry(self, name: str, stamp: _Stamp) -> Entry | None:
        """The index entry for ``name``, from one ranged GET; None if not an envelope.

        Raises:
            StoreUnavailableError, StoreTimeoutError: the store failed (the refresh
                stops rather than dropping what it could not read).
        """
        size = int(stamp[0])
        source = RangedSource(self.fs, self.path(name), size, name, self.stats, url=self.url)
        try:
            header = read_header_at(source)
        except NotFoundError:
            return None  # removed since the listing
        except StorageError:
            raise
        except (RecstreamError, ValueError):
            return None
        try:  # one odd header must never stop the refresh of every other object
            return make_entry(name, header, BodyLayout(header.body_length(size)), stamp)
        except Exception:
            log.warning("recording %r skipped: its header cannot be indexed", name, exc_info=True)
            return None


class StoreIndex(HeaderIndex):
    """The header index over a :class:`StoreArchive` (see :class:`HeaderIndex`).

    A refresh lists the whole prefix (stores have no directory mtimes to skip
    unchanged parts by) and reads only new or changed objects' headers.  A
    store failure stops the refresh with nothing applied and is kept in
    :attr:`failure` until a refresh succeeds.
    """

    def __init__(self, store: StoreArchive) -> None:
        self.store = store
        self.failure: StorageError | None = None
        self._stamps: dict[str, _Stamp] = {}
        self._unreadable: dict[str, _Stamp] = {}  # not envelopes, as of these stamps
        self._init_state()

    def refresh(self, *, full: bool = False, now: float | None = None) -> int:
        try:
            n = super().refresh(full=full, now=now)
        except StorageError as exc:
            self.failure = exc
            raise
        self.failure = None
        return n

    def _scan(self, full: bool) -> dict[str, _Stamp]:
        # Only the refreshing thread touches _stamps and _unreadable.
        found = {} if self._closed.is_set() else self.store.scan()
        self._unreadable = {n: st for n, st in self._unreadable.items() if found.get(n) == st}
        if not full:  # an object that is not an envelope is read again only if it changes
            found = {n: st for n, st in found.items() if n not in self._unreadable}
        self._stamps = found
        return found

    def _read(self, name: str) -> Entry | None:
        stamp = self._stamps[name]
        entry = self.store.read_entry(name, stamp)
        if entry is None:
            self._unreadable[name] = stamp
        return entry

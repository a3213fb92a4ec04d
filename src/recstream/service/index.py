"""The header index behind ``GET /rcs/recordings``: listings without file I/O.

Listing used to open every file on every call (20,000 files: 7-12 s, and other
users' playback slowed with it).  Now each recording's header is read once and
kept as an :class:`Entry` (recording ID, tenant, kind, type, created, size,
certificate IDs), grouped by tenant in sorted order.  A listing reads only the
groups of the caller's tenants (no other tenant's entry is even looked at) and
returns one page: ``limit`` entries after an opaque cursor, newest first.

**Updates are incremental.**  :meth:`HeaderIndex.refresh` (run by the server
every ``[recordings] rescan_interval`` seconds, in a thread) stats every
directory and re-lists only those whose modification time changed: a file
created, renamed (how recorders and re-wrap finish a file) or removed changes
its directory.  Only new or changed files are opened, through
:meth:`Archive.open` (no symbolic link followed).  A full pass over every file
runs every :data:`FULL_RESCAN_SECONDS`, for a file rewritten in place.

Headers are unauthenticated until decrypted, so the index is a catalogue, not
an authority: playback checks the authenticated header again.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import collections
import dataclasses
import hashlib
import heapq
import itertools
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509

from recstream.errors import RecstreamError
from recstream.format import BodyLayout, Header
from recstream.pki.certs import name_str
from recstream.reader import FileSource, read_header_at
from recstream.service.archive import SUFFIX, Archive, check_name
from recstream.service.errors import NotFoundError, RequestError
from recstream.service.mediatime import duration_ms
from recstream.signing import file_identity

__all__ = ["DEFAULT_PAGE", "MAX_PAGE", "Entry", "HeaderIndex", "Page", "make_entry", "page_body"]

log = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000
FULL_RESCAN_SECONDS: Final = 600.0
MAX_CURSOR_CHARS: Final = 2048
REBUILD_THRESHOLD: Final = 256  # more changed files than this: re-sort instead of inserting
CHANGE_LOG_VERSIONS: Final = 64  # versions whose changes interactions can apply one by one
MAX_LOGGED_CHANGES: Final = 2048  # a bigger change: regrouping beats itemising

_Key = tuple[int, str]  # (-created_ms, name): newest first, then by name
# What tells a changed file from an unchanged one: on disk st_dev, st_ino, st_size,
# st_mtime_ns, st_ctime_ns (recstream.signing.file_identity); on a store, size, ETag
# and modification time (recstream.service.objects).
_Stamp = tuple[int | str, ...]


@dataclass(frozen=True, slots=True)
class Entry:
    """One recording as its header describes it."""

    name: str
    recording_id: str
    tenant: str
    media_kind: str
    media_type: str
    created_ms: int
    size: int | None  # plaintext bytes, None if the body is not complete
    cert_ids: tuple[str, ...]
    stamp: _Stamp
    json: bytes = field(default=b"", compare=False, repr=False)  # to_json(), serialised once
    # The signer the header names (issue 16): a claim until a verification says otherwise.
    signed: bool = False
    signer: str | None = None
    signer_cert_id: str | None = None
    claim: bytes = field(default=b"", compare=False, repr=False)  # "unchecked" JSON, once

    @property
    def key(self) -> _Key:
        return (-self.created_ms, self.name)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.name,
            "recording_id": self.recording_id,
            "tenant": self.tenant,
            "media_kind": self.media_kind,
            "media_type": self.media_type,
            "created_ms": self.created_ms,
            "size": self.size,
            "duration_ms": self.duration_ms,
            "cert_ids": list(self.cert_ids),
        }

    @property
    def duration_ms(self) -> int | None:
        """From the media type and size only (:mod:`recstream.service.mediatime`)."""
        return duration_ms(self.media_type, self.size)


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    next: str | None  # the cursor for the following page, None at the end


def encode_cursor(key: _Key) -> str:
    return base64.urlsafe_b64encode(f"{-key[0]}/{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> _Key:
    """Raises RequestError: not a cursor this server made."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        created, _, name = raw.partition("/")
        return (-int(created), name)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        msg = "'after' must be the 'next' value of a previous page"
        raise RequestError(msg) from None


@dataclass(slots=True)
class _Dir:
    mtime_ns: int
    subdirs: list[str] = field(default_factory=list)  # relative names
    files: dict[str, _Stamp] = field(default_factory=dict)  # relative name -> stamp


class HeaderIndex:
    """Recordings under an :class:`Archive`, by tenant.  Thread-safe."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._init_state()

    def _init_state(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Entry] = {}
        self._by_tenant: dict[str, list[_Key]] = {}
        self._dirs: dict[str, _Dir] = {}
        self._last_full = 0.0
        self.version = 0  # bumped whenever an entry is added, changed or dropped
        # (tenant, recording ID) -> names: the interactions (service/interactions.py)
        self._by_rid: dict[tuple[str, str], set[str]] = {}
        # (version, the (tenant, recording ID)s it touched, or None: too many to say)
        self._log: collections.deque[tuple[int, frozenset[tuple[str, str]] | None]]
        self._log = collections.deque(maxlen=CHANGE_LOG_VERSIONS)
        self.ready = threading.Event()
        self._closed = threading.Event()
        self.closed = self._closed  # set when the server stops: background work ends early

    def close(self) -> None:
        """Make a refresh in progress (in another thread) stop early: the server is stopping."""
        self._closed.set()

    # --- reading ---------------------------------------------------------------------

    def page(self, tenants: frozenset[str], limit: int, after: str | None) -> Page:
        """Up to ``limit`` entries of ``tenants``, newest first, after the cursor ``after``."""
        start = decode_cursor(after) if after else None
        with self._lock:
            slices: list[Iterator[_Key]] = []
            for tenant in tenants:
                group = self._by_tenant.get(tenant)
                if group:
                    i = bisect.bisect_right(group, start) if start is not None else 0
                    slices.append(itertools.islice(group, i, i + limit + 1))
            keys = list(itertools.islice(heapq.merge(*slices), limit + 1))
            entries = [self._entries[k[1]] for k in keys[:limit]]
        more = len(keys) > limit
        return Page(entries, encode_cursor(keys[limit - 1]) if more and limit else None)

    def tenant_entries(self, tenant: str) -> tuple[int, list[Entry]]:
        """(:attr:`version`, ``tenant``'s entries newest first): one consistent snapshot."""
        with self._lock:
            keys = self._by_tenant.get(tenant, [])
            return self.version, [self._entries[k[1]] for k in keys]

    def interaction_delta(
        self, tenant: str, since: int
    ) -> tuple[int, dict[str, list[Entry]] | None]:
        """What changed in ``tenant``'s interactions after version ``since``.

        Returns:
            (:attr:`version`, recording ID -> its entries now, empty if it is gone),
            or (version, None) when the change log does not reach back that far or a
            change was too large to itemise: regroup from :meth:`tenant_entries`.
        """
        with self._lock:
            touched: set[str] = set()
            covered = since == self.version
            for version, changes in self._log:
                if version <= since:
                    covered = covered or version == since
                    continue
                covered = covered or version == since + 1
                if changes is None:
                    return self.version, None
                touched.update(rid for t, rid in changes if t == tenant)
            if not covered:
                return self.version, None
            delta = {
                rid: [self._entries[n] for n in self._by_rid.get((tenant, rid), ())]
                for rid in touched
            }
            return self.version, delta

    def get(self, name: str) -> Entry | None:
        with self._lock:
            return self._entries.get(name)

    def __len__(self) -> int:
        return len(self._entries)

    def signed(self) -> list[tuple[str, str, _Stamp]]:
        """(name, tenant, stamp) of every signed recording, newest first."""
        with self._lock:
            entries = [e for e in self._entries.values() if e.signed]
        entries.sort(key=lambda e: e.key)
        return [(e.name, e.tenant, e.stamp) for e in entries]

    def names(self) -> set[str]:
        with self._lock:
            return set(self._entries)

    # --- updating --------------------------------------------------------------------

    def refresh(self, *, full: bool = False, now: float | None = None) -> int:
        """Bring the index up to date with the directory tree; returns files (re)read.

        Only directories whose mtime changed are listed again (all of them with
        ``full``, or when :data:`FULL_RESCAN_SECONDS` have passed).
        """
        now = time.monotonic() if now is None else now
        if now - self._last_full >= FULL_RESCAN_SECONDS:
            full, self._last_full = True, now
        files = self._scan(full)
        with self._lock:
            known = {n: e.stamp for n, e in self._entries.items()}
        changed = [n for n, st in files.items() if known.get(n) != st]
        gone = [n for n in known if n not in files]
        fresh: list[Entry] = []
        for name in changed:
            if self._closed.is_set():
                return 0  # stopping: apply nothing, the index is being thrown away
            entry = self._read(name)
            if entry is not None:
                fresh.append(entry)
        read = {e.name for e in fresh}
        unreadable = [n for n in changed if n not in read]
        with self._lock:
            touched = {(e.tenant, e.recording_id) for e in fresh}
            for name in itertools.chain(gone, unreadable, read):
                old = self._entries.get(name)
                if old is not None:
                    touched.add((old.tenant, old.recording_id))
            for name in itertools.chain(gone, unreadable):
                self._drop(name)
            if len(fresh) > REBUILD_THRESHOLD:  # one sort beats many insertions
                for entry in fresh:
                    self._entries[entry.name] = entry
                self._rebuild()
            else:
                for entry in fresh:
                    self._drop(entry.name)
                    self._add(entry)
            if touched:
                self.version += 1
                big = len(touched) > MAX_LOGGED_CHANGES
                self._log.append((self.version, None if big else frozenset(touched)))
        self.ready.set()
        return len(changed)

    def _scan(self, full: bool) -> dict[str, _Stamp]:
        """Every recording's name and stamp (a subclass lists a store instead)."""
        seen_dirs: dict[str, _Dir] = {}
        files: dict[str, _Stamp] = {}
        self._walk("", full, seen_dirs, files)
        self._dirs = seen_dirs  # only the refreshing thread reads or writes it
        return files

    def _walk(self, rel: str, full: bool, out: dict[str, _Dir], files: dict[str, _Stamp]) -> None:
        if self._closed.is_set():
            return
        path = f"{self.archive.root}/{rel}" if rel else str(self.archive.root)
        try:
            st = os.lstat(path)
        except OSError:
            return
        if not stat.S_ISDIR(st.st_mode):
            return
        cached = self._dirs.get(rel)
        if full or cached is None or cached.mtime_ns != st.st_mtime_ns:
            cached = self._list(rel, path, st.st_mtime_ns)
        out[rel] = cached
        files.update(cached.files)
        for sub in cached.subdirs:
            self._walk(sub, full, out, files)

    def _list(self, rel: str, path: str, mtime_ns: int) -> _Dir:
        d = _Dir(mtime_ns)
        try:
            with os.scandir(path) as it:
                for item in it:
                    if item.name.startswith("."):
                        continue
                    name = f"{rel}/{item.name}" if rel else item.name
                    try:
                        st = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        d.subdirs.append(name)
                    elif stat.S_ISREG(st.st_mode) and item.name.endswith(SUFFIX):
                        d.files[name] = file_identity(st)
        except OSError:
            pass
        d.subdirs.sort()
        return d

    def _read(self, name: str) -> Entry | None:
        try:
            check_name(name)
            fd = self.archive.open(name)
        except (NotFoundError, OSError):
            return None
        try:
            st = os.fstat(fd)
            header = read_header_at(FileSource(fd))
            layout = BodyLayout(header.body_length(st.st_size))
        except (RecstreamError, OSError, ValueError):
            return None
        finally:
            os.close(fd)
        try:  # one odd header must never stop the refresh of every other file
            return make_entry(name, header, layout, file_identity(st))
        except Exception:
            log.warning("recording %r skipped: its header cannot be indexed", name, exc_info=True)
            return None

    def _rebuild(self) -> None:
        groups: dict[str, list[_Key]] = {}
        by_rid: dict[tuple[str, str], set[str]] = {}
        for entry in self._entries.values():
            groups.setdefault(entry.tenant, []).append(entry.key)
            by_rid.setdefault((entry.tenant, entry.recording_id), set()).add(entry.name)
        for keys in groups.values():
            keys.sort()
        self._by_tenant = groups
        self._by_rid = by_rid

    def _add(self, entry: Entry) -> None:
        self._entries[entry.name] = entry
        bisect.insort(self._by_tenant.setdefault(entry.tenant, []), entry.key)
        self._by_rid.setdefault((entry.tenant, entry.recording_id), set()).add(entry.name)

    def _drop(self, name: str) -> None:
        old = self._entries.pop(name, None)
        if old is None:
            return
        rid = (old.tenant, old.recording_id)
        names = self._by_rid.get(rid)
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_rid[rid]
        keys = self._by_tenant[old.tenant]
        i = bisect.bisect_left(keys, old.key)
        if i < len(keys) and keys[i] == old.key:
            del keys[i]
        if not keys:
            del self._by_tenant[old.tenant]


def make_entry(name: str, header: Header, layout: BodyLayout, stamp: _Stamp) -> Entry:
    """The index entry for recording ``name`` (its header and body layout)."""
    meta = header.metadata
    signer = _signer_claim(header.signer.certificate) if header.signer else (None, None)
    entry = Entry(
        name,
        meta.recording_id,
        meta.tenant,
        meta.media_kind.name.lower(),
        meta.media_type,
        meta.created_ms,
        layout.plaintext_length if layout.complete else None,
        header.cert_ids,
        stamp,
        signed=header.signer is not None,
        signer=signer[0],
        signer_cert_id=signer[1],
    )
    # Serialised here, once, not on every listing: a page is then a join.
    text = json.dumps(entry.to_json(), ensure_ascii=False, separators=(",", ":"))
    claim = signature_json("unchecked", signer[0], signer[1]) if header.signer else b""
    return dataclasses.replace(entry, json=text.encode(), claim=claim)


def page_body(page: Page, signature: Callable[[Entry], bytes] | None = None) -> bytes:
    """The JSON answer for ``page``: ``{"recordings": [...], "next": CURSOR or null}``.

    ``signature`` gives each item's ``"signature"`` value as JSON (it changes as
    files are verified, so it is not part of the entry's serialised JSON).
    """
    items = b",".join(_item(e, signature) for e in page.entries)
    return b'{"recordings":[%s],"next":%s}\n' % (items, json.dumps(page.next).encode())


def _item(entry: Entry, signature: Callable[[Entry], bytes] | None) -> bytes:
    body = entry.json or json.dumps(entry.to_json()).encode()
    if signature is None:
        return body
    return body[:-1] + b',"signature":' + signature(entry) + b"}"


def signature_json(status: str, signer: str | None, cert_id: str | None) -> bytes:
    """A listing item's ``"signature"`` value (service/signatures.py), serialised."""
    doc = {"status": status, "signer": signer, "cert_id": cert_id}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def _signer_claim(der: bytes) -> tuple[str | None, str | None]:
    """The subject and certificate ID of a header's signer certificate (unverified)."""
    cert_id = hashlib.sha256(der).hexdigest()
    try:
        subject = name_str(x509.load_der_x509_certificate(der).subject)
    except Exception:
        return None, cert_id
    return subject, cert_id

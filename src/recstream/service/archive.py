"""The recordings directory served for playback, and nothing outside it.

A recording's name is its path relative to ``[recordings] root`` with ``/``
between segments (``acme/2024-05/call-1.rsv``).  Names are checked segment by
segment (no empty, ``.`` or ``..`` segment, no backslash or control character,
ending in ``.rsv``) and the file is opened one segment at a time with
``openat``-style ``dir_fd`` and ``O_NOFOLLOW``: no symbolic link is ever
followed, so neither ``..`` nor a link (planted or raced in) reaches outside
the root.  Listing reads only headers (no key needed), cached by file identity.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from recstream.errors import RecstreamError
from recstream.format import BodyLayout, Header
from recstream.reader import FileSource, read_header_at
from recstream.service.errors import NotFoundError

__all__ = ["Archive", "RecordingInfo"]

SUFFIX: Final = ".rsv"
MAX_NAME_CHARS: Final = 1024
MAX_DEPTH: Final = 16
MAX_LISTED: Final = 5000
_SEGMENT = re.compile(r"[A-Za-z0-9_@+=,~-][A-Za-z0-9_@+=,~.-]{0,254}")
_HEADER_CACHE_ENTRIES: Final = 20_000


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    """A recording as its header describes it (unauthenticated until decrypted)."""

    name: str
    header: Header
    plaintext_length: int | None

    def to_json(self) -> dict[str, object]:
        meta = self.header.metadata
        return {
            "id": self.name,
            "recording_id": meta.recording_id,
            "tenant": meta.tenant,
            "media_kind": meta.media_kind.name.lower(),
            "media_type": meta.media_type,
            "created_ms": meta.created_ms,
            "size": self.plaintext_length,
        }


def check_name(name: str) -> list[str]:
    """The segments of a valid recording name.

    Raises:
        NotFoundError: the name cannot be a recording here (the same answer as a
            missing file, so probing reveals nothing).
    """
    segments = name.split("/")
    if (
        len(name) > MAX_NAME_CHARS
        or len(segments) > MAX_DEPTH
        or not name.endswith(SUFFIX)
        or not all(_SEGMENT.fullmatch(s) for s in segments)
    ):
        raise NotFoundError(_missing(name))
    return segments


def _missing(name: str) -> str:
    shown = name if len(name) <= 200 and name.isprintable() else "(name not shown)"
    return f"no recording {shown!r}"


class Archive:
    """Read-only access to the recordings under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._headers: OrderedDict[tuple[int, int, int, int], Header] = OrderedDict()

    def open(self, name: str) -> int:
        """Open recording ``name`` read-only; the caller closes the descriptor.

        Raises:
            NotFoundError: invalid name, missing, not a regular file, or a symlink
                on the way.
        """
        segments = check_name(name)
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(self.root, flags | os.O_DIRECTORY)
        try:
            for seg in segments[:-1]:
                nxt = os.open(seg, flags | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nxt
            leaf = os.open(segments[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EACCES):
                raise NotFoundError(_missing(name)) from None
            raise
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            os.close(leaf)
            raise NotFoundError(_missing(name))
        return leaf

    def header(self, fd: int) -> Header:
        """The header of an open recording (cached by inode, size and times).

        Raises:
            EnvelopeFormatError, TruncatedStreamError: not a readable envelope.
        """
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._headers.get(key)
        if cached is not None:
            return cached
        header = read_header_at(FileSource(fd))
        self._headers[key] = header
        while len(self._headers) > _HEADER_CACHE_ENTRIES:
            self._headers.popitem(last=False)
        return header

    def list(self, tenants: frozenset[str]) -> list[RecordingInfo]:
        """Recordings whose header names one of ``tenants``, newest first (at most
        :data:`MAX_LISTED`).  Unreadable or malformed files are skipped."""
        found: list[RecordingInfo] = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(self.root)
            for fname in sorted(filenames):
                name = "/".join((*rel.parts, fname))
                info = self._info(name)
                if info is not None and info.header.metadata.tenant in tenants:
                    found.append(info)
            if len(found) >= MAX_LISTED:
                break
        found.sort(key=lambda i: (-i.header.metadata.created_ms, i.name))
        return found[:MAX_LISTED]

    def _info(self, name: str) -> RecordingInfo | None:
        try:
            fd = self.open(name)
        except (NotFoundError, OSError):
            return None
        try:
            header = self.header(fd)
            layout = BodyLayout(os.fstat(fd).st_size - header.length)
        except (RecstreamError, OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return RecordingInfo(name, header, layout.plaintext_length if layout.complete else None)

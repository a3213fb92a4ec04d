"""The recordings directory served for playback, and nothing outside it.

A recording's name is its path relative to ``[recordings] root`` with ``/``
between segments (``acme/2024-05/call-1.rsv``).  Names are checked segment by
segment (no empty, ``.`` or ``..`` segment, no backslash or control character,
ending in ``.rsv``) and the file is opened one segment at a time with
``openat``-style ``dir_fd`` and ``O_NOFOLLOW``: no symbolic link is ever
followed, so neither ``..`` nor a link (planted or raced in) reaches outside
the root.  Listing is :mod:`recstream.service.index`'s; headers read for playback
are cached by file identity.
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

from recstream.format import Header
from recstream.reader import FileSource, Source, read_header_at
from recstream.service.errors import NotFoundError
from recstream.signing import file_identity

__all__ = ["SUFFIX", "Archive", "Opened", "check_name", "missing_message"]

SUFFIX: Final = ".rsv"
MAX_NAME_CHARS: Final = 1024
MAX_DEPTH: Final = 16
_SEGMENT = re.compile(r"[A-Za-z0-9_@+=,~-][A-Za-z0-9_@+=,~.-]{0,254}")
_HEADER_CACHE_ENTRIES: Final = 20_000


@dataclass(slots=True)
class Opened:
    """A recording opened for playback, on disk or in a store.

    Attributes:
        name: its archive name.
        source: its bytes (``size`` and ``read_at``), for :class:`SegmentReader`.
        stamp: what identifies this version of it (the header cache's key).
    """

    name: str
    source: Source
    stamp: tuple[int | str, ...]
    fd: int | None = None  # a local file's descriptor, closed by :meth:`close`

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


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
        raise NotFoundError(missing_message(name))
    return segments


def missing_message(name: str) -> str:
    """What a client is told about a name that is missing (or not theirs to know of)."""
    shown = name if len(name) <= 200 and name.isprintable() else "(name not shown)"
    return f"no recording {shown!r}"


class Archive:
    """Read-only access to the recordings under ``root``."""

    read_chunk: Final = 16 * 16 * 1024  # plaintext per read on playback: 16 segments

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._headers: OrderedDict[tuple[int, ...], Header] = OrderedDict()

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
                raise NotFoundError(missing_message(name)) from None
            raise
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(leaf).st_mode):
            os.close(leaf)
            raise NotFoundError(missing_message(name))
        return leaf

    def open_recording(self, name: str) -> Opened:
        """Open recording ``name`` for playback; the caller closes it.

        Raises:
            NotFoundError: as :meth:`open`.
        """
        fd = self.open(name)
        st = os.fstat(fd)
        stamp = file_identity(st)
        return Opened(name, FileSource(fd), stamp, fd)

    def recording_header(self, rec: Opened) -> Header:
        """The header of an opened recording (cached by its stamp).

        Raises:
            EnvelopeFormatError, TruncatedStreamError: not a readable envelope.
        """
        assert rec.fd is not None
        return self.header(rec.fd)

    def check(self) -> None:
        """Raises OSError: the root is no longer a directory (health check)."""
        if not self.root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", str(self.root))

    def header(self, fd: int) -> Header:
        """The header of an open recording (cached by inode, size and times).

        Raises:
            EnvelopeFormatError, TruncatedStreamError: not a readable envelope.
        """
        st = os.fstat(fd)
        key = file_identity(st)
        cached = self._headers.get(key)
        if cached is not None:
            return cached
        header = read_header_at(FileSource(fd))
        self._headers[key] = header
        while len(self._headers) > _HEADER_CACHE_ENTRIES:
            self._headers.popitem(last=False)
        return header

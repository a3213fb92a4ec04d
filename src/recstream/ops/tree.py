"""Where recordings are: a local directory or an fsspec URL, behind one small interface.

Local trees get every safety rule (:mod:`recstream.durable`: advisory locks, unnamed
temporaries, exclusive commits, fsyncs); other stores (fsspec URLs) get a
temporary object moved into place, with durability and permissions the store's own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from recstream import durable
from recstream.errors import IntegrityError
from recstream.reader import FileSource, SeekSource, Source
from recstream.storage import client_errors

__all__ = ["INCOMPLETE_SUFFIX", "Opened", "Tree", "is_incomplete"]

# The live writer records into NAME.incomplete (recstream.aio.writer); batch jobs
# never touch those.
INCOMPLETE_SUFFIX = ".incomplete"
# An exclusive open retries this often when the name moved to a new file meanwhile.
_CAS_RETRIES = 8


def is_incomplete(rel: str) -> bool:
    """True for a file the live writer is still recording into (by its name)."""
    return rel.endswith(INCOMPLETE_SUFFIX)


@dataclass(frozen=True, slots=True)
class Opened:
    """An open recording: its file, size, and (local) descriptor and stat."""

    file: IO[bytes]
    size: int
    fd: int | None
    stat: os.stat_result | None

    def source(self) -> Source:
        """Random access to the recording: ``pread`` locally, seek-and-read on a store."""
        if self.fd is not None:
            return FileSource(self.fd)
        return SeekSource(self.file, self.size)


class Tree:
    """A directory of recordings: a local path or a store URL (``s3://...``,
    ``webdav+https://...``, :mod:`recstream.storage`) or another fsspec URL."""

    def __init__(self, url: str | os.PathLike[str]) -> None:
        text = os.fspath(url)
        # Output directories known to exist: one mkdir per directory, not per file.
        self._dirs: set[Path] = set()
        if "://" not in text or text.startswith("file://"):
            self.local: Path | None = Path(text.removeprefix("file://"))
            self.fs: Any = None
            self.root = str(self.local)
        else:
            from recstream.storage import url_to_fs

            self.local = None
            self.fs, self.root = url_to_fs(text)  # s3://, webdav+https:// and fsspec URLs
        self.url = text

    def __repr__(self) -> str:
        return f"Tree({self.url!r})"

    def path(self, rel: str) -> str:
        return str(self.local / rel) if self.local is not None else f"{self.root}/{rel}"

    def exists(self, rel: str) -> bool:
        if self.local is not None:
            return (self.local / rel).exists()
        with client_errors(self.url, "look up a recording"):
            return bool(self.fs.exists(self.path(rel)))

    @contextlib.contextmanager
    def open(self, rel: str, *, exclusive: bool = False, wait: float = 0.0) -> Iterator[Opened]:
        """Open ``rel`` for reading, holding its advisory lock (local trees).

        ``exclusive`` (for replacing the file) takes an exclusive lock, and makes sure
        it is on the file the name refers to now (compare-and-swap on the directory
        entry): a file replaced while we waited is opened again.

        Raises:
            FileBusyError: the lock is held by another process past ``wait`` seconds.
            OSError: the file cannot be opened.
        """
        if self.local is None:
            with client_errors(self.url, "read"), self.fs.open(self.path(rel), "rb") as fh:
                yield Opened(fh, int(self.fs.size(self.path(rel))), None, None)
            return
        # Replacing: the file a symlink points to, not the link (and its name to check).
        path = (self.local / rel).resolve() if exclusive else self.local / rel
        for _ in range(_CAS_RETRIES):
            try:
                fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
            except (FileNotFoundError, IsADirectoryError):
                raise FileNotFoundError(2, "input file not found", str(self.local / rel)) from None
            try:
                durable.lock_file(fh.fileno(), shared=not exclusive, timeout=wait)
                st = os.fstat(fh.fileno())
                if not exclusive or _same_file(path, st):
                    yield Opened(fh, st.st_size, fh.fileno(), st)
                    return
            finally:
                fh.close()  # releases the lock
        msg = f"{rel} kept being replaced by another process; it was left as it is"
        raise IntegrityError(msg)

    def still_at(self, rel: str, opened: Opened) -> bool:
        """True when ``rel`` still names the file ``opened`` (local; always True elsewhere)."""
        if self.local is None or opened.stat is None:
            return True
        return _same_file((self.local / rel).resolve(), opened.stat)

    @contextlib.contextmanager
    def output(
        self,
        rel: str,
        *,
        replace: bool,
        mode: int = 0o600,
        owner: tuple[int, int] | None = None,
        group: durable.CommitGroup | None = None,
    ) -> Iterator[IO[bytes]]:
        """Write ``rel`` all or nothing (:func:`recstream.durable.atomic_output` locally).

        ``group`` (local trees): leave the directory fsyncs to the caller's
        :meth:`recstream.durable.CommitGroup.sync` (group commit); stores ignore it.

        Raises:
            FileExistsError: ``replace`` is False and ``rel`` exists (local: at commit).
        """
        if self.local is not None:
            target = self.local / rel
            if target.parent not in self._dirs:
                durable.make_dirs(target.parent)
                self._dirs.add(target.parent)
            with durable.atomic_output(
                target, mode=mode, replace=replace, owner=owner, group=group
            ) as fh:
                yield fh
            return
        path = self.path(rel)
        with client_errors(self.url, "store the output"):
            self.fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
            if not replace and self.fs.exists(path):
                raise FileExistsError(17, "output exists", path)
            with durable.remote_output(self.fs, path, replace=replace) as fh:
                yield fh


def _same_file(path: Path, st: os.stat_result) -> bool:
    try:
        now = path.stat()
    except FileNotFoundError:
        return False
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)

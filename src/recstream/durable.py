"""Durable output: the one module that creates, commits and cleans up files of user data.

Every file recstream writes for a user (decrypted media, re-wrapped recordings, the
keystore and its backups, exports) goes through here, so the safety rules are
written once:

* **Nothing partial under a final name.**  Output goes to a temporary file in the
  destination's directory, is written completely, ``fsync``ed, then committed by
  one rename (or link) and the directory ``fsync``ed.  A crash leaves the old file
  or the new one.
* **Group commit** (:class:`CommitGroup`): when many outputs are written at once
  (``decrypt --out-dir``, batch jobs), each is still written, ``fsync``ed and
  named by its writer, but the directory ``fsync`` that makes the names durable
  is done once for the whole group, by the scheduler, before it reports any of
  them done.
* **Exclusive create.**  With ``replace=False`` the commit itself refuses an
  existing target (``linkat``/``renameat2(RENAME_NOREPLACE)``): no check-then-write
  race between two processes.
* **Temporaries never outlive their process where the OS allows it.**  The
  temporary is an unnamed ``O_TMPFILE`` inode, given a name only when it is
  complete; a SIGKILL before that leaves nothing.  Where the filesystem cannot,
  the temporary is named by :func:`temp_name` (``.NAME.<pid>.<thread>.partial``)
  and locked (``flock``) while it is written.
* **Stale temporaries are removed.**  :func:`remove_stale` deletes named
  temporaries whose process is dead and whose lock is free; every commit into a
  directory runs it there once per process.
* **Advisory locks on recordings** (:func:`lock_file`): the live writer holds an
  exclusive ``flock`` on the file it is recording into until it is complete;
  re-wrapping holds one on the file it replaces; batch jobs try a shared one
  without waiting and leave a locked file alone.

No other module in the package renames or replaces user data.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, Final

__all__ = [
    "TEMP_SUFFIX",
    "CommitGroup",
    "FileBusyError",
    "atomic_output",
    "commit_object",
    "commit_rename",
    "create_unique",
    "discard_tree",
    "fsync_dir",
    "is_temporary",
    "lock_file",
    "make_dirs",
    "remote_output",
    "remove_stale",
    "temp_name",
    "write_all",
    "write_file",
]

TEMP_SUFFIX: Final = ".partial"
# ".NAME.<pid>.<thread id>.partial": the owner's pid is in the name so that a later
# process can tell a dead writer's leftovers from a live writer's work.
_TEMP_RE: Final = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<tid>\d+)\.partial$")

_AT_FDCWD: Final = -100
_AT_EMPTY_PATH: Final = 0x1000
_RENAME_NOREPLACE: Final = 1


class FileBusyError(BlockingIOError):
    """Another process holds the file's lock (it is being written or replaced)."""


def temp_name(target: Path) -> Path:
    """The named temporary for ``target``: unique per process and thread."""
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")


def is_temporary(name: str) -> bool:
    """True for a name :func:`temp_name` makes (listings skip these)."""
    return _TEMP_RE.match(name) is not None


def write_all(dst: IO[bytes] | int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data`` to a file object or descriptor (short writes happen)."""
    view = memoryview(data)
    while view:
        n = os.write(dst, view) if isinstance(dst, int) else dst.write(view)
        if n is None:  # pragma: no cover - non-blocking file; not used here
            continue
        view = view[n:]


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (some filesystems refuse: then a no-op)."""
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:  # pragma: no cover - some filesystems refuse directory opens
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


class CommitGroup:
    """Directory fsyncs shared by many outputs (group commit).

    An :func:`atomic_output` given a group commits its file as usual (complete,
    ``fsync``ed, then named: a crash never leaves a partial file under a final
    name) but leaves its directory's ``fsync`` to :meth:`sync`.  Until then the
    name may not survive a crash, so whoever reports outputs done (a scheduler, a
    journal) calls :meth:`sync` first, and only for outputs whose commit returned
    before it: one directory ``fsync`` per batch instead of one per file.
    Thread-safe: writers :meth:`add` while another thread syncs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dirty: set[Path] = set()

    def add(self, directory: Path) -> None:
        """Note that a name was committed in ``directory`` and is not durable yet."""
        with self._lock:
            self._dirty.add(directory)

    def sync(self) -> int:
        """Make every name committed so far durable; return the directories fsynced."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for directory in dirty:
            fsync_dir(directory)
        return len(dirty)


def make_dirs(directory: Path) -> None:
    """``mkdir -p directory``, each directory it creates made durable in its parent at
    once (once per directory: not worth deferring to a :class:`CommitGroup`, whose
    callers may cache that the directory exists and be reported done by another group)."""
    with _MAKE_DIRS:  # a thread that finds a directory another is making waits for its fsync
        _make_dirs(directory)


# One at a time in this process: otherwise a thread could find a directory that another
# thread has made but not yet made durable, commit a file into it and report it done.
_MAKE_DIRS = threading.Lock()


def _make_dirs(directory: Path) -> None:
    missing: list[Path] = []
    at = directory
    while not at.is_dir():
        missing.append(at)
        if at.parent == at:  # pragma: no cover - the root always exists
            break
        at = at.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
            new.mkdir()
        fsync_dir(new.parent)


# --- locks -------------------------------------------------------------------------


def lock_file(fd: int, *, shared: bool = False, timeout: float = 0.0) -> None:
    """Take a ``flock`` on ``fd``, waiting up to ``timeout`` seconds (0: do not wait).

    Raises:
        FileBusyError: another process holds a conflicting lock.
    """
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, op)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                msg = "another process is writing it"
                raise FileBusyError(errno.EWOULDBLOCK, msg) from None
        time.sleep(0.02)


# --- stale temporaries ---------------------------------------------------------------

_swept: set[tuple[int, int]] = set()
_swept_lock = threading.Lock()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def remove_stale(directory: Path, name: str | None = None) -> int:
    """Remove named temporaries in ``directory`` left by processes that died.

    Only files of :func:`temp_name`'s form (for ``name`` only, if given) are touched,
    and only when their pid is not running and their lock is free: a live writer's
    temporary is never removed.  Returns how many were removed.
    """
    removed = 0
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if m is None or (name is not None and m["name"] != name):
            continue
        if int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
            continue
        if _remove_if_unlocked(Path(entry.path)):
            removed += 1
    return removed


def _remove_if_unlocked(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            lock_file(fd)
        except FileBusyError:
            return False
        st = os.fstat(fd)
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_ino == st.st_ino:
                path.unlink()
                return True
        return False
    finally:
        os.close(fd)


def _sweep_once(directory: Path) -> None:
    """:func:`remove_stale` for ``directory``, once per process (a listing per file
    written into a directory of thousands would cost more than the writes)."""
    try:
        st = directory.stat()
    except OSError:
        return
    key = (st.st_dev, st.st_ino)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    remove_stale(directory)


# --- unnamed temporaries (O_TMPFILE + linkat) -----------------------------------------


@functools.cache
def _c() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


_proc_link_works = True  # until /proc/self/fd linking fails once (some sandboxes)


def _link_fd(fd: int, target: Path) -> None:
    """Give the unnamed file ``fd`` the name ``target`` (fails if it exists)."""
    global _proc_link_works  # noqa: PLW0603 - a per-process capability, learnt once
    if _proc_link_works:
        try:
            os.link(f"/proc/self/fd/{fd}", target, follow_symlinks=True)
            return
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "file exists", str(target)) from None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EACCES):
                raise
            _proc_link_works = False
    # linkat(fd, "", AT_EMPTY_PATH): where /proc is not usable for this.
    if _c().linkat(fd, b"", _AT_FDCWD, os.fsencode(target), _AT_EMPTY_PATH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(target))  # FileExistsError for EEXIST


_tmpfile_ok: dict[int, bool] = {}
# False: always use named temporaries (filesystems whose O_TMPFILE misbehaves; tests
# of the stale-temporary clean-up).
USE_TMPFILE = True


def _open_unnamed(directory: Path, mode: int) -> int | None:
    """An ``O_TMPFILE`` descriptor in ``directory``, or None where it cannot be linked."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not USE_TMPFILE:
        return None
    try:
        fd = os.open(directory, flag | os.O_RDWR | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None
        raise
    dev = os.fstat(fd).st_dev
    if dev not in _tmpfile_ok:
        _tmpfile_ok[dev] = _probe_link(directory)
    if not _tmpfile_ok[dev]:
        os.close(fd)
        return None
    return fd


def _probe_link(directory: Path) -> bool:
    fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    probe = temp_name(directory / "probe")
    try:
        _link_fd(fd, probe)
    except OSError:
        return False
    finally:
        os.close(fd)
    probe.unlink()
    return True


def _rename_noreplace(src: Path, dst: Path) -> None:
    if _c().renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:  # fmt: skip
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS):  # pragma: no cover - fs without RENAME_NOREPLACE
        os.link(src, dst)
        src.unlink()
        return
    raise OSError(err, os.strerror(err), str(dst))


# --- committing ------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_output(
    path: str | os.PathLike[str],
    *,
    mode: int = 0o600,
    replace: bool = True,
    owner: tuple[int, int] | None = None,
    group: CommitGroup | None = None,
) -> Iterator[BinaryIO]:
    """A temporary file beside ``path`` that becomes ``path`` only if the body succeeds.

    The file object is unbuffered and open for reading too (to check what was
    written).  On success it is fsynced and committed, and the directory fsynced
    (with a ``group``: by the group's :meth:`CommitGroup.sync`, once for many).
    On any exception nothing is left: ``path`` is as it was.

    Args:
        mode: permissions from the first byte (owner-only by default).
        replace: False to refuse an existing ``path`` at commit time.
        owner: (uid, gid) to give the file (ignored where not permitted).
        group: leave the directory fsync to this group (the caller must
            :meth:`CommitGroup.sync` before calling the output durable).

    Raises:
        FileExistsError: ``replace`` is False and ``path`` exists.
        OSError: on I/O failure.
    """
    target = Path(path)
    directory = target.parent
    _sweep_once(directory)
    fd = _open_unnamed(directory, mode)
    named: Path | None = None
    if fd is None:
        named = temp_name(target)
        fd = os.open(named, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)  # marks it live for remove_stale
    try:
        os.fchmod(fd, mode)  # O_TMPFILE honours the umask; the result must not
        if owner is not None:
            with contextlib.suppress(PermissionError):  # only root may give files away
                os.fchown(fd, *owner)
        with os.fdopen(fd, "r+b", buffering=0, closefd=False) as fh:
            yield fh
        os.fsync(fd)
        _commit(fd, named, target, replace=replace)
    except BaseException:
        if named is not None:
            with contextlib.suppress(FileNotFoundError):
                named.unlink()
        raise
    finally:
        os.close(fd)
    if group is None:
        fsync_dir(directory)
    else:
        group.add(directory)


def _commit(fd: int, named: Path | None, target: Path, *, replace: bool) -> None:
    if named is None and not replace:
        _link_fd(fd, target)  # linkat never replaces: exclusive by construction
        return
    if named is None:
        # Name it (complete and fsynced already) and rename it over the target.
        named = temp_name(target)
        _link_fd(fd, named)
    try:
        if replace:
            os.replace(named, target)  # noqa: PTH105 - the one rename over user data
        else:
            _rename_noreplace(named, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            named.unlink()
        raise


def discard_tree(path: Path, trash: Path) -> None:
    """Delete a file or directory tree so that it disappears from its name at once:
    one rename into ``trash`` (same filesystem), a directory fsync, then the deletion.
    A crash half-way through leaves it whole or gone, never half there."""
    if not path.is_dir() or path.is_symlink():
        path.unlink()
        fsync_dir(path.parent)
        return
    trash.mkdir(parents=True, exist_ok=True)
    gone = trash / f"{path.name}.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
    path.rename(gone)
    fsync_dir(path.parent)
    shutil.rmtree(gone, ignore_errors=True)


def write_file(
    path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600, replace: bool = True
) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path, mode=mode, replace=replace) as fh:
        write_all(fh, data)


def create_unique(base: Path, data: bytes, *, mode: int = 0o600) -> Path:
    """Write ``data`` to ``base``, or ``base-2``, ``base-3``...: the first name not taken.

    Never replaces anything (each attempt is an exclusive create).  Returns the name used.
    """
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            write_file(candidate, data, mode=mode, replace=False)
        except FileExistsError:
            continue
        return candidate
    msg = f"no free name beside {base}"  # pragma: no cover
    raise FileExistsError(errno.EEXIST, msg, str(base))  # pragma: no cover


def commit_rename(fd: int, temp: Path, final: Path) -> None:
    """Commit a file written in place under ``temp`` (the live writer's ``.incomplete``).

    fsyncs ``fd``, renames ``temp`` to ``final`` without replacing anything, fsyncs the
    directory.  ``fd`` stays open (the caller's lock is held until it closes it).

    Raises:
        FileExistsError: ``final`` exists; ``temp`` is left as it is.
    """
    os.fsync(fd)
    _rename_noreplace(temp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def remote_output(fs: Any, path: str, *, replace: bool = True) -> Iterator[BinaryIO]:
    """An fsspec store's version of :func:`atomic_output`: a ``.partial`` object moved
    into place on success and deleted on failure (durability is the store's).

    The move never shows a partial object under ``path``: WebDAV gets one ``MOVE``
    (``Overwrite: F`` unless ``replace``), S3 a copy of the complete object (a key
    appears only whole) and a delete.

    Raises:
        FileExistsError: ``replace`` is False and the WebDAV server has ``path`` already.
    """
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}"
    try:
        with fs.open(tmp, "wb") as fh:
            yield fh
        commit_object(fs, tmp, path, replace=replace)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise


def commit_object(fs: Any, tmp: str, path: str, *, replace: bool) -> None:
    """Give a complete object in an fsspec store its final name, never showing it partial.

    WebDAV: one ``MOVE`` (``Overwrite: F`` unless ``replace``); other stores ``fs.mv``
    (S3: a copy of the whole object, then a delete).

    Raises:
        FileExistsError: ``replace`` is False and the WebDAV server has ``path`` already.
    """
    move = getattr(getattr(fs, "client", None), "move", None)
    if callable(move):  # webdav4: its fs.mv is COPY + DELETE, which a reader could see half-done
        try:
            move(tmp, path, overwrite=replace)
        except Exception as exc:
            if type(exc).__name__ == "ResourceAlreadyExists":
                raise FileExistsError(errno.EEXIST, "output exists", path) from None
            raise
        return
    fs.mv(tmp, path)

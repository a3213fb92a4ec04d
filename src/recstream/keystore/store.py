"""Keystore files: where they are, opening them, and atomic, locked updates.

Every change is read-modify-write under an exclusive lock (``.NAME.lock`` beside
the keystore, ``flock``), and the new file is written to a temporary file in the
same directory, fsynced, renamed over the old one and the directory fsynced
(:func:`recstream.durable.atomic_output`).  A crash at any point leaves the old
keystore or the new one, never a mix; a temporary file a crash leaves behind is
removed by the next update.  Readers take no lock: a rename is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from recstream import durable
from recstream.errors import (
    KeystoreError,
    KeystoreExistsError,
    KeystoreFormatError,
    KeystoreNotFoundError,
)
from recstream.keystore import _container, _content
from recstream.keystore._container import (
    CHECKSUM_BYTES,
    DEFAULT_KDF,
    HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    TAG_BYTES,
    FileKind,
    KdfParams,
    Unlocked,
)
from recstream.keystore.model import Keystore
from recstream.pki.dates import utcnow

__all__ = [
    "ENV_PASSWORD",
    "ENV_PATH",
    "MIN_PASSWORD_BYTES",
    "create",
    "default_path",
    "keystore_path",
    "load",
    "locked",
    "open_bytes",
    "save",
    "update",
    "write_file",
]

ENV_PATH: Final = "RECSTREAM_KEYSTORE"
ENV_PASSWORD: Final = "RECSTREAM_KEYSTORE_PASSWORD"  # noqa: S105 - a variable name
FILE_NAME: Final = "keystore.rsk"
MIN_PASSWORD_BYTES: Final = 8
LOCK_TIMEOUT: Final = 30.0  # seconds to wait for another process's update


def default_path() -> Path:
    """``$XDG_DATA_HOME/recstream/keystore.rsk`` (``~/.local/share`` by default)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "recstream" / FILE_NAME


def keystore_path(option: str | os.PathLike[str] | None = None) -> Path:
    """The keystore to use: ``option``, else ``$RECSTREAM_KEYSTORE``, else the default."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_PATH)
    return Path(env) if env else default_path()


def _what(path: Path, kind: FileKind = FileKind.KEYSTORE) -> str:
    return f"{kind.name.lower()} {path}"


def read_file(path: Path, kind: FileKind = FileKind.KEYSTORE) -> bytes:
    """Read a keystore or backup file.

    Raises:
        KeystoreNotFoundError: it does not exist.
    """
    limit = HEADER_BYTES + MAX_PAYLOAD_BYTES + CHECKSUM_BYTES + TAG_BYTES
    try:
        with path.open("rb") as fh:
            st = os.fstat(fh.fileno())
            # KEYSTORE.md: limits before allocating. A hostile backup (or /dev/zero)
            # must not make us read gigabytes before the header says it is too big.
            if not stat.S_ISREG(st.st_mode):
                msg = f"{path} is not a regular file"
                raise KeystoreFormatError(msg)
            if st.st_size > limit:
                msg = (
                    f"{_what(path, kind)} is {st.st_size} bytes, larger than any "
                    f"{kind.name.lower()} can be ({limit} bytes); it is not one"
                )
                raise KeystoreFormatError(msg)
            return fh.read(limit + 1)
    except FileNotFoundError:
        if kind is FileKind.KEYSTORE:
            msg = (
                f"no keystore at {path}; create one with 'recstream keystore init' or "
                f"'recstream keystore restore BACKUP', or point --keystore / ${ENV_PATH} at it"
            )
        else:
            msg = f"no backup file at {path}"
        raise KeystoreNotFoundError(msg, str(path)) from None
    except IsADirectoryError:
        msg = f"{path} is a directory, not a {kind.name.lower()} file"
        raise KeystoreNotFoundError(msg, str(path)) from None


def open_bytes(
    data: bytes,
    password: bytes,
    *,
    kind: FileKind,
    what: str,
    cached: Unlocked | None = None,
) -> tuple[Keystore, dict[str, Any]]:
    """Open a keystore or backup from its bytes (checks: docs/KEYSTORE.md §5).

    Raises:
        KeystoreFormatError, KeystoreDamagedError, KeystoreLockedError,
        KeystoreTamperedError.
    """
    sealed = _container.parse(data, kind, what)
    unlocked = _container.unlock(sealed, password, what, cached)
    payload = _container.open_payload(sealed, unlocked, what)
    return _content.decode(payload, unlocked, what)


def load(path: Path, password: bytes, *, cached: Unlocked | None = None) -> Keystore:
    """Open the keystore at ``path``.

    Raises:
        KeystoreNotFoundError, and the errors of :func:`open_bytes`.
    """
    ks, _ = open_bytes(
        read_file(path), password, kind=FileKind.KEYSTORE, what=_what(path), cached=cached
    )
    return ks


def write_file(path: Path, data: bytes, *, replace: bool = True) -> None:
    """Atomically write ``data`` to ``path`` (owner-only; :mod:`recstream.durable`).

    Raises:
        FileExistsError: ``replace`` is False and ``path`` exists.
    """
    durable.write_file(path, data, mode=0o600, replace=replace)


def save(ks: Keystore, path: Path) -> None:
    """Write ``ks`` to ``path`` atomically (hold :func:`locked` around load+save)."""
    write_file(path, _container.seal(FileKind.KEYSTORE, ks.unlocked, _content.encode(ks)))


def create(
    path: Path, password: bytes, *, kdf: KdfParams = DEFAULT_KDF, now: datetime | None = None
) -> Keystore:
    """Create an empty keystore (and its directory, owner-only).

    Raises:
        ValueError: the password is shorter than :data:`MIN_PASSWORD_BYTES`.
        KeystoreExistsError: a keystore is already there (never overwritten).
        KeystoreFormatError: ``kdf`` is over the caps.
    """
    if len(password) < MIN_PASSWORD_BYTES:
        msg = f"the keystore password must be at least {MIN_PASSWORD_BYTES} bytes"
        raise ValueError(msg)
    kdf.check()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with locked(path):
        if path.exists():
            msg = (
                f"a keystore already exists at {path}; it holds the keys to recordings and "
                "is never overwritten by init"
            )
            raise KeystoreExistsError(msg)
        ks = Keystore(Unlocked.derive(password, kdf), created=now or utcnow())
        save(ks, path)
    return ks


@contextlib.contextmanager
def update(path: Path, password: bytes) -> Iterator[Keystore]:
    """Lock, load, let the caller change the keystore, then save it atomically.

    Nothing is written if the body raises.
    """
    with locked(path):
        ks = load(path, password)
        yield ks
        save(ks, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the keystore's exclusive update lock; clean up a crashed writer's temp file.

    Raises:
        KeystoreError: another process held the lock for :data:`LOCK_TIMEOUT` seconds.
    """
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    msg = f"the keystore {path} is being changed by another process; try again"
                    raise KeystoreError(msg) from exc
                time.sleep(0.05)
        _remove_stale_temporaries(path)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_stale_temporaries(path: Path) -> None:
    # Where the filesystem has no O_TMPFILE, a crashed writer leaves a named
    # temporary; durable removes those whose process is gone.
    durable.remove_stale(path.parent, path.name)

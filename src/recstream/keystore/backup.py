"""Backups: one encrypted, integrity-protected file with every certificate and key.

A backup is the keystore container with ``kind = backup`` (docs/KEYSTORE.md §6):
its own random salt (so its key differs from the keystore's), the same KDF
parameters and password, and a ``backup`` record (when, from where).  Reading one
checks everything before anything is used: structure, checksum, password,
authentication, content invariants, and that every private key matches its
certificate and really unwraps for it.  :func:`restore` does all of that before it
touches the keystore, and replaces it atomically.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from recstream import durable
from recstream.errors import KeystoreError, KeystoreExistsError, KeystoreFormatError
from recstream.keystore import _container
from recstream.keystore._container import FileKind, Unlocked
from recstream.keystore._content import encode, iso_time, parse_time
from recstream.keystore.model import Keystore
from recstream.keystore.store import locked, open_bytes, read_file, save, write_file
from recstream.pki.dates import utcnow

__all__ = ["BackupInfo", "make_backup", "read_backup", "restore", "write_backup"]


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """What a verified backup holds."""

    created: datetime
    source: str
    certificates: int
    tenants: tuple[str, ...]
    replaced: Path | None = None  # where restore --force kept the keystore it replaced
    signing_identities: int = 0  # recording nodes' signing identities (keystore/nodes.py)


def make_backup(ks: Keystore, password: bytes, *, source: str, now: datetime) -> bytes:
    """The bytes of a backup of ``ks`` under ``password`` (a fresh salt: one KDF run).

    The CLI passes the password it opened the keystore with, so a backup always
    opens with the keystore's password.

    Raises:
        KeystoreTamperedError: a private key does not authenticate.
    """
    fresh = Unlocked.derive(password, ks.unlocked.kdf)
    copy = ks.rekeyed(fresh)
    extra = {"backup": {"created": iso_time(now), "source": source}}
    return _container.seal(FileKind.BACKUP, fresh, encode(copy, extra))


def write_backup(ks: Keystore, password: bytes, out: Path, *, source: str, now: datetime) -> None:
    """Write a backup atomically to ``out`` and read it back to prove it opens."""
    data = make_backup(ks, password, source=source, now=now)
    read_backup(data, password, f"backup {out}", cached=None)
    write_file(out, data)


def read_backup(
    data: bytes, password: bytes, what: str, *, cached: Unlocked | None = None
) -> tuple[Keystore, BackupInfo]:
    """Open and completely verify a backup.

    Raises:
        KeystoreFormatError, KeystoreDamagedError, KeystoreLockedError,
        KeystoreTamperedError: as for a keystore.
        KeystoreError: a private key does not match its certificate.
    """
    ks, extra = open_bytes(data, password, kind=FileKind.BACKUP, what=what, cached=cached)
    info = _info(extra, ks, what)
    problems = [f"{e.label()}: {p}" for e in ks.entries if (p := ks.key_problem(e)) is not None]
    problems += [f"{i.label()}: {p}" for i in ks.nodes.identities if (p := ks.nodes.key_problem(i))]
    if problems:
        msg = f"{what} holds unusable keys:\n  " + "\n  ".join(problems)
        raise KeystoreError(msg)
    return ks, info


def restore(
    backup: Path,
    keystore: Path,
    password: bytes,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> BackupInfo:
    """Verify ``backup`` completely, then make it the keystore at ``keystore``.

    The keystore's lock is held throughout, so two restores (or a restore and an
    update) run one after the other.  An existing keystore is replaced only with
    ``force``; it is first copied beside it as ``NAME.replaced-<time>`` (``-2``,
    ``-3``... when that name is taken: a kept keystore is never overwritten), then
    replaced by one atomic rename.

    Raises:
        KeystoreNotFoundError: no backup file.
        KeystoreExistsError: a keystore exists and ``force`` is False.
        and the errors of :func:`read_backup`.
    """
    keystore.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    replaced: Path | None = None
    with locked(keystore):
        ks, info = read_backup(read_file(backup, FileKind.BACKUP), password, f"backup {backup}")
        restored = Keystore(ks.unlocked, ks.entries, created=ks.created, nodes=ks.nodes.identities)
        if keystore.exists():
            if not force:
                msg = (
                    f"a keystore already exists at {keystore}; restore replaces it only with "
                    "--force (the old one is then kept beside it)"
                )
                raise KeystoreExistsError(msg)
            stamp = iso_time(now or utcnow()).replace(":", "").replace("-", "")
            kept = keystore.with_name(f"{keystore.name}.replaced-{stamp}")
            replaced = durable.create_unique(kept, read_file(keystore))
        save(restored, keystore)
    return dataclasses.replace(info, replaced=replaced)


def _info(extra: dict[str, Any], ks: Keystore, what: str) -> BackupInfo:
    record = extra.get("backup")
    try:
        if not isinstance(record, dict) or not isinstance(record.get("source"), str):
            msg = "no backup record"
            raise ValueError(msg)
        created = parse_time(record.get("created"))
    except ValueError as exc:
        msg = f"{what} content is malformed: {exc}"
        raise KeystoreFormatError(msg) from exc
    return BackupInfo(
        created,
        record["source"],
        len(ks.entries),
        tuple(ks.tenants()),
        signing_identities=len(ks.nodes),
    )

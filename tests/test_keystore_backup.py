"""Backup, verify-backup and restore: complete checks before anything changes."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from recstream import durable
from recstream.errors import (
    KeystoreDamagedError,
    KeystoreError,
    KeystoreExistsError,
    KeystoreFormatError,
    KeystoreLockedError,
    KeystoreNotFoundError,
    KeystoreTamperedError,
)
from recstream.format import MediaKind
from recstream.keystore import _container as container
from recstream.keystore import _content, backup, create, load, store, update
from recstream.keystore._container import FileKind, Unlocked
from recstream.keystore.model import Keystore
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    flip,
    no_partials,
    open_envelope,
    recording_cert,
    seal,
)


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    return {
        "A": recording_cert("A", start_days=-400, end_days=-20),
        "B": recording_cert("B", start_days=-30, end_days=335),
        "S": recording_cert("S", start_days=-1, end_days=365),
    }


@pytest.fixture
def ks_path(tmp_path: Path, certs: dict[str, Cert]) -> Path:
    path = tmp_path / "site" / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF, now=NOW)
    with update(path, PASSWORD) as ks:
        for label, kind in (
            ("A", MediaKind.VOICE),
            ("B", MediaKind.VOICE),
            ("S", MediaKind.SCREEN),
        ):
            ks.add("acme", kind, certs[label].cert, certs[label].key, now=NOW)
    return path


@pytest.fixture
def backup_file(ks_path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "offsite" / "keystore.backup"
    out.parent.mkdir()
    backup.write_backup(load(ks_path, PASSWORD), PASSWORD, out, source=str(ks_path), now=NOW)
    return out


def _fingerprint(ks: Keystore) -> list[tuple[str, str, str, str]]:
    return sorted((e.tenant, e.kind_name, e.cert_id, e.state.value) for e in ks.entries)


def test_backup_is_its_own_kind_with_its_own_salt(ks_path: Path, backup_file: Path) -> None:
    data = backup_file.read_bytes()
    sealed = container.parse(data, FileKind.BACKUP, "backup")
    assert sealed.salt != load(ks_path, PASSWORD).unlocked.salt
    assert sealed.kdf == TINY_KDF
    with pytest.raises(KeystoreFormatError, match="is a backup, not a keystore"):
        store.load(backup_file, PASSWORD)
    with pytest.raises(KeystoreFormatError, match="is a keystore, not a backup"):
        backup.read_backup(ks_path.read_bytes(), PASSWORD, "backup")
    assert oct(backup_file.stat().st_mode & 0o777) == "0o600"


def test_restore_on_a_fresh_machine(
    ks_path: Path, backup_file: Path, tmp_path: Path, certs: dict[str, Cert]
) -> None:
    recordings = {k: seal(k.encode() * 100, [c.recipient]) for k, c in certs.items()}
    fresh = tmp_path / "new-machine" / "home" / ".local" / "share" / "recstream" / "keystore.rsk"
    info = backup.restore(backup_file, fresh, PASSWORD)
    assert info.certificates == 3 and info.tenants == ("acme",) and info.replaced is None
    assert info.source == str(ks_path)
    restored = load(fresh, PASSWORD)
    assert _fingerprint(restored) == _fingerprint(load(ks_path, PASSWORD))
    for label, data in recordings.items():
        assert open_envelope(data, restored) == label.encode() * 100
    assert oct(fresh.parent.stat().st_mode & 0o777) == "0o700"
    assert restored.active("acme", MediaKind.VOICE).cert_id == certs["B"].cert_id  # type: ignore[union-attr]
    # The restored keystore is a normal keystore: it can be changed and backed up again.
    with update(fresh, PASSWORD) as ks:
        ks.add("beta", MediaKind.VOICE, certs["S"].cert, certs["S"].key, now=NOW)
    again = fresh.with_name("again.backup")
    backup.write_backup(load(fresh, PASSWORD), PASSWORD, again, source="x", now=NOW)
    assert backup.read_backup(again.read_bytes(), PASSWORD, "b")[1].tenants == ("acme", "beta")


def test_restore_refuses_to_overwrite_without_force(
    ks_path: Path, backup_file: Path, certs: dict[str, Cert]
) -> None:
    with update(ks_path, PASSWORD) as ks:
        ks.add("beta", MediaKind.VOICE, certs["B"].cert, certs["B"].key, now=NOW)
    before = ks_path.read_bytes()
    with pytest.raises(KeystoreExistsError, match="--force"):
        backup.restore(backup_file, ks_path, PASSWORD)
    assert ks_path.read_bytes() == before
    info = backup.restore(backup_file, ks_path, PASSWORD, force=True, now=NOW)
    assert info.replaced is not None and info.replaced.read_bytes() == before
    assert load(ks_path, PASSWORD).tenants() == ["acme"]  # as backed up, before "beta"


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (lambda d: d[: len(d) // 2], KeystoreDamagedError, "truncated"),
        (lambda d: d[:-1], KeystoreDamagedError, "truncated"),
        (lambda d: d[:40], KeystoreDamagedError, "truncated"),
        (lambda d: b"", KeystoreFormatError, "not a recstream"),
        (lambda d: flip(d, 500), KeystoreDamagedError, "checksum"),
        (lambda d: flip(d, len(d) - 1), KeystoreDamagedError, "checksum"),
    ],
)
def test_damaged_backup_is_refused_and_changes_nothing(
    ks_path: Path,
    backup_file: Path,
    tmp_path: Path,
    damage: object,
    error: type[KeystoreError],
    message: str,
) -> None:
    bad = tmp_path / "bad.backup"
    bad.write_bytes(damage(backup_file.read_bytes()))  # type: ignore[operator]
    before = ks_path.read_bytes()
    with pytest.raises(error, match=message):
        backup.read_backup(bad.read_bytes(), PASSWORD, "backup")
    with pytest.raises(error, match=message):
        backup.restore(bad, ks_path, PASSWORD, force=True)
    fresh = tmp_path / "fresh" / "keystore.rsk"
    with pytest.raises(error, match=message):
        backup.restore(bad, fresh, PASSWORD)
    assert ks_path.read_bytes() == before
    assert not fresh.exists() and no_partials(tmp_path) == []


def test_tampered_and_wrong_password_backup(backup_file: Path) -> None:
    data = backup_file.read_bytes()
    body = flip(data, 400)[:-32]
    tampered = body + hashlib.sha256(body).digest()
    with pytest.raises(KeystoreTamperedError):
        backup.read_backup(tampered, PASSWORD, "backup")
    with pytest.raises(KeystoreLockedError):
        backup.read_backup(data, b"other password 123", "backup")
    with pytest.raises(KeystoreNotFoundError, match="no backup file"):
        backup.restore(backup_file.with_name("missing"), backup_file.with_name("ks"), PASSWORD)


def test_backup_with_a_bad_key_is_refused_whole(ks_path: Path, certs: dict[str, Cert]) -> None:
    """A backup whose content authenticates but holds a key for the wrong certificate
    (a bug, or a forger with the password) is refused by verify and restore."""
    ks = load(ks_path, PASSWORD)
    fresh = Unlocked.derive(PASSWORD, TINY_KDF)
    copy = ks.rekeyed(fresh)
    doc = json.loads(
        _content.encode(copy, {"backup": {"created": "2026-01-01T00:00:00Z", "source": "x"}})
    )
    # Put S's (validly encrypted) key material in B's entry, bound to B's certificate ID.
    other = Keystore(fresh, created=NOW)
    entry = other.add("x", MediaKind.VOICE, certs["B"].cert, certs["B"].key, now=NOW)
    forged_key = other._seal_key(certs["S"].key, entry.cert_id)
    b_entry = doc["entries"][1]
    assert base64.b64decode(b_entry["certificate"]) == certs["B"].cert.public_bytes(
        serialization.Encoding.DER
    )
    b_entry["key_nonce"] = base64.b64encode(forged_key[0]).decode()
    b_entry["key"] = base64.b64encode(forged_key[1]).decode()
    data = container.seal(FileKind.BACKUP, fresh, json.dumps(doc).encode())
    with pytest.raises(KeystoreError, match="does not match the certificate"):
        backup.read_backup(data, PASSWORD, "backup")


def test_failure_while_restoring_leaves_the_old_keystore(
    ks_path: Path, backup_file: Path, certs: dict[str, Cert], monkeypatch: pytest.MonkeyPatch
) -> None:
    with update(ks_path, PASSWORD) as ks:
        ks.add("beta", MediaKind.VOICE, certs["B"].cert, certs["B"].key, now=NOW)
    before = ks_path.read_bytes()

    def half_then_eio(fh: object, data: bytes | memoryview) -> None:
        fh.write(bytes(data)[: len(data) // 3])  # type: ignore[attr-defined]
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(durable, "write_all", half_then_eio)
    with pytest.raises(OSError, match="Input/output"):
        backup.restore(backup_file, ks_path, PASSWORD, force=True)
    assert ks_path.read_bytes() == before
    assert no_partials(ks_path.parent) == []
    assert load(ks_path, PASSWORD).tenants() == ["acme", "beta"]


def test_oversized_or_special_files_are_refused_before_reading(tmp_path: Path) -> None:
    """Limits before allocating: a 1 GiB 'backup' is refused from its size alone."""
    from recstream.errors import KeystoreFormatError
    from recstream.keystore._container import FileKind
    from recstream.keystore.store import read_file

    big = tmp_path / "big.rsk"
    with big.open("wb") as fh:
        fh.truncate(1 << 30)  # sparse: costs nothing on disk
    with pytest.raises(KeystoreFormatError, match="larger than any backup can be"):
        read_file(big, FileKind.BACKUP)
    with pytest.raises(KeystoreFormatError, match="not a regular file"):
        read_file(Path("/dev/zero"), FileKind.BACKUP)

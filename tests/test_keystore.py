"""The keystore library: file container, KDF tuning and caps, the model, atomic updates."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from recstream import _crypto, durable
from recstream.errors import (
    CertificateKeyMismatchError,
    CertificateNotInKeystoreError,
    CertificatePurposeError,
    KeystoreDamagedError,
    KeystoreEntryError,
    KeystoreError,
    KeystoreExistsError,
    KeystoreFormatError,
    KeystoreLockedError,
    KeystoreNotFoundError,
    KeystoreTamperedError,
    NoMatchingKeyError,
)
from recstream.format import Header, MediaKind, parse_header
from recstream.keystore import (
    DEFAULT_KDF,
    EntryState,
    KdfParams,
    Keystore,
    _content,
    create,
    load,
    store,
    update,
)
from recstream.keystore import _container as container
from recstream.keystore._container import FileKind, Unlocked
from recstream.keystore.resolve import active_recipient
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    ca_cert,
    flip,
    no_partials,
    open_envelope,
    recording_cert,
    seal,
)

V, S = MediaKind.VOICE, MediaKind.SCREEN


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    return {
        # A expired 20 days ago; B and C are its successors; D another tenant's.
        "A": recording_cert("A", start_days=-400, end_days=-20),
        "B": recording_cert("B", start_days=-30, end_days=335),
        "C": recording_cert("C", start_days=-1, end_days=365),
        "S": recording_cert("S", start_days=-1, end_days=365),
        "D": recording_cert("D", start_days=-1, end_days=10),
    }


@pytest.fixture
def ks_path(tmp_path: Path) -> Path:
    path = tmp_path / "ks" / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF, now=NOW)
    return path


def _import(path: Path, cert: Cert, tenant: str = "acme", kind: MediaKind = V) -> None:
    with update(path, PASSWORD) as ks:
        ks.add(tenant, kind, cert.cert, cert.key, now=NOW)


def _reseal_header(data: bytes, **fields: int) -> bytes:
    """Change header fields of a sealed file and fix its checksum (a forger's edit)."""
    layout = struct.Struct(">8sHBBIIB3s16s32s12sI")
    values = list(layout.unpack_from(data))
    index = {"version": 1, "kind": 2, "kdf": 3, "memory": 4, "iterations": 5, "lanes": 6}
    for k, v in fields.items():
        values[index[k]] = v
    body = layout.pack(*values) + data[layout.size : -32]
    return body + hashlib.sha256(body).digest()


def _fix_checksum(data: bytes) -> bytes:
    body = data[:-32]
    return body + hashlib.sha256(body).digest()


# --- renewal: the first test ------------------------------------------------


def test_renewal_a_b_c_all_decrypt_from_one_keystore(ks_path: Path, certs: dict[str, Cert]) -> None:
    a, b, c = certs["A"], certs["B"], certs["C"]
    t0 = NOW - timedelta(days=300)  # A valid then
    t1 = NOW - timedelta(days=25)  # B rotated in while A still valid
    recordings = {}
    with update(ks_path, PASSWORD) as ks:
        ks.add("acme", V, a.cert, a.key, now=t0)
        recipient, _ = active_recipient(ks, "acme", V, now=t0)
        recordings["A"] = seal(b"under A" * 999, [recipient], rid="a")
        ks.add("acme", V, b.cert, b.key, now=t1)
        ks.rotate("acme", V, b.cert_id, now=t1)
        recipient, _ = active_recipient(ks, "acme", V, now=t1)
        recordings["B"] = seal(b"under B" * 999, [recipient], rid="b")
        ks.add("acme", V, c.cert, c.key, now=NOW)
        ks.rotate("acme", V, c.cert_id[:12], now=NOW)
    ks = load(ks_path, PASSWORD)
    recipient, _ = active_recipient(ks, "acme", V, now=NOW)
    assert recipient.cert_id_hex == c.cert_id
    recordings["C"] = seal(b"under C" * 999, [recipient], rid="c")
    states = {e.cert_id: (e.state, e.status(NOW)) for e in ks.entries}
    assert states[a.cert_id] == (EntryState.RETIRED, "expired")
    assert states[b.cert_id] == (EntryState.RETIRED, "retired")
    assert states[c.cert_id] == (EntryState.ACTIVE, "active")
    for label, data in recordings.items():
        # Each was encrypted only for the certificate active at the time ...
        header = parse_header(data)
        assert isinstance(header, Header)
        assert header.cert_ids == (certs[label].cert_id,)
        # ... and one keystore opens all three, expired A included.
        assert open_envelope(data, ks) == f"under {label}".encode() * 999


def test_expired_certificate_is_history_never_active(ks_path: Path, certs: dict[str, Cert]) -> None:
    a, b = certs["A"], certs["B"]
    with update(ks_path, PASSWORD) as ks:
        entry = ks.add("acme", V, a.cert, a.key, now=NOW)
        assert entry.state is EntryState.INACTIVE and entry.status(NOW) == "expired"
        assert ks.active("acme", V) is None
        with pytest.raises(KeystoreEntryError, match="never made active"):
            ks.rotate("acme", V, a.cert_id, now=NOW)
        # The first *valid* certificate becomes active by itself.
        assert ks.add("acme", V, b.cert, b.key, now=NOW).state is EntryState.ACTIVE
    data = seal(b"old", [a.recipient])
    assert open_envelope(data, load(ks_path, PASSWORD)) == b"old"


def test_import_checks(ks_path: Path, certs: dict[str, Cert]) -> None:
    b, c = certs["B"], certs["C"]
    ca = ca_cert("purpose")
    with update(ks_path, PASSWORD) as ks:
        with pytest.raises(CertificateKeyMismatchError, match="does not belong"):
            ks.add("acme", V, b.cert, c.key, now=NOW)
        with pytest.raises(CertificatePurposeError, match="CA certificate"):
            ks.add("acme", V, ca.cert, ca.key, now=NOW)
        with pytest.raises(ValueError, match="control"):
            ks.add("bad\x07tenant", V, b.cert, b.key, now=NOW)
        ks.add("acme", V, b.cert, b.key, now=NOW)
        with pytest.raises(KeystoreEntryError, match="already in the keystore"):
            ks.add("acme", V, b.cert, b.key, now=NOW)
        # The same certificate for another tenant or kind is a separate entry.
        assert ks.add("acme", S, b.cert, b.key, now=NOW).state is EntryState.ACTIVE
        second = ks.add("acme", V, c.cert, c.key, now=NOW)
        assert second.state is EntryState.INACTIVE  # the first one stays active
        with pytest.raises(KeystoreEntryError, match="already the active"):
            ks.rotate("acme", V, b.cert_id, now=NOW)
        with pytest.raises(CertificateNotInKeystoreError):
            ks.rotate("other", V, b.cert_id, now=NOW)
        with pytest.raises(KeystoreEntryError, match="at least 8"):
            ks.lookup("abc")
        with pytest.raises(KeystoreEntryError, match="hex"):
            ks.lookup("not-hex-at-all")
        assert ks.lookup(c.cert_id[:8].upper()).cert_id == c.cert_id


def test_keyring_lookup_by_cert_id_and_key_id(ks_path: Path, certs: dict[str, Cert]) -> None:
    _import(ks_path, certs["B"])
    ks = load(ks_path, PASSWORD)
    assert ks.describe() == [certs["B"].recipient.key_id.hex()]
    stanza = certs["B"].recipient.stanza(b"k" * 32)
    assert ks.private_key_for(stanza) is not None
    with pytest.raises(NoMatchingKeyError, match=certs["C"].cert_id):
        open_envelope(seal(b"x", [certs["C"].recipient]), ks)


# --- the container: passwords, damage, tampering, limits -------------------------------


def test_wrong_password_is_its_own_error(ks_path: Path) -> None:
    with pytest.raises(KeystoreLockedError, match="wrong password"):
        load(ks_path, b"not the password")


def test_damage_tamper_and_truncation_are_distinct(ks_path: Path, certs: dict[str, Cert]) -> None:
    _import(ks_path, certs["B"])
    good = ks_path.read_bytes()
    cases: list[tuple[bytes, type[KeystoreError], str]] = [
        (flip(good, 200), KeystoreDamagedError, "checksum"),
        (_fix_checksum(flip(good, 200)), KeystoreTamperedError, "deliberately altered"),
        (_fix_checksum(flip(good, 30)), KeystoreLockedError, "wrong password"),  # salt
        (good[:-1], KeystoreDamagedError, "truncated"),
        (good[:50], KeystoreDamagedError, "truncated"),
        (good + b"\0", KeystoreDamagedError, "longer"),
        (b"", KeystoreFormatError, "not a recstream keystore"),
        (b"\x89PNG\r\n\x1a\n" + good[8:], KeystoreFormatError, "wrong magic"),
        (_reseal_header(good, version=2), KeystoreFormatError, "version 2"),
        (_reseal_header(good, kind=FileKind.BACKUP), KeystoreFormatError, "is a backup"),
        (_reseal_header(good, kdf=7), KeystoreFormatError, "function 7"),
    ]
    for data, error, message in cases:
        ks_path.write_bytes(data)
        with pytest.raises(error, match=message):
            load(ks_path, PASSWORD)


def test_every_single_byte_flip_is_refused(ks_path: Path, certs: dict[str, Cert]) -> None:
    _import(ks_path, certs["B"])
    good = ks_path.read_bytes()
    for i in range(len(good)):
        with pytest.raises(KeystoreError):
            store.open_bytes(flip(good, i, 0x80), PASSWORD, kind=FileKind.KEYSTORE, what="ks")
        # ... and with the checksum recomputed (a deliberate edit), too.
        if i < len(good) - 32:
            with pytest.raises(KeystoreError):
                store.open_bytes(
                    _fix_checksum(flip(good, i, 0x80)), PASSWORD, kind=FileKind.KEYSTORE, what="ks"
                )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory": 4 * 1024 * 1024}, "memory"),  # 4 GiB
        ({"iterations": 10_000}, "iterations"),
        ({"lanes": 255}, "lanes"),
        ({"lanes": 0}, "lanes"),
        ({"memory": 4, "lanes": 1}, "memory"),  # under Argon2's 8 KiB per lane
        (
            {"memory": 1024 * 1024, "iterations": 16},
            "work",
        ),  # each under its cap, too much together
    ],
)
def test_kdf_caps_refuse_before_deriving(
    ks_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, int], message: str
) -> None:
    hostile = _reseal_header(ks_path.read_bytes(), **fields)

    def never(*_a: object, **_k: object) -> bytes:
        raise AssertionError("derived a key from a hostile file")

    monkeypatch.setattr(_crypto, "argon2id", never)  # deriving at all fails the test
    with pytest.raises(KeystoreFormatError, match=message):
        store.open_bytes(hostile, PASSWORD, kind=FileKind.KEYSTORE, what="ks")


def test_hostile_payload_length_refused(ks_path: Path) -> None:
    data = bytearray(ks_path.read_bytes())
    struct.pack_into(">I", data, 84, 0xFFFF_FFFF)
    with pytest.raises(KeystoreFormatError, match="payload of"):
        load_bytes(_fix_checksum(bytes(data)))


def load_bytes(data: bytes) -> Keystore:
    ks, _ = store.open_bytes(data, PASSWORD, kind=FileKind.KEYSTORE, what="ks")
    return ks


def test_default_kdf_tuning() -> None:
    """The default parameters are within the caps, above RFC 9106's memory-constrained
    recommendation (64 MiB, 3 passes); the derivation time is printed, not asserted
    (a loaded machine makes any bound on it a coin toss; bench/ measures it)."""
    DEFAULT_KDF.check()
    assert DEFAULT_KDF.memory_kib >= 64 * 1024 and DEFAULT_KDF.iterations >= 3
    assert DEFAULT_KDF.memory_kib * DEFAULT_KDF.iterations * 4 <= container.MAX_KDF_WORK
    start = time.perf_counter()
    unlocked = Unlocked.derive(PASSWORD, DEFAULT_KDF)
    took = time.perf_counter() - start
    print(f"\nArgon2id {DEFAULT_KDF.describe()}: {took:.3f} s")
    again = Unlocked.derive(PASSWORD, DEFAULT_KDF, unlocked.salt)
    assert again == unlocked
    assert Unlocked.derive(b"other password 123", DEFAULT_KDF, unlocked.salt) != unlocked


def test_kdf_params_round_trip_and_create_refusals(tmp_path: Path) -> None:
    path = tmp_path / "k.rsk"
    kdf = KdfParams(memory_kib=64, iterations=2, lanes=2)
    create(path, PASSWORD, kdf=kdf)
    assert load(path, PASSWORD).unlocked.kdf == kdf
    with pytest.raises(KeystoreExistsError, match="never overwritten"):
        create(path, PASSWORD, kdf=kdf)
    with pytest.raises(ValueError, match="at least 8"):
        create(tmp_path / "other.rsk", b"short", kdf=kdf)
    with pytest.raises(KeystoreFormatError):
        create(tmp_path / "other.rsk", PASSWORD, kdf=KdfParams(2 * 1024 * 1024, 1, 1))
    with pytest.raises(KeystoreNotFoundError, match="keystore init"):
        load(tmp_path / "missing.rsk", PASSWORD)
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_payload_invariants_checked(ks_path: Path, certs: dict[str, Cert]) -> None:
    """Even with the password, content that breaks an invariant is refused."""
    _import(ks_path, certs["B"])
    _import(ks_path, certs["C"])
    ks = load(ks_path, PASSWORD)
    doc = json.loads(_content.encode(ks))
    doc["entries"][1]["state"] = "active"  # two active voice certificates
    forged = container.seal(FileKind.KEYSTORE, ks.unlocked, json.dumps(doc).encode())
    with pytest.raises(KeystoreFormatError, match="two active"):
        load_bytes(forged)
    doc["entries"][1]["state"] = "inactive"
    doc["entries"][1]["surprise"] = 1
    forged = container.seal(FileKind.KEYSTORE, ks.unlocked, json.dumps(doc).encode())
    with pytest.raises(KeystoreFormatError, match="malformed"):
        load_bytes(forged)
    # A private key moved onto another certificate's entry fails authentication.
    doc = json.loads(_content.encode(ks))
    doc["entries"][0]["key"], doc["entries"][1]["key"] = (
        doc["entries"][1]["key"],
        doc["entries"][0]["key"],
    )
    doc["entries"][0]["key_nonce"], doc["entries"][1]["key_nonce"] = (
        doc["entries"][1]["key_nonce"],
        doc["entries"][0]["key_nonce"],
    )
    swapped = load_bytes(container.seal(FileKind.KEYSTORE, ks.unlocked, json.dumps(doc).encode()))
    with pytest.raises(KeystoreTamperedError):
        swapped.private_key(swapped.entries[0])
    assert "failed authentication" in (swapped.key_problem(swapped.entries[1]) or "")


# --- atomic, locked updates --------------------------------------------------------------


def test_failure_mid_write_leaves_the_old_keystore(
    ks_path: Path, certs: dict[str, Cert], monkeypatch: pytest.MonkeyPatch
) -> None:
    _import(ks_path, certs["B"])
    before = ks_path.read_bytes()

    def half_then_enospc(fh: object, data: bytes | memoryview) -> None:
        fh.write(bytes(data)[: len(data) // 2])  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(durable, "write_all", half_then_enospc)
    with pytest.raises(OSError, match="No space"), update(ks_path, PASSWORD) as ks:
        ks.add("acme", S, certs["S"].cert, certs["S"].key, now=NOW)
    assert ks_path.read_bytes() == before
    assert no_partials(ks_path.parent) == []
    assert [e.cert_id for e in load(ks_path, PASSWORD).entries] == [certs["B"].cert_id]


@pytest.mark.parametrize("named", [True, False], ids=["named-temporary", "O_TMPFILE"])
def test_crash_mid_write_leaves_old_keystore_and_next_update_cleans_up(
    ks_path: Path, certs: dict[str, Cert], named: bool
) -> None:
    """A real crash (os._exit: no cleanup handlers run) halfway through writing.

    With O_TMPFILE the temporary dies with the process; a named one (filesystems
    without it) is removed by the next update, its process being gone."""
    _import(ks_path, certs["B"])
    before = ks_path.read_bytes()
    use_tmpfile = not named
    script = f"""
import os, sys
from datetime import datetime, UTC
from pathlib import Path
from recstream.format import MediaKind
from recstream import durable
from recstream.keystore import store
from tests.keystore_helpers import recording_cert
s = recording_cert("S", start_days=-1, end_days=365)
def crash(fh, data):
    fh.write(bytes(data)[: len(data) // 2])
    os.fsync(fh.fileno())
    os._exit(9)
durable.write_all = crash
durable.USE_TMPFILE = {use_tmpfile!r}
with store.update(Path({str(ks_path)!r}), {PASSWORD!r}) as ks:
    ks.add("acme", MediaKind.SCREEN, s.cert, s.key, now=datetime.now(UTC))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, timeout=120, check=False
    )
    assert proc.returncode == 9, proc.stderr.decode()
    assert ks_path.read_bytes() == before
    assert len(no_partials(ks_path.parent)) == (1 if named else 0)  # what the crash left
    assert len(load(ks_path, PASSWORD).entries) == 1
    _import(ks_path, certs["S"], kind=S)
    assert no_partials(ks_path.parent) == []
    assert len(load(ks_path, PASSWORD).entries) == 2


def test_concurrent_updates_lose_nothing(ks_path: Path, certs: dict[str, Cert]) -> None:
    errors: list[BaseException] = []

    def add(tenant: str) -> None:
        try:
            _import(ks_path, certs["C"], tenant=tenant)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert load(ks_path, PASSWORD).tenants() == [f"t{i}" for i in range(8)]


def test_nothing_written_when_the_change_is_refused(ks_path: Path, certs: dict[str, Cert]) -> None:
    _import(ks_path, certs["B"])
    before = ks_path.read_bytes()
    with pytest.raises(KeystoreEntryError), update(ks_path, PASSWORD) as ks:
        ks.add("acme", V, certs["B"].cert, certs["B"].key, now=NOW)
    assert ks_path.read_bytes() == before


def test_update_keeps_salt_and_changes_nonce(ks_path: Path, certs: dict[str, Cert]) -> None:
    first = ks_path.read_bytes()
    _import(ks_path, certs["B"])
    second = ks_path.read_bytes()
    assert first[24:72] == second[24:72]  # salt and password check: no new derivation
    assert first[72:84] != second[72:84]  # a fresh nonce every save

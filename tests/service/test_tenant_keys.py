"""Issue 13 (Low): a recording labelled with one tenant but encrypted to another's certificate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.format import MediaKind
from recstream.keystore import KdfParams, create, update
from recstream.pki.ca import self_signed_recording_certificate
from recstream.service.config import KeystoreConfig
from recstream.service.keys import open_keyring
from tests.service.conftest import Archive, Keys, request, seal, wait_for_audit


def forged(keys: Keys) -> bytes:
    # Whoever holds globex's public certificate can write "tenant: acme" in a header.
    return seal(
        keys.globex,
        b"globex's words" * 100,
        rid="forged",
        tenant="acme",
        kind=MediaKind.VOICE,
        mtype="audio/basic",
    )


def test_decrypt_refuses_a_key_of_another_tenant(start_rcs: Any, keys: Keys) -> None:
    st = start_rcs()
    r = request(st.url, "POST", "/rcs/decrypt", forged(keys), user="alice")
    assert r.status == 422 and r.json()["error"] == "tenant_mismatch"  # was 200: globex's plaintext
    assert b"globex's words" not in r.body
    rec = wait_for_audit(st, lambda a: a["event"] == "decrypt")
    assert rec["result"] == "tenant_mismatch" and rec["cert_id"] == keys.globex.cert_id


def test_playback_refuses_a_key_of_another_tenant(
    start_rcs: Any, keys: Keys, tmp_path: Path
) -> None:
    a = Archive(tmp_path)
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "forged.rsv").write_bytes(forged(keys))
    a.add(
        "acme/fine.rsv",
        keys.acme,
        b"ok" * 10,
        rid="fine",
        tenant="acme",
        kind=MediaKind.VOICE,
        mtype="audio/basic",
    )
    st = start_rcs(root=tmp_path)
    r = request(st.url, "GET", "/rcs/recordings/acme/forged.rsv", user="alice")
    assert r.status == 422 and r.json()["error"] == "tenant_mismatch"
    assert request(st.url, "GET", "/rcs/recordings/acme/fine.rsv", user="alice").status == 200


def _cert() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    return key, self_signed_recording_certificate(key, "t", days=1, now=now)


def test_the_keystore_key_ring_knows_each_certificates_tenant(tmp_path: Path) -> None:
    ks, pw = tmp_path / "ks.rsk", b"keystore-password"
    create(ks, pw, kdf=KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1))
    (a_key, a_cert), (b_key, b_cert) = _cert(), _cert()
    with update(ks, pw) as store:
        store.add("acme", MediaKind.VOICE, a_cert, a_key, now=dt.datetime.now(dt.UTC))
        store.add("globex", MediaKind.VOICE, b_cert, b_key, now=dt.datetime.now(dt.UTC))
    (tmp_path / "pw").write_bytes(pw + b"\n")
    ring: Any = open_keyring(KeystoreConfig(ks, tmp_path / "pw"))
    party_env = seal_with(b_cert, "acme")
    from recstream.format import parse_header

    header = parse_header(party_env)
    assert not isinstance(header, int)
    found = [ring.key_and_tenants_for(s) for s in header.recipients]
    assert [(t, ts) for _, t, ts in found] == [("globex", frozenset({"globex"}))]
    assert found[0][0] is not None


def test_one_certificate_held_for_two_tenants_opens_for_both(tmp_path: Path) -> None:
    """A certificate imported for two tenants: a recording labelled with either opens
    (the key is the same); a third tenant's label is refused as forged."""
    from recstream.format import parse_header
    from recstream.service.context import TracingKeyRing
    from recstream.service.errors import TenantMismatchError

    ks, pw = tmp_path / "ks.rsk", b"keystore-password"
    create(ks, pw, kdf=KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1))
    key, cert = _cert()
    with update(ks, pw) as store:
        for tenant in ("acme", "globex"):
            store.add(tenant, MediaKind.VOICE, cert, key, now=dt.datetime.now(dt.UTC))
    (tmp_path / "pw").write_bytes(pw + b"\n")
    ring = open_keyring(KeystoreConfig(ks, tmp_path / "pw"))
    for label in ("acme", "globex", "initech"):
        header = parse_header(seal_with(cert, label))
        assert not isinstance(header, int)
        tracing = TracingKeyRing(ring)
        assert tracing.private_key_for(header.recipients[0]) is not None
        assert tracing.tenants == frozenset({"acme", "globex"})
        if label == "initech":
            with pytest.raises(TenantMismatchError):
                tracing.check_tenant(label)
        else:
            tracing.check_tenant(label)


def test_the_key_and_its_tenants_come_from_one_reading_of_the_keystore(tmp_path: Path) -> None:
    """A reload between finding the key and naming its tenant could pair a key with no
    tenant, which the tenant check let through (review, round 4): both now come from
    one snapshot, and a ring that gives a key with no tenant fails closed."""
    from recstream.format import parse_header
    from recstream.keystore import load
    from recstream.service.context import TracingKeyRing
    from recstream.service.errors import TenantMismatchError
    from recstream.service.keys import KeystoreKeyRing

    ks, pw = tmp_path / "ks.rsk", b"keystore-password"
    create(ks, pw, kdf=KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1))
    key, cert = _cert()
    with update(ks, pw) as store:
        store.add("acme", MediaKind.VOICE, cert, key, now=dt.datetime.now(dt.UTC))
    other = tmp_path / "other.rsk"
    create(other, pw, kdf=KdfParams(memory_kib=8 * 1024, iterations=1, lanes=1))
    snapshots = [load(ks, pw), load(other, pw)]  # the keystore, then a reload without it
    ring = KeystoreKeyRing(lambda: snapshots.pop(0) if len(snapshots) > 1 else snapshots[0])
    header = parse_header(seal_with(cert, "globex"))
    assert not isinstance(header, int)
    tracing = TracingKeyRing(ring)
    assert tracing.private_key_for(header.recipients[0]) is not None
    assert (tracing.tenant, tracing.tenants) == ("acme", frozenset({"acme"}))
    with pytest.raises(TenantMismatchError):
        tracing.check_tenant("globex")

    class NoTenant:
        def private_key_for(self, stanza: object) -> object:
            return key

        def describe(self) -> list[str]:
            return []

        def key_and_tenants_for(self, stanza: object) -> tuple[object, None, frozenset[str]]:
            return key, None, frozenset()

    closed = TracingKeyRing(NoTenant())  # type: ignore[arg-type]
    assert closed.private_key_for(header.recipients[0]) is key
    with pytest.raises(TenantMismatchError):
        closed.check_tenant("globex")


def seal_with(cert: x509.Certificate, tenant: str) -> bytes:
    from recstream.envelope import EnvelopeEncryptor, Recipient, new_metadata

    meta = new_metadata(
        recording_id="x", tenant=tenant, media_kind=MediaKind.VOICE, media_type="audio/basic"
    )
    enc = EnvelopeEncryptor([Recipient.from_certificate(cert)], meta)
    return enc.update(b"x") + enc.finalize()

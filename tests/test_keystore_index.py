"""The keystore's lookups by certificate ID and public key ID (``find``, ``entry_for``,
``private_key_for``) answer from an index kept with its entries: the right entry in
a keystore of hundreds, after imports, a renewal (a new certificate for the same key)
and its rotation, a reload from disk and a re-read by the resolver."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from recstream.format import MediaKind, RecipientStanza
from recstream.keystore import EntryState, Keystore, KeystoreResolver, create, load, update
from recstream.pki.certs import public_key_id
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    open_envelope,
    recording_cert,
    seal,
)
from tests.pki_helpers import make_cert, name

KINDS = (MediaKind.VOICE, MediaKind.SCREEN)
TENANTS = 25  # x 8 certificates x 2 kinds: 400 entries


def _stanza(cert_id: str | bytes, key_id: bytes) -> RecipientStanza:
    cid = bytes.fromhex(cert_id) if isinstance(cert_id, str) else cert_id
    return RecipientStanza(cid, key_id, b"\0" * 256)


def _renewed(old: Cert, label: str, days: float = 730) -> Cert:
    """A new certificate for ``old``'s key (a renewal that keeps the key pair)."""
    cert = make_cert(
        name(f"recording {label}"), old.key,
        not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=days),
    )  # fmt: skip
    return Cert(label, old.key, cert)


def _check_index(ks: Keystore) -> None:
    """Every lookup agrees with a scan of the entries in order (the first match wins)."""
    entries = ks.entries
    for e in entries:
        first_cert = next(x for x in entries if x.cert_id == e.cert_id)
        first_key = next(x for x in entries if x.key_id == e.key_id)
        assert ks.find(e.cert_id) is first_cert
        assert ks.entry_for(_stanza(e.cert_id, e.key_id)) is first_cert
        assert ks.entry_for(_stanza(os.urandom(32), e.key_id)) is first_key  # the fallback


def _many(path: Path) -> list[Cert]:
    certs = [recording_cert(f"idx-{i}") for i in range(8)]
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        for t in range(TENANTS):
            for kind in KINDS:
                for c in certs:
                    ks.add(f"tenant{t:02d}", kind, c.cert, c.key, now=NOW)
    return certs


def test_lookups_in_a_keystore_of_hundreds_of_entries(tmp_path: Path) -> None:
    path = tmp_path / "ks.rsk"
    certs = _many(path)
    ks = load(path, PASSWORD)
    assert len(ks.entries) == TENANTS * len(KINDS) * len(certs)
    _check_index(ks)
    for c in certs:
        kid = public_key_id(c.key.public_key())
        by_cert = ks.private_key_for(_stanza(c.cert_id, kid))
        by_key = ks.private_key_for(_stanza(os.urandom(32), kid))
        assert by_cert is not None and by_key is not None
        assert by_cert.private_numbers() == c.key.private_numbers()
        assert by_key.private_numbers() == c.key.private_numbers()
        assert ks.entry_for(_stanza(c.cert_id, kid)).tenant == "tenant00"  # type: ignore[union-attr]
    stranger = recording_cert("idx-stranger")
    unknown = _stanza(stranger.cert_id, public_key_id(stranger.key.public_key()))
    assert ks.private_key_for(unknown) is None and ks.entry_for(unknown) is None
    assert ks.find(stranger.cert_id) is None
    # A recording sealed to one of them opens from the keystore (the real key ring path).
    envelope = seal(b"hello" * 100, [certs[5].recipient], tenant="tenant07")
    assert open_envelope(envelope, ks) == b"hello" * 100


def test_lookups_after_a_renewal_its_rotation_and_reloads(tmp_path: Path) -> None:
    """A certificate renewed with the same key: imported (inactive), then rotated to (the
    old one retired). Both certificate IDs find their own entry in its new state, the key
    ID finds the key, a recording sealed to a renewal never imported opens by key ID,
    and all of it holds in memory, after a reload and after the resolver's re-read."""
    path = tmp_path / "ks.rsk"
    certs = _many(path)
    old = certs[0]  # the active certificate of every tenant and kind
    renewed, never_imported = _renewed(old, "idx-0-renewed"), _renewed(old, "idx-0-again", 900)
    kid = public_key_id(old.key.public_key())
    resolver = KeystoreResolver(path, PASSWORD)
    before = resolver.current()
    assert before.find(renewed.cert_id) is None

    with update(path, PASSWORD) as ks:
        added = ks.add("tenant00", MediaKind.VOICE, renewed.cert, renewed.key, now=NOW)
        assert added.state is EntryState.INACTIVE
        assert ks.find(renewed.cert_id) is added
        _check_index(ks)
        ks.rotate("tenant00", MediaKind.VOICE, renewed.cert_id, now=NOW)
        # The very entries the index holds first for the old certificate (and its key)
        # and for the renewal were replaced: both are found in their new state.
        _check_index(ks)
        found_old, found_new = ks.find(old.cert_id), ks.find(renewed.cert_id)
        assert found_old is not None and found_old.state is EntryState.RETIRED
        assert found_new is not None and found_new.state is EntryState.ACTIVE
        assert ks.entry_for(_stanza(os.urandom(32), kid)) is found_old
        # Another tenant's entry of the same certificate is left as it was.
        other = ks.lookup(old.cert_id, tenant="tenant01", kind=MediaKind.VOICE)
        assert other.state is EntryState.ACTIVE

    for ks in (load(path, PASSWORD), resolver.current()):
        assert ks is not before
        _check_index(ks)
        found_old, found_new = ks.find(old.cert_id), ks.find(renewed.cert_id)
        assert found_old is not None and found_old.state is EntryState.RETIRED
        assert found_new is not None and found_new.state is EntryState.ACTIVE
        for cert_id in (old.cert_id, renewed.cert_id, never_imported.cert_id):
            key = ks.private_key_for(_stanza(cert_id, kid))
            assert key is not None and key.private_numbers() == old.key.private_numbers()
        for cert in (renewed, never_imported):
            envelope = seal(b"renewed" * 50, [cert.recipient], tenant="tenant00")
            assert open_envelope(envelope, ks) == b"renewed" * 50

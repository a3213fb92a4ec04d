"""Issue 18: batch decrypt and rewrap against real S3 (moto) and WebDAV (wsgidav) servers,
in place and from one store to another."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.format import Header, MediaKind, parse_header
from tests.conftest import Party
from tests.stores import StoreArea, StoreServer, area

RELS = [f"cc1/acme/2026-01-0{d}/r{i}/voice.rsv" for d in (1, 2) for i in range(3)]


def fill(store: StoreArea, party: Party) -> dict[str, bytes]:
    """Envelopes in the archive layout on the store; returns rel -> plaintext."""
    plain = {}
    for n, rel in enumerate(RELS):
        data = os.urandom(1000 + 40_000 * n)
        md = new_metadata(
            recording_id=rel.split("/")[3],
            tenant="acme",
            media_kind=MediaKind.VOICE,
            media_type="audio/basic",
        )
        enc = EnvelopeEncryptor([party.recipient], md)
        store.fs.pipe_file(f"{store.path}/{rel}", enc.update(data) + enc.finalize())
        plain[rel] = data
    return plain


def decrypt(party: Party, data: bytes) -> bytes:
    dec = EnvelopeDecryptor(party.keys)
    return dec.update(data) + dec.finalize()


@pytest.fixture
def keys(tmp_path: Path, alice: Party, bob: Party) -> dict[str, Path]:
    d = tmp_path / "keys"
    d.mkdir()
    a_cert, a_key = alice.write(d)
    b_cert, _ = bob.write(d)
    return {"key": a_key, "cert": a_cert, "to": b_cert}


@pytest.fixture
def other(
    store: StoreArea,
    s3_server: StoreServer,
    webdav_server: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
) -> StoreArea:
    """A prefix on the *other* kind of store (both servers' env set)."""
    return area(webdav_server if store.kind == "s3" else s3_server, monkeypatch)


def test_decrypt_from_one_store_to_another(
    store: StoreArea, other: StoreArea, keys: dict[str, Path], alice: Party
) -> None:
    plain = fill(store, alice)
    code = main(["batch", "decrypt", store.url, other.url, "--key", str(keys["key"])])
    assert code == 0
    got = other.find()
    assert sorted(got) == sorted(r.replace("voice.rsv", "voice.au") for r in RELS)
    for rel, data in plain.items():
        assert other.read(rel.replace("voice.rsv", "voice.au")) == data


def test_rewrap_in_place_on_the_store(
    store: StoreArea, keys: dict[str, Path], alice: Party, bob: Party
) -> None:
    plain = fill(store, alice)
    before = {rel: store.read(rel) for rel in RELS}
    code = main(
        ["batch", "rewrap", store.url, "--key", str(keys["key"]), "--to-cert", str(keys["to"])]
    )
    assert code == 0
    assert sorted(store.find()) == sorted(RELS)  # nothing beside them: no temporaries
    for rel in RELS:
        new = store.read(rel)
        old_h, new_h = parse_header(before[rel]), parse_header(new)
        assert isinstance(old_h, Header) and isinstance(new_h, Header)
        assert before[rel][old_h.length :] == new[new_h.length :]  # the body is untouched
        assert bob.cert_id in new_h.cert_ids
        assert decrypt(bob, new) == plain[rel]


def test_rewrap_to_another_store(
    store: StoreArea, other: StoreArea, keys: dict[str, Path], alice: Party, bob: Party
) -> None:
    plain = fill(store, alice)
    to = str(keys["to"])
    code = main(
        ["batch", "rewrap", store.url, other.url, "--key", str(keys["key"]), "--to-cert", to]
    )
    assert code == 0
    assert sorted(other.find()) == sorted(RELS)
    for rel in RELS:
        assert decrypt(bob, other.read(rel)) == plain[rel]
    # a second run finds every output committed and writes nothing again
    assert main(["batch", "decrypt", store.url, other.url, "--key", str(keys["key"])]) == 0


def test_batch_on_a_refusing_store_fails_clearly(
    webdav_server: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    keys: dict[str, Path],
    alice: Party,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = area(webdav_server, monkeypatch)
    fill(src, alice)
    assert webdav_server.readonly_url is not None
    key = str(keys["key"])
    code = main(["batch", "decrypt", src.url, f"{webdav_server.readonly_url}/out", "--key", key])
    err = capsys.readouterr().err
    assert code == 7, err
    assert "Traceback" not in err and webdav_server.password not in err

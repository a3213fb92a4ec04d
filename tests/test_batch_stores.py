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
def state(tmp_path: Path) -> list[str]:
    """The job manifest's place: remote jobs would otherwise keep it in the cwd."""
    return ["--state-dir", str(tmp_path / "state")]


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
    store: StoreArea, other: StoreArea, keys: dict[str, Path], alice: Party, state: list[str]
) -> None:
    plain = fill(store, alice)
    code = main(["batch", "decrypt", store.url, other.url, "--key", str(keys["key"]), *state])
    assert code == 0
    got = other.find()
    assert sorted(got) == sorted(r.replace("voice.rsv", "voice.au") for r in RELS)
    for rel, data in plain.items():
        assert other.read(rel.replace("voice.rsv", "voice.au")) == data


def test_a_rerun_skips_only_outputs_that_are_their_plaintext_on_the_store(
    store: StoreArea,
    other: StoreArea,
    keys: dict[str, Path],
    alice: Party,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rerun without the manifest finds every output already on the store: each is read
    back and compared with its recording's plaintext (skipped), and one that is not that
    plaintext fails (exit 7) and is left as it is."""
    plain = fill(store, alice)
    job = ["batch", "decrypt", store.url, other.url, "--key", str(keys["key"])]
    assert main([*job, "--state-dir", str(tmp_path / "one")]) == 0
    planted = RELS[1].replace("voice.rsv", "voice.au")
    other.fs.pipe_file(f"{other.path}/{planted}", b"not the recording")
    capsys.readouterr()
    assert main([*job, "--state-dir", str(tmp_path / "two")]) == 7
    err = capsys.readouterr().err
    assert "0 done, 5 already done, 0 busy (left alone), 1 failed" in err, err
    assert f"FAILED {RELS[1]}: output exists: " in err
    assert "and is not this recording's plaintext" in err
    assert other.read(planted) == b"not the recording"
    for rel, data in plain.items():
        if rel != RELS[1]:
            assert other.read(rel.replace("voice.rsv", "voice.au")) == data


def test_rewrap_in_place_on_the_store(
    store: StoreArea, keys: dict[str, Path], alice: Party, bob: Party, state: list[str]
) -> None:
    plain = fill(store, alice)
    before = {rel: store.read(rel) for rel in RELS}
    key, to = str(keys["key"]), str(keys["to"])
    code = main(["batch", "rewrap", store.url, "--key", key, "--to-cert", to, *state])
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
    store: StoreArea,
    other: StoreArea,
    keys: dict[str, Path],
    alice: Party,
    bob: Party,
    tmp_path: Path,
) -> None:
    plain = fill(store, alice)
    job = ["batch", "rewrap", store.url, other.url, "--key", str(keys["key"])]
    job += ["--to-cert", str(keys["to"])]
    assert main([*job, "--state-dir", str(tmp_path / "one")]) == 0
    assert sorted(other.find()) == sorted(RELS)
    outputs = {rel: other.read(rel) for rel in RELS}
    for rel in RELS:
        assert decrypt(bob, outputs[rel]) == plain[rel]
    # a second job (no manifest) finds every output committed and replaces none of them
    assert main([*job, "--state-dir", str(tmp_path / "two")]) == 0
    assert {rel: other.read(rel) for rel in RELS} == outputs


def test_batch_on_a_refusing_store_fails_clearly(
    webdav_server: StoreServer,
    monkeypatch: pytest.MonkeyPatch,
    keys: dict[str, Path],
    alice: Party,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    src = area(webdav_server, monkeypatch)
    fill(src, alice)
    assert webdav_server.readonly_url is not None
    key = str(keys["key"])
    dst = f"{webdav_server.readonly_url}/out"
    code = main(["batch", "decrypt", src.url, dst, "--key", key, "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 7, err
    assert "Traceback" not in err and webdav_server.password not in err

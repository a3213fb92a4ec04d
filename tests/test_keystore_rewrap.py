"""Re-wrap: header-only, body bytes identical, --drop removes access, atomic per file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recstream import durable
from recstream.envelope import Identity, IdentitySet, KeyRing
from recstream.errors import NoMatchingKeyError
from recstream.format import Header, MediaKind, parse_header
from recstream.keystore import create, load, update
from recstream.ops import DONE, FAILED, SKIPPED, NewRecipients, Outcome, Tree, rewrap_one
from recstream.ops.rewrap import for_tenant
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    env_without_keystore,
    no_partials,
    open_envelope,
    recording_cert,
    run_cli,
    seal,
)

PLAIN = os.urandom(5 * 16384 + 1234)


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    return {
        "OLD": recording_cert("OLD", start_days=-400, end_days=-20),  # compromised, expired
        "NEW": recording_cert("NEW", start_days=-1, end_days=365),
        "ESCROW": recording_cert("ESCROW", start_days=-1, end_days=365),
        "EXT": recording_cert("EXT", start_days=-1, end_days=365),
        "S": recording_cert("S", start_days=-1, end_days=365),
    }


@pytest.fixture
def ks_path(tmp_path: Path, certs: dict[str, Cert]) -> Path:
    path = tmp_path / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, certs["OLD"].cert, certs["OLD"].key, now=NOW)
        ks.add("acme", MediaKind.VOICE, certs["NEW"].cert, certs["NEW"].key, now=NOW)
        ks.add("acme", MediaKind.SCREEN, certs["S"].cert, certs["S"].key, now=NOW)
    return path


def _split(data: bytes) -> tuple[Header, bytes]:
    header = parse_header(data)
    assert isinstance(header, Header)
    return header, data[header.length :]


def rewrap_file(
    path: Path, keys: KeyRing, new: NewRecipients, drop: frozenset[str] = frozenset()
) -> Outcome:
    return rewrap_one(Tree(path.parent), path.name, None, keys, new, drop=drop)


def _only(cert: Cert) -> IdentitySet:
    """A key ring holding just this certificate's key."""
    return IdentitySet([Identity.from_private_key(cert.key, cert.cert)])


def test_rewrap_moves_a_recording_off_a_key(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    old, new, escrow = certs["OLD"], certs["NEW"], certs["ESCROW"]
    path = tmp_path / "call.rsv"
    path.write_bytes(seal(PLAIN, [old.recipient, escrow.recipient]))
    before_header, before_body = _split(path.read_bytes())
    ks = load(ks_path, PASSWORD)
    done = rewrap_file(path, ks, for_tenant(ks, "acme", now=NOW), frozenset({old.cert_id}))
    assert done.status == DONE
    assert done.info["before"] == [old.cert_id, escrow.cert_id]
    assert done.info["after"] == [escrow.cert_id, new.cert_id]
    after_header, after_body = _split(path.read_bytes())
    assert after_body == before_body  # the media bytes are identical
    assert after_header.context == before_header.context
    assert after_header.recipients[0] == before_header.recipients[1]  # escrow kept verbatim
    # The dropped key no longer opens the file; the new one and the escrow do.
    with pytest.raises(NoMatchingKeyError, match=new.cert_id):
        open_envelope(path.read_bytes(), _only(old))
    assert open_envelope(path.read_bytes(), _only(new)) == PLAIN
    assert open_envelope(path.read_bytes(), _only(escrow)) == PLAIN
    # Again: nothing to do, the file is untouched.
    stamp = path.stat().st_mtime_ns
    again = rewrap_file(path, ks, for_tenant(ks, "acme", now=NOW), frozenset({old.cert_id}))
    assert again.status == SKIPPED and path.stat().st_mtime_ns == stamp


def test_rewrap_refusals_leave_the_file_alone(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    ks = load(ks_path, PASSWORD)
    pick = for_tenant(ks, "acme", now=NOW)
    other = tmp_path / "other.rsv"
    other.write_bytes(seal(PLAIN, [certs["OLD"].recipient], tenant="beta"))
    whole = seal(PLAIN, [certs["OLD"].recipient])
    cut = tmp_path / "cut.rsv"
    cut.write_bytes(whole[: -(1234 + 16)])  # interrupted: no final segment
    torn = tmp_path / "torn.rsv"
    torn.write_bytes(whole[:-500])  # the final segment cut short
    foreign = tmp_path / "foreign.rsv"
    foreign.write_bytes(seal(PLAIN, [certs["EXT"].recipient]))
    for path, message in (
        (other, "belongs to tenant beta"),
        (cut, "not a complete recording"),
        (torn, "segment 5 failed"),
        (foreign, certs["EXT"].cert_id),
    ):
        before = path.read_bytes()
        done = rewrap_file(path, ks, pick, frozenset())
        assert done.status == FAILED and message in done.detail
        assert path.read_bytes() == before
    done = rewrap_file(foreign, ks, pick, frozenset({certs["NEW"].cert_id}))
    assert done.status == FAILED and "also be dropped" in done.detail
    assert no_partials(tmp_path) == []


def test_failure_while_copying_leaves_the_original(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "call.rsv"
    original = seal(PLAIN, [certs["OLD"].recipient])
    path.write_bytes(original)
    calls = 0
    real = durable.write_all

    def fail_second(fd: object, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr(durable, "write_all", fail_second)
    ks = load(ks_path, PASSWORD)
    done = rewrap_file(path, ks, for_tenant(ks, "acme", now=NOW), frozenset())
    assert done.status == FAILED and "No space" in done.detail
    assert path.read_bytes() == original and no_partials(tmp_path) == []


def test_a_corrupted_copy_is_caught_before_replacing(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If what reaches the temporary file differs from the original body (a bad disk,
    a bug), the read-back comparison refuses to replace the original."""
    path = tmp_path / "call.rsv"
    original = seal(PLAIN, [certs["OLD"].recipient])
    path.write_bytes(original)
    real = durable.write_all
    calls = 0

    def corrupt_body(fd: object, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:  # the header goes first, then the body
            data = bytes([data[0] ^ 1]) + data[1:]
        real(fd, data)  # type: ignore[arg-type]

    monkeypatch.setattr(durable, "write_all", corrupt_body)
    ks = load(ks_path, PASSWORD)
    done = rewrap_file(path, ks, for_tenant(ks, "acme", now=NOW), frozenset())
    assert done.status == FAILED and "differs from the original" in done.detail
    assert path.read_bytes() == original and no_partials(tmp_path) == []


def test_rewrap_cli(
    ks_path: Path,
    certs: dict[str, Cert],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_without_keystore(monkeypatch, tmp_path / "home")
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    old, new, ext = certs["OLD"], certs["NEW"], certs["EXT"]
    archive = tmp_path / "archive"
    (archive / "day1").mkdir(parents=True)
    bodies = {}
    for i in range(4):
        p = archive / "day1" / f"{i}.rsv"
        kind = MediaKind.SCREEN if i == 3 else MediaKind.VOICE
        p.write_bytes(seal(PLAIN[: 1000 * (i + 1)], [old.recipient], kind=kind))
        bodies[p] = _split(p.read_bytes())[1]
    bad = archive / "bad.rsv"
    bad.write_bytes(b"not an envelope")
    ks_args = ["--keystore", ks_path, "--password-file", pw]
    code, _, err = run_cli(
        capsys, "rewrap", *ks_args, "--tenant", "acme", "--drop", old.cert_id, archive
    )
    assert code == 7 and "re-wrapped 4 of 5" in err and "bad.rsv: not a recstream envelope" in err
    ks = load(ks_path, PASSWORD)
    for p, body in bodies.items():
        header, after = _split(p.read_bytes())
        assert after == body
        want = certs["S"] if p.name == "3.rsv" else new  # each file's own media kind
        assert header.cert_ids == (want.cert_id,)
        assert open_envelope(p.read_bytes(), ks) == PLAIN[: 1000 * (int(p.stem) + 1)]
    # --to-cert an external certificate: the keystore keeps no key for it, so warn.
    cert_file, _ = ext.write(tmp_path)
    one = archive / "day1" / "0.rsv"
    code, _, err = run_cli(
        capsys, "rewrap", *ks_args, "--to-cert", cert_file, "--drop", new.cert_id, one
    )
    assert code == 0 and "warning: the keystore holds no key" in err
    assert _split(one.read_bytes())[0].cert_ids == (ext.cert_id,)
    assert open_envelope(one.read_bytes(), _only(ext)) == PLAIN[:1000]
    # Refusals
    for argv, message in (
        (["--tenant", "acme", "--drop", "abcd", one], "8+ hex digits"),
        (["--tenant", "acme", "--drop", "0123456789", one], "no such certificate"),
        (["--to-cert", cert_file, "--drop", ext.cert_id, one], "new recipient"),
        (["--tenant", "acme", tmp_path / "missing.rsv"], "not found"),
        (["--tenant", "acme", "--to-cert", cert_file, one], "not allowed with"),
    ):
        code, _, err = run_cli(capsys, "rewrap", *ks_args, *argv)
        assert code == 2 and message in err, err
    expired_file, _ = old.write(tmp_path)
    code, _, err = run_cli(capsys, "rewrap", *ks_args, "--to-cert", expired_file, one)
    assert code == 4 and "expired" in err


def test_rewrap_through_a_symlink_replaces_the_file_not_the_link(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    real = tmp_path / "store" / "call.rsv"
    real.parent.mkdir()
    real.write_bytes(seal(PLAIN, [certs["OLD"].recipient]))
    link = tmp_path / "link.rsv"
    link.symlink_to(real)
    ks = load(ks_path, PASSWORD)
    done = rewrap_file(link, ks, for_tenant(ks, "acme", now=NOW))
    assert done.status == DONE, done.detail
    assert link.is_symlink() and link.resolve() == real
    assert _split(real.read_bytes())[0].cert_ids == (certs["OLD"].cert_id, certs["NEW"].cert_id)
    assert no_partials(tmp_path) == []

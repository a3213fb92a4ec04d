"""Batch jobs on a local Dask cluster: audit, rewrap, decrypt, and resuming after a kill."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, Recipient, new_metadata
from recstream.format import Header, MediaKind, parse_header
from tests.conftest import Party

N = 1200  # "a few thousand" in spirit; kept CI-sized


def expired_copy(party: Party) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(party.key.public_key())
        .serial_number(7)
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=35))
        .sign(party.key, hashes.SHA256())
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    """One local Dask cluster (2 worker processes) for the whole module, started once.

    The jobs reach it the way a real deployment does, with --scheduler; a cluster
    per job would cost each test the start-up of a scheduler and two workers.
    """
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",  # any free port: never a "port 8787 in use" warning
        silence_logs=50,
    ) as c:  # type: ignore[no-untyped-call]
        yield ["--scheduler", c.scheduler_address]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("archive")
    a, b, c, d = Party("cert-A"), Party("cert-B-expired"), Party("cert-C-lost"), Party("cert-D")
    b_cert = expired_copy(b)
    b_rec = Recipient.from_certificate(b_cert)
    keys = root / "keys"
    keys.mkdir()
    for p in (a, b, d):
        p.write(keys)
    (keys / "cert-B-expired.cert.pem").write_bytes(b_cert.public_bytes(serialization.Encoding.PEM))
    src = root / "src"
    plain: dict[str, bytes] = {}
    owner: dict[str, str] = {}
    for i in range(N):
        who, rec = [("A", a.recipient), ("B", b_rec), ("C", c.recipient)][i % 3]
        tenant = ["acme", "globex"][i % 2]
        md = new_metadata(
            recording_id=f"r{i:05d}",
            tenant=tenant,
            media_kind=MediaKind.VOICE,
            media_type="audio/basic",
            created_ms=1_760_000_000_000,
        )
        enc = EnvelopeEncryptor([rec], md)
        data = os.urandom(700 + i % 900)
        rel = f"cc01/{tenant}/2025-10-09/r{i:05d}/voice.rsv"
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(enc.update(data) + enc.finalize())
        plain[rel], owner[rel] = data, who
    return {
        "root": root,
        "src": src,
        "keys": keys,
        "plain": plain,
        "owner": owner,
        "parties": {"A": a, "B": b, "C": c, "D": d},
    }


def key_args(keys: Path) -> list[str]:
    return [
        "--key",
        str(keys / "cert-A.key.pem"),
        "--key",
        str(keys / "cert-B-expired.key.pem"),
        "--cert",
        str(keys / "cert-A.cert.pem"),
        "--cert",
        str(keys / "cert-B-expired.cert.pem"),
    ]


def test_audit_finds_exactly_the_orphans(
    archive: dict,
    capsys: pytest.CaptureFixture[str],  # type: ignore[type-arg]
    cluster: list[str],
) -> None:
    code = main(
        [
            "batch",
            "audit",
            str(archive["src"]),
            *key_args(archive["keys"]),
            *cluster,
            "--unwrap",
            "--json",
            "--state-dir",
            str(archive["root"] / "st-audit"),
        ]
    )
    assert code == 7  # orphans found
    doc = json.loads(capsys.readouterr().out)
    owner = archive["owner"]
    assert {o["path"] for o in doc["orphans"]} == {p for p, w in owner.items() if w == "C"}
    assert {o["path"] for o in doc["expired_only"]} == {p for p, w in owner.items() if w == "B"}
    assert doc["counts"] == {"ok": N // 3, "orphan": N // 3, "expired": N // 3}
    assert sum(doc["per_tenant"].values()) == N
    assert sorted(doc["per_certificate"].values()) == [N // 3] * 3


def test_rewrap_moves_to_new_certificate_bodies_unchanged(
    archive: dict,
    tmp_path: Path,  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
    cluster: list[str],
) -> None:
    d: Party = archive["parties"]["D"]
    out = tmp_path / "rewrapped"
    code = main(
        [
            "batch",
            "rewrap",
            str(archive["src"]),
            str(out),
            *key_args(archive["keys"]),
            "--to-cert",
            str(archive["keys"] / "cert-D.cert.pem"),
            *cluster,
        ]
    )
    assert code == 7  # the C recordings cannot be re-wrapped: no key
    err = capsys.readouterr().err
    assert f"{N // 3} failed" in err
    for rel, who in list(archive["owner"].items())[:90]:
        if who == "C":
            assert not (out / rel).exists()
            continue
        old, new = (archive["src"] / rel).read_bytes(), (out / rel).read_bytes()
        ho, hn = parse_header(old), parse_header(new)
        assert isinstance(ho, Header) and isinstance(hn, Header)
        assert old[ho.length :] == new[hn.length :]  # body byte-identical
        assert d.cert_id in hn.cert_ids
        dec = EnvelopeDecryptor(d.keys)
        assert dec.update(new) + dec.finalize() == archive["plain"][rel]


def test_decrypt_outputs_match_originals(
    archive: dict,
    tmp_path: Path,  # type: ignore[type-arg]
    cluster: list[str],
) -> None:
    out = tmp_path / "plain"
    code = main(
        ["batch", "decrypt", str(archive["src"]), str(out), *key_args(archive["keys"]), *cluster]
    )
    assert code == 7
    for rel, data in archive["plain"].items():
        target = out / rel.replace("voice.rsv", "voice.au")
        if archive["owner"][rel] == "C":
            assert not target.exists()
        else:
            assert target.read_bytes() == data
            assert target.stat().st_mode & 0o077 == 0  # plaintext: owner-only
    assert not list(out.rglob("*.partial"))


def test_killed_job_resumes_and_processes_each_file_once(archive: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    out = tmp_path / "plain"
    cmd = [
        sys.executable,
        "-m",
        "recstream",
        "batch",
        "decrypt",
        str(archive["src"]),
        str(out),
        *key_args(archive["keys"]),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.DEVNULL)
    manifest_dir = out / ".recstream-batch"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = (
            sum(len(p.read_text().splitlines()) for p in manifest_dir.glob("*.jsonl"))
            if manifest_dir.exists()
            else 0
        )
        if lines >= 150:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers, mid-job
    proc.wait()
    first = [
        json.loads(line)
        for p in manifest_dir.glob("*.jsonl")
        for line in p.read_text().splitlines()
        if line.strip()
    ]
    assert 150 <= len(first) < N, "the kill should land in the middle of the job"
    assert main(cmd[3:]) == 7  # the C recordings fail, again
    records = [
        json.loads(line)
        for p in manifest_dir.glob("*.jsonl")
        for line in p.read_text().splitlines()
        if line.strip().endswith("}")
    ]
    done = [r["path"] for r in records if r["status"] == "done"]
    assert len(done) == len(set(done)), "a file was processed twice"
    good = {p for p, w in archive["owner"].items() if w != "C"}
    finished = set(done) | {r["path"] for r in records if r["status"] == "skipped"}
    assert finished == good
    for rel in good:
        assert (out / rel.replace("voice.rsv", "voice.au")).read_bytes() == archive["plain"][rel]
    assert not list(out.rglob("*.partial"))


def test_refusals(archive: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[type-arg]
    src = str(archive["src"])
    assert main(["batch", "audit", src]) == 2
    assert "--keystore KS or --key" in capsys.readouterr().err
    assert main(["batch", "audit", src, "--key", str(tmp_path / "missing.pem")]) == 2
    assert main(["batch", "rewrap", src, *key_args(archive["keys"])]) == 2
    assert "needs --to-cert" in capsys.readouterr().err
    # a missing input is a usage error (exit 2) for every command
    assert main(["batch", "audit", str(tmp_path / "nowhere"), *key_args(archive["keys"])]) == 2
    assert (
        main(
            [
                "batch",
                "decrypt",
                src,
                str(tmp_path / "o"),
                *key_args(archive["keys"]),
                "--workers",
                "0",
            ]
        )
        == 2
    )


def test_non_envelopes_are_reported_or_ignored(
    archive: dict,
    tmp_path: Path,  # type: ignore[type-arg]
    capsys: pytest.CaptureFixture[str],
    cluster: list[str],
) -> None:
    src = tmp_path / "mixed"
    src.mkdir()
    good = next(p for p, w in archive["owner"].items() if w == "A")
    (src / "good.rsv").write_bytes((archive["src"] / good).read_bytes())
    (src / "bogus.rsv").write_bytes(b"RIFF....WAVEfmt not an envelope")
    (src / "notes.txt").write_text("a file that is not a recording")
    code = main(["batch", "audit", str(src), *key_args(archive["keys"]), *cluster, "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 7
    assert doc["total"] == 2  # notes.txt is not listed
    assert doc["counts"] == {"ok": 1, "failed": 1}
    assert "not a recstream envelope" in doc["failures"][0]["reason"]


def test_in_place_rewrap_is_durable(
    archive: dict,
    tmp_path: Path,  # type: ignore[type-arg]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replacement is fsynced before the rename and the directory after it."""
    import shutil

    from recstream.batch import jobs
    from recstream.keysource import KeySource
    from recstream.ops import AddCertificates

    src = tmp_path / "inplace"
    rel = next(p for p, w in archive["owner"].items() if w == "A")
    (src / rel).parent.mkdir(parents=True)
    shutil.copy(archive["src"] / rel, src / rel)
    (src / rel).chmod(0o640)
    mode = (src / rel).stat().st_mode
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    keys = archive["keys"]
    spec = KeySource(key_files=(str(keys / "cert-A.key.pem"),))
    outcome = jobs.rewrap_task(
        str(src),
        rel,
        None,
        spec,
        AddCertificates(((keys / "cert-D.cert.pem").read_bytes(),)),
        frozenset(),
    )
    assert outcome.status == "done", outcome.detail
    assert len(synced) >= 2  # the new file, then its directory
    assert (src / rel).stat().st_mode == mode  # owner and mode kept, as rewrap always did
    assert not list((src / rel).parent.glob("*.partial"))

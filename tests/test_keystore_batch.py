"""``decrypt --out-dir`` with the keystore: a few hundred files, some tampered with."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from recstream.batch.local import expand_inputs, run_threads
from recstream.envelope import EnvelopeEncryptor, new_metadata
from recstream.format import Header, MediaKind, parse_header
from recstream.keystore import create, load, update
from recstream.ops import DONE, FAILED, Tree, decrypt_one, output_name
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    env_without_keystore,
    flip,
    no_partials,
    recording_cert,
    run_cli,
    seal,
)


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    return {
        "A": recording_cert("A", start_days=-400, end_days=-20),
        "B": recording_cert("B", start_days=-1, end_days=365),
        "X": recording_cert("X", start_days=-1, end_days=365),  # not in the keystore
    }


@pytest.fixture
def ks_path(tmp_path: Path, certs: dict[str, Cert]) -> Path:
    path = tmp_path / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        for label in ("A", "B"):
            ks.add("acme", MediaKind.VOICE, certs[label].cert, certs[label].key, now=NOW)
    return path


def _archive(
    root: Path, certs: dict[str, Cert], n: int
) -> tuple[dict[Path, bytes], dict[Path, str]]:
    """``n`` recordings under ``root`` (two levels), about one in twelve damaged.

    Returns the plaintext of every good file and the expected reason for every bad one.
    """
    rng = random.Random(5)
    good: dict[Path, bytes] = {}
    bad: dict[Path, str] = {}
    for i in range(n):
        day = root / f"2026-11-{1 + i % 3:02d}"
        day.mkdir(parents=True, exist_ok=True)
        path = day / f"call-{i:04d}.wav.rsv"
        plain = rng.randbytes(rng.choice([0, 1, 700, 16384, 16385, 40000]))
        cert = certs["A"] if i % 2 else certs["B"]  # expired A and current B alike
        data = seal(plain, [cert.recipient], rid=f"call-{i}")
        defect = i % 12 if i % 12 in (3, 7, 11) or i in (5, 50) else None
        if defect == 3:
            data, reason = flip(data, len(data) - 20), "failed authentication|commitment"
        elif defect == 7:
            data, reason = data[: len(data) - 17], "incomplete|failed authentication"
        elif defect == 11:
            data, reason = flip(data, 40), "header|at byte"
        elif i == 5:
            data, reason = seal(plain, [certs["X"].recipient]), "no key offered matches"
        elif i == 50:
            data, reason = b"RIFF....WAVEfmt ", "not a recstream envelope"
        path.write_bytes(data)
        if defect is None and i not in (5, 50):
            good[path] = plain
        else:
            bad[path] = reason
    return good, bad


def test_batch_decrypt_hundreds_with_some_tampered(
    ks_path: Path,
    certs: dict[str, Cert],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_without_keystore(monkeypatch, tmp_path / "home")
    archive, out = tmp_path / "archive", tmp_path / "out"
    good, bad = _archive(archive, certs, 240)
    assert len(good) == 178 and len(bad) == 62
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    code, _, err = run_cli(
        capsys, "decrypt", "--keystore", ks_path, "--password-file", pw, "--out-dir", out,
        "--jobs", "4", archive,
    )  # fmt: skip
    assert code == 7
    assert f"decrypted {len(good)} of 240 recordings" in err
    assert f"{len(bad)} not decrypted" in err
    for path, plain in good.items():
        target = out / path.parent.name / path.name.removesuffix(".rsv")
        assert target.read_bytes() == plain, path
    for path, reason in bad.items():
        target = out / path.parent.name / path.name.removesuffix(".rsv")
        assert not target.exists(), f"partial output left for {path}"
        line = next(line for line in err.splitlines() if line.strip().startswith(str(path)))
        assert re.search(reason, line), line
    assert no_partials(out) == []
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        {p.parent.name for p in good} | {p.name.removesuffix(".rsv") for p in good}
    )
    # Run again: what succeeded exists now, and is not overwritten without --force.
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(
        capsys, "decrypt", "--keystore", ks_path, "--password-file", pw, "--out-dir", out,
        archive,
    )  # fmt: skip
    assert code == 7 and "decrypted 0 of 240" in err and err.count("output exists") == len(good)
    assert stamp == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_one_output_naming_rule() -> None:
    """decrypt --out-dir and batch decrypt name outputs by the same rule."""
    recipient = recording_cert("N", start_days=-1, end_days=9).recipient

    def header(media_type: str) -> Header:
        md = new_metadata(recording_id="r", tenant="acme", media_kind=MediaKind.VOICE,
                          media_type=media_type)  # fmt: skip
        parsed = parse_header(EnvelopeEncryptor([recipient], md).take_header())
        assert isinstance(parsed, Header)
        return parsed

    wav, au, odd = header("audio/wav"), header("audio/basic"), header("x-unknown/zzz")
    assert output_name("call.wav.rsv", wav) == "call.wav"
    assert output_name("d/voice.rsv", au) == "d/voice.au"
    assert output_name("r1.rsv", odd) == "r1.bin"
    assert output_name("p", wav) == "p.decrypted"
    assert output_name(".rsv", wav) == ".rsv.decrypted"


def test_inputs_expand_and_two_inputs_never_share_an_output(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    for p in (tmp_path / "a" / "x.rsv", tmp_path / "x.rsv"):
        p.write_bytes(seal(p.parent.name.encode(), [certs["B"].recipient]))
    found = expand_inputs([tmp_path / "x.rsv", tmp_path / "a", tmp_path / "missing.rsv"])
    assert found == [(tmp_path, "x.rsv"), (tmp_path / "a", "x.rsv"), (tmp_path, "missing.rsv")]
    ks, out = load(ks_path, PASSWORD), Tree(tmp_path / "out")
    work = [
        lambda r=root, n=rel: decrypt_one(Tree(r), n, out, ks, existing="fail")
        for root, rel in found
    ]
    results = run_threads(work, jobs=2)
    assert sorted(r.status for r in results[:2]) == [DONE, FAILED]  # exclusive create
    assert "output exists" in next(r.detail for r in results[:2] if r.status == FAILED)
    assert results[2].status == FAILED and "input file not found" in results[2].detail
    assert (tmp_path / "out" / "x.wav").read_bytes() in (b"a", tmp_path.name.encode())


def test_run_reports_in_order_and_counts(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    ks = load(ks_path, PASSWORD)
    src, out = Tree(tmp_path), Tree(tmp_path / "out")
    names = []
    for i in range(20):
        (tmp_path / f"{i}.rsv").write_bytes(seal(bytes([i]) * 1000, [certs["B"].recipient]))
        names.append(f"{i}.rsv")
    names.append("nope.rsv")
    seen: list[str] = []
    work = [lambda n=n: decrypt_one(src, n, out, ks, existing="fail") for n in names]
    results = run_threads(work, jobs=3, on_result=lambda r: seen.append(r.path))
    assert [r.path for r in results] == names and sorted(seen) == sorted(names)
    assert [r.ok for r in results] == [True] * 20 + [False]
    assert all(r.bytes == 1000 for r in results[:20])
    with pytest.raises(ValueError, match="jobs"):
        run_threads(work, jobs=0)


class _TerminalCapture:
    """Wraps the captured stderr and says it is a terminal."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_progress_line_on_a_terminal_only(
    ks_path: Path,
    certs: dict[str, Cert],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env_without_keystore(monkeypatch, tmp_path / "home")
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    for i in range(3):
        (tmp_path / f"{i}.rsv").write_bytes(seal(b"x" * i, [certs["B"].recipient]))
    args = ["decrypt", "--keystore", ks_path, "--password-file", pw, "--out-dir"]
    files = [tmp_path / f"{i}.rsv" for i in range(3)]
    code, _, err = run_cli(capsys, *args, tmp_path / "o1", *files)
    assert code == 0 and "\r" not in err and "decrypted 3 of 3" in err
    monkeypatch.setattr(sys, "stderr", _TerminalCapture(sys.stderr))
    code, _, err = run_cli(capsys, *args, tmp_path / "o2", *files)
    assert code == 0
    assert "\rdecrypting [3/3] 3 done, 0 failed\n" in err
    code, _, err = run_cli(capsys, *args, tmp_path / "o2", "--skip-existing", *files)
    assert code == 0
    assert "\rdecrypting [3/3] 0 done, 0 failed, 3 skipped\n" in err
    code, _, err = run_cli(capsys, *args, tmp_path / "o3", "--jobs", "0", *files)
    assert code == 2 and "--jobs" in err
    code, _, err = run_cli(capsys, *args, tmp_path / "o3", tmp_path / "empty-dir-none")
    assert code == 7 and "input file not found" in err
    (tmp_path / "afile").write_bytes(b"")
    code, _, err = run_cli(capsys, *args, tmp_path / "afile", *files)
    assert code == 2 and "not a directory" in err

"""Batch decryption with the keystore: a few hundred files, some tampered with."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from recstream.format import MediaKind
from recstream.keystore import create, load, update
from recstream.keystore.batch import Item, output_name, plan, run
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
    assert f"{len(bad)} failed" in err
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


def test_plan_names_and_conflicts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.rsv").write_bytes(b"")
    (tmp_path / "x.rsv").write_bytes(b"")
    (tmp_path / "plain").write_bytes(b"")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "taken").write_bytes(b"")
    (tmp_path / "taken.rsv").write_bytes(b"")
    items = plan(
        [tmp_path / "x.rsv", tmp_path / "a", tmp_path / "plain", tmp_path / "missing.rsv",
         tmp_path / "taken.rsv", tmp_path / "x.rsv"],
        tmp_path / "out",
        force=False,
    )  # fmt: skip
    by = [(i.target.relative_to(tmp_path / "out").as_posix(), i.problem) for i in items]
    assert by[0] == ("x", None)
    # a/x.rsv, found by walking a/, keeps its path relative to a/: out/x again.
    assert by[1][0] == "x" and by[1][1] is not None and "another input" in by[1][1]
    assert output_name("call.wav.rsv") == "call.wav" and output_name("p") == "p.decrypted"
    assert output_name(".rsv") == ".rsv.decrypted"
    assert by[2] == ("plain.decrypted", None)
    assert by[3][1] == "input file not found"
    assert by[4][1] is not None and "output exists" in by[4][1]
    assert by[5][1] is not None and "another input" in by[5][1]


def test_run_reports_in_order_and_counts(
    ks_path: Path, certs: dict[str, Cert], tmp_path: Path
) -> None:
    ks = load(ks_path, PASSWORD)
    items = []
    for i in range(20):
        src = tmp_path / f"{i}.rsv"
        src.write_bytes(seal(bytes([i]) * 1000, [certs["B"].recipient]))
        items.append(Item(src, tmp_path / "out" / f"{i}"))
    items.append(Item(tmp_path / "nope", tmp_path / "out" / "nope", "input file not found"))
    seen: list[str] = []
    results = run(items, ks, jobs=3, on_result=lambda r: seen.append(r.item.source.name))
    assert [r.item for r in results] == items and sorted(seen) == sorted(
        i.source.name for i in items
    )
    assert [r.ok for r in results] == [True] * 20 + [False]
    assert all(r.plaintext_bytes == 1000 for r in results[:20])
    with pytest.raises(ValueError, match="jobs"):
        run(items, ks, jobs=0)


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
    code, _, err = run_cli(capsys, *args, tmp_path / "o3", "--jobs", "0", *files)
    assert code == 2 and "--jobs" in err
    code, _, err = run_cli(capsys, *args, tmp_path / "o3", tmp_path / "empty-dir-none")
    assert code == 7 and "input file not found" in err
    (tmp_path / "afile").write_bytes(b"")
    code, _, err = run_cli(capsys, *args, tmp_path / "afile", *files)
    assert code == 2 and "not a directory" in err

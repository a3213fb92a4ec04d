"""Group commit for ``decrypt --out-dir`` and batch decrypt (issue 20).

Outputs are written, fsynced and named by the workers; the directory fsync that
makes their names durable is done once per batch by the scheduler's thread, and
nothing is reported done before it.  Proved here by the order of the real calls
(in process) and by SIGKILLing real ``recstream`` processes mid-batch: every
output present is complete and authenticated, nothing partial is under a final
name, every file a batch manifest calls done is on disk, and a rerun finishes the
rest.  Readiness is observed (outputs, manifest lines), never waited for by time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recstream import durable
from recstream.batch.local import run_threads
from recstream.envelope import Identity, IdentitySet
from recstream.format import Header, parse_header
from recstream.ops import DONE, FAILED, Outcome, Tree, decrypt_one
from tests.keystore_helpers import Cert, flip, recording_cert, run_cli, seal

HANG_GUARD = 120.0  # seconds: only ever reached if something hangs


@pytest.fixture(scope="module")
def cert() -> Cert:
    return recording_cert("G")


def _recordings(src: Path, cert: Cert, n: int, size: int = 20_000) -> dict[str, bytes]:
    """``n`` envelopes ``rNNN.wav.rsv`` under ``src``; returns output name -> plaintext."""
    src.mkdir(parents=True, exist_ok=True)
    plain: dict[str, bytes] = {}
    for i in range(n):
        data = os.urandom(size + i)
        (src / f"r{i:03d}.wav.rsv").write_bytes(seal(data, [cert.recipient], rid=f"r{i}"))
        plain[f"r{i:03d}.wav"] = data
    return plain


def _keyring(cert: Cert) -> IdentitySet:
    return IdentitySet([Identity.from_private_key(cert.key, cert.cert)])


def _check_outputs(out: Path, plain: dict[str, bytes]) -> set[str]:
    """Every final name in ``out`` is an expected output, complete and authentic (its
    bytes are exactly the recording's); returns the names present."""
    present = set()
    for p in out.rglob("*"):
        if p.is_dir() or durable.is_temporary(p.name):
            continue
        rel = p.relative_to(out).as_posix()
        assert rel in plain, f"unexpected file under a final name: {rel}"
        assert p.read_bytes() == plain[rel], f"{rel} is partial or not what was recorded"
        present.add(rel)
    return present


# --- in process: the order of the real calls ----------------------------------------------


def test_outcomes_are_reported_only_after_their_directory_fsync(
    tmp_path: Path, cert: Cert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each output's commit, then a fsync of its directory, then its report; new
    subdirectories are made durable in their parents before anything is written."""
    plain = _recordings(tmp_path / "src" / "day1", cert, 12)
    events: list[tuple[str, str]] = []
    lock = threading.Lock()

    real_fsync_dir, real_commit = durable.fsync_dir, durable._commit

    def fsync_dir(directory: Path) -> None:
        real_fsync_dir(directory)
        with lock:
            events.append(("fsync", str(directory)))

    def commit(fd: int, named: Path | None, target: Path, *, replace: bool) -> None:
        real_commit(fd, named, target, replace=replace)
        with lock:
            events.append(("commit", str(target)))

    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    monkeypatch.setattr(durable, "_commit", commit)
    src, out = Tree(tmp_path / "src"), Tree(tmp_path / "out")
    group, keys = durable.CommitGroup(), _keyring(cert)
    work = [
        lambda rel=f"day1/{name}.rsv": decrypt_one(
            src, rel, out, keys, existing="fail", group=group
        )
        for name in plain
    ]

    def report(outcome: Outcome) -> None:
        with lock:
            events.append(("report", str(tmp_path / "out" / outcome.output)))

    results = run_threads(work, jobs=3, on_result=report, group=group)
    assert [r.status for r in results] == [DONE] * len(plain)
    for target in {e[1] for e in events if e[0] == "commit"}:
        committed = events.index(("commit", target))
        reported = events.index(("report", target))
        synced = [
            i for i, e in enumerate(events)
            if e == ("fsync", str(Path(target).parent)) and committed < i < reported
        ]  # fmt: skip
        assert synced, f"{target} was reported before its directory was fsynced: {events}"
    # out/ and out/day1 were created: each made durable in its parent before any output.
    first_commit = next(i for i, e in enumerate(events) if e[0] == "commit")
    assert ("fsync", str(tmp_path)) in events[:first_commit]
    assert ("fsync", str(tmp_path / "out")) in events[:first_commit]
    assert _check_outputs(tmp_path / "out", {f"day1/{k}": v for k, v in plain.items()}) == {
        f"day1/{k}" for k in plain
    }


def test_a_group_holds_back_every_report_until_sync(tmp_path: Path) -> None:
    """run_threads calls ``sync`` before reporting any outcome whose commit it follows;
    a bug in an operation propagates, and nothing unsynced is reported."""
    committed: set[int] = set()
    synced: set[int] = set()

    class Recording(durable.CommitGroup):
        def sync(self) -> int:
            snapshot = set(committed)
            n = super().sync()
            synced.update(snapshot)
            return n

    group = Recording()

    def op(i: int) -> Callable[[], Outcome]:
        def run() -> Outcome:
            group.add(tmp_path)
            committed.add(i)
            return Outcome(str(i), DONE)

        return run

    seen: list[int] = []

    def check(o: Outcome) -> None:
        assert int(o.path) in synced, f"outcome {o.path} reported before its sync"
        seen.append(int(o.path))

    results = run_threads([op(i) for i in range(40)], jobs=4, on_result=check, group=group)
    assert [r.path for r in results] == [str(i) for i in range(40)]
    assert sorted(seen) == list(range(40))

    def broken() -> Outcome:
        msg = "a bug in an operation"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="a bug in an operation"):
        run_threads([op(100), broken, op(101)], jobs=2, group=group)
    with pytest.raises(ValueError, match="at least 1"):
        run_threads([op(0)], jobs=0, group=group)
    assert run_threads([], group=group) == []


# --- real processes, real SIGKILL --------------------------------------------------------


def _cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "recstream", *map(str, args)]


def _env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    e["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    return e


def _wait_until(what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not cond():
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"the process ended before {what}: {err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def _outputs(out: Path) -> int:
    try:
        return sum(1 for p in out.iterdir() if not durable.is_temporary(p.name))
    except FileNotFoundError:
        return 0


def _stalled_inputs(src: Path, mid: int) -> tuple[list[Path], list[Path]]:
    """The inputs under ``src`` in order, with a FIFO first and another before ``r{mid}``.

    With two workers the first blocks on the first FIFO at once and the second decrypts
    ``r000``..``r{mid-1}`` and then blocks on the other: the batch stops with exactly
    ``mid`` outputs, however slow or loaded the machine, for the kill to land on.
    """
    first, second = src / "a-stall.wav.rsv", src / f"r{mid:03d}-stall.wav.rsv"
    files = sorted(src.iterdir())
    for fifo in (first, second):
        os.mkfifo(fifo)
    return [first, *files[:mid], second, *files[mid:]], [first, second]


def _killed_when_stalled(
    args: list[object],
    tmp_path: Path,
    out: Path,
    plain: dict[str, bytes],
    mid: int,
    also: Callable[[], bool] = lambda: True,
) -> set[str]:
    """Run the CLI on :func:`_stalled_inputs` until both workers stall (``mid`` outputs,
    and ``also()``), SIGKILL it; return the outputs present: exactly ``mid``, each whole
    and authentic."""
    proc = subprocess.Popen(_cli(*args), env=_env(tmp_path), stderr=subprocess.PIPE)
    _wait_until("both workers stalled", lambda: _outputs(out) >= mid and also(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=HANG_GUARD)
    assert proc.returncode == -signal.SIGKILL
    present = _check_outputs(out, plain)
    assert len(present) == mid
    return present


def _unstall(stalls: list[Path], plain: dict[str, bytes], cert: Cert) -> None:
    """Each FIFO replaced by a real recording, added to ``plain``."""
    for fifo in stalls:
        fifo.unlink()
        name = fifo.name.removesuffix(".rsv")
        plain[name] = os.urandom(5000)
        fifo.write_bytes(seal(plain[name], [cert.recipient]))


def test_sigkill_mid_batch_leaves_only_complete_outputs_and_a_rerun_finishes(
    tmp_path: Path, cert: Cert
) -> None:
    """``decrypt --out-dir`` SIGKILLed while files are being committed: every output
    present is whole and authentic, nothing partial has a final name; ``--force``
    reruns it to the end; a tampered file is refused with nothing left for it."""
    _, key = cert.write(tmp_path)
    src, out = tmp_path / "src", tmp_path / "out"
    plain = _recordings(src, cert, 60)
    inputs, stalls = _stalled_inputs(src, 30)
    args = ["decrypt", "--key", key, "--jobs", 2, "--out-dir", out, *inputs]
    _killed_when_stalled(args, tmp_path, out, plain, 30)

    # The rerun: the stalls replaced by real recordings, one file tampered with.
    _unstall(stalls, plain, cert)
    bad = src / "r059.wav.rsv"
    bad.write_bytes(flip(bad.read_bytes(), len(bad.read_bytes()) - 40))
    del plain["r059.wav"]
    again = subprocess.run(_cli("decrypt", "--key", key, "--force", "--out-dir", out, *inputs),
                           env=_env(tmp_path), capture_output=True, timeout=HANG_GUARD,
                           check=False)  # fmt: skip
    err = again.stderr.decode()
    assert again.returncode == 7, err
    assert f"decrypted {len(plain)} of {len(plain) + 1} recordings" in err
    assert "r059.wav.rsv" in err and "Traceback" not in err
    assert _check_outputs(out, plain) == set(plain)
    assert not [p for p in out.iterdir() if durable.is_temporary(p.name)]


def test_sigkill_mid_batch_job_the_manifest_lists_only_durable_outputs(
    tmp_path: Path, cert: Cert
) -> None:
    """``batch decrypt`` (in process, group commit) SIGKILLed mid-job: every file its
    manifest calls done has its complete output; the rerun skips those and finishes."""
    _, key = cert.write(tmp_path)
    src, out, state = tmp_path / "src", tmp_path / "out", tmp_path / "state"
    plain = _recordings(src, cert, 80, size=4000)
    _, stalls = _stalled_inputs(src, 40)  # the job walks the tree in sorted order
    args = ["batch", "decrypt", "--key", key, "--state-dir", state, src, out]

    def manifest() -> list[dict[str, object]]:
        lines = []
        for f in state.glob("*.jsonl"):
            for line in f.read_text().splitlines():
                try:
                    lines.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line being written
        return lines

    present = _killed_when_stalled(args, tmp_path, out, plain, 40, also=lambda: bool(manifest()))
    claimed = {str(rec["output"]) for rec in manifest() if rec["status"] == DONE}
    assert claimed, "the manifest said nothing was done"
    assert claimed <= present, f"done in the manifest but not on disk: {claimed - present}"

    _unstall(stalls, plain, cert)
    again = subprocess.run(_cli(*args), env=_env(tmp_path), capture_output=True,
                           timeout=HANG_GUARD, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()
    assert _check_outputs(out, plain) == set(plain)
    final = manifest()
    assert {str(r["output"]) for r in final if r["status"] in (DONE, "skipped")} == set(plain)
    assert not [r for r in final if r["status"] == FAILED]


def test_a_tampered_header_is_never_skipped_as_already_decrypted(
    tmp_path: Path, cert: Cert
) -> None:
    """The key and the header MAC come before anything is decided from the header (the
    output's name comes from its media type): a tampered envelope whose output name
    exists fails as tampered in every mode, never "skipped: already decrypted"; an
    untouched finished file is still skipped or refused; a file cut inside its header
    is refused with the precise reason."""
    plain = _recordings(tmp_path / "src", cert, 2)
    keys = _keyring(cert)
    src, out = Tree(tmp_path / "src"), Tree(tmp_path / "out")
    first = decrypt_one(src, "r000.wav.rsv", out, keys, existing="fail")
    assert first.status == DONE
    skipped = decrypt_one(src, "r000.wav.rsv", out, keys, existing="skip")
    refused = decrypt_one(src, "r000.wav.rsv", out, keys, existing="fail")
    assert (skipped.status, skipped.output) == ("skipped", "r000.wav")
    assert refused.status == FAILED and "output exists" in refused.detail

    envelope = tmp_path / "src" / "r000.wav.rsv"
    good = envelope.read_bytes()
    parsed = parse_header(good[:65536])
    assert isinstance(parsed, Header)
    damaged = bytearray(good)
    damaged[parsed.length - 1] ^= 1  # the header MAC's last byte
    envelope.write_bytes(damaged)
    for mode in ("skip", "fail"):
        got = decrypt_one(src, "r000.wav.rsv", out, keys, existing=mode)  # type: ignore[arg-type]
        assert got.status == FAILED and "authentication" in got.detail, (mode, got)
    assert (tmp_path / "out" / "r000.wav").read_bytes() == plain["r000.wav"]

    cut = tmp_path / "src" / "r001.wav.rsv"
    cut.write_bytes(cut.read_bytes()[:200])
    bad = decrypt_one(src, "r001.wav.rsv", out, keys, existing="fail")
    assert bad.status == FAILED and "header" in bad.detail, bad.detail
    assert not (tmp_path / "out" / "r001.wav").exists()


def test_skip_means_this_recordings_own_plaintext_is_there(tmp_path: Path, cert: Cert) -> None:
    """``existing="skip"`` decrypts the envelope again (every segment authenticated) and
    compares it with what is at the output's name: only this recording's own plaintext,
    byte for byte, is "already decrypted" (security review, round 4).  Another input's
    output under the same name, a planted file, a directory, a link or a FIFO fail with
    the reason; so does a tampered or truncated body whose output is there."""
    keys = _keyring(cert)
    src, out = Tree(tmp_path / "src"), Tree(tmp_path / "out")
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "b").mkdir()
    one, two = os.urandom(50_000), os.urandom(50_000)
    (tmp_path / "src" / "a" / "call.wav.rsv").write_bytes(seal(one, [cert.recipient]))
    (tmp_path / "src" / "b" / "call.wav.rsv").write_bytes(seal(two, [cert.recipient]))
    # The first input's output, then a second input of the same output name.
    assert decrypt_one(src, "a/call.wav.rsv", out, keys, existing="skip").status == DONE
    (tmp_path / "out" / "b").mkdir()
    os.link(tmp_path / "out" / "a" / "call.wav", tmp_path / "out" / "b" / "call.wav")
    got = decrypt_one(src, "b/call.wav.rsv", out, keys, existing="skip")
    assert got.status == FAILED and "is not this recording's plaintext" in got.detail, got
    assert decrypt_one(src, "a/call.wav.rsv", out, keys, existing="skip").status == "skipped"

    target = tmp_path / "elsewhere"
    target.write_bytes(one)
    for planted, reason in (
        (lambda p: p.write_bytes(one[:-1]), "is not this recording's plaintext"),  # short
        (lambda p: p.write_bytes(one + b"x"), "is longer than this recording's plaintext"),
        (lambda p: p.write_bytes(b""), "is not this recording's plaintext"),
        (lambda p: p.mkdir(), "is not a regular file"),
        (os.mkfifo, "is not a regular file"),
        (lambda p: p.symlink_to(target), "is a symbolic link"),
        (lambda p: p.symlink_to(tmp_path / "nowhere"), "is a symbolic link"),
    ):
        at = tmp_path / "out" / "a" / "call.wav"
        if at.is_dir() and not at.is_symlink():
            at.rmdir()
        elif at.exists() or at.is_symlink():
            at.unlink()
        planted(at)
        got = decrypt_one(src, "a/call.wav.rsv", out, keys, existing="skip")
        assert got.status == FAILED and reason in got.detail, (reason, got)
    assert target.read_bytes() == one  # nothing written through the link

    # A finished output, then its envelope's body damaged or cut: not "already decrypted".
    (tmp_path / "out" / "a" / "call.wav").unlink()
    assert decrypt_one(src, "a/call.wav.rsv", out, keys, existing="skip").status == DONE
    envelope = tmp_path / "src" / "a" / "call.wav.rsv"
    good = envelope.read_bytes()
    for damaged in (flip(good, len(good) - 20), good[: len(good) // 2]):
        envelope.write_bytes(damaged)
        got = decrypt_one(src, "a/call.wav.rsv", out, keys, existing="skip")
        assert got.status == FAILED and got.status != "skipped", got
    envelope.write_bytes(good)
    assert decrypt_one(src, "a/call.wav.rsv", out, keys, existing="skip").status == "skipped"
    assert (tmp_path / "out" / "a" / "call.wav").read_bytes() == one


def test_group_commit_with_named_temporaries(
    tmp_path: Path, cert: Cert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where O_TMPFILE cannot be used, the named temporaries take the same path: whole
    outputs under their names, none left behind, an existing output refused."""
    monkeypatch.setattr(durable, "USE_TMPFILE", False)
    plain = _recordings(tmp_path / "src", cert, 8)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "r003.wav").write_bytes(b"an earlier output")
    src, out = Tree(tmp_path / "src"), Tree(tmp_path / "out")
    group, keys = durable.CommitGroup(), _keyring(cert)
    work = [
        lambda rel=f"{name}.rsv": decrypt_one(src, rel, out, keys, existing="fail", group=group)
        for name in plain
    ]
    results = {r.path: r for r in run_threads(work, jobs=2, group=group)}
    assert results["r003.wav.rsv"].status == FAILED
    assert "output exists" in results["r003.wav.rsv"].detail
    assert (tmp_path / "out" / "r003.wav").read_bytes() == b"an earlier output"
    del plain["r003.wav"]
    assert {p for p, r in results.items() if r.status == DONE} == {f"{n}.rsv" for n in plain}
    assert _check_outputs(tmp_path / "out", {**plain, "r003.wav": b"an earlier output"}) == {
        *plain,
        "r003.wav",
    }
    assert not [p for p in (tmp_path / "out").iterdir() if durable.is_temporary(p.name)]


# --- decrypt --out-dir --skip-existing: resuming a batch ---------------------------------


def _header_mac_flipped(data: bytes) -> bytes:
    """``data`` with the last byte of its header (the header MAC) flipped: the output
    name (from the media type) is unchanged, the header no longer authenticates."""
    parsed = parse_header(data[:65536])
    assert isinstance(parsed, Header)
    return flip(data, parsed.length - 1)


def test_skip_existing_resumes_after_sigkill_decrypting_only_what_was_missing(
    tmp_path: Path, cert: Cert
) -> None:
    """``decrypt --out-dir`` SIGKILLed mid-batch, then rerun with ``--skip-existing``:
    the outputs the killed run finished are kept untouched (same inode, same mtime),
    only the missing ones are decrypted; an input whose output exists but whose header
    was tampered with fails as tampered (exit 7), never "skipped"; once it is put back,
    a third run skips everything and exits 0."""
    _, key = cert.write(tmp_path)
    src, out = tmp_path / "src", tmp_path / "out"
    plain = _recordings(src, cert, 40)
    inputs, stalls = _stalled_inputs(src, 20)
    base = ["decrypt", "--key", key, "--jobs", 2, "--out-dir", out]
    present = _killed_when_stalled([*base, *inputs], tmp_path, out, plain, 20)

    _unstall(stalls, plain, cert)
    tampered_out = sorted(present)[0]
    tampered = src / f"{tampered_out}.rsv"
    original = tampered.read_bytes()
    tampered.write_bytes(_header_mac_flipped(original))

    def stamps() -> dict[str, tuple[int, int]]:
        return {n: ((out / n).stat().st_ino, (out / n).stat().st_mtime_ns) for n in present}

    before = stamps()

    again = subprocess.run(_cli(*base, "--skip-existing", *inputs), env=_env(tmp_path),
                           capture_output=True, timeout=HANG_GUARD, check=False)  # fmt: skip
    err = again.stderr.decode()
    assert again.returncode == 7, err
    missing = len(plain) - len(present)
    assert f"decrypted {missing} of {len(plain)} recordings" in err, err
    assert f"{len(present) - 1} skipped, their outputs exist" in err, err
    assert "1 not decrypted" in err and "Traceback" not in err
    lines = [line for line in err.splitlines() if str(tampered) in line]
    assert len(lines) == 1 and "authentication" in lines[0] and "skipped" not in lines[0], lines
    for name in present - {tampered_out}:
        assert f"{src / name}.rsv: skipped: already decrypted ({out / name})" in err
    assert _check_outputs(out, plain) == set(plain)
    assert stamps() == before  # the finished outputs were left, not rewritten
    assert not [p for p in out.iterdir() if durable.is_temporary(p.name)]

    tampered.write_bytes(original)
    third = subprocess.run(_cli(*base, "--skip-existing", *inputs), env=_env(tmp_path),
                           capture_output=True, timeout=HANG_GUARD, check=False)  # fmt: skip
    err = third.stderr.decode()
    assert third.returncode == 0, err
    assert f"decrypted 0 of {len(plain)} recordings" in err
    assert f"{len(plain)} skipped, their outputs exist" in err
    assert _check_outputs(out, plain) == set(plain)


def test_a_skip_is_reported_only_after_its_directory_fsync(
    tmp_path: Path, cert: Cert, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A skipped output's name may come from a run killed before its directory fsync:
    like a commit, the skip is reported only after the group fsynced that directory."""
    plain = _recordings(tmp_path / "src" / "d", cert, 4)
    src, out, keys = Tree(tmp_path / "src"), Tree(tmp_path / "out"), _keyring(cert)
    for name in plain:
        assert decrypt_one(src, f"d/{name}.rsv", out, keys, existing="fail").status == DONE
    events: list[str] = []
    real_fsync_dir = durable.fsync_dir

    def fsync_dir(directory: Path) -> None:
        real_fsync_dir(directory)
        events.append(f"fsync {directory}")

    monkeypatch.setattr(durable, "fsync_dir", fsync_dir)
    group = durable.CommitGroup()
    work = [
        lambda rel=f"d/{name}.rsv": decrypt_one(src, rel, out, keys, existing="skip", group=group)
        for name in plain
    ]
    results = run_threads(work, jobs=2, group=group,
                          on_result=lambda o: events.append(f"report {o.output}"))  # fmt: skip
    assert [r.status for r in results] == ["skipped"] * len(plain)
    first_report = next(i for i, e in enumerate(events) if e.startswith("report"))
    assert f"fsync {tmp_path / 'out' / 'd'}" in events[:first_report], events
    assert _check_outputs(tmp_path / "out", {f"d/{k}": v for k, v in plain.items()}) == {
        f"d/{k}" for k in plain
    }


def test_skip_existing_usage_errors(
    tmp_path: Path, cert: Cert, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--skip-existing`` with ``--force`` contradicts itself, and without ``--out-dir``
    has no batch to resume: exit 2 with the reason, before any key is read or anything
    is written."""
    _, key = cert.write(tmp_path)
    _recordings(tmp_path / "src", cert, 1)
    rec, out = tmp_path / "src" / "r000.wav.rsv", tmp_path / "out"
    code, _, err = run_cli(capsys, "decrypt", "--key", key, "--skip-existing", "--force",
                           "--out-dir", out, rec)  # fmt: skip
    assert code == 2 and "--skip-existing" in err and "--force" in err, err
    assert not out.exists()
    code, _, err = run_cli(capsys, "decrypt", "--key", key, "--skip-existing", rec,
                           tmp_path / "one.wav")  # fmt: skip
    assert code == 2 and "--skip-existing" in err and "--out-dir" in err, err
    assert not (tmp_path / "one.wav").exists()
    code, _, err = run_cli(capsys, "decrypt", "--key", tmp_path / "no-such-key.pem",
                           "--skip-existing", "--out-dir", out, rec)  # fmt: skip
    assert code == 2 and not out.exists(), err  # the key is still required, and checked first

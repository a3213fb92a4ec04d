"""Data safety under concurrency (issue 12): real processes, real signals, real races.

Each test is one of the losses found by running commands as an operator would,
with faults injected; each failed on the code before the fix:

1. two ``keystore restore --force`` at once kept one copy of the replaced keystore;
2. ``batch rewrap`` re-wrapped a recording still being recorded;
3. two ``rewrap`` of one file lost one of the changes;
4. SIGKILLed ``rewrap`` / ``decrypt --out-dir`` left temporaries (one of plaintext);
5. ``encrypt`` of a growing input silently encrypted a prefix.

Readiness is always observed (``/proc/PID/fd``, ``fdinfo``, a FIFO rendezvous,
file contents), never waited for by a fixed time.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recstream.envelope import (
    EnvelopeDecryptor,
    EnvelopeEncryptor,
    Identity,
    IdentitySet,
    new_metadata,
)
from recstream.format import Header, MediaKind, parse_header
from recstream.keystore import create, load, update
from recstream.keystore.backup import write_backup
from tests.keystore_helpers import NOW, PASSWORD, TINY_KDF, Cert, recording_cert

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")

HANG_GUARD = 120.0  # seconds: only ever reached if something hangs


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    return {label: recording_cert(label) for label in ("A", "B", "C", "X")}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of the commands: no keystore or password from the caller."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    e["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    return e


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "recstream", *map(str, args)]


def wait_until(
    what: str, cond: Callable[[], bool], proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not cond():
        if proc is not None and proc.poll() is not None:
            out = proc.stderr.read().decode() if proc.stderr else ""
            pytest.fail(f"the process ended before {what}: {out}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def open_paths(pid: int) -> list[str]:
    """What the process has open (``/proc/PID/fd`` links)."""
    found = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return []
    for fd in fds:
        try:
            found.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return found


def fd_of(pid: int, path: Path) -> int | None:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return int(fd)
        except OSError:
            continue
    return None


def seal(plain: bytes, cert: Cert, media_type: str = "audio/basic") -> bytes:
    md = new_metadata(recording_id="r", tenant="acme", media_kind=MediaKind.VOICE,
                      media_type=media_type)  # fmt: skip
    enc = EnvelopeEncryptor([cert.recipient], md)
    return enc.update(plain) + enc.finalize()


def header_of(path: Path) -> Header:
    h = parse_header(path.read_bytes()[:65536])
    assert isinstance(h, Header)
    return h


def keystore_with(path: Path, *cs: Cert) -> None:
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        for c in cs:
            ks.add("acme", MediaKind.VOICE, c.cert, c.key, now=NOW)


# --- 1 ---------------------------------------------------------------------------------


def test_two_restores_at_once_keep_every_replaced_keystore(
    tmp_path: Path, certs: dict[str, Cert], env: dict[str, str]
) -> None:
    """Loss 1: both restores exit 0, and the keystore they replaced (with a key no backup
    holds) must survive as a ``.replaced-*`` copy, whatever the second restore does."""
    ks = tmp_path / "keystore.rsk"
    keystore_with(ks, certs["X"])  # X's private key is in no backup
    other = tmp_path / "other.rsk"
    keystore_with(other, certs["A"])
    backup = tmp_path / "backup.rsb"
    write_backup(load(other, PASSWORD), PASSWORD, backup, source="test", now=NOW)
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    lock = tmp_path / ".keystore.rsk.lock"
    # Hold the keystore's lock so that both restores queue up behind it, then let go:
    # their critical sections run back to back, within the same second.
    holder = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    argv = cli("keystore", "restore", backup, "--force", "--keystore", ks, "--password-file", pw)
    procs = [subprocess.Popen(argv, env=env, stderr=subprocess.PIPE) for _ in range(2)]
    try:
        for p in procs:
            wait_until("the restore to wait for the lock",
                       lambda p=p: str(lock) in open_paths(p.pid), p)  # fmt: skip
    finally:
        os.close(holder)
    for p in procs:
        _, err = p.communicate(timeout=HANG_GUARD)
        assert p.returncode == 0, err.decode()
    kept = sorted(tmp_path.glob("keystore.rsk.replaced-*"))
    assert len(kept) == 2, kept  # one per restore: a kept keystore is never overwritten
    holders = [
        k for k in kept if certs["X"].cert_id in {e.cert_id for e in load(k, PASSWORD).entries}
    ]
    assert holders, "the pre-restore keystore (the only copy of X's key) was lost"
    assert [e.cert_id for e in load(ks, PASSWORD).entries] == [certs["A"].cert_id]


# --- 2 ---------------------------------------------------------------------------------


def test_batch_leaves_recordings_being_written_alone(
    tmp_path: Path, certs: dict[str, Cert], env: dict[str, str]
) -> None:
    """Loss 2: ``batch rewrap`` in place while a call is recorded into the same archive.
    The recording must end complete, with everything that was sent; the batch counts it
    as busy.  A finished file another process holds locked is left alone too."""
    a_cert, a_key = certs["A"].write(tmp_path)
    b_cert, _ = certs["B"].write(tmp_path)
    archive = tmp_path / "archive"
    archive.mkdir()
    done_rec = archive / "done.rsv"
    done_rec.write_bytes(seal(b"finished call" * 1000, certs["A"]))
    held = archive / "held.rsv"
    held.write_bytes(seal(b"held by another writer" * 100, certs["A"]))
    live = archive / "live.rsv"
    rec = subprocess.Popen(
        cli("record", "--cert", a_cert, "--flush-interval", "0.05", live),
        env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert rec.stdin is not None
    sent = bytearray()
    first = os.urandom(3 * 16384 + 100)
    rec.stdin.write(first)
    rec.stdin.flush()
    sent += first
    incomplete = archive / "live.rsv.incomplete"
    wait_until(
        "segments on disk",
        lambda: incomplete.exists() and incomplete.stat().st_size > 3 * 16384,
        rec,
    )
    lock_fd = os.open(held, os.O_RDONLY)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # "another process is writing it"
    try:
        batch = subprocess.run(
            cli("batch", "rewrap", archive, "--key", a_key, "--to-cert", b_cert),
            env=env, capture_output=True, timeout=HANG_GUARD, check=False,
        )  # fmt: skip
        audit = subprocess.run(
            cli("batch", "audit", archive, "--key", a_key, "--cert", a_cert, "--json",
                "--state-dir", tmp_path / "audit-state"),
            env=env, capture_output=True, timeout=HANG_GUARD, check=False,
        )  # fmt: skip
    finally:
        os.close(lock_fd)
    err = batch.stderr.decode()
    assert batch.returncode == 0, err
    assert "1 done" in err and "2 busy" in err, err
    assert "running in this process" in err  # a few files: no Dask cluster
    assert certs["B"].cert_id in header_of(done_rec).cert_ids
    assert certs["B"].cert_id not in header_of(held).cert_ids
    doc = json.loads(audit.stdout)
    assert sorted(b["path"] for b in doc["busy"]) == ["held.rsv", "live.rsv.incomplete"]
    rest = os.urandom(2 * 16384 + 7)
    _, rec_err = rec.communicate(rest, timeout=HANG_GUARD)
    sent += rest
    assert rec.returncode == 0, rec_err.decode()
    dec = EnvelopeDecryptor(_ring(certs["A"]))
    assert dec.update(live.read_bytes()) + dec.finalize() == bytes(sent)


def _ring(cert: Cert) -> IdentitySet:
    return IdentitySet([Identity.from_private_key(cert.key, cert.cert)])


# --- 3 ---------------------------------------------------------------------------------


def test_two_rewraps_of_one_file_both_apply(
    tmp_path: Path, certs: dict[str, Cert], env: dict[str, str]
) -> None:
    """Loss 3: ``rewrap --to-cert B`` and ``--to-cert C`` of one file at once.  Each gets
    its keystore password through its own FIFO, released together, so both start the
    re-wrap at the same moment; both changes must survive (or one fail, loudly)."""
    ks = tmp_path / "keystore.rsk"
    keystore_with(ks, certs["A"])
    target = tmp_path / "big.rsv"
    target.write_bytes(seal(bytes(48 << 20), certs["A"]))  # copying it takes a while
    fifos, procs = [], []
    for label in ("B", "C"):
        cert_file, _ = certs[label].write(tmp_path)
        fifo = tmp_path / f"pw-{label}"
        os.mkfifo(fifo)
        fifos.append(fifo)
        procs.append(subprocess.Popen(
            cli("rewrap", "--keystore", ks, "--password-file", fifo, "--to-cert", cert_file,
                target),
            env=env, stderr=subprocess.PIPE,
        ))  # fmt: skip
    writers = [os.open(f, os.O_WRONLY) for f in fifos]  # returns once each reader is there
    for w in writers:
        os.write(w, PASSWORD + b"\n")
    for w in writers:
        os.close(w)
    results = []
    for p in procs:
        _, err = p.communicate(timeout=HANG_GUARD)
        results.append((p.returncode, err.decode()))
    ids = header_of(target).cert_ids
    for (code, err), label in zip(results, ("B", "C"), strict=True):
        if code == 0:
            assert certs[label].cert_id in ids, f"{label}'s re-wrap was silently lost: {err}"
        else:
            assert code == 7 and "busy" in err, err  # a clear failure, never a silent loss
    assert certs["A"].cert_id in ids
    assert any(code == 0 for code, _ in results)


# --- 4 ---------------------------------------------------------------------------------


def _kill_when_writing_into(proc: subprocess.Popen[bytes], directory: Path, skip: set[str]) -> None:
    """SIGKILL ``proc`` once it has a file open for its output in ``directory``."""

    def writing() -> bool:
        return any(
            p.startswith(f"{directory}/") and p not in skip and not p.endswith(".lock")
            for p in open_paths(proc.pid)
        )

    wait_until("the output to be open", writing, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=HANG_GUARD)


def test_killed_decrypt_and_rewrap_leave_no_temporaries(
    tmp_path: Path, certs: dict[str, Cert], env: dict[str, str]
) -> None:
    """Loss 4: SIGKILL ``decrypt --out-dir`` (plaintext) and ``rewrap`` mid-file; nothing
    may be left behind after a later run, and plaintext never at all."""
    ks = tmp_path / "keystore.rsk"
    keystore_with(ks, certs["A"])
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    big = src / "call.wav.rsv"
    big.write_bytes(seal(os.urandom(1 << 20) * 40, certs["A"], "audio/wav"))
    ks_args = ["--keystore", ks, "--password-file", pw]
    dec = subprocess.Popen(cli("decrypt", *ks_args, "--out-dir", out, big), env=env,
                           stderr=subprocess.PIPE)  # fmt: skip
    out.mkdir()
    _kill_when_writing_into(dec, out, set())
    assert list(out.iterdir()) == [], "a killed decrypt left plaintext on disk"
    again = subprocess.run(cli("decrypt", *ks_args, "--out-dir", out, big), env=env,
                           capture_output=True, timeout=HANG_GUARD, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()
    assert [p.name for p in out.iterdir()] == ["call.wav"]

    b_cert, _ = certs["B"].write(tmp_path)
    before = big.read_bytes()
    rw = subprocess.Popen(cli("rewrap", *ks_args, "--to-cert", b_cert, big), env=env,
                          stderr=subprocess.PIPE)  # fmt: skip
    _kill_when_writing_into(rw, src, {str(big)})
    assert big.read_bytes() == before  # the original is untouched
    again = subprocess.run(cli("rewrap", *ks_args, "--to-cert", b_cert, big), env=env,
                           capture_output=True, timeout=HANG_GUARD, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr.decode()
    assert sorted(p.name for p in src.iterdir()) == ["call.wav.rsv"]  # nothing stale left
    assert certs["B"].cert_id in header_of(big).cert_ids


def test_stale_named_temporaries_of_dead_processes_are_removed(
    tmp_path: Path, certs: dict[str, Cert], env: dict[str, str]
) -> None:
    """Where O_TMPFILE is unavailable, a killed writer leaves a named temporary: the next
    command writing into that directory removes it (its process is dead), and never
    one whose process is alive."""
    target = tmp_path / "call.rsv"
    target.write_bytes(seal(bytes(32 << 20), certs["A"]))
    script = (
        "import sys\n"
        "from recstream import durable\n"
        "durable.USE_TMPFILE = False\n"
        "with durable.atomic_output(sys.argv[1]) as fh:\n"
        "    fh.write(b'half a file')\n"
        "    sys.stdout.write('writing\\n'); sys.stdout.flush()\n"
        "    sys.stdin.read()\n"
    )
    victim = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "out.bin")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    alive = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "other.bin")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    for p in (victim, alive):
        assert p.stdout is not None and p.stdout.readline() == b"writing\n"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=HANG_GUARD)
    partials = sorted(p.name for p in tmp_path.glob(".*.partial"))
    assert len(partials) == 2
    b_cert, _ = certs["B"].write(tmp_path)
    ks = tmp_path / "keystore.rsk"
    keystore_with(ks, certs["A"])
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    run = subprocess.run(cli("rewrap", "--keystore", ks, "--password-file", pw, "--to-cert",
                             b_cert, target),
                         env=env, capture_output=True, timeout=HANG_GUARD, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr.decode()
    left = sorted(p.name for p in tmp_path.glob(".*.partial"))
    assert left == [n for n in partials if f".{alive.pid}." in n]  # the live one stays
    alive.communicate(b"", timeout=HANG_GUARD)
    assert alive.returncode == 0 and (tmp_path / "other.bin").read_bytes() == b"half a file"


# --- 5 ---------------------------------------------------------------------------------


def _file_position(pid: int, fd: int) -> int:
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("pos:"):
            return int(line.split()[1])
    return -1  # pragma: no cover


def _grow_while_reading(
    inp: Path, argv: list[str], env: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """Run ``encrypt`` and append to its input while it is reading it (SIGSTOP/SIGCONT
    around the append, so the growth lands mid-read for certain)."""
    size = inp.stat().st_size
    for _ in range(20):  # a run that read everything before we caught it proves nothing
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        fd: list[int] = []

        def reading(proc: subprocess.Popen[bytes] = proc, fd: list[int] = fd) -> bool:
            if not fd:
                got = fd_of(proc.pid, inp)
                if got is None:
                    return False
                fd.append(got)
            try:
                return _file_position(proc.pid, fd[0]) > 0
            except FileNotFoundError:
                return True  # closed already: caught too late; checked below

        wait_until("encrypt to start reading", reading, proc)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            pos = _file_position(proc.pid, fd[0])
        except FileNotFoundError:
            pos = size
        if 0 < pos < size:
            with inp.open("ab") as fh:
                fh.write(b"more media arriving" * 1000)
            os.kill(proc.pid, signal.SIGCONT)
            out, err = proc.communicate(timeout=HANG_GUARD)
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        os.kill(proc.pid, signal.SIGCONT)
        proc.communicate(timeout=HANG_GUARD)
        Path(argv[-1]).unlink(missing_ok=True)
    pytest.fail("never caught encrypt mid-read")


def test_encrypt_refuses_an_input_that_grows_and_snapshots_on_request(
    tmp_path: Path, certs: dict[str, Cert], env: dict[str, str]
) -> None:
    """Loss 5: an input growing while ``encrypt`` reads it was cut to an arbitrary prefix,
    exit 0.  Now: refused (nothing written) unless ``--snapshot``, which encrypts exactly
    the bytes there were when it started, and says how many."""
    a_cert, _ = certs["A"].write(tmp_path)
    inp, out = tmp_path / "growing.wav", tmp_path / "out.rsv"
    original = os.urandom(1 << 20) * 48
    inp.write_bytes(original)
    refused = _grow_while_reading(inp, cli("encrypt", "--cert", a_cert, inp, out), env)
    err = refused.stderr.decode()
    assert refused.returncode == 2, err
    assert "changed size while it was read" in err and f"{len(original)} bytes" in err
    assert not out.exists() and list(tmp_path.glob(".*.partial")) == []

    inp.write_bytes(original)
    snap = _grow_while_reading(inp, cli("encrypt", "--snapshot", "--cert", a_cert, inp, out), env)
    err = snap.stderr.decode()
    assert snap.returncode == 0, err
    assert f"{len(original)} bytes (a snapshot" in err
    dec = EnvelopeDecryptor(_ring(certs["A"]))
    assert dec.update(out.read_bytes()) + dec.finalize() == original

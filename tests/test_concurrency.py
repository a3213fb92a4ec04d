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
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recstream.envelope import (
    EnvelopeEncryptor,
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

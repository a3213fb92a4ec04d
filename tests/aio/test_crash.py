"""Crash safety: SIGKILL mid-stream, real disk-full, recover, and clean stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recstream.aio import RecordingHook
from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor
from recstream.format import MediaKind
from tests.conftest import Party

SEG = 16384
INTERVAL = 0.2


def record_proc(tmp: Path, cert: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "recstream", "record", "--cert", str(cert),
         "--flush-interval", str(INTERVAL), "--media-type", "audio/basic", str(out)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp,
    )


def test_sigkill_mid_stream_then_recover(tmp_path: Path, alice: Party) -> None:
    cert, key = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    proc = record_proc(tmp_path, cert, out)
    assert proc.stdin is not None
    sent = bytearray()
    stamps: list[tuple[float, int]] = []  # (time, bytes sent so far)
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        chunk = os.urandom(4000)  # ~ half a second of G.711 per 10 writes, faster than real time
        proc.stdin.write(chunk)
        proc.stdin.flush()
        sent += chunk
        stamps.append((time.monotonic(), len(sent)))
        time.sleep(0.01)
    kill_time = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed recording must never appear complete"
    partial = tmp_path / "call.rsv.incomplete"
    assert partial.exists()

    # decrypt refuses the partial file...
    assert main(["decrypt", "--key", str(key), str(partial), str(tmp_path / "d")]) == 3
    assert not (tmp_path / "d").exists()
    # ...and recover returns every segment complete more than one flush interval before the kill.
    code = main(["recover", "--key", str(key), str(partial), str(tmp_path / "r")])
    assert code == 6
    recovered = (tmp_path / "r").read_bytes()
    assert recovered == sent[: len(recovered)]
    assert len(recovered) % SEG == 0
    # 1 s of slack for a loaded CI: the recorder may read the pipe late, not flush late
    safe = max(n for t, n in stamps if t <= kill_time - INTERVAL - 1.0) // SEG * SEG
    assert safe >= 10 * SEG
    assert len(recovered) >= safe, (len(recovered), safe)


def test_sigterm_finishes_the_recording(tmp_path: Path, alice: Party) -> None:
    cert, key = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    proc = record_proc(tmp_path, cert, out)
    assert proc.stdin is not None
    data = os.urandom(50_000)
    proc.stdin.write(data)
    proc.stdin.flush()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""
    assert main(["decrypt", "--key", str(key), str(out), str(tmp_path / "d")]) == 0
    assert (tmp_path / "d").read_bytes() == data


def test_recover_complete_tampered_and_refusals(tmp_path: Path, alice: Party, seal: object,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _cert, key = alice.write(tmp_path)
    pt = os.urandom(5 * SEG + 10)
    env = tmp_path / "e.rsv"
    env.write_bytes(seal(pt))  # type: ignore[operator]
    assert main(["recover", "--key", str(key), str(env), str(tmp_path / "a")]) == 0
    assert (tmp_path / "a").read_bytes() == pt
    data = bytearray(env.read_bytes())
    data[len(data) - 3 * (SEG + 16)] ^= 1  # a segment in the middle, data after it
    env.write_bytes(bytes(data))
    assert main(["recover", "--key", str(key), str(env), str(tmp_path / "b")]) == 3
    assert not (tmp_path / "b").exists()
    assert "failed authentication" in capsys.readouterr().err
    assert main(["recover", "--key", str(key), str(tmp_path / "nope"), str(tmp_path / "c")]) == 2


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True,
        check=False,
    ).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    r = subprocess.run(["umount", str(mnt)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_real_disk_full_fails_that_recording_alone(tmp_path: Path, tiny_fs: Path,
                                                  alice: Party) -> None:
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    dirs = {"small": tiny_fs, "big": roomy}
    failures: list[str] = []

    async def main_() -> None:
        hooks = {n: RecordingHook(d, lambda t, k: [alice.recipient], flush_interval=0.02,
                                  on_error=lambda c, k, e: failures.append(f"{c}: {e}"))
                 for n, d in dirs.items()}
        for h in hooks.values():
            await h.__aenter__()
        await hooks["small"].start("s", tenant="acme")
        await hooks["big"].start("b", tenant="acme")
        for _ in range(400):
            for name, call in (("small", "s"), ("big", "b")):
                try:
                    hooks[name].media(call, b"\x11" * 1600)
                except Exception:
                    assert name == "small"
            await asyncio.sleep(0.001)
        for h in hooks.values():
            await h.aclose()

    asyncio.run(main_())
    assert failures and all(f.startswith("s:") for f in failures)
    assert "No space left on device" in failures[0]
    dec = EnvelopeDecryptor(alice.keys)
    assert dec.update((roomy / "b-voice.rsv").read_bytes()) + dec.finalize() == b"\x11" * 640_000


def test_recover_with_the_keystore(tmp_path: Path, alice: Party, seal: object) -> None:
    import datetime as dt

    from recstream.keystore import create, update
    from tests.keystore_helpers import TINY_KDF

    ks, pw = tmp_path / "ks.rsk", tmp_path / "ks.pass"
    pw.write_bytes(b"a keystore password\n")
    create(ks, b"a keystore password", kdf=TINY_KDF)
    with update(ks, b"a keystore password") as store:
        store.add("acme", MediaKind.VOICE, alice.cert, alice.key, now=dt.datetime.now(dt.UTC))
    pt = os.urandom(4 * SEG + 100)
    whole = seal(pt)  # type: ignore[operator]
    cut = tmp_path / "call.rsv.incomplete"
    cut.write_bytes(whole[: len(whole) - 50])  # torn inside the final (short) segment
    args = ["recover", "--keystore", str(ks), "--password-file", str(pw), str(cut)]
    assert main([*args, str(tmp_path / "out")]) == 6
    assert (tmp_path / "out").read_bytes() == pt[: 4 * SEG]
    assert main(["recover", "--key", str(tmp_path / "nope.pem"), "--keystore", str(ks),
                 str(cut), str(tmp_path / "o2")]) == 2

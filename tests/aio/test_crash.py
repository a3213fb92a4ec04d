"""Crash safety: SIGKILL mid-stream, real disk-full, recover, and clean stops."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from recstream.aio import RecordingHook
from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor
from recstream.format import (
    BODY_PREFIX_BYTES,
    SEGMENT_WIRE_SIZE,
    Header,
    MediaKind,
    parse_header,
)
from tests.conftest import Party

SEG = 16384
INTERVAL = 0.2


def record_proc(tmp: Path, cert: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "recstream", "record", "--cert", str(cert),
         "--flush-interval", str(INTERVAL), "--media-type", "audio/basic", str(out)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp,
    )  # fmt: skip


def wait_for(condition: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    """Poll ``condition`` until true: a readiness wait, its limit only a hang guard."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


def wait_for_line(proc: subprocess.Popen[bytes], text: bytes) -> None:
    """Read the recorder's stderr until ``text``: it says its signal handling is in place."""
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        if text in line:
            return
    raise AssertionError(f"the recorder never said {text!r}")


def full_segments_on_disk(partial: Path) -> int:
    """Complete segments in a live recording's ``.incomplete`` file, from its size."""
    data = partial.read_bytes() if partial.exists() else b""
    header = parse_header(data) if len(data) > 12 else None
    if not isinstance(header, Header):
        return 0
    return max(0, len(data) - header.length - BODY_PREFIX_BYTES) // SEGMENT_WIRE_SIZE


def test_sigkill_mid_stream_then_recover(tmp_path: Path, alice: Party) -> None:
    cert, key = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    partial = tmp_path / "call.rsv.incomplete"
    proc = record_proc(tmp_path, cert, out)
    assert proc.stdin is not None
    sent = os.urandom(12 * SEG + 5000)
    proc.stdin.write(sent)
    proc.stdin.flush()  # stdin stays open: the recording is live, not finished
    # Readiness, not a clock: kill once 10 segments are on disk, then every one of
    # them must come back; what was still in memory may be lost.
    wait_for(lambda: full_segments_on_disk(partial) >= 10, "10 segments on disk")
    on_disk = full_segments_on_disk(partial)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed recording must never appear complete"
    assert partial.exists()

    # decrypt refuses the partial file (and says how to recover it)...
    assert main(["decrypt", "--key", str(key), str(partial), str(tmp_path / "d")]) == 3
    assert not (tmp_path / "d").exists()
    # ...and recover returns every segment that was on disk at the kill.
    code = main(["recover", "--key", str(key), str(partial), str(tmp_path / "r")])
    assert code == 6
    recovered = (tmp_path / "r").read_bytes()
    assert recovered == sent[: len(recovered)]
    assert len(recovered) % SEG == 0
    assert len(recovered) >= on_disk * SEG >= 10 * SEG


def test_sigterm_finishes_the_recording(tmp_path: Path, alice: Party) -> None:
    cert, key = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    proc = record_proc(tmp_path, cert, out)
    assert proc.stdin is not None
    data = os.urandom(50_000)
    proc.stdin.write(data)
    proc.stdin.flush()
    wait_for((tmp_path / "call.rsv.incomplete").exists, "the recording to start")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert main(["decrypt", "--key", str(key), str(out), str(tmp_path / "d")]) == 0
    assert (tmp_path / "d").read_bytes() == data


def test_sigterm_during_start_up_keeps_what_was_piped(tmp_path: Path, alice: Party) -> None:
    """A stop request before the certificates are even loaded is kept, not fatal: the
    recording is made with everything piped before it (the old code died with no file)."""
    cert, key = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    proc = record_proc(tmp_path, cert, out)
    assert proc.stdin is not None
    data = os.urandom(30_000)
    proc.stdin.write(data)
    proc.stdin.flush()
    wait_for_line(proc, b"recording into")  # printed before any certificate is read
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert main(["decrypt", "--key", str(key), str(out), str(tmp_path / "d")]) == 0
    assert (tmp_path / "d").read_bytes() == data


def test_sigterm_under_a_full_queue_is_never_dropped(tmp_path: Path, alice: Party) -> None:
    """A producer far faster than the disk fills every buffer; SIGTERM still finishes
    the recording with a prefix of what was sent (a full queue once swallowed it)."""
    cert, key = alice.write(tmp_path)
    out = tmp_path / "call.rsv"
    proc = record_proc(tmp_path, cert, out)
    assert proc.stdin is not None
    sent = bytearray()
    stop = threading.Event()

    def produce() -> None:
        assert proc.stdin is not None
        while not stop.is_set():
            chunk = os.urandom(64 * 1024)
            sent.extend(chunk)  # before the write: part of it may get through
            try:
                proc.stdin.write(chunk)
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                return

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    partial = tmp_path / "call.rsv.incomplete"
    wait_for(lambda: full_segments_on_disk(partial) >= 20, "20 segments on disk")
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    stop.set()
    producer.join(timeout=60)
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert main(["decrypt", "--key", str(key), str(out), str(tmp_path / "d")]) == 0
    plain = (tmp_path / "d").read_bytes()
    assert len(plain) >= 20 * SEG
    assert plain == bytes(sent[: len(plain)])


def test_recover_complete_tampered_and_refusals(
    tmp_path: Path, alice: Party, seal: object, capsys: pytest.CaptureFixture[str]
) -> None:
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
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)],
            capture_output=True,
            check=False,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    r = subprocess.run(["umount", str(mnt)], check=False, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_real_disk_full_fails_that_recording_alone(
    tmp_path: Path, tiny_fs: Path, alice: Party
) -> None:
    roomy = tmp_path / "roomy"
    roomy.mkdir()
    dirs = {"small": tiny_fs, "big": roomy}
    failures: list[str] = []

    async def main_() -> None:
        hooks = {
            n: RecordingHook(
                d,
                lambda t, k: [alice.recipient],
                flush_interval=0.02,
                on_error=lambda c, k, e: failures.append(f"{c}: {e}"),
            )
            for n, d in dirs.items()
        }
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
    assert (
        main(
            [
                "recover",
                "--key",
                str(tmp_path / "nope.pem"),
                "--keystore",
                str(ks),
                str(cut),
                str(tmp_path / "o2"),
            ]
        )
        == 2
    )


def test_sigterm_while_the_keystore_opens_keeps_what_was_piped(
    tmp_path: Path, alice: Party
) -> None:
    """`record --tenant`: the signal lands before the keystore is even read (the
    recorder says it is recording before opening it); the piped audio is kept."""
    import datetime as dt

    from recstream.keystore import create, update
    from tests.keystore_helpers import TINY_KDF

    ks, pw = tmp_path / "ks.rsk", tmp_path / "ks.pass"
    pw.write_bytes(b"a keystore password\n")
    create(ks, b"a keystore password", kdf=TINY_KDF)
    with update(ks, b"a keystore password") as store:
        store.add("acme", MediaKind.VOICE, alice.cert, alice.key, now=dt.datetime.now(dt.UTC))
    out = tmp_path / "call.rsv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "recstream", "record", "--tenant", "acme", "--keystore", str(ks),
         "--password-file", str(pw), str(out)],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdin is not None
    data = os.urandom(40_000)
    proc.stdin.write(data)
    proc.stdin.flush()
    wait_for_line(proc, b"recording into")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    _cert, key = alice.write(tmp_path)
    assert main(["decrypt", "--key", str(key), str(out), str(tmp_path / "d")]) == 0
    assert (tmp_path / "d").read_bytes() == data

"""The async writer and the hook: concurrency, isolation, back-pressure, close order."""

from __future__ import annotations

import asyncio
import errno
import os
import random
from pathlib import Path

import pytest

from recstream import errors
from recstream.aio import Flusher, RecordingHook, RecordingWriter
from recstream.aio import flusher as flusher_mod
from recstream.envelope import EnvelopeDecryptor, new_metadata
from recstream.format import MediaKind
from tests.conftest import Party


def decrypt(path: Path, party: Party) -> bytes:
    dec = EnvelopeDecryptor(party.keys)
    return dec.update(path.read_bytes()) + dec.finalize()


def meta(i: int) -> object:
    return new_metadata(
        recording_id=f"rec-{i}", tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/basic"
    )


def test_many_concurrent_writers_interleaved(tmp_path: Path, alice: Party) -> None:
    rng = random.Random(7)
    inputs = {i: bytearray() for i in range(120)}

    async def one(i: int, flusher: Flusher) -> None:
        async with await RecordingWriter.open(
            tmp_path / f"{i}.rsv", [alice.recipient], meta(i), flusher
        ) as w:
            for _ in range(rng.randrange(0, 60)):
                chunk = os.urandom(rng.choice([1, 160, 1000, 16384, 40000]))
                inputs[i] += chunk
                await w.write(chunk)
                await asyncio.sleep(0)

    async def main() -> None:
        async with Flusher(0.05) as flusher, asyncio.TaskGroup() as tg:
            for i in inputs:
                tg.create_task(one(i, flusher))

    asyncio.run(main())
    for i, data in inputs.items():
        assert decrypt(tmp_path / f"{i}.rsv", alice) == data
    assert not list(tmp_path.glob("*.incomplete"))


def test_hook_voice_and_screen_per_call(tmp_path: Path, alice: Party, bob: Party) -> None:
    recipients = {MediaKind.VOICE: alice, MediaKind.SCREEN: bob}
    sent: dict[tuple[str, MediaKind], bytearray] = {}

    async def main() -> None:
        async with RecordingHook(
            tmp_path, lambda t, k: [recipients[k].recipient], flush_interval=0.05
        ) as hook:
            for c in ("a", "b", "c"):
                await hook.start(c, tenant="acme", kinds=[MediaKind.VOICE, MediaKind.SCREEN])
            for _ in range(200):
                for c in ("a", "b", "c"):
                    for kind, size in ((MediaKind.VOICE, 160), (MediaKind.SCREEN, 2500)):
                        chunk = os.urandom(size)
                        sent.setdefault((c, kind), bytearray()).extend(chunk)
                        hook.media(c, chunk, kind)
                await asyncio.sleep(0)
            done = await hook.stop("b")
            assert set(done) == {MediaKind.VOICE, MediaKind.SCREEN}
        assert hook.errors == {}

    asyncio.run(main())
    for (c, kind), data in sent.items():
        assert decrypt(tmp_path / f"{c}-{kind.name.lower()}.rsv", recipients[kind]) == data


def test_failures_stay_with_their_recording(
    tmp_path: Path, alice: Party, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full on one file and permission denied on another; the rest record."""
    real_open, real_batch = os.open, flusher_mod._write_batch

    def open_(path: object, flags: int, mode: int = 0o777) -> int:
        if "denied" in str(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    def write_batch(jobs: list, sync: bool) -> list:  # type: ignore[type-arg]
        ok = [j for j in jobs if "full" not in str(j[0].temp_path)]
        results = iter(real_batch(ok, sync))
        return [
            OSError(errno.ENOSPC, "No space left on device")
            if "full" in str(j[0].temp_path)
            else next(results)
            for j in jobs
        ]

    monkeypatch.setattr("recstream.aio.writer.os.open", open_)
    monkeypatch.setattr(flusher_mod, "_write_batch", write_batch)
    reported: list[tuple[str, MediaKind, BaseException]] = []

    async def main() -> None:
        async with RecordingHook(
            tmp_path,
            lambda t, k: [alice.recipient],
            flush_interval=0.02,
            on_error=lambda c, k, e: reported.append((c, k, e)),
        ) as hook:
            for c in ("ok1", "denied", "full", "ok2"):
                await hook.start(c, tenant="acme")
            for _ in range(300):
                for c in ("ok1", "denied", "full", "ok2"):
                    try:
                        hook.media(c, b"\x55" * 160)
                    except errors.PipelineError:
                        assert c in ("denied", "full")
                await asyncio.sleep(0.001)
            await hook.stop("ok1")
            await hook.stop("full")
            await hook.stop("ok2")
            await hook.stop("denied")
        assert {c for c, _, _ in reported} == {"denied", "full"}
        msgs = {c: str(e) for c, _, e in reported}
        assert "Permission denied" in msgs["denied"]
        assert "No space left" in msgs["full"] and "recover" in msgs["full"]

    asyncio.run(main())
    assert decrypt(tmp_path / "ok1-voice.rsv", alice) == b"\x55" * 160 * 300
    assert decrypt(tmp_path / "ok2-voice.rsv", alice) == b"\x55" * 160 * 300
    assert not (tmp_path / "full-voice.rsv").exists()
    assert (tmp_path / "full-voice.rsv.incomplete").exists()


def test_write_nowait_overflows_and_write_waits(tmp_path: Path, alice: Party) -> None:
    async def main() -> None:
        async with Flusher(60.0) as flusher:  # never flushes by itself
            w = await RecordingWriter.open(
                tmp_path / "x.rsv", [alice.recipient], meta(1), flusher, max_buffered=4 * 16400
            )
            with pytest.raises(errors.PipelineOverflowError) as info:
                for _ in range(100):
                    w.write_nowait(b"\x00" * 16384)
            assert info.value.limit == 4
            # write() waits for room instead, and the flusher makes it.
            await asyncio.wait_for(w.write(b"\x01" * 16384), timeout=5)
            await w.close()
            with pytest.raises(errors.StreamStateError):
                w.write_nowait(b"late")

    asyncio.run(main())


def test_existing_recording_is_never_overwritten(tmp_path: Path, alice: Party) -> None:
    (tmp_path / "x.rsv").write_bytes(b"precious")

    async def main() -> None:
        async with Flusher(0.1) as flusher:
            with pytest.raises(FileExistsError):
                await RecordingWriter.open(tmp_path / "x.rsv", [alice.recipient], meta(1), flusher)

    asyncio.run(main())
    assert (tmp_path / "x.rsv").read_bytes() == b"precious"


def test_error_inside_async_with_keeps_partial_for_recovery(tmp_path: Path, alice: Party) -> None:
    async def main() -> None:
        async with Flusher(0.05) as flusher:
            with pytest.raises(RuntimeError):
                async with await RecordingWriter.open(
                    tmp_path / "y.rsv", [alice.recipient], meta(2), flusher
                ) as w:
                    await w.write(b"\x07" * 50_000)
                    raise RuntimeError("media server went away")

    asyncio.run(main())
    assert not (tmp_path / "y.rsv").exists()
    assert (tmp_path / "y.rsv.incomplete").stat().st_size > 3 * 16400


def test_hook_files_recordings_in_the_archive_layout(tmp_path: Path, alice: Party) -> None:
    import json

    async def main() -> None:
        async with RecordingHook(
            tmp_path, lambda t, k: [alice.recipient], flush_interval=0.05, contact_center="0a1b2c"
        ) as hook:
            await hook.start(
                "call/../9",
                tenant="acme",
                kinds=[MediaKind.VOICE, MediaKind.SCREEN],
                created_ms={
                    MediaKind.VOICE: 1_760_000_000_000,
                    MediaKind.SCREEN: 1_760_000_002_500,
                },
            )
            hook.media("call/../9", b"v" * 20_000)
            hook.media("call/../9", b"s" * 30_000, MediaKind.SCREEN)
            done = await hook.stop("call/../9")
        rec_dir = tmp_path / "0a1b2c" / "acme" / "2025-10-09" / "call_.._9"
        assert done[MediaKind.VOICE] == rec_dir / "voice.rsv"
        assert done[MediaKind.SCREEN] == rec_dir / "screen.rsv"
        doc = json.loads((rec_dir / "recording.json").read_text())
        assert doc["recording_id"] == "call/../9" and doc["tenant"] == "acme"
        assert set(doc["media"]) == {"voice", "screen"}
        assert doc["media"]["voice"]["cert_ids"] == [alice.cert_id]

    asyncio.run(main())
    assert decrypt(next(tmp_path.rglob("voice.rsv")), alice) == b"v" * 20_000

"""The per-frame path (issue 20): media() and write_nowait() answer as before; fewer syscalls."""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path

import pytest

from recstream import errors
from recstream.aio import Flusher, RecordingHook, RecordingWriter
from recstream.aio import flusher as flusher_mod
from recstream.envelope import EnvelopeDecryptor, new_metadata
from recstream.format import BODY_PREFIX_BYTES, SEGMENT_SIZE, SEGMENT_WIRE_SIZE, MediaKind
from tests.conftest import Party


def decrypt(path: Path, party: Party) -> bytes:
    dec = EnvelopeDecryptor(party.keys)
    return dec.update(path.read_bytes()) + dec.finalize()


def test_media_answers_every_state(tmp_path: Path, alice: Party) -> None:
    async def main() -> None:
        async with RecordingHook(tmp_path, lambda t, k: [alice.recipient]) as hook:
            with pytest.raises(KeyError):
                hook.media("nobody", b"x")
            await hook.start("c1", tenant="acme")
            with pytest.raises(errors.PipelineError, match="no screen recording"):
                hook.media("c1", b"x", MediaKind.SCREEN)
            frames = [bytes([i]) * 160 for i in range(256)] * 3
            for f in frames:
                hook.media("c1", f)
            writer = hook._calls["c1"].writers[MediaKind.VOICE]
            assert writer.bytes_in == 160 * len(frames)
            assert writer.statistics().bytes_in == 160 * len(frames)
            await hook.stop("c1")
            assert writer.bytes_in == 160 * len(frames)
            with pytest.raises(KeyError):
                hook.media("c1", b"x")
            with pytest.raises(errors.StreamStateError):
                writer.write_nowait(b"late")
            # The call ID is free again: a new call under it records on its own.
            await hook.start("c1", tenant="acme", kinds=[MediaKind.SCREEN])
            with pytest.raises(errors.PipelineError, match="no voice recording"):
                hook.media("c1", b"x")
            hook.media("c1", b"screen", MediaKind.SCREEN)
            await hook.stop("c1")
        return b"".join(frames)

    voice = asyncio.run(main())
    assert decrypt(tmp_path / "c1-voice.rsv", alice) == voice
    assert decrypt(tmp_path / "c1-screen.rsv", alice) == b"screen"


def test_overflow_clears_once_the_flusher_takes_the_data(tmp_path: Path, alice: Party) -> None:
    meta = new_metadata(
        recording_id="r", tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/basic"
    )

    async def main() -> None:
        async with Flusher(60.0) as flusher:  # flushes only when asked
            w = await RecordingWriter.open(
                tmp_path / "x.rsv",
                [alice.recipient],
                meta,
                flusher,
                max_buffered=2 * SEGMENT_WIRE_SIZE,
            )
            w.write_nowait(bytes(2 * SEGMENT_SIZE))
            with pytest.raises(errors.PipelineOverflowError):
                w.write_nowait(b"more")
            await flusher.flush_now()
            w.write_nowait(b"more")  # room again
            assert w.bytes_in == 2 * SEGMENT_SIZE + 4
            await w.close()

    asyncio.run(main())
    assert decrypt(tmp_path / "x.rsv", alice) == bytes(2 * SEGMENT_SIZE) + b"more"


@pytest.mark.parametrize("sync", [True, False])
def test_sync_writes_are_o_dsync_in_one_syscall(
    tmp_path: Path, alice: Party, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    """sync=True: the file is O_DSYNC, so the flusher needs no fdatasync per file."""
    datasyncs: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(flusher_mod.os, "fdatasync", lambda fd: (datasyncs.append(fd), real(fd)))
    flags: list[int] = []

    async def main() -> None:
        async with RecordingHook(
            tmp_path, lambda t, k: [alice.recipient], sync=sync, flush_interval=0.05
        ) as hook:
            await hook.start("c", tenant="acme")
            writer = hook._calls["c"].writers[MediaKind.VOICE]
            flags.append(fcntl.fcntl(writer.fd, fcntl.F_GETFL))
            for _ in range(3):
                hook.media("c", bytes(SEGMENT_SIZE))
                await hook.flusher.flush_now()
            assert hook.flusher.bytes_written == BODY_PREFIX_BYTES + 3 * SEGMENT_WIRE_SIZE
            await hook.stop("c")

    asyncio.run(main())
    assert bool(flags[0] & os.O_DSYNC) is sync
    assert datasyncs == []  # O_DSYNC when syncing, nothing at all when not
    assert decrypt(tmp_path / "c-voice.rsv", alice) == bytes(3 * SEGMENT_SIZE)


def test_any_chunking_and_buffer_type_records_the_same_bytes(tmp_path: Path, alice: Party) -> None:
    """Chunks below, at and across segment boundaries, larger than several segments,
    and buffers of other types (bytearray, memoryview, 2-byte items) all land as bytes."""
    import array
    import random

    rng = random.Random(7)
    pcm = array.array("h", range(-3000, 3000))  # 12,000 bytes as 6,000 items
    chunks: list[object] = [b"", b"a" * 160, bytes(SEGMENT_SIZE - 160), b"b" * 160, b"c"]
    chunks += [bytearray(rng.randbytes(rng.randrange(1, 40_000))) for _ in range(40)]
    chunks += [memoryview(rng.randbytes(3 * SEGMENT_SIZE + 5)), memoryview(pcm), pcm]
    chunks += [rng.randbytes(160) for _ in range(500)] + [bytes(SEGMENT_SIZE)]
    expected = b"".join(bytes(memoryview(c).cast("B")) for c in chunks)  # type: ignore[arg-type]
    meta = new_metadata(
        recording_id="r", tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/basic"
    )

    async def main() -> None:
        async with Flusher(0.05) as flusher:
            w = await RecordingWriter.open(
                tmp_path / "x.rsv", [alice.recipient], meta, flusher, max_buffered=1 << 30
            )
            for c in chunks:
                w.write_nowait(c)  # type: ignore[arg-type]
            assert w.bytes_in == len(expected)
            assert w.statistics().segments == len(expected) // SEGMENT_SIZE
            with pytest.raises(TypeError):
                w.write_nowait("text")  # type: ignore[arg-type]
            await w.close()

    asyncio.run(main())
    assert decrypt(tmp_path / "x.rsv", alice) == expected


def test_hook_fast_path_takes_any_buffer_and_refuses_when_full(
    tmp_path: Path, alice: Party
) -> None:
    """media()'s inline copy: wider items and strided views go through as bytes,
    overflow still refuses, and a full recording takes media again once the flusher
    has run."""
    import array

    pcm = array.array("h", range(-80, 80))  # 160 items, 320 bytes
    sent: list[bytes] = []

    async def main() -> None:
        async with RecordingHook(
            tmp_path, lambda t, k: [alice.recipient], flush_interval=60.0
        ) as hook:
            await hook.start("c", tenant="acme")
            writer = hook._calls["c"].writers[MediaKind.VOICE]
            writer._max_buffered = SEGMENT_WIRE_SIZE  # one sealed segment fills it
            strided = memoryview(b"abcdefgh")[::2]  # not contiguous: b"aceg"
            for chunk in (b"a" * 160, pcm, memoryview(b"b" * 100), bytearray(b"c" * 7), strided):
                hook.media("c", chunk)
                sent.append(memoryview(chunk).tobytes())
            with pytest.raises(TypeError):
                hook.media("c", "text")  # type: ignore[arg-type]
            filler = bytes(SEGMENT_SIZE)
            hook.media("c", filler)  # seals one segment: the buffer is now full
            sent.append(filler)
            with pytest.raises(errors.PipelineOverflowError):
                hook.media("c", b"x" * 160)
            await hook.flusher.flush_now()
            hook.media("c", b"x" * 160)  # room again
            sent.append(b"x" * 160)
            await hook.stop("c")

    asyncio.run(main())
    assert decrypt(tmp_path / "c-voice.rsv", alice) == b"".join(sent)


def test_written_segment_buffers_are_reused_and_the_bytes_stay_right(
    tmp_path: Path, alice: Party
) -> None:
    """A whole segment is sealed into a buffer the flusher handed back after writing
    an earlier one; the recording decrypts to exactly what went in."""
    import random

    rng = random.Random(3)
    media = rng.randbytes(9 * SEGMENT_SIZE + 1234)

    async def main() -> None:
        async with RecordingHook(
            tmp_path, lambda t, k: [alice.recipient], flush_interval=60.0
        ) as hook:
            await hook.start("c", tenant="acme")
            flusher = hook.flusher
            for i in range(0, len(media), 160):
                hook.media("c", media[i : i + 160])
                if i % (2 * SEGMENT_SIZE) < 160:
                    await flusher.flush_now()
            assert flusher._spare, "written whole-segment buffers are kept for reuse"
            before = {id(b) for b in flusher._spare}
            hook.media("c", bytes(SEGMENT_SIZE))  # seals one whole segment
            writer = hook._calls["c"].writers[MediaKind.VOICE]
            assert id(writer._cipher[-1]) in before  # sealed into a reused buffer
            # The list that carried it to the flusher comes back emptied, for reuse:
            # no new containers per recording per batch for the cyclic GC to promote.
            carried = writer._cipher
            await flusher.flush_now()
            assert carried == []
            assert writer._cipher is carried or any(x is carried for x in flusher._data_lists)
            await hook.stop("c")

    asyncio.run(main())
    assert decrypt(tmp_path / "c-voice.rsv", alice) == media + bytes(SEGMENT_SIZE)


def test_writev_all_finishes_short_writes_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher's writev loop: a kernel that takes a few bytes at a time, and more
    buffers than one writev may carry, still leave every byte in order."""
    real_writev, real_write = os.writev, os.write
    calls: list[int] = []

    def stingy_writev(fd: int, bufs: list[memoryview]) -> int:
        assert len(bufs) <= flusher_mod._IOV_MAX
        calls.append(len(bufs))
        return real_writev(fd, [bytes(memoryview(bufs[0])[:7])])

    def stingy_write(fd: int, buf: memoryview) -> int:
        return real_write(fd, bytes(memoryview(buf)[:5]))

    monkeypatch.setattr(flusher_mod.os, "writev", stingy_writev)
    monkeypatch.setattr(flusher_mod.os, "write", stingy_write)
    monkeypatch.setattr(flusher_mod, "_IOV_MAX", 3)
    bufs = [bytearray(bytes([i]) * (i % 5 + 1)) for i in range(20)] + [bytearray()]
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        flusher_mod._writev_all(fd, bufs)
        flusher_mod._writev_all(fd, [bytearray(b"tail-of-one")])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(bufs) + b"tail-of-one"
    assert max(calls) == 3 and len(calls) > 3

"""``recstream bench streams`` on a tiny ramp: it runs the real endpoint in a child process,
drives it, and every stream ends as a complete recording.  No figure is asserted (the
machine is shared); only that the report is whole and the recordings were made."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from recstream.cli import main


def test_bench_streams_tiny(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = ["bench", "streams", "--streams", "3,6", "--duration", "1", "--keep-going"]
    argv += ["--processes", "1,2"]  # each step against one and two server processes
    code = main([*argv, "--flush-interval", "0.2", "--json", str(out), "--dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "recstream bench streams" in captured.out and "Traceback" not in captured.err
    report = json.loads(out.read_text())
    assert len(report["tables"]) == 2
    assert "1 server process" in report["tables"][0]["title"]
    assert "2 server process" in report["tables"][1]["title"]
    for table in report["tables"]:
        rows = {str(r["streams"]): r for r in table["rows"]}
        assert set(rows) == {"3", "6"}
        for n, row in rows.items():
            assert row["complete"] == f"{n}/{n}"
            assert row["server_cpu"]["median"] > 0 and row["msgs"]["median"] > 0
            assert row["bare_us"]["median"] > 0 and row["x_bare"]["median"] > 0
            assert row["machine"]  # the whole machine's CPU over the step, from /proc/stat
    assert report["parameters"]["processes"] == "1,2"
    assert report["parameters"]["read_batch_ms"] == 5.0  # the server's default
    assert "max_sustained_streams_2proc" in report["parameters"]
    assert "cpu_flags" in report["machine"]
    assert any("CPU features seen" in note for note in report["notes"])
    assert not list(tmp_path.glob("recstream-bench-*"))  # the work directory is removed


def test_machine_busy_is_in_percent_of_one_core() -> None:
    from recstream.bench import machine

    cores = os.cpu_count() or 1
    #          user nice sys idle iowait irq softirq steal
    before = (100, 0, 50, 800, 50, 0, 0, 0)
    after = (150, 0, 90, 850, 50, 0, 10, 0)  # 100 ticks busy (10 softirq), 50 idle
    busy, softirq = machine.machine_busy(before, after)  # type: ignore[misc]
    assert busy == pytest.approx(100 * cores * 100 / 150)
    assert softirq == pytest.approx(100 * cores * 10 / 150)
    assert machine.machine_busy(None, after) is None
    assert machine.machine_busy(after, after) is None  # no time passed: unknown, not 0
    now = machine.cpu_times()
    assert now is not None and len(now) == 8


def test_bench_streams_rejects_bad_options() -> None:
    assert main(["bench", "streams", "--duration", "0"]) == 2
    assert main(["bench", "streams", "--streams", "0"]) == 2
    assert main(["bench", "streams", "--read-batch-ms", "-1"]) == 2
    assert main(["bench", "streams", "--read-batch-ms", "500"]) == 2
    assert main(["bench", "streams", "--read-batch-ms", "0.5"]) == 2


def test_load_generator_sends_what_a_platform_sends() -> None:
    """The bench's ready-made frames are valid masked frames of Twilio's messages, numbered
    as Twilio numbers them: sequence over the stream, chunk per track, 20 ms timestamps."""
    from recstream.bench._streams_client import PAYLOADS, StreamSource, _Ticks
    from recstream.streams.frames import OP_TEXT, FrameReader
    from recstream.streams.protocol import Media, Start, Stop, Track, parse_message

    ticks = _Ticks()
    sources = [StreamSource(ticks) for _ in range(3)]
    for src in sources:
        reader = FrameReader(65536)
        opening = [parse_message(p) for op, p in reader.feed(src.opening()) if op == OP_TEXT]
        assert isinstance(opening[1], Start) and opening[1].stream_sid == src.sid
        assert opening[1].sequence == 1
        seen = []
        for k in range(12):
            messages = reader.feed(src.tick())
            assert [op for op, _ in messages] == [OP_TEXT, OP_TEXT]  # one write, two frames
            seen += [parse_message(p) for _, p in messages]
        stop = [parse_message(p) for _, p in reader.feed(src.closing())]
        assert all(isinstance(m, Media) for m in seen)
        assert [m.sequence for m in seen] == list(range(2, 26))
        for k in range(12):
            out, inb = seen[2 * k], seen[2 * k + 1]
            assert (out.track, inb.track) == (Track.OUTBOUND, Track.INBOUND)
            assert out.chunk == inb.chunk == k + 1
            assert out.timestamp_ms == inb.timestamp_ms == 20 * k
            assert out.stream_sid == inb.stream_sid == src.sid
            assert out.payload == PAYLOADS[k % len(PAYLOADS)] and len(out.payload) == 160
        assert isinstance(stop[0], Stop) and stop[0].sequence == 26


def test_load_generator_can_hold_ticks_and_write_them_together() -> None:
    """--ticks-per-write 2: each write carries two ticks' four frames, in order, none
    early, and a stream's count of ticks sent (its stop's numbering) is whole writes."""
    from recstream.bench._streams_client import Platform, StreamSource
    from recstream.streams.frames import FrameReader
    from recstream.streams.protocol import Media, parse_message

    class Sock:
        def __init__(self) -> None:
            self.writes: list[bytes] = []

        def send(self, data: bytes) -> int:
            self.writes.append(bytes(data))
            return len(data)

    platform = Platform("127.0.0.1", 0, "/")
    socks = [Sock(), Sock(), Sock()]
    platform.socks = socks  # type: ignore[assignment]
    platform.sources = [StreamSource(platform.ticks) for _ in socks]
    result = platform.run(0.3, 3, give_up=30, per_write=2)
    for sock, src in zip(socks, platform.sources, strict=True):
        assert sock.writes, "nothing written"
        reader = FrameReader(65536)
        seen = []
        for w in sock.writes:
            frames = [parse_message(p) for _, p in reader.feed(w)]
            assert len(frames) == 4 and all(isinstance(m, Media) for m in frames)
            seen += frames
        assert [m.chunk for m in seen[::2]] == list(range(1, len(seen) // 2 + 1))
        assert src.k == len(seen) // 2 and src.k % 2 == 0
    assert result.sent == sum(4 * len(s.writes) for s in socks)

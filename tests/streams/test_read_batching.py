"""Read batching in the real ``recstream streams`` process (``[server] read_batch_ms``):
every byte of every stream is recorded as without it, the server says it batched, and
bad settings are refused with the rest of the configuration's problems."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from recstream.errors import ConfigError
from recstream.streams.config import load_config
from tests.streams import wsclient as wc
from tests.streams.helpers import SECRETS, Env, Server, audit_entry, decrypt_tracks, make_env

ACME = SECRETS["acme"]


def _calls(server: Server, env: Env, n: int) -> None:
    calls = [wc.Call() for _ in range(n)]
    sent = {c.stream_sid: (wc.audio(30, seed=2 * i), wc.audio(30, seed=2 * i + 1))
            for i, c in enumerate(calls)}  # fmt: skip

    async def one(c: wc.Call) -> int | None:
        inbound, outbound = sent[c.stream_sid]
        media = [m for pair in zip(wc.media_messages(c, inbound, "inbound"),
                                   wc.media_messages(c, outbound, "outbound"), strict=True)
                 for m in pair]  # fmt: skip
        msgs = [c.connected(), c.start(), *media, c.stop()]
        return (await wc.call(f"{server.url}?token={ACME}", msgs, close=False))[0]

    async def all_calls() -> list[int | None]:
        return list(await asyncio.gather(*(one(c) for c in calls)))

    assert wc.run(all_calls) == [1000] * n
    for c in calls:
        entry = audit_entry(env, c.stream_sid)
        ex = decrypt_tracks(env, Path(entry["file"]))
        assert ex.complete
        assert (bytes(ex.tracks[1].audio), bytes(ex.tracks[2].audio)) == sent[c.stream_sid]


@pytest.mark.parametrize("batch_ms", [20, 0])
def test_streams_record_the_same_with_and_without_batching(tmp_path: Path, batch_ms: int) -> None:
    env = make_env(tmp_path)
    config = env.config(read_batch_ms=batch_ms, read_batch_min_streams=1, idle_timeout=60)
    server = Server(config, tmp_path / "server.log")
    try:
        _calls(server, env, 6)
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in log
    if batch_ms:
        assert "reads were batched" in log  # the loop slept between rounds of reads
    else:
        assert "reads were batched" not in log


def test_default_waits_for_enough_streams(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    cfg = load_config(env.config())
    assert (cfg.server.read_batch, cfg.server.read_batch_min_streams) == (0.005, 32)
    server = Server(env.config("default.toml", idle_timeout=60), tmp_path / "server.log")
    try:
        _calls(server, env, 2)  # 2 streams < 32: read as they come
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "reads were batched" not in log


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"read_batch_ms": -1}, "[server] read_batch_ms must be 0 (off) or 1 to 100"),
        ({"read_batch_ms": 0.5}, "[server] read_batch_ms must be 0 (off) or 1 to 100"),
        ({"read_batch_ms": 250}, "[server] read_batch_ms must be 0 (off) or 1 to 100"),
        ({"read_batch_ms": "5"}, "[server] read_batch_ms"),
        ({"read_batch_min_streams": 0}, "[server] read_batch_min_streams must be positive"),
        ({"read_batch_min_streams": 2.5}, "[server] read_batch_min_streams"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, settings: dict[str, object], problem: str
) -> None:
    env = make_env(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(env.config(**settings))
    assert problem in str(info.value)


def test_a_boolean_is_not_a_number_of_milliseconds(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    path = env.config(read_batch_ms=1)
    path.write_text(path.read_text().replace("read_batch_ms = 1", "read_batch_ms = true"))
    with pytest.raises(ConfigError, match=r"\[server\] read_batch_ms must be"):
        load_config(path)


def test_fractional_milliseconds_are_taken(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    cfg = load_config(env.config(read_batch_ms=2.5, read_batch_min_streams=100))
    assert (cfg.server.read_batch, cfg.server.read_batch_min_streams) == (0.0025, 100)


def test_stop_finalises_streams_even_if_batching_had_died(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A background task's failure is logged at stop, and stop still closes every stream."""
    from recstream.aio import RecordingHook
    from recstream.service.audit import AuditLog
    from recstream.streams.auth import TenantCredentials
    from recstream.streams.config import ServerConfig
    from recstream.streams.server import StreamsServer, start_streams_server

    async def scenario() -> bool:
        cfg = ServerConfig("127.0.0.1", 0, read_batch=0.005, read_batch_min_streams=1)
        audit = AuditLog(tmp_path / "audit.jsonl")
        async with RecordingHook(tmp_path, lambda _t, _k: [], sync=False) as hook:
            server = StreamsServer(cfg, (TenantCredentials("t", secret=b"s" * 16),), hook, audit)
            running = await start_streams_server(server)
            closed = []
            real_close_all = server.close_all

            async def close_all() -> None:
                closed.append(True)
                await real_close_all()

            server.close_all = close_all  # type: ignore[method-assign]

            def broken() -> int:
                raise RuntimeError("open_streams failed")

            assert running.batcher is not None
            running.batcher.open_streams = broken
            running.batcher._enough.set()  # wake it: it calls broken() and dies
            assert running._batching is not None
            await asyncio.wait([running._batching], timeout=30)
            await running.stop()
        audit.close()
        return bool(closed)

    with caplog.at_level("ERROR", logger="recstream.streams"):
        assert asyncio.run(scenario())
    assert "a background task had failed" in caplog.text


def test_a_bad_cycle_in_code_is_refused_before_anything_is_bound(tmp_path: Path) -> None:
    from recstream.aio import RecordingHook
    from recstream.service.audit import AuditLog
    from recstream.streams.auth import TenantCredentials
    from recstream.streams.config import ServerConfig
    from recstream.streams.server import StreamsServer, start_streams_server

    async def scenario() -> None:
        cfg = ServerConfig("127.0.0.1", 0, read_batch=0.5)
        audit = AuditLog(tmp_path / "audit.jsonl")
        async with RecordingHook(tmp_path, lambda _t, _k: [], sync=False) as hook:
            server = StreamsServer(cfg, (TenantCredentials("t", secret=b"s" * 16),), hook, audit)
            with pytest.raises(ValueError, match="cycle must be"):
                await start_streams_server(server)
            assert not server.peers
        audit.close()

    asyncio.run(scenario())

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
        ({"read_batch_ms": -1}, "[server] read_batch_ms must be 0 (off) to 100"),
        ({"read_batch_ms": 250}, "[server] read_batch_ms must be 0 (off) to 100"),
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

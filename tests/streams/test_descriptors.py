"""Open files and the media-streams server: each stream holds a socket and a recording,
so the server raises its own open-file limit to what ``max_streams`` needs, takes no
more streams than the limit holds when it cannot (503, and a warning at start), and
refuses connections past its descriptor budget, so that a flood of connections can
never make a recording's file fail to open.  Real ``recstream streams`` processes under
a real ``RLIMIT_NOFILE``."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp

from recstream.streams.server import DESCRIPTOR_RESERVE
from tests.rlimits import open_file_limits, with_nofile
from tests.streams import wsclient as wc
from tests.streams.helpers import (
    SECRETS,
    Env,
    Server,
    audit_entry,
    decrypt_tracks,
    make_env,
)
from tests.tls_helpers import make_tls_files

ACME = SECRETS["acme"]


def test_raises_its_own_limit_to_what_max_streams_needs(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    server = Server(env.config(max_streams=500), tmp_path / "s.log", nofile=(200, 4096))
    try:
        assert open_file_limits(server.proc.pid) == (2 * 500 + DESCRIPTOR_RESERVE, 4096)
    finally:
        log = server.stop()
    assert "warning" not in log and "Traceback" not in log


def test_a_low_hard_limit_caps_the_streams_and_says_so(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    held = (100 - DESCRIPTOR_RESERVE) // 2  # 18 streams: a socket and a recording each
    server = Server(env.config(idle_timeout=60), tmp_path / "s.log", nofile=(100, 100))
    try:
        banner = "".join(server.lines)
        assert f"the open-file limit holds {held} streams per process, not the 800" in banner
        assert "ulimit -n 1664" in banner
        calls = [wc.Call(tracks=("inbound",)) for _ in range(held)]
        data = wc.audio(3, seed=5)

        async def scenario() -> tuple[list[int | None], int]:
            async with aiohttp.ClientSession() as session:
                sockets = [await session.ws_connect(f"{server.url}?token={ACME}") for _ in calls]
                status, _ = await wc.refused(f"{server.url}?token={ACME}")  # one too many
                for ws, c in zip(sockets, calls, strict=True):
                    for text in [c.start(), *wc.media_messages(c, data), c.stop()]:
                        await ws.send_str(text)
                codes = [(await wc.wait_closed(ws))[0] for ws in sockets]
                return codes, status

        codes, status = wc.run(scenario)
        assert status == 503 and codes == [1000] * held
        for c in calls:
            ex = decrypt_tracks(env, Path(audit_entry(env, c.stream_sid)["file"]))
            assert ex.complete and bytes(ex.tracks[1].audio) == data
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in log


def test_a_connection_flood_cannot_make_a_recording_fail(tmp_path: Path) -> None:
    """Idle connections past the budget get a 503 at once; the stream already open
    records to its end, and once the flood is gone new streams are taken again."""
    env = make_env(tmp_path)
    server = Server(env.config(idle_timeout=60), tmp_path / "s.log", nofile=(100, 100))
    try:
        c = wc.Call(tracks=("inbound",))
        data = wc.audio(6, seed=9)
        msgs = [c.start(), *wc.media_messages(c, data), c.stop()]
        flood: list[socket.socket] = []
        answers: list[bytes] = []

        async def scenario() -> int | None:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{server.url}?token={ACME}")
                for text in msgs[:4]:
                    await ws.send_str(text)
                for _ in range(60):  # a client that opens connections and sends nothing
                    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
                    flood.append(s)
                # Past the budget the server answers at once and closes; within it, it
                # waits for a request head (10 s): read the ones it refused.
                for s in flood[-20:]:
                    answers.append(await asyncio.to_thread(s.recv, 200))
                for text in msgs[4:]:
                    await ws.send_str(text)
                code = (await wc.wait_closed(ws))[0]
                for s in flood:
                    s.close()
                return code

        assert wc.run(scenario) == 1000
        assert all(a.startswith(b"HTTP/1.1 503 ") for a in answers), answers[:2]
        ex = decrypt_tracks(env, Path(audit_entry(env, c.stream_sid)["file"]))
        assert ex.complete and bytes(ex.tracks[1].audio) == data

        async def after() -> int | None:
            # The server sees the flood's closes as they come: until then, 503 (bounded).
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                d = wc.Call(tracks=("inbound",))
                try:
                    url = f"{server.url}?token={ACME}"
                    return (await wc.call(url, [d.start(), d.stop()], close=False))[0]
                except aiohttp.WSServerHandshakeError as exc:
                    assert exc.status == 503
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)

        assert wc.run(after) == 1000  # the flood's sockets are closed: room again
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in log


def test_over_tls_connections_count_from_the_accept_not_the_handshake(tmp_path: Path) -> None:
    """Over TLS a connection is admitted (or refused) when TCP accepts it, before the
    handshake: 90 connections that never send a ClientHello cannot exhaust the limit
    of 100 while a recording is open (before, they were counted only once their
    handshake finished, and the recording's end failed with EMFILE)."""

    env = make_env(tmp_path)
    tls = make_tls_files(tmp_path)
    config = env.config(idle_timeout=60, tls_cert=str(tls.cert), tls_key=str(tls.key))
    server = Server(config, tmp_path / "s.log", nofile=(100, 100))
    try:
        ctx = tls.client_context()
        c = wc.Call(tracks=("inbound",))
        data = wc.audio(6, seed=11)
        msgs = [c.start(), *wc.media_messages(c, data), c.stop()]
        flood: list[socket.socket] = []
        closed: list[bytes] = []

        async def scenario() -> int | None:
            async with aiohttp.ClientSession() as session:
                ws = await session.ws_connect(f"{server.url}?token={ACME}", ssl=ctx)
                for text in msgs[:4]:
                    await ws.send_str(text)
                for _ in range(90):  # TCP connections that never start their handshake
                    flood.append(socket.create_connection(("127.0.0.1", server.port), timeout=30))
                # The server has reached the connections past its budget (it audits them) ...
                await asyncio.to_thread(_refused_at_the_limit, env)
                # ... and the call ends while the flood still holds what it was given.
                for text in msgs[4:]:
                    await ws.send_str(text)
                code = (await wc.wait_closed(ws))[0]
                for s in flood[-40:]:  # past the budget: closed, no TLS
                    closed.append(await asyncio.to_thread(_recv_or_reset, s))
                for s in flood:
                    s.close()
                return code

        assert wc.run(scenario) == 1000
        assert closed == [b""] * 40
        ex = decrypt_tracks(env, Path(audit_entry(env, c.stream_sid)["file"]))
        assert ex.complete and bytes(ex.tracks[1].audio) == data
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in log


def _recv_or_reset(s: socket.socket) -> bytes:
    try:
        return s.recv(200)
    except ConnectionResetError:
        return b""


def _refused_at_the_limit(env: Env) -> None:
    deadline = time.monotonic() + 60  # a hang guard
    while not any(
        '"at the descriptor limit"' in line and '"stream_refused"' in line
        for line in env.audit_lines()
    ):
        assert time.monotonic() < deadline, "no refusal at the descriptor limit was audited"
        time.sleep(0.01)


def test_a_limit_that_holds_no_stream_stops_the_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = make_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "recstream", "streams", "--config", str(env.config())],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=with_nofile((60, 60)),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "the open-file limit (60) leaves no room for a stream" in done.stderr
    assert "ulimit -n 1664" in done.stderr and "Traceback" not in done.stderr

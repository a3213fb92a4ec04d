"""The server side of ``bench streams``: the real media-streams endpoint in a child process.

Runs :class:`~recstream.streams.server.StreamsServer` on uvloop with a recording
hook over a throwaway certificate, and answers the parent over a pipe:
``("reset",)`` starts a measurement window, ``("stats",)`` returns what the
window saw (CPU, segment timings, flush latency, streams ended and how),
``("stop",)`` shuts down.  A separate process, so the load generator's CPU is
not the server's.
"""

from __future__ import annotations

import asyncio
import resource
import time
from array import array
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from recstream.aio import RecordingHook
from recstream.aio.run import run
from recstream.envelope import Recipient
from recstream.pki.certs import load_certificate
from recstream.service.audit import AuditLog
from recstream.streams.auth import TenantCredentials
from recstream.streams.config import ServerConfig
from recstream.streams.server import StreamsServer, start_streams_server

__all__ = ["serve"]


class _Window:
    def __init__(self) -> None:
        self.fill: array[float] = array("d")
        self.late: array[float] = array("d")
        self.cpu0 = self.wall0 = self.user0 = self.system0 = 0.0

    def sealed(self, fill: float, late: float) -> None:
        self.fill.append(fill)
        self.late.append(late)

    def reset(self) -> None:
        self.fill, self.late = array("d"), array("d")
        r = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0, self.wall0 = r.ru_utime + r.ru_stime, time.monotonic()
        self.user0, self.system0 = r.ru_utime, r.ru_stime


async def _main(conn: Connection, opts: dict[str, Any]) -> None:
    work = Path(opts["directory"])
    cert = load_certificate(Path(opts["cert"]).read_bytes())
    recipient = Recipient.from_certificate(cert)
    window = _Window()
    config = ServerConfig(
        "127.0.0.1",
        opts["port"],
        max_streams=opts["max_streams"],
        idle_timeout=60.0,
        max_call_seconds=3600,
        read_batch=opts["read_batch"],
    )
    hook = RecordingHook(
        work / "recordings",
        lambda _t, _k: [recipient],
        flush_interval=opts["flush_interval"],
        sync=opts["sync"],
        contact_center="bench",
    )
    audit = AuditLog(work / "audit.jsonl")
    async with hook:
        server = StreamsServer(
            config,
            (TenantCredentials("bench", secret=opts["secret"].encode()),),
            hook,
            audit,
            on_sealed=window.sealed,
        )
        running = await start_streams_server(server, reuse_port=opts["reuse_port"])
        conn.send(("ready", running.url))
        while True:
            try:
                command = await asyncio.to_thread(conn.recv)
            except EOFError:  # the bench process is gone: stop too
                break
            if command[0] == "reset":
                window.reset()
                hook.flusher.latencies.clear()
                server.accepted = server.refused = 0
                conn.send(("ok",))
            elif command[0] == "stats":
                r = resource.getrusage(resource.RUSAGE_SELF)
                conn.send(
                    {
                        "cpu_seconds": r.ru_utime + r.ru_stime - window.cpu0,
                        "user_seconds": r.ru_utime - window.user0,
                        "system_seconds": r.ru_stime - window.system0,
                        "wall": time.monotonic() - window.wall0,
                        "fill": window.fill.tolist(),
                        "late": window.late.tolist(),
                        "flush": list(hook.flusher.latencies),
                        "open": server.open_streams,
                        "accepted": server.accepted,
                        "refused": server.refused,
                        "hook_errors": len(hook.errors),
                        "rss_mib": _rss_mib(),
                    }
                )
            else:
                break
        await running.stop()
    audit.close()


async def _bare(conn: Connection, opts: dict[str, Any]) -> None:
    """The reference: an aiohttp WebSocket endpoint that only receives and ``json.loads``
    each message (no checks, no recording): what any Python consumer of the same load pays."""
    import json

    from aiohttp import WSMsgType, web

    window = _Window()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 16)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT and json.loads(msg.data).get("event") == "stop":
                break
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/streams", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    conn.send(("ready", f"ws://127.0.0.1:{runner.addresses[0][1]}/streams"))
    while True:
        try:
            command = await asyncio.to_thread(conn.recv)
        except EOFError:
            break
        if command[0] == "reset":
            window.reset()
            conn.send(("ok",))
        elif command[0] == "stats":
            r = resource.getrusage(resource.RUSAGE_SELF)
            conn.send(
                {
                    "cpu_seconds": r.ru_utime + r.ru_stime - window.cpu0,
                    "user_seconds": r.ru_utime - window.user0,
                    "system_seconds": r.ru_stime - window.system0,
                    "wall": time.monotonic() - window.wall0,
                    **{k: [] for k in ("fill", "late", "flush")},
                    **dict.fromkeys(("open", "accepted", "refused", "hook_errors"), 0),
                    "rss_mib": _rss_mib(),
                }
            )
        else:
            break
    await runner.cleanup()


def _rss_mib() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * resource.getpagesize() / (1 << 20)


def serve(conn: Connection, opts: dict[str, Any]) -> None:
    """The child process's entry point."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = opts["max_streams"] * 3 + 256
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    run(_bare(conn, opts) if opts.get("bare") else _main(conn, opts))

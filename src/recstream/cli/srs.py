"""``recstream srs``: the SIPREC recording server (RFC 7866) as a command.

Prints one JSON line per event on stdout: ``ready`` once SIP listens (with the
address: ``listen = "127.0.0.1:0"`` picks a free port), then ``call_start`` and
``call_end`` per call, with no personal data (no addresses, no Call-ID).
SIGTERM or SIGINT ends every call and finalises every recording, then exits 0.
With ``processes = N`` in ``[sip]``, N processes share the SIP port through
SO_REUSEPORT (the kernel spreads SIP sources over them), each with its own
slice of the RTP port range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from recstream.aio.run import run
from recstream.cli import UsageError
from recstream.errors import ConfigError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "srs",
        help="run the SIPREC recording server (records SBC/PBX-forked calls, encrypted)",
        description="Run the SIPREC session recording server: answer SIPREC INVITEs "
        "(SDP + rs-metadata) over UDP and TCP, receive each participant's RTP (or SDES "
        "SRTP) stream and write one encrypted recording per call, live, under the "
        "tenant's active keystore certificate. Prints JSON status lines on stdout. "
        "SIGTERM ends every call (BYE) and finalises every recording.",
        epilog="Config: see the README section 'SIPREC recording server'.",
    )
    p.add_argument("--config", required=True, metavar="SRS.toml", help="server configuration")
    p.add_argument(
        "--check",
        action="store_true",
        help="check the config and the keystore, then exit (0 if both are usable)",
    )
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--listen-port", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_srs)


def _emit(doc: dict[str, Any]) -> None:
    # One write per line: several worker processes share stdout.
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def cmd_srs(args: argparse.Namespace) -> int:
    from recstream.siprec.config import load_config

    try:
        config = load_config(args.config)
        return run(_serve(args, config))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


async def _serve(args: argparse.Namespace, config: Any) -> int:
    from recstream.frontdoor.recorder import open_hook
    from recstream.siprec.admission import srs_descriptors
    from recstream.siprec.server import SrsServer

    server: SrsServer | None = None

    def on_error(call_id: str, kind: Any, exc: BaseException) -> None:
        if server is not None:
            server.recording_error(call_id, kind, exc)

    # Opens the keystore now: a wrong password or a damaged file stops the start.
    hook = await open_hook(
        config.recordings, config.keystore, on_error=on_error, signing=config.signing
    )
    if args.check:
        _emit({"event": "config_ok"})
        return 0
    n = config.processes
    if args.listen_port is not None:
        config = _replace(config, listen_port=args.listen_port)
    held, need = srs_descriptors(config.max_calls, config.connection_reserve)
    if held < config.max_calls:
        if args.worker == 0:
            _emit(
                {
                    "event": "warning",
                    "message": f"the open-file limit holds {held} calls per process, not the "
                    f"{config.max_calls} of max_calls: more are refused (503); raise it "
                    f"('ulimit -n {need}' or LimitNOFILE={need}) to take them all",
                }
            )
        config = _replace(config, max_calls=held)
    low, high = config.rtp_ports
    span = ((high - low) // 2 + 1) // n * 2
    lo = low + args.worker * span
    worker = args.worker
    server = SrsServer(
        config,
        hook,
        on_status=lambda d: _emit({**d, "worker": worker}),
        reuse_port=n > 1,
        port_range=(lo, min(high, lo + span - 2)),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host, port = await server.start()
    metrics = await _metrics(server, config) if args.worker == 0 else None
    children = _spawn_workers(args, n, port) if args.worker == 0 and n > 1 else []
    _emit(
        {
            "event": "ready",
            "sip": f"{host}:{port}",
            "worker": args.worker,
            "pid": os.getpid(),
            "processes": n,
            "metrics": metrics,
        }
    )
    await stop.wait()
    for child in children:
        child.send_signal(signal.SIGTERM)
    await server.aclose()
    for child in children:
        await asyncio.to_thread(child.wait)
    _emit({"event": "stopped", "worker": args.worker, "calls": server.totals.ended})
    return 0


def _replace(config: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(config, **changes)


def _spawn_workers(args: argparse.Namespace, n: int, port: int) -> list[subprocess.Popen[bytes]]:
    """Processes 1..n-1 of an SO_REUSEPORT group on the SIP port worker 0 bound."""
    cmd = [
        sys.executable,
        "-m",
        "recstream",
        "srs",
        "--config",
        str(Path(args.config)),
        "--listen-port",
        str(port),
    ]
    return [subprocess.Popen([*cmd, "--worker", str(i)]) for i in range(1, n)]  # noqa: S603


async def _metrics(server: Any, config: Any) -> str | None:
    """Serve /metrics (Prometheus text format) when [metrics] listen is set."""
    if config.metrics_host is None:
        return None
    from aiohttp import web
    from prometheus_client import CONTENT_TYPE_LATEST

    from recstream.siprec.metrics import exposition

    async def handler(request: web.Request) -> web.Response:
        _, body = exposition(server)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.metrics_host, config.metrics_port)
    await site.start()
    server_obj: Any = site._server
    sockets = server_obj.sockets if server_obj is not None else []
    bound = sockets[0].getsockname()[1] if sockets else config.metrics_port
    return f"{config.metrics_host}:{bound}"

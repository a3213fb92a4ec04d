"""``recstream streams``: record cloud-telephony media streams (Twilio Media Streams) live."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import subprocess
import sys
from typing import Any

from recstream.aio.run import run
from recstream.cli import EXIT_OK, UsageError, eprint
from recstream.errors import ConfigError


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "streams",
        help="record media streams forked over WebSocket (Twilio Media Streams)",
        description="Serve a WebSocket endpoint that cloud-telephony platforms (Twilio Media "
        "Streams and platforms with the same envelope) fork live calls to, and record each "
        "call as one encrypted recording with both tracks, in the archive layout, under the "
        "tenant's active keystore certificate. Connections authenticate with the tenant's "
        "shared secret (?token=, the last path segment, or 'Authorization: Bearer') and/or "
        "X-Twilio-Signature. Refused connections and every stream's end are written to the "
        "audit log. With 'processes = N' in [server], N processes share the port "
        "(SO_REUSEPORT). Stops on SIGINT/SIGTERM, finalising open recordings as incomplete. "
        "See README, 'Media streams'.",
    )
    p.add_argument("--config", required=True, metavar="STREAMS.toml", help="the configuration")
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--listen-port", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_streams)


def cmd_streams(args: argparse.Namespace) -> int:
    from recstream.streams.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        return run(_serve(args, config))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


async def _serve(args: argparse.Namespace, config: Any) -> int:
    from recstream.frontdoor.recorder import AuditLog, open_hook
    from recstream.streams.server import (
        StreamsServer,
        start_streams_server,
        streams_descriptors,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    n = config.server.processes
    server_cfg = dataclasses.replace(
        config.server,
        port=config.server.port if args.listen_port is None else args.listen_port,
        max_streams=max(1, config.server.max_streams // n),  # each process takes its share
    )
    held, need = streams_descriptors(server_cfg.max_streams)
    if held < server_cfg.max_streams:
        if args.worker == 0:
            eprint(
                f"recstream: warning: the open-file limit holds {held} streams per process, "
                f"not the {server_cfg.max_streams} of max_streams: more are refused (503); "
                f"raise it ('ulimit -n {need}' or LimitNOFILE={need}) to take them all"
            )
        server_cfg = dataclasses.replace(server_cfg, max_streams=held)
    hook = await open_hook(config.recordings, config.keystore, signing=config.signing)
    audit = AuditLog(config.audit.log)
    children: list[subprocess.Popen[bytes]] = []
    try:
        async with hook:
            server = StreamsServer(server_cfg, config.tenants, hook, audit, worker=args.worker)
            running = await start_streams_server(server, reuse_port=n > 1)
            if args.worker == 0:
                children = _spawn_workers(args.config, n, running.port)
                # The banner means every process listens: wait for each worker's word.
                for child in children:
                    assert child.stdout is not None
                    await asyncio.to_thread(child.stdout.readline)
                tenants = ", ".join(t.tenant for t in config.tenants)
                eprint(
                    f"recstream: media streams listening on {running.url} (tenants: {tenants}; "
                    f"{n} process{'es' if n > 1 else ''}; audit log {config.audit.log})"
                )
            else:
                sys.stdout.write("ready\n")
                sys.stdout.flush()
            try:
                await stop.wait()
            finally:
                for child in children:
                    child.send_signal(signal.SIGTERM)
                if args.worker == 0:
                    batched = running.batcher.naps if running.batcher else 0
                    eprint(
                        f"recstream: stopping ({server.open_streams} open streams finalised"
                        + (f"; reads were batched {batched:,} times)" if batched else ")")
                    )
                await running.stop()
    finally:
        audit.close()
        for child in children:
            await asyncio.to_thread(child.wait)
    return EXIT_OK


def _spawn_workers(config: str, n: int, port: int) -> list[subprocess.Popen[bytes]]:
    """Processes 1..n-1 of an SO_REUSEPORT group on the port worker 0 bound."""
    cmd = [sys.executable, "-m", "recstream", "streams", "--config", config]
    cmd += ["--listen-port", str(port)]
    return [
        subprocess.Popen([*cmd, "--worker", str(i)], stdout=subprocess.PIPE)  # noqa: S603
        for i in range(1, n)
    ]

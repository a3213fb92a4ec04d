"""``recstream streams``: record cloud-telephony media streams (Twilio Media Streams) live."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
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
        "audit log. Stops on SIGINT/SIGTERM, finalising open recordings as incomplete. "
        "See README, 'Media streams'.",
    )
    p.add_argument("--config", required=True, metavar="STREAMS.toml", help="the configuration")
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
        return run(_serve(config))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


async def _serve(config: Any) -> int:
    from recstream.frontdoor.recorder import AuditLog, open_hook
    from recstream.streams.server import StreamsServer, start_streams_server

    hook = await open_hook(config.recordings, config.keystore)
    audit = AuditLog(config.audit.log)
    try:
        async with hook:
            server = StreamsServer(config.server, config.tenants, hook, audit)
            running = await start_streams_server(server)
            tenants = ", ".join(t.tenant for t in config.tenants)
            eprint(
                f"recstream: media streams listening on {running.url} (tenants: {tenants}; "
                f"audit log {config.audit.log})"
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                eprint(f"recstream: stopping ({server.open_streams} open streams finalised)")
                await running.stop()
    finally:
        audit.close()
    return EXIT_OK

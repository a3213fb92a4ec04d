"""Starting the Recording Crypto Server from a config file (``serve``, ``demo --serve``).

(Kept out of the command modules so that they do not import each other.)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recstream.aio.run import run
from recstream.cli import EXIT_OK, EXIT_USAGE, UsageError, eprint
from recstream.errors import ConfigError
from recstream.service.config import ServiceConfig, load_config
from recstream.service.store import SettingsStore

__all__ = ["how_to_add_user", "serve_config_file"]


def _config(args: argparse.Namespace) -> ServiceConfig:
    if not getattr(args, "config", None):
        msg = "--config RCS.toml is required"
        raise UsageError(msg)
    try:
        return load_config(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def _store(config: ServiceConfig) -> SettingsStore:
    try:
        return SettingsStore.open(config.settings_db)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def how_to_add_user(config: ServiceConfig) -> str:
    return (
        f"no users in {config.settings_db}: there are no default credentials. Add one with\n"
        f"  recstream serve add-user --config {config.source} --name NAME --role ops "
        "--password-file F\n"
        f"  recstream serve add-user --config {config.source} --name NAME --role player "
        "--tenant TENANT --password-file F\n"
        "(the password is the first line of F)"
    )


def serve_config_file(path: str | Path | None, banner: Callable[[str], None] | None = None) -> int:
    """Start the server from a config file and run it until SIGINT/SIGTERM."""
    config = _config(argparse.Namespace(config=str(path) if path else None))
    store = _store(config)
    try:
        users = store.count_users()
    finally:
        store.close()
    if users == 0:
        eprint(f"recstream: {how_to_add_user(config)}")
        return EXIT_USAGE
    keyring = None
    if config.proxy is None:
        from recstream.service.keys import open_keyring

        assert config.keystore is not None
        try:
            keyring = open_keyring(config.keystore)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        return run(_serve(config, keyring, banner))
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


async def _serve(
    config: ServiceConfig, keyring: Any, banner: Callable[[str], None] | None = None
) -> int:
    from recstream.service.app import start_server

    server = await start_server(config, keyring)
    mode = "RCS" if config.proxy is None else f"decryption proxy for {config.proxy.node_path}"
    eprint(f"recstream: {mode} listening on {server.url} (audit log {config.audit_log})")
    if banner is not None:
        banner(server.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        eprint("recstream: stopping")
        await server.stop()
    return EXIT_OK

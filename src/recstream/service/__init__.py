"""The Recording Crypto Server (RCS), its decryption proxy, settings API and player page.

Thin adapters over the core (:mod:`recstream.envelope`, :mod:`recstream.reader`):
aiohttp on uvloop, one error-to-status table (:mod:`recstream.service.http`).
Modules: ``config`` (TOML), ``store`` (SQLite users and locations), ``passwords``
(Argon2id), ``auth`` and ``ratelimit``, ``archive`` (the recordings directory),
``decrypt`` and ``ranges`` (decryption and playback), ``ops`` and ``locations``
(the settings API), ``proxy`` (forwarding), ``player`` (``GET /``), ``audit``,
``metrics``, ``keys`` (the keystore seam), ``app`` (wiring and listening).
"""

from __future__ import annotations

from recstream.service.app import RunningServer, build_app, start_server
from recstream.service.config import ServiceConfig, load_config
from recstream.service.keys import open_keyring

__all__ = [
    "RunningServer",
    "ServiceConfig",
    "build_app",
    "load_config",
    "open_keyring",
    "start_server",
]

"""The Recording Crypto Server (RCS), its decryption proxy, settings API and player page.

Thin adapters over the core (:mod:`recstream.envelope`, :mod:`recstream.reader`):
aiohttp on uvloop, one error-to-status table (:mod:`recstream.service.http`).
Modules: ``config`` (TOML), ``store`` (SQLite users and locations), ``passwords``
(Argon2id), ``auth`` and ``ratelimit``, ``archive`` (the recordings directory),
``index`` (the header index behind listings), ``interactions`` (listings
grouped by call), ``decrypt`` and ``ranges`` (decryption and playback),
``tickets`` (playback URLs for media elements), ``wavwrap`` and ``mediatime``
(raw G.711 as WAV, durations from headers), ``ops`` and ``locations`` (the settings API),
``proxy`` (forwarding) and ``delegation`` (what a proxy sends instead of
passwords), ``player`` (``GET /``), ``audit``, ``metrics``, ``keys`` (the
keystore seam), ``errors`` (the service's errors), ``listener`` (connection
caps, quiet 400s), ``app`` (wiring and listening).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recstream.service.config import ServiceConfig, load_config

if TYPE_CHECKING:
    from recstream.service.app import RunningServer, build_app, start_server
    from recstream.service.keys import open_keyring

_LAZY = {
    "RunningServer": "recstream.service.app",
    "build_app": "recstream.service.app",
    "start_server": "recstream.service.app",
    "open_keyring": "recstream.service.keys",
}


def __getattr__(name: str) -> Any:
    # aiohttp is imported only when the server is really used: every other
    # command starts faster and smaller (a CLI process is ~30 MiB, not ~70).
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    msg = f"module 'recstream.service' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "RunningServer",
    "ServiceConfig",
    "build_app",
    "load_config",
    "open_keyring",
    "start_server",
]

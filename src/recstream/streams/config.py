"""``streams.toml``: the media-streams front door's configuration.

:func:`load_config` returns a checked, frozen :class:`StreamsConfig` or raises
:class:`~recstream.errors.ConfigError` listing every problem.  Besides the
common ``[recordings]``, ``[keystore]`` and ``[audit]``
(:mod:`recstream.frontdoor.config`):

``[server]``
    ``listen`` (host:port; without TLS only a loopback address), ``tls_cert`` /
    ``tls_key``, ``path`` (default ``/streams``), ``public_url`` (the
    ``wss://host`` the platform connects to, for signatures behind a TLS
    proxy), ``max_message_bytes``, ``max_streams``, ``idle_timeout``,
    ``max_call_seconds``, ``tenant_parameter`` (default ``tenant``), ``processes``
    (default 1: more share the port through SO_REUSEPORT, each taking
    ``max_streams / processes`` streams), ``read_batch_ms`` (default 5; 0 turns
    it off) and ``read_batch_min_streams`` (default 32): with that many streams
    open in a process, it reads its sockets every few milliseconds instead of on
    every write (:mod:`recstream.aio.batching`).
``[tenants.NAME]``
    ``secret_file`` (a shared secret, at least 16 characters) and/or
    ``twilio_auth_token_file`` (verify ``X-Twilio-Signature``); at least one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from recstream.aio.batching import DEFAULT_CYCLE, DEFAULT_MIN_STREAMS, MAX_CYCLE, MIN_CYCLE
from recstream.errors import ConfigError
from recstream.frontdoor.config import (
    NUMBER,
    AuditConfig,
    ConfigReader,
    KeystoreConfig,
    RecordingsConfig,
    SigningConfig,
    is_loopback_host,
    load_toml,
    parse_listen,
    read_secret,
)
from recstream.streams.auth import TenantCredentials
from recstream.streams.protocol import MAX_MESSAGE_BYTES
from recstream.tracks import MAX_TRACK_SECONDS

__all__ = ["ServerConfig", "StreamsConfig", "load_config"]

# Defaults, each with its reason.
DEFAULT_PATH: Final = "/streams"
# Per process: one process sustained 1,000 two-track streams here with the load
# generator on the same two cores (bench/RESULTS.md, "round 4"); past its capacity
# every stream falls behind, so refuse (503) before that, with a margin.
DEFAULT_STREAMS_PER_PROCESS: Final = 800
DEFAULT_IDLE_TIMEOUT: Final = 10.0  # a chunk comes every 20 ms: 10 s of nothing is a dead peer
DEFAULT_MAX_CALL_SECONDS: Final = 4 * 3600  # a timeline limit: a timestamp past it is refused
MAX_PROCESSES: Final = 64  # SO_REUSEPORT workers; one per core is the useful number
MIN_SECRET_CHARS: Final = 16  # a shared secret in a URL must not be guessable
_TENANT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")

_SCHEMA: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "server": {
        "listen": (str,),
        "tls_cert": (str,),
        "tls_key": (str,),
        "path": (str,),
        "public_url": (str,),
        "max_message_bytes": (int,),
        "max_streams": (int,),
        "idle_timeout": NUMBER,
        "max_call_seconds": NUMBER,
        "tenant_parameter": (str,),
        "processes": (int,),
        "read_batch_ms": NUMBER,
        "read_batch_min_streams": (int,),
    },
    "tenants": {"secret_file": (str,), "twilio_auth_token_file": (str,)},
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    path: str = DEFAULT_PATH
    public_url: str | None = None
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_streams: int = DEFAULT_STREAMS_PER_PROCESS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS
    tenant_parameter: str = "tenant"
    processes: int = 1
    read_batch: float = DEFAULT_CYCLE  # seconds; 0: off
    read_batch_min_streams: int = DEFAULT_MIN_STREAMS


@dataclass(frozen=True, slots=True)
class StreamsConfig:
    source: Path
    server: ServerConfig
    recordings: RecordingsConfig
    keystore: KeystoreConfig
    audit: AuditConfig
    tenants: tuple[TenantCredentials, ...]
    signing: SigningConfig | None = None  # [signing]: sign every recording (issue 16)


def load_config(path: str | Path) -> StreamsConfig:
    """Read and check ``streams.toml``; read the tenants' secrets.

    Raises:
        ConfigError: every problem found, each naming its section and key.
    """
    source, data = load_toml(path)
    r = ConfigReader(source, data, _SCHEMA)
    r.check_shape(tables=frozenset({"tenants"}))
    server = _server(r)
    recordings = r.recordings()
    keys = r.keystore()
    audit = r.audit()
    tenants = _tenants(r)
    signing = r.signing()
    r.raise_problems("the media-streams server")
    assert server and recordings and keys and audit
    return StreamsConfig(source, server, recordings, keys, audit, tenants, signing)


def _server(r: ConfigReader) -> ServerConfig | None:
    listen = r.require("server", "listen")
    host_port = None
    if listen is not None:
        try:
            host_port = parse_listen(listen)
        except ValueError as exc:
            r.problem(f"[server] {exc}")
    cert = r.path("server", "tls_cert", must="file")
    key = r.path("server", "tls_key", must="file")
    if (cert is None) != (key is None):
        r.problem("[server] tls_cert and tls_key go together: give both or neither")
    if host_port and cert is None and not is_loopback_host(host_port[0]):
        r.problem(
            f"[server] listen {listen} is not a loopback address and there is no TLS: shared "
            "secrets and call audio would cross the network in the clear; set tls_cert and "
            "tls_key (or listen on loopback behind a TLS proxy)"
        )
    path = r.get("server", "path") or DEFAULT_PATH
    if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", path):
        r.problem("[server] path must look like /streams (letters, digits, ._-)")
    public = r.get("server", "public_url")
    if public is not None:
        parts = urlsplit(public)
        if parts.scheme not in ("ws", "wss") or not parts.netloc or parts.path not in ("", "/"):
            r.problem("[server] public_url must be ws[s]://host[:port], without a path")
    processes = int(r.positive("server", "processes", 1))
    limits = {}
    for name, default in (
        ("max_message_bytes", MAX_MESSAGE_BYTES),
        ("max_streams", DEFAULT_STREAMS_PER_PROCESS * processes),
    ):
        limits[name] = int(r.positive("server", name, default))
    if limits["max_message_bytes"] < 1024:
        r.problem("[server] max_message_bytes must be at least 1024 (a start message)")
    param = r.get("server", "tenant_parameter") or "tenant"
    if processes > MAX_PROCESSES:
        r.problem(f"[server] processes must be at most {MAX_PROCESSES}")
    max_call = r.positive("server", "max_call_seconds", DEFAULT_MAX_CALL_SECONDS)
    if max_call > MAX_TRACK_SECONDS:
        # Past it no decoder would extract the recording (docs/TRACKS.md §7).
        r.problem(f"[server] max_call_seconds must be at most {MAX_TRACK_SECONDS} (24 hours)")
    read_batch = r.get("server", "read_batch_ms")
    if read_batch is None:
        read_batch = DEFAULT_CYCLE * 1000
    elif read_batch != 0 and not MIN_CYCLE * 1000 <= read_batch <= MAX_CYCLE * 1000:
        r.problem(
            f"[server] read_batch_ms must be 0 (off) or {MIN_CYCLE * 1000:g} to "
            f"{MAX_CYCLE * 1000:g}"
        )
        read_batch = DEFAULT_CYCLE * 1000
    if host_port is None:
        return None
    return ServerConfig(
        host_port[0],
        host_port[1],
        cert,
        key,
        path=path.rstrip("/"),
        public_url=public.rstrip("/") if public else None,
        max_message_bytes=limits["max_message_bytes"],
        max_streams=limits["max_streams"],
        idle_timeout=r.positive("server", "idle_timeout", DEFAULT_IDLE_TIMEOUT),
        max_call_seconds=max_call,
        tenant_parameter=param,
        processes=min(processes, MAX_PROCESSES),
        read_batch=float(read_batch) / 1000,
        read_batch_min_streams=int(
            r.positive("server", "read_batch_min_streams", DEFAULT_MIN_STREAMS)
        ),
    )


def _tenants(r: ConfigReader) -> tuple[TenantCredentials, ...]:
    table = r.data.get("tenants")
    if not isinstance(table, dict) or not table:
        r.problem("[tenants.NAME] is required: at least one tenant with its credentials")
        return ()
    out = []
    for name, body in table.items():
        section = f"tenants.{name}"
        if not isinstance(body, dict):
            r.problem(f"[{section}] must be a table")
            continue
        if not _TENANT_RE.fullmatch(name):
            r.problem(f"[{section}]: a tenant name is 1-64 letters, digits and ._@+-")
        r.check_keys(section, body, _SCHEMA["tenants"])
        secret = _secret(r, section, "secret_file", body)
        token = _secret(r, section, "twilio_auth_token_file", body)
        if secret is None and token is None and not any(k in body for k in _SCHEMA["tenants"]):
            r.problem(f"[{section}] needs secret_file, twilio_auth_token_file or both")
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            r.problem(f"[{section}] secret_file: the secret is shorter than {MIN_SECRET_CHARS}")
        out.append(TenantCredentials(name, secret, token))
    return tuple(out)


def _secret(r: ConfigReader, section: str, key: str, body: dict[str, object]) -> bytes | None:
    path = r.path(section, key, must="file", body=body)
    if path is None or not path.is_file():
        return None
    try:
        return read_secret(path, f"[{section}] {key}")
    except ConfigError as exc:
        r.problem(str(exc))
        return None

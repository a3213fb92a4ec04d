"""The server's configuration file (TOML), in the spirit of the vendor's ``rcs.properties``.

:func:`load_config` reads, checks and returns a frozen :class:`ServiceConfig`,
or raises :class:`ServiceConfigError` listing *every* problem found, so the server
refuses to start with one clear message.  Relative paths are relative to the
config file's directory.  The keys are documented in README ("serve").
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from recstream.errors import BundleError
from recstream.keystore.model import check_tenant
from recstream.pki.bundle import extract_certificates
from recstream.service.delegation import MIN_KEY_BYTES
from recstream.service.errors import RequestError, ServiceConfigError
from recstream.service.locations import (
    normalize_upstream,
    validate_contact_center,
    validate_location,
)
from recstream.service.signatures import SignaturePolicy, TenantPolicy
from recstream.storage import StoreURL
from recstream.tomlconfig import ConfigReader, is_loopback_host, load_toml, parse_listen

__all__ = [
    "AuthConfig",
    "KeystoreConfig",
    "ProxyConfig",
    "ServerConfig",
    "ServiceConfig",
    "check_store_url",
    "load_config",
    "parse_listen",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Defaults, each with its reason.
DEFAULT_MAX_BODY_BYTES: Final = 8 << 30  # an 8-hour screen recording at ~2 Mbit/s
DEFAULT_MAX_JSON_BYTES: Final = 64 << 10  # a location entry is < 3 KiB
DEFAULT_IDLE_TIMEOUT: Final = 15.0  # request headers must be complete by then (slowloris)
DEFAULT_READ_TIMEOUT: Final = 30.0  # longest pause between request body chunks
DEFAULT_WRITE_TIMEOUT: Final = 30.0  # longest a client may stall reading the response
DEFAULT_TOKEN_TTL: Final = 3600.0
DEFAULT_MAX_FAILURES: Final = 10
DEFAULT_FAILURE_WINDOW: Final = 300.0
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_RESCAN_INTERVAL: Final = 2.0  # seconds until a new recording is listed
# A store rescan lists the whole prefix (S3: a request per 1,000 recordings): less often.
DEFAULT_STORE_RESCAN_INTERVAL: Final = 30.0
DEFAULT_STORE_TIMEOUT: Final = 30.0  # seconds one store request may take before a 504
# [recordings] root may be a URL of these stores (recstream.service.objects serves it);
# memory:// is fsspec's in-process store, for tests and demos.
STORE_SCHEMES: Final = ("s3", "webdav+https", "webdav+http", "memory")
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: Final = 64  # a browser opens 6 per origin; a NAT, more
DEFAULT_CONNECTION_RESERVE: Final = 128  # descriptors kept for files, the database, upstreams
DEFAULT_MIN_BODY_RATE: Final = 16 * 1024  # bytes/s a request body must average (slow uploads)
METRICS_ACCESS: Final = ("ops", "public")

_NUM = (int, float)
_SCHEMA: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "server": {
        "listen": (str,),
        "tls_cert": (str,),
        "tls_key": (str,),
        "max_body_bytes": (int,),
        "max_json_bytes": (int,),
        "idle_timeout": _NUM,
        "read_timeout": _NUM,
        "write_timeout": _NUM,
        "trusted_proxies": (list,),
        "metrics": (str,),
        "max_connections_per_address": (int,),
        "connection_reserve": (int,),
        "min_body_rate": _NUM,
    },
    "keystore": {"path": (str,), "password_file": (str,), "password_env": (str,)},
    "recordings": {"root": (str,), "rescan_interval": _NUM, "store_timeout": _NUM},
    "audit": {"log": (str,)},
    "settings": {"db": (str,)},
    "auth": {
        "token_ttl": _NUM,
        "max_failures": (int,),
        "failure_window": _NUM,
        "proxies": (dict,),
    },
    "proxy": {
        "node_path": (str,),
        "contact_center": (str,),
        "ca_file": (str,),
        "connect_timeout": _NUM,
        "upstreams": (list,),
        "identity": (str,),
        "identity_key_file": (str,),
    },
    # [policy.TENANT] and [policy."*"] (every other tenant): issue 16's signature policy
    "policy": {"require_signature": (bool,), "signer_ca": (str,)},
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    trusted_proxies: tuple[IPNetwork, ...] = ()
    metrics: str = "ops"  # who may read /metrics: "ops" (the ops role) or "public"
    max_connections_per_address: int = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS
    connection_reserve: int = DEFAULT_CONNECTION_RESERVE
    min_body_rate: float = DEFAULT_MIN_BODY_RATE

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


@dataclass(frozen=True, slots=True)
class KeystoreConfig:
    """Where the keystore is and where its password comes from (exactly one source)."""

    path: Path
    password_file: Path | None = None
    password_env: str | None = None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """``proxies``: decryption proxies this RCS accepts delegations from (name -> key)."""

    token_ttl: float = DEFAULT_TOKEN_TTL
    max_failures: int = DEFAULT_MAX_FAILURES
    failure_window: float = DEFAULT_FAILURE_WINDOW
    proxies: dict[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """This server is a decryption proxy for the node at ``node_path``.

    Attributes:
        upstreams: the RCS URIs it may forward to (normalised); nothing else,
            whatever the settings database says.
        identity, identity_key: its name and the key it signs delegations with.
    """

    node_path: str
    contact_center: str
    upstreams: tuple[str, ...]
    identity: str
    identity_key: bytes = field(repr=False)
    ca_file: Path | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """A checked configuration.  ``keystore`` and ``recordings_root`` are None for a proxy.

    ``recordings_url`` is ``[recordings] root`` when it is a store URL (then
    ``recordings_root`` is None); ``store_timeout`` bounds each request to it.
    """

    source: Path
    server: ServerConfig
    audit_log: Path
    settings_db: Path
    keystore: KeystoreConfig | None = None
    recordings_root: Path | None = None
    auth: AuthConfig = field(default_factory=AuthConfig)
    proxy: ProxyConfig | None = None
    rescan_interval: float = DEFAULT_RESCAN_INTERVAL
    recordings_url: str | None = None  # [recordings] root when it is a store URL
    store_timeout: float = DEFAULT_STORE_TIMEOUT
    policy: SignaturePolicy = field(default_factory=SignaturePolicy)


def load_config(path: str | Path) -> ServiceConfig:
    """Read and check a configuration file.

    Raises:
        ServiceConfigError: the file is missing or not TOML, or it has problems; the
            message lists them all, each naming its section and key.
    """
    source, data = load_toml(path, error=ServiceConfigError)
    r = ConfigReader(source, data, _SCHEMA)
    r.check_shape(tables=frozenset({"policy"}))
    server = _server(r)
    proxy = _proxy(r)
    policy = _policy(r, "proxy" in r.data)
    keystore, root, url = _backend(r, "proxy" in r.data)
    audit = r.path("audit", "log", must="parent")
    r.require("audit", "log")
    db = r.path("settings", "db", must="parent")
    r.require("settings", "db")
    auth = AuthConfig(
        token_ttl=r.positive("auth", "token_ttl", DEFAULT_TOKEN_TTL),
        max_failures=int(r.positive("auth", "max_failures", DEFAULT_MAX_FAILURES)),
        failure_window=r.positive("auth", "failure_window", DEFAULT_FAILURE_WINDOW),
        proxies=_proxy_keys(r),
    )
    if r.problems or server is None or audit is None or db is None:
        lines = "\n".join(f"  - {p}" for p in r.problems)
        msg = f"{source}: the server will not start until this is fixed:\n{lines}"
        raise ServiceConfigError(msg)
    default_rescan = DEFAULT_RESCAN_INTERVAL if url is None else DEFAULT_STORE_RESCAN_INTERVAL
    rescan = r.positive("recordings", "rescan_interval", default_rescan)
    timeout = r.positive("recordings", "store_timeout", DEFAULT_STORE_TIMEOUT)
    return ServiceConfig(
        source, server, audit, db, keystore, root, auth, proxy, rescan, url, timeout, policy
    )


def _policy(r: ConfigReader, proxy: bool) -> SignaturePolicy:
    """``[policy.TENANT]`` / ``[policy."*"]``: signer CA and whether signatures are required."""
    table = r.data.get("policy")
    if table is None:
        return SignaturePolicy()
    if proxy:
        r.problem(
            "[policy] is not allowed with [proxy]: signatures are checked by the RCS that "
            "holds the recordings"
        )
        return SignaturePolicy()
    if not isinstance(table, dict) or not table:
        r.problem('[policy] must hold tables: [policy.TENANT] or [policy."*"] (every tenant)')
        return SignaturePolicy()
    rules: dict[str, TenantPolicy] = {}
    for tenant, body in table.items():
        section = f"policy.{tenant}" if tenant != "*" else 'policy."*"'
        if not isinstance(body, dict):
            r.problem(f"[policy] {tenant!r} must be a table: [{section}] with its keys")
            continue
        if tenant != "*":
            try:
                check_tenant(tenant)
            except ValueError as exc:
                r.problem(f"[{section}] {exc}")
                continue
        r.check_keys(section, body, _SCHEMA["policy"])
        rule = _tenant_policy(r, section, body)
        if rule is not None:
            rules[tenant] = rule
    default = rules.pop("*", TenantPolicy())
    return SignaturePolicy(rules, default)


def _tenant_policy(r: ConfigReader, section: str, body: dict[str, object]) -> TenantPolicy | None:
    required = r.get("policy", "require_signature", body) or False
    ca_path = r.path("policy", "signer_ca", must="file", body=body)
    if required and r.get("policy", "signer_ca", body) is None:
        r.problem(
            f"[{section}] require_signature = true needs signer_ca: the CA file of the "
            "recorders' signing certificates"
        )
        return None
    if ca_path is None or not ca_path.is_file():
        return TenantPolicy(require_signature=bool(required))
    try:
        data = ca_path.read_bytes()
        extract_certificates(data, f"[{section}] signer_ca {ca_path}")
    except (OSError, BundleError) as exc:
        r.problem(f"[{section}] signer_ca: {getattr(exc, 'strerror', None) or exc}")
        return None
    return TenantPolicy(require_signature=bool(required), signer_ca=data)


def _server(r: ConfigReader) -> ServerConfig | None:
    listen = r.require("server", "listen")
    if listen is None:
        return None
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        r.problem(f"[server] {exc}")
        return None
    cert = r.path("server", "tls_cert", must="file")
    key = r.path("server", "tls_key", must="file")
    if (cert is None) != (key is None):
        r.problem("[server] tls_cert and tls_key go together: give both or neither")
    if cert is None and not is_loopback_host(host):
        r.problem(
            f"[server] listen {listen} is not a loopback address and there is no TLS: "
            "Basic credentials and plaintext recordings would cross the network in the "
            "clear; set tls_cert and tls_key"
        )
    proxies: list[IPNetwork] = []
    for item in r.get("server", "trusted_proxies") or []:
        try:
            proxies.append(ipaddress.ip_network(str(item)))
        except ValueError:
            r.problem(f"[server] trusted_proxies: {item!r} is not an IP address or network")
    sizes = {}
    for key_name, default in (
        ("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        ("max_json_bytes", DEFAULT_MAX_JSON_BYTES),
    ):
        sizes[key_name] = int(r.positive("server", key_name, default))
    metrics = r.get("server", "metrics") or "ops"
    if metrics not in METRICS_ACCESS:
        r.problem(f"[server] metrics must be one of {', '.join(METRICS_ACCESS)}, not {metrics!r}")
        metrics = "ops"
    return ServerConfig(
        host,
        port,
        cert,
        key,
        metrics=metrics,
        max_connections_per_address=int(
            r.positive("server", "max_connections_per_address", DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)
        ),
        connection_reserve=int(
            r.positive("server", "connection_reserve", DEFAULT_CONNECTION_RESERVE)
        ),
        min_body_rate=r.positive("server", "min_body_rate", DEFAULT_MIN_BODY_RATE),
        max_body_bytes=sizes["max_body_bytes"],
        max_json_bytes=sizes["max_json_bytes"],
        idle_timeout=r.positive("server", "idle_timeout", DEFAULT_IDLE_TIMEOUT),
        read_timeout=r.positive("server", "read_timeout", DEFAULT_READ_TIMEOUT),
        write_timeout=r.positive("server", "write_timeout", DEFAULT_WRITE_TIMEOUT),
        trusted_proxies=tuple(proxies),
    )


def _proxy(r: ConfigReader) -> ProxyConfig | None:
    if "proxy" not in r.data:
        return None
    node = r.require("proxy", "node_path")
    cc = r.require("proxy", "contact_center")
    for check, value, key in (
        (validate_location, node, "node_path"),
        (validate_contact_center, cc, "contact_center"),
    ):
        if value is not None:
            try:
                check(value)
            except RequestError as exc:
                r.problem(f"[proxy] {key}: {exc}")
    ca = r.path("proxy", "ca_file", must="file")
    timeout = r.positive("proxy", "connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    upstreams = _upstreams(r)
    identity = r.require("proxy", "identity")
    if identity is not None and not _IDENTITY.fullmatch(identity):
        r.problem(f"[proxy] identity {identity[:80]!r} must be 1 to 64 letters, digits, '_.-'")
    key_path = r.path("proxy", "identity_key_file", must="file")
    r.require("proxy", "identity_key_file")
    secret = _read_key(r, "[proxy] identity_key_file", key_path) if key_path else None
    if node is None or cc is None or identity is None or secret is None:
        return None
    return ProxyConfig(node, str(cc).lower(), upstreams, identity, secret, ca, timeout)


_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _upstreams(r: ConfigReader) -> tuple[str, ...]:
    """``[proxy] upstreams``: RCS URIs, https (verified), or http to a loopback address."""
    items = r.require("proxy", "upstreams")
    if items is None:
        return ()
    if not items:
        r.problem("[proxy] upstreams is empty: list the RCS URIs this proxy may forward to")
    out: list[str] = []
    for item in items:
        try:
            out.append(normalize_upstream(item))
        except RequestError as exc:
            r.problem(f"[proxy] upstreams: {exc}")
    return tuple(dict.fromkeys(out))


def _read_key(r: ConfigReader, where: str, path: Path) -> bytes | None:
    try:
        line = path.read_bytes().split(b"\n", 1)[0].strip()
    except OSError as exc:
        r.problem(f"{where}: {path}: {exc.strerror or exc}")
        return None
    if len(line) < MIN_KEY_BYTES:
        r.problem(
            f"{where}: {path} must hold at least {MIN_KEY_BYTES} random bytes on its first "
            "line (such as: head -c 32 /dev/urandom | base64)"
        )
        return None
    return line


def _proxy_keys(r: ConfigReader) -> dict[str, bytes]:
    """``[auth] proxies = { NAME = "KEY_FILE", ... }``: proxies this RCS accepts."""
    table = r.get("auth", "proxies")
    out: dict[str, bytes] = {}
    for name, file in (table or {}).items():
        if not _IDENTITY.fullmatch(name) or not isinstance(file, str):
            r.problem(f"[auth] proxies: {name[:80]!r} = a key file path, for a proxy identity")
            continue
        path = (r.base / file).resolve()
        key = _read_key(r, f"[auth] proxies.{name}", path)
        if key is not None:
            out[name] = key
    return out


def check_store_url(text: str) -> str:
    """A store URL for ``[recordings] root``, checked (pure: no store is contacted).

    S3 and WebDAV URLs are :class:`recstream.storage.StoreURL`'s to judge (no
    credentials, query or odd path in them; plain-HTTP WebDAV to loopback only);
    ``memory://`` (fsspec's in-process store) is for tests and demos.

    Raises:
        ValueError: not a URL of a supported store, or one that is refused.
    """
    scheme = text.partition("://")[0].lower()
    if scheme not in STORE_SCHEMES:
        msg = f"{_shown(text)} is not a supported store URL (use {', '.join(STORE_SCHEMES)}://)"
        raise ValueError(msg)
    if scheme == "memory":
        if "@" in text or "?" in text or "#" in text:
            msg = f"{_shown(text)}: a memory:// URL is a plain path"
            raise ValueError(msg)
        return text
    StoreURL.parse(text)  # its messages never quote the URL (which may hold a password)
    return text


def _shown(text: str) -> str:
    """A URL for a message, without anything before an '@' (it may be a password)."""
    scheme, sep, rest = text.partition("://")
    rest = rest.rsplit("@", 1)[-1]
    return repr(f"{scheme}{sep}{rest}"[:200])


def _backend(r: ConfigReader, proxy: bool) -> tuple[KeystoreConfig | None, Path | None, str | None]:
    if proxy:
        for section in ("keystore", "recordings"):
            if section in r.data:
                r.problem(
                    f"[{section}] is not allowed with [proxy]: a decryption proxy holds no "
                    "keys and no recordings, it forwards to the RCS of its location"
                )
        return None, None, None
    path = r.path("keystore", "path", must=None)
    r.require("keystore", "path")
    if path is not None and not path.exists():
        r.problem(f"[keystore] path: {path} does not exist")
    pw_file = r.path("keystore", "password_file", must="file")
    pw_env = r.get("keystore", "password_env")
    if "keystore" in r.data and (pw_file is None) == (pw_env is None):
        r.problem("[keystore] give exactly one of password_file and password_env")
    keystore = KeystoreConfig(path, pw_file, pw_env) if path is not None else None
    text = r.get("recordings", "root")
    if isinstance(text, str) and text.lower().startswith("file://"):
        text = text[len("file://") :]
        r.table("recordings")["root"] = text
    if isinstance(text, str) and "://" in text:
        try:
            return keystore, None, check_store_url(text)
        except ValueError as exc:
            r.problem(f"[recordings] root: {exc}")
            return keystore, None, None
    root = r.path("recordings", "root", must="dir")
    r.require("recordings", "root")
    return keystore, root, None

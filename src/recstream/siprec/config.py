"""``srs.toml``: the recording server's configuration, read and checked before start.

The common sections (``[recordings]``, ``[keystore]``, optional ``[audit]``) are
read by :mod:`recstream.frontdoor.config`, shared with the media-streams front
door; this module adds ``[sip]``, ``[rtp]``, ``[metrics]`` and ``[tenants]``.
Every problem is collected and the server refuses to start with all of them
named in one :class:`~recstream.errors.ConfigError`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from recstream.frontdoor.config import (
    NUMBER,
    ConfigReader,
    KeystoreConfig,
    RecordingsConfig,
    SigningConfig,
    load_toml,
    parse_listen,
)

__all__ = ["EXAMPLE", "SrsConfig", "TenantRule", "load_config", "parse_config"]

EXAMPLE = """\
[sip]
listen = "127.0.0.1:5060"        # UDP and TCP on the same port
[rtp]
host = "127.0.0.1"               # address put in the SDP answer
ports = "20000-20999"            # even ports for RTP
[recordings]
root = "recordings"
contact_center = "0a1b2c"
[keystore]
path = "keystore.rsk"
password_file = "keystore.pass"
[tenants]
default = "acme"
"""

_TENANT = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9\-]{1,64}")
_RULE_KEYS: Final = frozenset(
    {"tenant", "request_uri_user", "header", "metadata_extension", "value"}
)
# (default, low, high) of each number, with its unit in the name.
_NUMBERS: Final = {
    ("sip", "max_calls"): (1000, 1, 100_000),
    ("sip", "rtp_timeout"): (30.0, 1, 86_400),  # seconds
    ("sip", "processes"): (1, 1, 64),
    ("sip", "tcp_idle_timeout"): (30.0, 1, 3600),  # seconds
    ("sip", "max_connections_per_address"): (32, 1, 100_000),
    ("sip", "connection_reserve"): (64, 0, 100_000),  # descriptors
    ("rtp", "reorder_window_ms"): (80, 60, 2000),  # the floor: 60 ms
}
_SCHEMA: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "sip": {
        "listen": (str,),
        "max_calls": (int,),
        "rtp_timeout": NUMBER,
        "processes": (int,),
        "allow": (list,),
        "tcp_idle_timeout": NUMBER,
        "max_connections_per_address": (int,),
        "connection_reserve": (int,),
    },
    "rtp": {"host": (str,), "ports": (str,), "reorder_window_ms": (int,)},
    "metrics": {"listen": (str,)},
    "tenants": {"default": (str,), "rule": (list,)},
}


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: Final[tuple[IPNetwork, ...]] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)


@dataclass(frozen=True, slots=True)
class TenantRule:
    """``[[tenants.rule]]``: the first rule that matches a call names its tenant."""

    tenant: str
    request_uri_user: str | None = None
    header: str | None = None  # a SIP header's name; ``value`` is what it must equal
    metadata_extension: str | None = None  # "{namespace}element" in rs-metadata
    value: str | None = None


@dataclass(frozen=True, slots=True)
class SrsConfig:
    listen_host: str
    listen_port: int
    rtp_host: str
    rtp_ports: tuple[int, int]
    recordings: RecordingsConfig
    keystore: KeystoreConfig
    default_tenant: str | None = None
    rules: tuple[TenantRule, ...] = ()
    max_calls: int = 1000
    rtp_timeout: float = 30.0
    reorder_window: float = 0.08
    processes: int = 1
    metrics_host: str | None = None
    metrics_port: int = 0
    # Sources that may send SIP and RTP; the default admits loopback only.
    allow: tuple[IPNetwork, ...] = LOOPBACK
    tcp_idle_timeout: float = 30.0
    max_connections_per_address: int = 32
    connection_reserve: int = 64
    signing: SigningConfig | None = None  # [signing]: sign every recording (issue 16)

    def allows(self, host: str) -> bool:
        """True if ``host`` (an IP address string) is inside ``[sip] allow``."""
        try:
            ip = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.allow)

    @property
    def root(self) -> Path:
        return self.recordings.root

    @property
    def contact_center(self) -> str | None:
        return self.recordings.contact_center

    @property
    def flush_interval(self) -> float:
        return self.recordings.flush_interval


def load_config(path: str | Path) -> SrsConfig:
    """Read and check ``path`` (relative paths in it are relative to its directory).

    Raises:
        ConfigError: unreadable, not TOML, or bad values (every problem named).
    """
    source, data = load_toml(path)
    return parse_config(data, source)


def parse_config(doc: Mapping[str, Any], source: Path) -> SrsConfig:
    """Check a parsed TOML document; ``source`` is the file it came from."""
    r = ConfigReader(source, dict(doc), _SCHEMA)
    r.check_shape()
    for section in ("sip", "rtp", "recordings", "keystore", "tenants"):
        if section not in r.data:
            r.problem(f"[{section}] is missing")
    listen = _address(r, "sip", "listen", required=True)
    metrics = _address(r, "metrics", "listen", required=False)
    rtp_host = r.require("rtp", "host")
    if rtp_host is not None and not _is_ip(rtp_host):
        r.problem(f"[rtp] host must be an IP address, got {rtp_host!r}")
    ports = _ports(r)
    numbers = {key: _number(r, key) for key in _NUMBERS}
    default = r.get("tenants", "default")
    if default is not None and not _TENANT.fullmatch(default):
        r.problem(
            f"[tenants] default must be a tenant name (letters, digits, . _ -), got {default!r}"
        )
    rules = _rules(r)
    allow = _allow(r, listen)
    if default is None and not rules and "tenants" in r.data:
        r.problem("[tenants] needs a default or at least one [[tenants.rule]]")
    recordings = r.recordings(archive=False)
    keystore = r.keystore()
    signing = r.signing()
    r.raise_problems("the SIPREC recording server")
    assert listen is not None and recordings is not None and keystore is not None
    return SrsConfig(
        listen_host=listen[0],
        listen_port=listen[1],
        rtp_host=rtp_host,
        rtp_ports=ports,
        recordings=recordings,
        keystore=keystore,
        default_tenant=default,
        rules=rules,
        max_calls=int(numbers["sip", "max_calls"]),
        rtp_timeout=float(numbers["sip", "rtp_timeout"]),
        reorder_window=numbers["rtp", "reorder_window_ms"] / 1000,
        processes=int(numbers["sip", "processes"]),
        metrics_host=metrics[0] if metrics else None,
        metrics_port=metrics[1] if metrics else 0,
        allow=allow,
        tcp_idle_timeout=float(numbers["sip", "tcp_idle_timeout"]),
        max_connections_per_address=int(numbers["sip", "max_connections_per_address"]),
        connection_reserve=int(numbers["sip", "connection_reserve"]),
        signing=signing,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _address(r: ConfigReader, section: str, key: str, *, required: bool) -> tuple[str, int] | None:
    text = r.require(section, key) if required else r.get(section, key)
    if text is None:
        return None
    try:
        host, port = parse_listen(text)
    except ValueError as exc:
        r.problem(f"[{section}] {exc}")
        return None
    if not _is_ip(host):  # the SDP answer and SO_REUSEPORT want an address, not a name
        r.problem(f"[{section}] {key} must be IP:PORT (an IP address, not a name), got {text!r}")
        return None
    return host, port


def _allow(r: ConfigReader, listen: tuple[str, int] | None) -> tuple[IPNetwork, ...]:
    """``[sip] allow``: loopback by default; required when SIP listens off loopback."""
    raw = r.get("sip", "allow")
    if raw is None:
        if listen is not None and not ipaddress.ip_address(listen[0]).is_loopback:
            r.problem(
                "[sip] allow is required when listen is not a loopback address: list the "
                'networks of the SBCs that may record, such as allow = ["192.0.2.0/24"]'
            )
        return LOOPBACK
    nets: list[IPNetwork] = []
    for item in raw:
        if not isinstance(item, str):
            r.problem(f"[sip] allow must be a list of CIDR strings, got {item!r}")
            continue
        try:
            nets.append(ipaddress.ip_network(item, strict=True))
        except ValueError:
            r.problem(f"[sip] allow: {item!r} is not a network such as '192.0.2.0/24'")
    if not raw:
        r.problem("[sip] allow is empty: no SBC could record")
    return tuple(nets)


def _ports(r: ConfigReader) -> tuple[int, int]:
    text = r.require("rtp", "ports")
    if text is None:
        return (0, 0)
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", text)
    lo, hi = (int(m[1]), int(m[2])) if m else (0, 0)
    if not m or not 1024 <= lo < hi <= 65535:
        r.problem(f"[rtp] ports must be LOW-HIGH within 1024-65535, got {text!r}")
        return (0, 0)
    return lo + (lo & 1), hi


def _number(r: ConfigReader, key: tuple[str, str]) -> float:
    default, lo, hi = _NUMBERS[key]
    value = r.get(*key)
    if value is None:
        return default
    if not lo <= value <= hi:
        r.problem(f"[{key[0]}] {key[1]} must be within {lo}-{hi}, got {value}")
        return default
    return value  # type: ignore[no-any-return]


def _rules(r: ConfigReader) -> tuple[TenantRule, ...]:
    raw = r.get("tenants", "rule")
    if raw is None:
        return ()
    rules = []
    for i, rule in enumerate(raw):
        where = f"[[tenants.rule]] #{i + 1}"
        if not isinstance(rule, dict) or not all(isinstance(v, str) for v in rule.values()):
            r.problem(f"{where} must be a table of strings")
            continue
        if set(rule) - _RULE_KEYS:
            r.problem(f"{where}: unknown keys {sorted(set(rule) - _RULE_KEYS)}")
        kinds = [k for k in ("request_uri_user", "header", "metadata_extension") if k in rule]
        if len(kinds) != 1:
            r.problem(f"{where} needs exactly one of request_uri_user, header, metadata_extension")
            continue
        if kinds[0] != "request_uri_user" and "value" not in rule:
            r.problem(f"{where}: {kinds[0]} needs a value")
        if "header" in rule and not _HEADER_NAME.fullmatch(rule["header"]):
            r.problem(f"{where}: header must be a header name")
        tenant = rule.get("tenant", "")
        if not _TENANT.fullmatch(tenant):
            r.problem(f"{where}: tenant must be a tenant name, got {tenant!r}")
            continue
        rules.append(
            TenantRule(
                tenant,
                rule.get("request_uri_user"),
                rule.get("header"),
                rule.get("metadata_extension"),
                rule.get("value"),
            )
        )
    return tuple(rules)

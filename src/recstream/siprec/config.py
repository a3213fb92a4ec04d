"""``srs.toml``: the recording server's configuration, read and checked before start.

Every mistake is a :class:`~recstream.errors.ConfigError` naming the key, so
the server refuses to start rather than run half-configured.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.errors import ConfigError

__all__ = ["SrsConfig", "TenantRule", "load_config", "parse_config"]

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
    root: Path
    keystore: Path
    password_file: Path
    contact_center: str | None = None
    ca_file: Path | None = None
    default_tenant: str | None = None
    rules: tuple[TenantRule, ...] = ()
    max_calls: int = 1000
    rtp_timeout: float = 30.0
    reorder_window: float = 0.08
    flush_interval: float = 1.0
    processes: int = 1
    metrics_host: str | None = None
    metrics_port: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)


def load_config(path: str | Path) -> SrsConfig:
    """Read and check ``path`` (relative paths in it are relative to its directory).

    Raises:
        ConfigError: unreadable, not TOML, or a bad value (the message names the key).
    """
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"cannot read {p}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"{p} is not valid TOML: {exc}"
        raise ConfigError(msg) from None
    return parse_config(doc, p.resolve().parent)


def _table(doc: Mapping[str, Any], name: str, *, required: bool = True) -> Mapping[str, Any]:
    value = doc.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        msg = f"[{name}] is missing" if value is None else f"[{name}] must be a table"
        raise ConfigError(msg)
    return value


def _get(t: Mapping[str, Any], table: str, key: str, kind: type, default: Any = None) -> Any:
    value = t.get(key, default)
    if value is None:
        if default is None and kind is not type(None):
            msg = f"{table}.{key} is required"
            raise ConfigError(msg)
        return default
    if kind is float and type(value) is int:
        value = float(value)
    if type(value) is not kind:
        msg = f"{table}.{key} must be a {kind.__name__}"
        raise ConfigError(msg)
    return value


def _address(text: str, key: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not 0 <= number <= 65535:
        msg = f"{key} must be IP:PORT (an IP address, not a name), got {text!r}"
        raise ConfigError(msg)
    return host, number


def _ports(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{1,5})-(\d{1,5})", text)
    lo, hi = (int(m[1]), int(m[2])) if m else (0, 0)
    if not m or not 1024 <= lo < hi <= 65535:
        msg = f"rtp.ports must be LOW-HIGH within 1024-65535, got {text!r}"
        raise ConfigError(msg)
    return lo + (lo & 1), hi


def _tenant(name: object, key: str) -> str:
    if not isinstance(name, str) or not _TENANT.fullmatch(name):
        msg = f"{key} must be a tenant name (letters, digits, . _ -; 1-64), got {name!r}"
        raise ConfigError(msg)
    return name


def _rules(raw: object) -> tuple[TenantRule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        msg = "tenants.rule must be an array of tables ([[tenants.rule]])"
        raise ConfigError(msg)
    rules = []
    for i, r in enumerate(raw):
        key = f"tenants.rule[{i}]"
        known = {"tenant", "request_uri_user", "header", "metadata_extension", "value"}
        if set(r) - known:
            msg = f"{key}: unknown keys {sorted(set(r) - known)}"
            raise ConfigError(msg)
        kinds = [k for k in ("request_uri_user", "header", "metadata_extension") if k in r]
        if len(kinds) != 1 or not all(isinstance(r[k], str) for k in r):
            msg = f"{key} needs exactly one of request_uri_user, header, metadata_extension"
            raise ConfigError(msg)
        if kinds[0] != "request_uri_user" and "value" not in r:
            msg = f"{key}: {kinds[0]} needs a value"
            raise ConfigError(msg)
        if "header" in r and not _HEADER_NAME.fullmatch(r["header"]):
            msg = f"{key}.header must be a header name"
            raise ConfigError(msg)
        rules.append(TenantRule(_tenant(r.get("tenant"), f"{key}.tenant"),
                                r.get("request_uri_user"), r.get("header"),
                                r.get("metadata_extension"), r.get("value")))
    return tuple(rules)


def parse_config(doc: Mapping[str, Any], base: Path) -> SrsConfig:
    """Check a parsed TOML document (see :func:`load_config`)."""
    sip, rtp = _table(doc, "sip"), _table(doc, "rtp")
    rec, ks = _table(doc, "recordings"), _table(doc, "keystore")
    tenants, metrics = _table(doc, "tenants"), _table(doc, "metrics", required=False)
    unknown = set(doc) - {"sip", "rtp", "recordings", "keystore", "tenants", "metrics"}
    if unknown:
        msg = f"unknown tables {sorted(unknown)}"
        raise ConfigError(msg)
    host, port = _address(_get(sip, "sip", "listen", str), "sip.listen")
    rtp_host = _get(rtp, "rtp", "host", str)
    _address(f"{rtp_host}:0", "rtp.host")
    default = tenants.get("default")
    rules = _rules(tenants.get("rule"))
    if default is None and not rules:
        msg = "[tenants] needs a default or at least one [[tenants.rule]]"
        raise ConfigError(msg)
    numbers = {
        "max_calls": (_get(sip, "sip", "max_calls", int, 1000), 1, 100_000),
        "rtp_timeout": (_get(sip, "sip", "rtp_timeout", float, 30.0), 1, 86_400),
        "processes": (_get(sip, "sip", "processes", int, 1), 1, 64),
        "reorder_window_ms": (_get(rtp, "rtp", "reorder_window_ms", int, 80), 60, 2000),
        "flush_interval": (_get(rec, "recordings", "flush_interval", float, 1.0), 0.01, 60),
    }
    for name, (value, lo, hi) in numbers.items():
        if not lo <= value <= hi:
            msg = f"{name} must be within {lo}-{hi}, got {value}"
            raise ConfigError(msg)
    mhost, mport = (None, 0)
    if "listen" in metrics:
        mhost, mport = _address(_get(metrics, "metrics", "listen", str), "metrics.listen")
    cc = rec.get("contact_center")
    if cc is not None and not (isinstance(cc, str) and _TENANT.fullmatch(cc)):
        msg = "recordings.contact_center must be a short identifier"
        raise ConfigError(msg)
    ca = ks.get("ca_file")
    return SrsConfig(
        listen_host=host,
        listen_port=port,
        rtp_host=rtp_host,
        rtp_ports=_ports(_get(rtp, "rtp", "ports", str)),
        root=base / _get(rec, "recordings", "root", str),
        keystore=base / _get(ks, "keystore", "path", str),
        password_file=base / _get(ks, "keystore", "password_file", str),
        contact_center=cc,
        ca_file=base / ca if isinstance(ca, str) else None,
        default_tenant=None if default is None else _tenant(default, "tenants.default"),
        rules=rules,
        max_calls=numbers["max_calls"][0],
        rtp_timeout=numbers["rtp_timeout"][0],
        reorder_window=numbers["reorder_window_ms"][0] / 1000,
        flush_interval=numbers["flush_interval"][0],
        processes=numbers["processes"][0],
        metrics_host=mhost,
        metrics_port=mport,
    )

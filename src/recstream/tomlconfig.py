"""TOML configuration files for every server (the RCS, the SIPREC server, media streams).

:class:`ConfigReader` checks a loaded document against a schema (section -> key ->
accepted types) and collects every problem instead of stopping at the first, so a
wrong file is refused with all of them named.  Relative paths are relative to the
file.  Each server adds its own sections and cross-field checks on top.
"""

from __future__ import annotations

import difflib
import ipaddress
import ssl
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from recstream.errors import ConfigError

__all__ = [
    "ConfigReader",
    "Schema",
    "is_loopback_host",
    "load_toml",
    "parse_listen",
    "server_tls_context",
]

Schema = Mapping[str, Mapping[str, tuple[type, ...]]]

_KIND_NAMES: Final = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "a table",
    bool: "true or false",
}


def load_toml(
    path: str | Path, *, error: type[ConfigError] = ConfigError
) -> tuple[Path, dict[str, Any]]:
    """Read a TOML file.

    Raises:
        ConfigError (or ``error``): missing, unreadable or not TOML.
    """
    source = Path(path).resolve()
    try:
        return source, tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"config file not found: {source}"
        raise error(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read config file {source}: {exc}"
        raise error(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source} is not valid TOML: {exc}"
        raise error(msg) from None


def server_tls_context(
    cert: Path | None, key: Path | None, *, error: type[ConfigError] = ConfigError
) -> ssl.SSLContext | None:
    """A server's TLS context (TLS 1.2+) from ``[server] tls_cert``/``tls_key``, or None.

    Raises:
        ConfigError (or ``error``): the certificate or key cannot be loaded.
    """
    if cert is None or key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        msg = f"[server] tls_cert/tls_key cannot be used: {exc}"
        raise error(msg) from None
    return ctx


class ConfigReader:
    """Typed access to a loaded TOML document that collects every problem.

    A value of the wrong type reads as absent (and ``check_shape`` names it); a
    boolean is accepted only where the schema lists ``bool``.
    """

    def __init__(self, source: Path, data: dict[str, Any], schema: Schema) -> None:
        self.source = source
        self.base = source.parent
        self.data = data
        self.schema = schema
        self.problems: list[str] = []

    def problem(self, text: str) -> None:
        self.problems.append(text)

    def check_shape(self, *, tables: frozenset[str] = frozenset()) -> None:
        """Unknown sections and keys, and wrong types.  ``tables``: sections of sub-tables."""
        for section, body in self.data.items():
            if section in tables:
                continue
            if section not in self.schema:
                self.problem(f"unknown section [{section}]{_hint(section, self.schema)}")
            elif not isinstance(body, dict):
                self.problem(f"[{section}] must be a table")
            else:
                self.check_keys(section, body, self.schema[section])

    def check_keys(
        self, name: str, body: dict[str, Any], keys: Mapping[str, tuple[type, ...]]
    ) -> None:
        for key, value in body.items():
            kinds = keys.get(key)
            if kinds is None:
                self.problem(f"unknown key [{name}] {key}{_hint(key, keys)}")
            elif isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
                want = " or ".join(_KIND_NAMES[k] for k in kinds)
                self.problem(f"[{name}] {key} must be {want}")

    def table(self, section: str) -> dict[str, Any]:
        body = self.data.get(section)
        return body if isinstance(body, dict) else {}

    def get(self, section: str, key: str, body: dict[str, Any] | None = None) -> Any:
        value = (self.table(section) if body is None else body).get(key)
        kinds = self.schema.get(section.split(".", maxsplit=1)[0], {}).get(key, ())
        if value is None or isinstance(value, bool) != (bool in kinds):
            return None
        return value if isinstance(value, kinds) else None

    def require(self, section: str, key: str) -> Any:
        value = self.get(section, key)
        if value is None and key not in self.table(section):
            self.problem(f"[{section}] {key} is required")
        return value

    def path(
        self, section: str, key: str, *, must: str | None = None, body: Any = None
    ) -> Path | None:
        """A path key resolved against the config's directory; ``must``: file, dir or parent."""
        text = self.get(section, key, body)
        if text is None:
            return None
        p = (self.base / text).resolve() if text else self.base
        if must == "file" and not p.is_file():
            self.problem(f"[{section}] {key}: {p} is not a file")
        elif must == "dir" and not p.is_dir():
            self.problem(f"[{section}] {key}: {p} is not a directory")
        elif must == "parent" and not p.parent.is_dir():
            self.problem(f"[{section}] {key}: directory {p.parent} does not exist")
        return p

    def positive(self, section: str, key: str, default: float) -> float:
        value = self.get(section, key)
        if value is None:
            return default
        if not value > 0:
            self.problem(f"[{section}] {key} must be positive")
            return default
        return float(value)

    def raise_problems(self, what: str) -> None:
        """Raise ConfigError listing every problem, if there is any."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{self.source}: {what} will not start until this is fixed:\n{lines}"
            raise ConfigError(msg)


def _hint(word: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_listen(text: str) -> tuple[str, int]:
    """A ``listen`` value, ``"127.0.0.1:8443"`` or ``"[::1]:8443"`` -> (host, port), the
    host without brackets.  Port 0 picks a free port.

    Raises:
        ValueError: not host:port.
    """
    host, sep, port = text.rpartition(":")
    digits = 0 < len(port) <= 5 and port.isascii() and port.isdigit()  # not "²", not 5,000 digits
    if not sep or not host or not digits or not 0 <= int(port) <= 65535:
        msg = f"listen {text!r} must be host:port, such as '127.0.0.1:8443' or '[::1]:8443'"
        raise ValueError(msg)
    if host.startswith("[") != host.endswith("]"):
        msg = f"listen {text!r}: unbalanced brackets around an IPv6 address"
        raise ValueError(msg)
    return host.strip("[]"), int(port)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1), with or without
    an IPv6 address's brackets."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

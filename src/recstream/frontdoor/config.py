"""Configuration shared by the front doors (media streams, SIPREC): TOML, every problem listed.

A front door's config file has its own sections (``[server]``, ``[tenants.NAME]``
for media streams) and these common ones, read here once for both:

* ``[recordings]`` ``root`` (the archive), ``contact_center`` (its first path
  component), ``flush_interval`` (seconds a sealed segment may wait in memory);
* ``[keystore]`` ``path``, exactly one of ``password_file`` / ``password_env``,
  optional ``ca_file`` (validate each tenant's active certificate);
* ``[audit]`` ``log``: one JSON line per accepted or refused connection.

:class:`ConfigReader` collects problems instead of stopping at the first, so a
wrong file is refused with all of them named; relative paths are relative to
the file.  Secrets (passwords, shared secrets) are read from files or the
environment, never written in the config itself, so the config can be shown.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from recstream.aio.flusher import DEFAULT_FLUSH_INTERVAL
from recstream.errors import ConfigError

__all__ = [
    "AuditConfig",
    "ConfigReader",
    "KeystoreConfig",
    "RecordingsConfig",
    "is_loopback_host",
    "load_toml",
    "parse_listen",
    "read_secret",
]

Schema = Mapping[str, Mapping[str, tuple[type, ...]]]
NUMBER: Final = (int, float)

COMMON_SCHEMA: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "recordings": {"root": (str,), "contact_center": (str,), "flush_interval": NUMBER},
    "keystore": {
        "path": (str,),
        "password_file": (str,),
        "password_env": (str,),
        "ca_file": (str,),
    },
    "audit": {"log": (str,)},
}
MAX_FLUSH_INTERVAL: Final = 60.0  # a sealed segment waiting longer is a crash's loss
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_KIND_NAMES: Final = {
    str: "a string",
    int: "an integer",
    float: "a number",
    list: "a list",
    dict: "a table",
    bool: "true or false",
}


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    """Where recordings go; ``contact_center`` None means flat files, not the archive layout."""

    root: Path
    contact_center: str | None
    flush_interval: float = DEFAULT_FLUSH_INTERVAL


@dataclass(frozen=True, slots=True)
class KeystoreConfig:
    path: Path
    password_file: Path | None = None
    password_env: str | None = None
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class AuditConfig:
    log: Path


def load_toml(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Read a TOML file.

    Raises:
        ConfigError: missing, unreadable or not TOML.
    """
    source = Path(path).resolve()
    try:
        return source, tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"config file not found: {source}"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read config file {source}: {exc}"
        raise ConfigError(msg) from None
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source} is not valid TOML: {exc}"
        raise ConfigError(msg) from None


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"`` or ``"[::1]:8765"`` -> (host, port); port 0 picks a free one.

    Raises:
        ValueError: not host:port.
    """
    host, sep, port = text.rpartition(":")
    digits = 0 < len(port) <= 5 and port.isascii() and port.isdigit()  # not "\u00b2"
    if not sep or not host or not digits or not 0 <= int(port) <= 65535:
        msg = f"listen {text!r} must be host:port, such as '127.0.0.1:8765' or '[::1]:8765'"
        raise ValueError(msg)
    if host.startswith("[") != host.endswith("]"):
        msg = f"listen {text!r}: unbalanced brackets around an IPv6 address"
        raise ValueError(msg)
    return host.strip("[]"), int(port)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_secret(path: Path, what: str) -> bytes:
    """A secret: the first line of ``path`` (which should be owner-only).

    Raises:
        ConfigError: unreadable or empty.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"{what} {path}: {exc.strerror or exc}"
        raise ConfigError(msg) from None
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        msg = f"{what} {path} is empty"
        raise ConfigError(msg)
    return line


class ConfigReader:
    """Typed access to a loaded TOML document that collects every problem."""

    def __init__(self, source: Path, data: dict[str, Any], schema: Schema) -> None:
        self.source = source
        self.base = source.parent
        self.data = data
        self.schema = {**COMMON_SCHEMA, **schema}
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

    def recordings(self, *, archive: bool = True) -> RecordingsConfig | None:
        """``[recordings]``; ``archive``: ``contact_center`` is required (the archive layout)."""
        root = self.path("recordings", "root", must="dir")
        self.require("recordings", "root")
        cc = (self.require if archive else self.get)("recordings", "contact_center")
        if cc is not None and not _IDENTIFIER.fullmatch(cc):
            self.problem("[recordings] contact_center must be 1-64 letters, digits and ._-")
        interval = self.positive("recordings", "flush_interval", DEFAULT_FLUSH_INTERVAL)
        if interval > MAX_FLUSH_INTERVAL:
            self.problem(f"[recordings] flush_interval must be at most {MAX_FLUSH_INTERVAL:g} s")
        if root is None or (archive and not cc):
            return None
        return RecordingsConfig(root, cc, interval)

    def keystore(self) -> KeystoreConfig | None:
        path = self.path("keystore", "path")
        self.require("keystore", "path")
        if path is not None and not path.exists():
            self.problem(f"[keystore] path: {path} does not exist")
        pw_file = self.path("keystore", "password_file", must="file")
        pw_env = self.get("keystore", "password_env")
        if "keystore" in self.data and (pw_file is None) == (pw_env is None):
            self.problem("[keystore] give exactly one of password_file and password_env")
        ca = self.path("keystore", "ca_file", must="file")
        return KeystoreConfig(path, pw_file, pw_env, ca) if path is not None else None

    def audit(self, *, required: bool = True) -> AuditConfig | None:
        log = self.path("audit", "log", must="parent")
        if required:
            self.require("audit", "log")
        return AuditConfig(log) if log is not None else None

    def raise_problems(self, what: str) -> None:
        """Raise ConfigError listing every problem, if there is any."""
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            msg = f"{self.source}: {what} will not start until this is fixed:\n{lines}"
            raise ConfigError(msg)


def keystore_password(cfg: KeystoreConfig) -> bytes:
    """The keystore password from ``password_file`` (first line) or ``$password_env``.

    Raises:
        ConfigError: the file is empty or unreadable, or the variable is unset.
    """
    if cfg.password_file is not None:
        return read_secret(cfg.password_file, "[keystore] password_file")
    value = os.environ.get(cfg.password_env or "", "")
    if not value:
        msg = f"[keystore] password_env: the environment variable {cfg.password_env} is not set"
        raise ConfigError(msg)
    return value.encode("utf-8")


def _hint(word: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""Configuration shared by the front doors (media streams, SIPREC): TOML, every problem listed.

A front door's config file has its own sections (``[server]``, ``[tenants.NAME]``
for media streams) and these common ones, read here once for both:

* ``[recordings]`` ``root`` (the archive), ``contact_center`` (its first path
  component), ``flush_interval`` (seconds a sealed segment may wait in memory);
  with ``archive`` (a store URL, ``s3://...`` or ``webdav+https://...``) ``root`` is
  the local spool and finished recordings are uploaded there (:mod:`recstream.upload`),
  ``max_spool_bytes`` / ``min_free_bytes`` bounding the spool;
* ``[keystore]`` ``path``, exactly one of ``password_file`` / ``password_env``,
  optional ``ca_file`` (validate each tenant's active certificate);
* ``[audit]`` ``log``: one JSON line per accepted or refused connection;
* ``[signing]`` (optional; issue 16): sign every recording, either as a keystore
  node identity (``node = "recorder-01"``, opened with the ``[keystore]``
  password; see ``recstream keystore node``) or with ``key_file`` and
  ``cert_file`` (and ``key_password_file`` when the key file is encrypted).

:class:`ConfigReader` collects problems instead of stopping at the first, so a
wrong file is refused with all of them named; relative paths are relative to
the file.  Secrets (passwords, shared secrets) are read from files or the
environment, never written in the config itself, so the config can be shown.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from recstream import tomlconfig
from recstream.aio.flusher import DEFAULT_FLUSH_INTERVAL
from recstream.errors import ConfigError
from recstream.storage import StoreURL
from recstream.tomlconfig import Schema, is_loopback_host, load_toml, parse_listen
from recstream.upload.uploader import DEFAULT_MIN_FREE_BYTES

__all__ = [
    "AuditConfig",
    "ConfigReader",
    "KeystoreConfig",
    "RecordingsConfig",
    "SigningConfig",
    "is_loopback_host",
    "load_toml",
    "parse_listen",
    "read_secret",
]

NUMBER: Final = (int, float)

COMMON_SCHEMA: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "recordings": {
        "root": (str,),
        "contact_center": (str,),
        "flush_interval": NUMBER,
        "archive": (str,),
        "max_spool_bytes": (int,),
        "min_free_bytes": (int,),
    },
    "keystore": {
        "path": (str,),
        "password_file": (str,),
        "password_env": (str,),
        "ca_file": (str,),
    },
    "audit": {"log": (str,)},
    "signing": {
        "node": (str,),
        "key_file": (str,),
        "cert_file": (str,),
        "key_password_file": (str,),
    },
}
MAX_FLUSH_INTERVAL: Final = 60.0  # a sealed segment waiting longer is a crash's loss
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass(frozen=True, slots=True)
class RecordingsConfig:
    """Where recordings go; ``contact_center`` None means flat files, not the archive layout."""

    root: Path
    contact_center: str | None
    flush_interval: float = DEFAULT_FLUSH_INTERVAL
    archive: str | None = None  # a store URL: ``root`` is then the upload spool
    max_spool_bytes: int | None = None
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES


@dataclass(frozen=True, slots=True)
class KeystoreConfig:
    path: Path
    password_file: Path | None = None
    password_env: str | None = None
    ca_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """``[signing]``: a keystore node identity, or a key file and a certificate file."""

    node: str | None = None
    key_file: Path | None = None
    cert_file: Path | None = None
    key_password_file: Path | None = None


@dataclass(frozen=True, slots=True)
class AuditConfig:
    log: Path


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


class ConfigReader(tomlconfig.ConfigReader):
    """A front door's config: its own ``schema`` plus the common sections above."""

    def __init__(self, source: Path, data: dict[str, Any], schema: Schema) -> None:
        super().__init__(source, data, {**COMMON_SCHEMA, **schema})

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
        store = self._archive()
        limits = []
        for key in ("max_spool_bytes", "min_free_bytes"):
            value = self.get("recordings", key)
            if value is not None and (isinstance(value, bool) or value < 0):
                self.problem(f"[recordings] {key} must be a number of bytes (0 or more)")
                value = None
            limits.append(value)
        if root is None or (archive and not cc):
            return None
        free = DEFAULT_MIN_FREE_BYTES if limits[1] is None else limits[1]
        return RecordingsConfig(root, cc, interval, store, limits[0], free)

    def _archive(self) -> str | None:
        url = self.get("recordings", "archive")
        if url is None:
            return None
        try:
            parsed = StoreURL.parse(url)
        except ValueError as exc:
            self.problem(f"[recordings] archive: {exc}")
            return None
        if parsed.is_local:
            self.problem(
                "[recordings] archive must be a store URL (s3://BUCKET/PREFIX or "
                "webdav+https://HOST/PATH); a local archive is 'root' itself"
            )
            return None
        return str(parsed)

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

    def signing(self) -> SigningConfig | None:
        """``[signing]``, or None when the section is absent (recordings are unsigned)."""
        if "signing" not in self.data:
            return None
        node = self.get("signing", "node")
        key = self.path("signing", "key_file", must="file")
        cert = self.path("signing", "cert_file", must="file")
        password = self.path("signing", "key_password_file", must="file")
        files = (
            self.get("signing", "key_file") is not None
            or self.get("signing", "cert_file") is not None
        )
        if (node is not None) == files:
            self.problem(
                "[signing] give either node (a keystore node identity) or key_file with "
                "cert_file, not both"
                if node is not None
                else "[signing] give node (a keystore node identity) or key_file and cert_file"
            )
        elif files and (self.get("signing", "key_file") is None) != (
            self.get("signing", "cert_file") is None
        ):
            self.problem("[signing] key_file and cert_file go together")
        if password is not None and not files:
            self.problem("[signing] key_password_file is for key_file")
        if node is not None and not _IDENTIFIER.fullmatch(node):
            self.problem("[signing] node must be 1-64 letters, digits and ._-")
        return SigningConfig(node, key, cert, password)

    def audit(self, *, required: bool = True) -> AuditConfig | None:
        log = self.path("audit", "log", must="parent")
        if required:
            self.require("audit", "log")
        return AuditConfig(log) if log is not None else None


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

"""The settings database (SQLite): users and decryption-proxy location entries.

One file, shared by the running server and ``recstream serve add-user``: WAL
mode lets the command add a user while the server runs, and the server reads
users at each authentication, so a change takes effect without a restart.
Every method is synchronous and short; the server calls them through
``asyncio.to_thread``.  One connection, serialised by a lock.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Final

from recstream.service.errors import ConflictError, NotFoundError, ServiceConfigError

__all__ = ["Role", "SettingsStore", "User", "validate_tenant", "validate_user_name"]

# 2: users.credential, a random ID replaced whenever the user is written (revokes tokens).
SCHEMA_VERSION: Final = 2
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
MAX_TENANTS_PER_USER: Final = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('player', 'ops')),
    tenants TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    credential TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS locations (
    contact_center TEXT NOT NULL,
    location TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (contact_center, location)
);
"""


class Role(StrEnum):
    PLAYER = "player"  # decrypts and plays the recordings of its tenants
    OPS = "ops"  # manages the decryption-proxy settings (and its tenants' recordings, if any)


@dataclass(frozen=True, slots=True)
class User:
    """A user as the server sees it: no password material.

    Attributes:
        tenants: the tenants whose recordings this user may decrypt.
        credential: the user's credential version, a random ID the store replaces
            each time the user is written (a password, role or tenant change) and
            that disappears with the user: tokens carry it, so they die with it.
    """

    name: str
    role: Role
    tenants: frozenset[str]
    credential: str = field(default="", compare=False, repr=False)

    def may_decrypt(self, tenant: str) -> bool:
        return tenant in self.tenants


def validate_user_name(name: str) -> str:
    if not _USER_NAME.fullmatch(name):
        msg = (
            f"user name {name[:80]!r} must be 1 to 64 characters: letters, digits, "
            "'_', '.', '@' and '-', starting with a letter or digit"
        )
        raise ValueError(msg)
    return name


def validate_tenant(tenant: str) -> str:
    """Tenants follow the envelope's rule (FORMAT.md §3): 1..255 UTF-8 bytes, no controls."""
    raw = tenant.encode("utf-8", "surrogatepass")
    if not 0 < len(raw) <= 255 or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in tenant):
        msg = f"tenant {tenant[:80]!r} must be 1 to 255 UTF-8 bytes without control characters"
        raise ValueError(msg)
    return tenant


def _now_ms() -> int:
    return int(time.time() * 1000)


class SettingsStore:
    """Users and location entries in one SQLite file."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> SettingsStore:
        """Open (creating if needed) the database at ``path``.

        Raises:
            ServiceConfigError: the file is not a settings database, or is of a newer schema.
        """
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")  # one opener migrates; the others wait
            try:
                _migrate(conn, path)
            except BaseException:
                conn.execute("ROLLBACK")
                conn.close()
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            msg = f"{path}: not a usable settings database ({exc})"
            raise ServiceConfigError(msg) from None
        return cls(conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- users -------------------------------------------------------------

    def put_user(self, user: User, password_hash: str, *, replace: bool = False) -> None:
        """Add ``user`` (or replace it, with ``replace``).

        Raises:
            ConflictError: the user exists and ``replace`` is false.
        """
        if len(user.tenants) > MAX_TENANTS_PER_USER:
            msg = f"a user may have at most {MAX_TENANTS_PER_USER} tenants"
            raise ValueError(msg)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        row = (user.name, user.role.value, json.dumps(sorted(user.tenants)), password_hash)
        credential = secrets.token_hex(16)  # a new version: every token issued before is void
        with self._lock:
            try:
                self._conn.execute(
                    f"{verb} INTO users VALUES (?, ?, ?, ?, ?, ?)", (*row, _now_ms(), credential)
                )
            except sqlite3.IntegrityError:
                msg = f"user {user.name!r} exists already"
                raise ConflictError(msg) from None

    def user_with_hash(self, name: str) -> tuple[User, str] | None:
        """The user called ``name`` and their stored password hash, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT name, role, tenants, password_hash, credential FROM users WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            return None
        return _user(row), str(row[3])

    def users(self) -> list[User]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT name, role, tenants FROM users ORDER BY name"
            ).fetchall()
        return [_user(r) for r in rows]

    def remove_user(self, name: str) -> None:
        with self._lock:
            cur = self._conn.execute("DELETE FROM users WHERE name = ?", (name,))
        if cur.rowcount == 0:
            msg = f"no user {name!r}"
            raise NotFoundError(msg)

    def count_users(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM users").fetchone()[0])

    # --- locations ---------------------------------------------------------

    def locations(self, contact_center: str) -> dict[str, str]:
        """location -> RCS URI for one contact centre, in location order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT location, value FROM locations WHERE contact_center = ? ORDER BY location",
                (contact_center,),
            ).fetchall()
        return {str(loc): str(val) for loc, val in rows}

    def add_location(self, contact_center: str, location: str, value: str) -> None:
        """Raises ConflictError: the location has an entry already (use update)."""
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO locations VALUES (?, ?, ?, ?)",
                    (contact_center, location, value, _now_ms()),
                )
            except sqlite3.IntegrityError:
                msg = f"location {location} has an entry already; change it with PUT"
                raise ConflictError(msg) from None

    def update_location(self, contact_center: str, location: str, value: str) -> None:
        """Raises NotFoundError: no entry for the location."""
        with self._lock:
            cur = self._conn.execute(
                "UPDATE locations SET value = ?, updated_ms = ? "
                "WHERE contact_center = ? AND location = ?",
                (value, _now_ms(), contact_center, location),
            )
        if cur.rowcount == 0:
            msg = f"no entry for location {location}; create it with POST"
            raise NotFoundError(msg)

    def delete_location(self, contact_center: str, location: str) -> None:
        """Raises NotFoundError: no entry for the location."""
        with self._lock:
            cur = self._conn.execute(
                "DELETE FROM locations WHERE contact_center = ? AND location = ?",
                (contact_center, location),
            )
        if cur.rowcount == 0:
            msg = f"no entry for location {location}"
            raise NotFoundError(msg)


def _user(row: Iterable[object]) -> User:
    values = list(row)
    name, role, tenants = values[:3]
    credential = str(values[4]) if len(values) > 4 else ""
    return User(str(name), Role(str(role)), frozenset(json.loads(str(tenants))), credential)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION` (inside the caller's transaction)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is None:
        conn.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        return
    if row[0] == "1":
        # Schema 1 had no credential version: give every user one now.
        conn.execute("ALTER TABLE users ADD COLUMN credential TEXT NOT NULL DEFAULT ''")
        for (name,) in conn.execute("SELECT name FROM users").fetchall():
            conn.execute(
                "UPDATE users SET credential = ? WHERE name = ?", (secrets.token_hex(16), name)
            )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION),))
    elif row[0] != str(SCHEMA_VERSION):
        msg = f"{path}: settings schema {row[0]} is newer than this release reads"
        raise ServiceConfigError(msg)

"""Helpers shared by the command modules: reading secrets and files for a command."""

from __future__ import annotations

import os
from pathlib import Path

from recstream.cli import UsageError


def read_password_file(path: str | None) -> bytes | None:
    """Read a password from a file: the first line, without its line ending.

    Passwords never come from the command line itself (they would show in ``ps``).
    """
    if path is None:
        return None
    data = Path(path).read_bytes()
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        msg = f"password file {path} is empty"
        raise UsageError(msg)
    return line


def read_input_file(path: str, what: str) -> bytes:
    """Read a small input file (certificate, key, CSR) with a clear message if missing."""
    p = Path(path)
    if not p.exists():
        msg = f"{what} file not found: {path}"
        raise UsageError(msg)
    if p.is_dir():
        msg = f"{what} path is a directory, not a file: {path}"
        raise UsageError(msg)
    return p.read_bytes()


def write_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with owner-only permissions from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)

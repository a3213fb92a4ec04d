"""Helpers shared by the command modules: reading secrets and files for a command."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from recstream.cli import UsageError

T = TypeVar("T")


def read_password_file(path: str | None) -> bytes | None:
    """Read a password from a file: the first line, without its line ending.

    Passwords never come from the command line itself (they would show in ``ps``).
    """
    if path is None:
        return None
    data = read_stdin_once("password") if path == STDIO else Path(path).read_bytes()
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        msg = f"password file {path} is empty"
        raise UsageError(msg)
    return line


def read_input_file(path: str, what: str) -> bytes:
    """Read a small input file (certificate, key, CSR), or stdin for '-'.

    ``what`` names the input in messages ("certificate", "CA file").

    Raises:
        UsageError: the file does not exist, or is a directory (exit 2).
    """
    if path == STDIO:
        return read_stdin_once(what)
    p = Path(path)
    label = what if what.endswith("file") else f"{what} file"
    if not p.exists():
        msg = f"{label} not found: {path}"
        raise UsageError(msg)
    if p.is_dir():
        msg = f"{label} is a directory, not a file: {path}"
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


def hidden_alias(p: argparse.ArgumentParser, option: str, dest: str, **kwargs: Any) -> None:
    """Accept an old spelling of an option without showing it in the help.

    Scripts written against an earlier release keep working; the help shows one
    spelling per option, the same in every command.
    """
    p.add_argument(option, dest=dest, help=argparse.SUPPRESS, **kwargs)


def alias(action: argparse.Action, *old: str) -> argparse.Action:
    """Mark ``old`` option strings of ``action`` as old spellings: parsed, not shown."""
    action.hidden_aliases = frozenset(old)  # type: ignore[attr-defined]
    return action


def command_group(
    sub: argparse._SubParsersAction[Any], name: str, dest: str, **parser_options: Any
) -> argparse._SubParsersAction[Any]:
    """Add ``name``, a command made of required subcommands (``keystore``, ``keystore
    node``): ``parser_options`` go to its parser (help, description, epilog); returns the
    action to add its subcommands to (their name lands in ``dest``)."""
    group: argparse.ArgumentParser = sub.add_parser(name, **parser_options)
    cmds: argparse._SubParsersAction[Any] = group.add_subparsers(dest=dest, metavar="SUBCOMMAND")
    cmds.required = True
    return cmds


def checked(check: Callable[[str], T]) -> Callable[[str], T]:
    """argparse ``type=`` from a validator that raises ``ValueError``: its message, exit 2.

    The validators live with the model (a tenant's or a node's name rules); this makes
    each one an option type without a try/except wrapper per command.
    """

    def parse(text: str) -> T:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = getattr(check, "__name__", "value")
    return parse


# --- '-' and output paths ------------------------------------------------------------

STDIO = "-"
_stdin_taken: list[str] = []


def file_arg(text: str) -> str:
    """argparse ``type=`` for a path that cannot be stdin or stdout: '-' is refused (exit 2).

    Commands that need a real file (random access, an atomic rename, a keystore)
    say so instead of creating a file named ``-``.
    """
    if text == STDIO:
        msg = "'-' (stdin/stdout) cannot be used here: give a file name (./- for a file named '-')"
        raise argparse.ArgumentTypeError(msg)
    if not text:
        msg = "an empty path"
        raise argparse.ArgumentTypeError(msg)
    return text


def read_stdin_once(what: str) -> bytes:
    """All of stdin, for the one input of a command line named '-'.

    Raises:
        UsageError: stdin was already named for another input.
    """
    claim_stdin(what)
    return sys.stdin.buffer.read()


def claim_stdin(what: str) -> None:
    """Note that ``what`` is read from stdin; a second claim is a usage error."""
    if _stdin_taken:
        msg = f"'-' (stdin) is given for both the {_stdin_taken[0]} and the {what}"
        raise UsageError(msg)
    _stdin_taken.append(what)


def reset_stdin() -> None:
    """Forget which input took stdin (``main`` calls this for each command line)."""
    _stdin_taken.clear()


_TEMPORARY = r"^\.(?P<name>.+)\.\d+\.\d+\.partial$"


def public_name(filename: object) -> object:
    """The file a user named, for a temporary name of :func:`recstream.files.atomic_output`."""
    if not isinstance(filename, str):
        return filename
    path = Path(filename)
    m = re.match(_TEMPORARY, path.name)
    return str(path.with_name(m["name"])) if m else filename


@contextmanager
def naming_output(path: str) -> Iterator[None]:
    """Make an OSError raised while writing ``path`` name ``path`` (disk full says where).

    A write error has no file name of its own, and the temporary file beside
    ``path`` is an implementation detail: both become ``path``.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is not None and public_name(exc.filename) == exc.filename:
            raise
        if exc.errno is None:
            msg = f"{path}: {exc}"
            raise OSError(msg) from exc
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), path) from exc

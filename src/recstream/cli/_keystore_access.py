"""Helpers the commands share to reach the keystore: its path, its password, recipients.

The password comes from ``--password-file`` (first line), else the environment
variable ``RECSTREAM_KEYSTORE_PASSWORD``, else a prompt (``getpass``) when stdin
is a terminal; never from the command line, and it is never printed or logged.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from recstream.cli import UsageError, eprint
from recstream.cli._util import file_arg, read_input_file, read_password_file

if TYPE_CHECKING:
    from recstream.envelope import Recipient
    from recstream.format import MediaKind
    from recstream.keystore.model import Keystore

# The keystore package is imported only by a command that opens one: `encrypt
# --cert` and `decrypt --key` never pay for it (start-up is part of every CLI figure).
# These two equal recstream.keystore.store's ENV_PATH and ENV_PASSWORD.
ENV_PATH = "RECSTREAM_KEYSTORE"
ENV_PASSWORD = "RECSTREAM_KEYSTORE_PASSWORD"  # noqa: S105 - a variable's name

__all__ = [
    "add_keystore_options",
    "keystore_recipient",
    "open_keystore",
    "read_keystore_password",
]


def add_keystore_options(p: argparse.ArgumentParser, *, password_help: str | None = None) -> None:
    p.add_argument(
        "--keystore",
        metavar="PATH",
        type=file_arg,
        help=f"the keystore file (default: ${ENV_PATH}, else "
        "$XDG_DATA_HOME or ~/.local/share, then recstream/keystore.rsk)",
    )
    p.add_argument(
        "--password-file",
        metavar="F",
        help=password_help
        or f"file whose first line is the keystore password (else ${ENV_PASSWORD}, else a "
        "prompt on a terminal)",
    )


def read_keystore_password(
    password_file: str | None, *, confirm: bool = False, what: str = "keystore password"
) -> bytes:
    """The keystore password from the file, the environment, or a terminal prompt.

    Raises:
        UsageError: none of them is available, or the two prompts differ.
    """
    from_file = read_password_file(password_file)
    if from_file is not None:
        return from_file
    env = os.environ.get(ENV_PASSWORD)
    if env:
        return os.fsencode(env)
    if sys.stdin is not None and sys.stdin.isatty():
        return prompt_password(what, confirm=confirm)
    msg = (
        f"the {what} is needed: give --password-file F, set {ENV_PASSWORD}, or run on a "
        "terminal to be prompted"
    )
    raise UsageError(msg)


def prompt_password(what: str, *, confirm: bool) -> bytes:
    import getpass  # termios: only when a terminal is asked

    first = getpass.getpass(f"{what[0].upper()}{what[1:]}: ")
    if confirm and getpass.getpass(f"Repeat the {what}: ") != first:
        msg = f"the two {what}s differ"
        raise UsageError(msg)
    if not first:
        msg = f"the {what} is empty"
        raise UsageError(msg)
    return first.encode()


def open_keystore(path_option: str | None, password_file: str | None) -> tuple[Keystore, Path]:
    """Load the keystore named by ``--keystore`` (or the environment, or the default)."""
    from recstream.keystore.store import keystore_path, load

    path = keystore_path(path_option)
    return load(path, read_keystore_password(password_file)), path


def keystore_recipient(
    path_option: str | None,
    password_file: str | None,
    tenant: str,
    kind: MediaKind,
    ca_file: str | None,
) -> Recipient:
    """The tenant's active certificate of ``kind`` as a recipient (fails closed)."""
    from recstream.keystore.resolve import active_recipient
    from recstream.pki._util import utcnow

    bundle = read_input_file(ca_file, "CA") if ca_file is not None else None
    ks, path = open_keystore(path_option, password_file)
    recipient, warnings = active_recipient(ks, tenant, kind, now=utcnow(), ca_bundle=bundle)
    for w in warnings:
        eprint(f"recstream: warning: {tenant}/{kind.name.lower()} certificate in {path}: {w}")
    return recipient

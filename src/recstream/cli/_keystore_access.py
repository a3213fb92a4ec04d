"""Helpers the commands share to reach keys: the keystore, key files, passwords, recipients.

Everything goes through the one key source (:mod:`recstream.keysource`): the
password comes from ``--password-file`` (first line), else the environment variable
``RECSTREAM_KEYSTORE_PASSWORD`` (keystore only), else a prompt (``getpass``) when
stdin is a terminal; never from the command line, and it is never printed or logged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recstream.cli import UsageError, eprint
from recstream.cli._util import file_arg, read_input_file
from recstream.errors import PasswordError
from recstream.keysource import ENV_PASSWORD, ENV_PATH, KeySource, Prompt, read_password

if TYPE_CHECKING:
    from recstream.envelope import KeyRing, Recipient
    from recstream.format import MediaKind
    from recstream.keystore.model import Keystore
    from recstream.signer import Signer

# The keystore package is imported only by a command that opens one: `encrypt
# --cert` and `decrypt --key` never pay for it (start-up is part of every CLI figure).

__all__ = [
    "add_keystore_options",
    "decryption_keys",
    "keystore_recipient",
    "keystore_signer",
    "keystore_subcommand",
    "load_identities",
    "open_keystore",
    "prompt_password",
    "read_keystore_password",
    "terminal_prompt",
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


def keystore_subcommand(
    cmds: argparse._SubParsersAction[Any], name: str, help_: str
) -> argparse.ArgumentParser:
    """A ``keystore`` subcommand (``keystore init``, ``keystore node add``...): ``help_`` is
    its help and description; it takes ``--keystore`` and ``--password-file``."""
    p: argparse.ArgumentParser = cmds.add_parser(name, help=help_, description=help_)
    add_keystore_options(p)
    return p


def terminal_prompt(*, confirm: bool = False) -> Prompt | None:
    """A prompt on the terminal, or None when stdin is not one."""
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    return lambda what: prompt_password(what, confirm=confirm)


def _usage(exc: PasswordError, what: str) -> UsageError:
    if "is needed" not in str(exc):
        return UsageError(str(exc))
    return UsageError(
        f"the {what} is needed: give --password-file F, set {ENV_PASSWORD}, or run on a "
        "terminal to be prompted"
    )


def read_keystore_password(
    password_file: str | None, *, confirm: bool = False, what: str = "keystore password"
) -> bytes:
    """The keystore password from the file, the environment, or a terminal prompt.

    Raises:
        UsageError: none of them is available, the file is empty, or two prompts differ.
    """
    try:
        return read_password(password_file, prompt=terminal_prompt(confirm=confirm), what=what)
    except PasswordError as exc:
        raise _usage(exc, what) from None


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
    from recstream.pki.dates import utcnow

    bundle = read_input_file(ca_file, "CA") if ca_file is not None else None
    ks, path = open_keystore(path_option, password_file)
    recipient, warnings = active_recipient(ks, tenant, kind, now=utcnow(), ca_bundle=bundle)
    for w in warnings:
        eprint(f"recstream: warning: {tenant}/{kind.name.lower()} certificate in {path}: {w}")
    return recipient


def keystore_signer(path_option: str | None, password_file: str | None, node: str) -> Signer:
    """A recording node's active signing identity in the keystore, as a signer.

    Raises:
        UsageError: ``node`` is not a node name.
        KeystoreEntryError: the node has no active identity; and the keystore's errors.
        CertificateError: its certificate may not sign now.
    """
    from recstream.keysource import node_signer
    from recstream.keystore.nodes import check_node_name

    try:
        check_node_name(node)
    except ValueError as exc:
        msg = f"--sign-node: {exc}"
        raise UsageError(msg) from None
    ks, _ = open_keystore(path_option, password_file)
    return node_signer(ks, node)


def load_identities(paths: Sequence[str], password_file: str | None) -> KeyRing:
    """Private key files as a key ring; an encrypted one's password from ``password_file``,
    else a terminal prompt (the one password reader)."""
    for path in paths:
        read_input_file(path, "private key")  # a clear message for a missing file
    source = KeySource(key_files=tuple(paths), password_file=password_file, password_env=None)
    try:
        return source.keyring(terminal_prompt())
    except PasswordError as exc:
        if "is needed" not in str(exc):
            raise
        msg = (
            "the private key file is encrypted and its password is needed: give "
            "--password-file F, or run on a terminal to be prompted"
        )
        raise PasswordError(msg) from None  # a key problem (exit 4), as a wrong password


def decryption_keys(args: argparse.Namespace) -> KeyRing:
    """--key files, else the keystore (--keystore, $RECSTREAM_KEYSTORE or the default)."""
    if args.key and args.keystore is not None:
        msg = "give --key files or --keystore, not both"
        raise UsageError(msg)
    if args.key:
        return load_identities(args.key, args.password_file)
    from recstream.keystore.store import keystore_path

    if args.keystore is None and not keystore_path(None).exists():
        msg = (
            "decryption needs --key KEY.pem, or a keystore: --keystore PATH, "
            f"$RECSTREAM_KEYSTORE, or {keystore_path(None)} (which does not exist)"
        )
        raise UsageError(msg)
    ks, _ = open_keystore(args.keystore, args.password_file)
    return ks

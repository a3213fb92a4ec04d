"""Options shared by the commands that sign (``encrypt``, ``record``) and by those that
check signatures (``decrypt --require-signature``): parsed here, once."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from recstream.cli import UsageError
from recstream.cli._util import file_arg

if TYPE_CHECKING:
    from recstream.signer import Signer

# The signing key's password: a file's first line (recstream.keysource), else this
# variable; never a command-line argument.
ENV_SIGN_PASSWORD = "RECSTREAM_SIGN_KEY_PASSWORD"  # noqa: S105 - a variable's name


def add_signing_options(p: argparse.ArgumentParser) -> None:
    """``--sign-key``, ``--sign-cert``, ``--sign-key-password-file``."""
    g = p.add_argument_group(
        "signing (docs/FORMAT.md §10)",
        "Sign the recording so that 'recstream verify' can prove which recorder made it.",
    )
    g.add_argument(
        "--sign-key",
        metavar="KEY.pem",
        type=file_arg,
        help="the recorder's signing key (ECDSA P-256 or Ed25519, PEM or DER; with --sign-cert)",
    )
    g.add_argument(
        "--sign-cert",
        metavar="CERT.pem",
        type=file_arg,
        help="the signing key's certificate (keyUsage digitalSignature), issued by your CA",
    )
    g.add_argument(
        "--sign-key-password-file",
        metavar="F",
        type=file_arg,
        help=f"file whose first line is the signing key's password (else ${ENV_SIGN_PASSWORD})",
    )


def signer_from_args(args: argparse.Namespace) -> Signer | None:
    """The :class:`Signer` the options name, or None when not signing.

    Raises:
        UsageError: only one of --sign-key/--sign-cert, or a password file without them.
        KeyLoadError, KeyPolicyError, CertificateError and subclasses: a key or
            certificate that cannot sign.
    """
    key, cert = args.sign_key, args.sign_cert
    if key is None and cert is None:
        if args.sign_key_password_file is not None:
            msg = "--sign-key-password-file needs --sign-key and --sign-cert"
            raise UsageError(msg)
        return None
    if key is None or cert is None:
        msg = "--sign-key and --sign-cert go together: give both to sign, neither not to"
        raise UsageError(msg)
    import os

    from recstream.keysource import read_password_file
    from recstream.signer import Signer

    password = None
    if args.sign_key_password_file is not None:
        password = read_password_file(args.sign_key_password_file)
    elif os.environ.get(ENV_SIGN_PASSWORD):
        password = os.fsencode(os.environ[ENV_SIGN_PASSWORD])
    return Signer.from_files(key, cert, password)


def add_require_signature_options(p: argparse.ArgumentParser) -> None:
    """``--require-signature`` and ``--ca-file`` for commands that release plaintext."""
    p.add_argument(
        "--require-signature",
        action="store_true",
        help="refuse (before writing any plaintext) a recording that is unsigned, whose "
        "signature is invalid, or whose signer does not chain to --ca-file",
    )
    p.add_argument(
        "--ca-file",
        metavar="CA.pem",
        type=file_arg,
        help="the CA certificate(s) that issue recorders' signing certificates",
    )


def signature_policy(args: argparse.Namespace) -> bytes | None:
    """The CA file's bytes when ``--require-signature`` is given, else None.

    Raises:
        UsageError: --require-signature without --ca-file, or --ca-file alone.
    """
    if not args.require_signature:
        if args.ca_file is not None:
            msg = "--ca-file is for --require-signature (to check signatures, use 'verify')"
            raise UsageError(msg)
        return None
    if args.ca_file is None:
        msg = "--require-signature needs --ca-file CA.pem (the CA of the recorders' signers)"
        raise UsageError(msg)
    with open(args.ca_file, "rb") as f:
        return f.read()

"""``recstream pki ...``: certificate provisioning.

``ca``, ``csr``, ``sign``, ``bundle``, ``verify`` and ``show``: the openssl steps of
certificate provisioning, with the DN and the CA file checked and better messages.  This
module only parses options, reads and writes files and prints; the work is in
:mod:`recstream.pki`.  Private keys are written owner-only and encrypted unless
``--no-encrypt``; passwords come only from files; outputs are never overwritten
without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.cli import EXIT_CODES_HELP, UsageError, eprint
from recstream.cli._util import STDIO, alias, file_arg, read_input_file, read_password_file
from recstream.errors import (
    CertificateRequestError,
    KeyLoadError,
    KeyPolicyError,
    SubjectFieldsError,
)
from recstream.pki.bundle import build_bundle
from recstream.pki.ca import (
    MAX_DAYS,
    CertificateAuthority,
    create_intermediate_ca,
    create_root_ca,
    sign_recording_certificate,
)
from recstream.pki.certs import certificate_id, load_certificate, name_str
from recstream.pki.csr import (
    DEFAULT_KEY_SIZE,
    KEY_SIZES,
    build_csr,
    generate_private_key,
    load_csr,
    private_key_pem,
)
from recstream.pki.dates import fmt_time, utcnow
from recstream.pki.dn import SubjectFields, ca_subject
from recstream.pki.show import describe
from recstream.pki.signing import (
    DEFAULT_SIGNING_KEY_TYPE,
    SIGNING_KEY_TYPES,
    build_signing_csr,
    describe_key_type,
    generate_signing_key,
    sign_signing_certificate,
    signing_key_pem,
    validate_signing_certificate,
)
from recstream.pki.verify import validate_recording_certificate

DEFAULT_CA_DAYS = 3650
DEFAULT_INTERMEDIATE_DAYS = 1825

_OPTION_FOR_FIELD = {
    "common_name": "--cn",
    "organization": "--org",
    "organizational_unit": "--ou",
    "locality": "--locality",
    "state": "--state",
    "country": "--country",
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Register the ``pki`` command group."""
    pki = sub.add_parser(
        "pki",
        help="provision recording certificates: CAs, CSRs, signing, CA files, checks",
        description="Provision recording certificates: a CA, a request (CSR) with the "
        "full DN, signing, the media server's CA file, and validation before a "
        "certificate is used.",
        epilog="Exit codes: " + EXIT_CODES_HELP,
    )
    cmds = pki.add_subparsers(dest="pki_command", metavar="SUBCOMMAND")
    cmds.required = True
    _register_ca(cmds)
    _register_csr(cmds)
    _register_sign(cmds)
    _register_bundle(cmds)
    _register_verify(cmds)
    _register_show(cmds)


# --- option helpers ----------------------------------------------------------


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        msg = f"not a whole number of days: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 1 <= days <= MAX_DAYS:
        msg = f"must be 1 to {MAX_DAYS} days, not {days}"
        raise argparse.ArgumentTypeError(msg)
    return days


def _add_key_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--key-size",
        type=int,
        choices=KEY_SIZES,
        metavar="BITS",
        help=f"RSA key size: {', '.join(map(str, KEY_SIZES))} (default {DEFAULT_KEY_SIZE})",
    )
    enc = p.add_mutually_exclusive_group()
    # --out-key-password-file protects --out-key; everywhere else --password-file
    # unlocks something, so here it stays only as the old spelling.
    alias(
        enc.add_argument(
            "--out-key-password-file",
            "--password-file",
            dest="password_file",
            metavar="FILE",
            help=f"encrypt the {what} (--out-key) with the password on this file's first line",
        ),
        "--password-file",
    )
    enc.add_argument(
        "--no-encrypt", action="store_true", help=f"write the {what} unencrypted (not advised)"
    )


def _add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite output files that exist")


def _new_key_password(args: argparse.Namespace, what: str) -> bytes | None:
    if args.no_encrypt:
        return None
    if args.password_file is None:
        msg = (
            f"the {what} must be protected: give --out-key-password-file FILE (its first line "
            "is the password), or --no-encrypt to write it unencrypted"
        )
        raise UsageError(msg)
    return _password(args.password_file, "--out-key-password-file")


def _password(path: str | None, option: str) -> bytes | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        msg = f"{option}: password file not found: {path}"
        raise UsageError(msg)
    if p.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        eprint(f"recstream: warning: password file {path} is readable by other users")
    return read_password_file(path)


def _check_outputs(force: bool, *paths: str) -> None:
    paths = tuple(p for p in paths if p != STDIO)
    if len({Path(p).resolve() for p in paths}) != len(paths):
        msg = f"output files must differ: {', '.join(paths)}"
        raise UsageError(msg)
    for path in paths:
        if Path(path).is_dir():
            msg = f"output path is a directory: {path}"
            raise UsageError(msg)
        if not force and Path(path).exists():
            msg = f"{path} already exists; use --force to overwrite it"
            raise UsageError(msg)


def _write(path: str, data: bytes, *, force: bool, private: bool = False) -> None:
    """Write an output; O_EXCL without --force, so nothing is replaced by accident.

    Private files are created 0600 and re-chmodded in case ``path`` existed.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600 if private else 0o644)
    except FileExistsError:
        msg = f"{path} already exists; use --force to overwrite it"
        raise UsageError(msg) from None
    with os.fdopen(fd, "wb") as out:
        if private:
            os.fchmod(out.fileno(), 0o600)
        out.write(data)


def _load_ca(
    cert_path: str, key_path: str, password_path: str | None, option: str
) -> CertificateAuthority:
    key_data = read_input_file(key_path, "CA key")
    password = _password(password_path, option)
    if password is None and b"ENCRYPTED" in key_data:
        msg = f"the CA key {key_path} is encrypted; give its password with {option} FILE"
        raise KeyLoadError(msg)
    cert_data = read_input_file(cert_path, "CA certificate")
    return CertificateAuthority.from_pem(cert_data, key_data, password)


def _dn_usage_error(exc: CertificateRequestError) -> UsageError:
    problems = exc.problems if isinstance(exc, SubjectFieldsError) else (exc,)
    lines = [f"{_OPTION_FOR_FIELD.get(p.field or '', 'subject')}: {p}" for p in problems]
    if len(lines) == 1:
        return UsageError(lines[0])
    return UsageError(f"{len(lines)} subject fields need fixing:\n  " + "\n  ".join(lines))


def _pem(obj: x509.Certificate | x509.CertificateSigningRequest) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _key_note(password: bytes | None) -> str:
    return "encrypted, owner-only" if password else "NOT encrypted, owner-only"


# --- pki ca --------------------------------------------------------------------


def _register_ca(cmds: argparse._SubParsersAction[Any]) -> None:
    p = cmds.add_parser(
        "ca",
        usage="recstream pki ca --cn NAME --out-cert FILE --out-key FILE\n"
        "                    (--out-key-password-file FILE | --no-encrypt) [options]",
        help="create a root CA, or an intermediate CA signed by another CA",
        description="Create a self-signed root CA certificate and its key; with "
        "--issuer-cert and --issuer-key, an intermediate CA signed by that CA.",
    )
    p.add_argument("--cn", metavar="NAME", help="the CA's common name (required)")
    p.add_argument("--org", metavar="NAME", help="organization (O)")
    p.add_argument("--ou", metavar="NAME", help="organizational unit (OU)")
    p.add_argument("--country", metavar="CC", help="two-letter ISO 3166 country code (C)")
    p.add_argument(
        "--days",
        type=_days,
        help=f"validity in days (default {DEFAULT_CA_DAYS} for a root; for an "
        f"intermediate {DEFAULT_INTERMEDIATE_DAYS}, or what its issuer has left if less)",
    )
    p.add_argument(
        "--out-cert", required=True, metavar="FILE", type=file_arg, help="CA certificate (PEM)"
    )
    p.add_argument(
        "--out-key", required=True, metavar="FILE", type=file_arg, help="CA private key (PEM)"
    )
    _add_key_options(p, "CA key")
    p.add_argument("--issuer-cert", metavar="FILE", help="sign with this CA (intermediate)")
    p.add_argument("--issuer-key", metavar="FILE", help="the issuing CA's private key")
    p.add_argument(
        "--issuer-password-file", metavar="FILE", help="password of the issuing CA's key"
    )
    _add_force(p)
    p.set_defaults(func=_cmd_ca)


def _cmd_ca(args: argparse.Namespace) -> int:
    if (args.issuer_cert is None) != (args.issuer_key is None):
        msg = "an intermediate CA needs both --issuer-cert and --issuer-key"
        raise UsageError(msg)
    if args.issuer_password_file and args.issuer_key is None:
        msg = "--issuer-password-file is only used with --issuer-cert and --issuer-key"
        raise UsageError(msg)
    try:
        subject = ca_subject(
            args.cn, organization=args.org, organizational_unit=args.ou, country=args.country
        )
    except CertificateRequestError as exc:
        raise _dn_usage_error(exc) from exc
    password = _new_key_password(args, "CA key")
    _check_outputs(args.force, args.out_cert, args.out_key)
    issuer = None
    if args.issuer_cert is not None:
        issuer = _load_ca(
            args.issuer_cert, args.issuer_key, args.issuer_password_file, "--issuer-password-file"
        )
    now = utcnow()
    key = generate_private_key(args.key_size or DEFAULT_KEY_SIZE)
    if issuer is None:
        cert = create_root_ca(key, subject, days=args.days or DEFAULT_CA_DAYS, now=now)
    else:
        left = (issuer.certificate.not_valid_after_utc - now.replace(microsecond=0)).days
        days = args.days or max(1, min(DEFAULT_INTERMEDIATE_DAYS, left))
        cert = create_intermediate_ca(key.public_key(), subject, issuer, days=days, now=now)
    _write(args.out_key, private_key_pem(key, password), force=args.force, private=True)
    _write(args.out_cert, _pem(cert), force=args.force)
    print(f"wrote {'root' if issuer is None else 'intermediate'} CA certificate {args.out_cert}")
    print(f"  subject         {name_str(cert.subject)}")
    print(f"  issuer          {name_str(cert.issuer)}")
    print(f"  certificate ID  {certificate_id(cert)}")
    print(f"  valid until     {fmt_time(cert.not_valid_after_utc)}")
    print(f"wrote its private key {args.out_key} ({_key_note(password)})")
    return 0


# --- pki csr -------------------------------------------------------------------


def _register_csr(cmds: argparse._SubParsersAction[Any]) -> None:
    p = cmds.add_parser(
        "csr",
        usage="recstream pki csr --cn NAME --org NAME --ou NAME --locality CITY --state NAME\n"
        "                     --country CC --out-key FILE --out-csr FILE\n"
        "                     (--out-key-password-file FILE | --no-encrypt) [options]",
        help="create a recording (or signing) key and a certificate signing request",
        description="Create a recording private key and a certificate signing request, "
        "like 'openssl req -newkey rsa:N -keyout private_key.pem -out cert.req'. Every "
        "DN field is required: recording certificates carry the full distinguished name. "
        "With --profile signing: a recording node's signing key (ECDSA P-256, or "
        "--key-type ed25519) and a request for key usage digitalSignature; only --cn "
        "(the node's name) is required.",
    )
    _add_profile(p)
    p.add_argument(
        "--key-type",
        choices=SIGNING_KEY_TYPES,
        help=f"signing key type with --profile signing (default {DEFAULT_SIGNING_KEY_TYPE})",
    )
    p.add_argument(
        "--cn", metavar="NAME", help="common name: the recording solution's name (required)"
    )
    # Required, and checked together (every missing field is named at once), not by
    # argparse one at a time; the usage line shows them as required.
    p.add_argument("--org", metavar="NAME", help="exact legal organization name (required)")
    p.add_argument("--ou", metavar="NAME", help="organizational unit (required)")
    p.add_argument("--locality", metavar="CITY", help="city of the org's seat (required)")
    p.add_argument("--state", metavar="NAME", help="state or province, in full (required)")
    p.add_argument("--country", metavar="CC", help="ISO 3166 two-letter code, e.g. US (required)")
    _add_key_options(p, "private key")
    p.add_argument(
        "--out-key", required=True, metavar="FILE", type=file_arg, help="e.g. private_key.pem"
    )
    p.add_argument("--out-csr", required=True, metavar="FILE", type=file_arg, help="e.g. cert.req")
    _add_force(p)
    p.set_defaults(func=_cmd_csr)


def _cmd_csr(args: argparse.Namespace) -> int:
    if args.profile == "signing":
        return _cmd_signing_csr(args)
    if args.key_type is not None:
        msg = "--key-type is for --profile signing; recording keys are RSA (see --key-size)"
        raise UsageError(msg)
    try:
        subject = SubjectFields.parse(
            common_name=args.cn,
            organization=args.org,
            organizational_unit=args.ou,
            locality=args.locality,
            state=args.state,
            country=args.country,
        )
    except CertificateRequestError as exc:
        raise _dn_usage_error(exc) from exc
    password = _new_key_password(args, "private key")
    _check_outputs(args.force, args.out_key, args.out_csr)
    key_size = args.key_size or DEFAULT_KEY_SIZE
    key = generate_private_key(key_size)
    csr = build_csr(key, subject)
    _write(args.out_key, private_key_pem(key, password), force=args.force, private=True)
    _write(args.out_csr, _pem(csr), force=args.force)
    print(f"wrote private key {args.out_key} ({_key_note(password)}, RSA {key_size})")
    print(f"wrote request {args.out_csr} for {name_str(csr.subject)}")
    print("keep the private key safe and backed up: recordings encrypted for it need it")
    return 0


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=("recording", "signing"),
        default="recording",
        help="recording: an RSA key that recordings are encrypted for (the default); "
        "signing: a recording node's key that signs what it records",
    )


def _cmd_signing_csr(args: argparse.Namespace) -> int:
    if args.key_size is not None:
        msg = "--key-size is for RSA recording keys; with --profile signing use --key-type"
        raise UsageError(msg)
    for option in ("locality", "state"):
        if getattr(args, option) is not None:
            msg = f"--{option} is not part of a signing certificate's subject (CN, O, OU, C)"
            raise UsageError(msg)
    try:
        subject = ca_subject(
            args.cn, organization=args.org, organizational_unit=args.ou, country=args.country
        )
    except CertificateRequestError as exc:
        raise _dn_usage_error(exc) from exc
    password = _new_key_password(args, "signing key")
    _check_outputs(args.force, args.out_key, args.out_csr)
    key = generate_signing_key(args.key_type or DEFAULT_SIGNING_KEY_TYPE)
    csr = build_signing_csr(key, subject)
    _write(args.out_key, signing_key_pem(key, password), force=args.force, private=True)
    _write(args.out_csr, _pem(csr), force=args.force)
    print(f"wrote signing key {args.out_key} ({_key_note(password)}, {describe_key_type(key)})")
    print(f"wrote signing request {args.out_csr} for {name_str(csr.subject)}")
    print("sign it with: recstream pki sign --profile signing --csr " + args.out_csr + " ...")
    return 0


# --- pki sign ------------------------------------------------------------------


def _register_sign(cmds: argparse._SubParsersAction[Any]) -> None:
    p = cmds.add_parser(
        "sign",
        help="issue a recording (or signing) certificate for a CSR with a CA",
        description="Issue a recording certificate (not a CA; key usage keyEncipherment; "
        "key identifiers; random serial) for a CSR whose DN is complete. With --profile "
        "signing: a signing certificate for a recording node's ECDSA P-256 or Ed25519 "
        "key (not a CA; key usage digitalSignature, critical; extended key usage "
        "documentSigning).",
    )
    _add_profile(p)
    p.add_argument("--ca-cert", required=True, metavar="FILE", help="the CA's certificate")
    p.add_argument("--ca-key", required=True, metavar="FILE", help="the CA's private key")
    p.add_argument("--ca-password-file", metavar="FILE", help="password of the CA's key")
    p.add_argument("--csr", required=True, metavar="FILE", help="the request, e.g. cert.req")
    p.add_argument("--days", required=True, type=_days, help="validity in days")
    p.add_argument(
        "--out", required=True, metavar="FILE", help="the certificate (PEM), or '-' for stdout"
    )
    _add_force(p)
    p.set_defaults(func=_cmd_sign)


def _cmd_sign(args: argparse.Namespace) -> int:
    _check_outputs(args.force, args.out)
    csr = load_csr(read_input_file(args.csr, "request"))
    ca = _load_ca(args.ca_cert, args.ca_key, args.ca_password_file, "--ca-password-file")
    what = "signing certificate" if args.profile == "signing" else "recording certificate"
    if args.profile == "signing":
        cert = sign_signing_certificate(csr, ca, days=args.days, now=utcnow())
    else:
        try:
            cert = sign_recording_certificate(csr, ca, days=args.days, now=utcnow())
        except KeyPolicyError as exc:
            if isinstance(csr.public_key(), rsa.RSAPublicKey):
                raise
            msg = f"{exc} (for a signing certificate, use --profile signing)"
            raise KeyPolicyError(msg) from exc
    report = _write_public(args.out, _pem(cert), force=args.force)
    report(f"wrote {what} {args.out}" if args.out != STDIO else f"wrote the {what} to stdout")
    report(f"  subject         {name_str(cert.subject)}")
    report(f"  issuer          {name_str(cert.issuer)}")
    report(f"  certificate ID  {certificate_id(cert)}")
    report(f"  valid until     {fmt_time(cert.not_valid_after_utc)}")
    return 0


def _write_public(path: str, data: bytes, *, force: bool) -> Callable[[str], None]:
    """Write a public output (a certificate, a CA file), or print it for '-'.

    Returns where the summary goes: stdout, or stderr when stdout is the output.
    """
    if path == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return eprint
    _write(path, data, force=force)
    return print


def _shown(path: str) -> str:
    return "stdout" if path == STDIO else path


# --- pki bundle ----------------------------------------------------------------


def _register_bundle(cmds: argparse._SubParsersAction[Any]) -> None:
    p = cmds.add_parser(
        "bundle",
        help="build the media server's CA file from intermediate and root certificates",
        description="Build a CA file: only the certificate blocks of each input, Unix "
        "line endings, no duplicates, intermediates first and the root last, each "
        "link's signature checked. Inputs may come in any order.",
    )
    p.add_argument(
        "--out", required=True, metavar="FILE", help="the CA file, e.g. ca.pem, or '-' for stdout"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="certificate files (PEM or DER)")
    _add_force(p)
    p.set_defaults(func=_cmd_bundle)


def _cmd_bundle(args: argparse.Namespace) -> int:
    _check_outputs(args.force, args.out)
    inputs = [(path, read_input_file(path, "certificate")) for path in args.files]
    bundle = build_bundle(inputs, now=utcnow())
    for warning in bundle.warnings:
        eprint(f"recstream: warning: {warning}")
    report = _write_public(args.out, bundle.to_pem(), force=args.force)
    report(
        f"wrote {_shown(args.out)} with {len(bundle.certificates)} certificate(s), in this order:"
    )
    last = len(bundle.certificates) - 1
    for i, cert in enumerate(bundle.certificates):
        role = "root" if i == last else "intermediate"
        report(f"  {i + 1}. {name_str(cert.subject)} ({role})")
    return 0


# --- pki verify ----------------------------------------------------------------


def _register_verify(cmds: argparse._SubParsersAction[Any]) -> None:
    p = cmds.add_parser(
        "verify",
        help="check a recording (or signing) certificate against a CA file",
        description="Check a recording certificate as the media server will: X.509 v3, "
        "RSA of 2048 bits or more, within its validity period (warning within 30 days "
        "of expiry), a valid chain to a root in the CA file, key usage allowing key "
        "encipherment. With --profile signing: a signing certificate (ECDSA P-256 or "
        "Ed25519, key usage digitalSignature, not a CA), valid now.",
    )
    _add_profile(p)
    p.add_argument("--ca-file", required=True, metavar="FILE", help="the CA file (bundle)")
    p.add_argument(
        "cert", metavar="CERT", help="the recording certificate (PEM or DER), or '-' for stdin"
    )
    p.set_defaults(func=_cmd_verify)


def _cmd_verify(args: argparse.Namespace) -> int:
    cert = load_certificate(read_input_file(args.cert, "certificate"))
    ca_data = read_input_file(args.ca_file, "CA file")
    if args.profile == "signing":
        result = validate_signing_certificate(cert, ca_data, at=utcnow())
    else:
        result = validate_recording_certificate(cert, ca_data, now=utcnow())
    for warning in result.warnings:
        eprint(f"recstream: warning: {warning}")
    print(f"OK: {args.cert} is a valid {args.profile} certificate")
    print(f"  subject         {name_str(cert.subject)}")
    print(f"  certificate ID  {certificate_id(cert)}")
    print(f"  valid until     {fmt_time(cert.not_valid_after_utc)}")
    print("  chain           " + " <- ".join(name_str(c.subject) for c in result.chain))
    return 0


# --- pki show ------------------------------------------------------------------


def _register_show(cmds: argparse._SubParsersAction[Any]) -> None:
    p = cmds.add_parser(
        "show",
        help="describe a certificate, a CA bundle or a CSR",
        description="Show certificate ID (SHA-256 of the DER), subject, issuer, serial, "
        "validity and days left, key type and size; for a CSR its subject and key; for "
        "a bundle each certificate in order.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("file", metavar="FILE", help="the file to describe, or '-' for stdin")
    p.set_defaults(func=_cmd_show)


def _cmd_show(args: argparse.Namespace) -> int:
    desc = describe(read_input_file(args.file, "input"), now=utcnow(), source=args.file)
    if args.json:
        print(json.dumps(desc.to_dict(), indent=2))
    else:
        print("\n".join(desc.to_text()))
    return 0

"""``recstream keystore ...``.

``init``, ``import``, ``list``, ``rotate``, ``export``, ``check``, ``backup``,
``restore``, ``verify-backup`` and ``node`` (signing identities: cli/_keystore_nodes.py).
This module parses options, reads and writes files and prints; the work is in
:mod:`recstream.keystore`.  Every command takes ``--keystore PATH`` (else
``$RECSTREAM_KEYSTORE``, else the default) and ``--password-file F`` (else
``$RECSTREAM_KEYSTORE_PASSWORD``, else a prompt on a terminal).  Outputs are never
overwritten without ``--force``; a keystore is
never overwritten by ``init`` at all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.cli import EXIT_CODES_HELP, EXIT_KEY, UsageError, eprint
from recstream.cli._keystore_access import (
    keystore_subcommand,
    open_keystore,
    prompt_password,
    read_keystore_password,
)
from recstream.cli._keystore_nodes import register_nodes
from recstream.cli._util import (
    alias,
    checked,
    command_group,
    file_arg,
    read_input_file,
    read_password_file,
)
from recstream.errors import CertificateError
from recstream.keystore import DEFAULT_KDF, FileKind, store
from recstream.keystore import backup as backup_mod
from recstream.keystore.check import check_keystore
from recstream.keystore.model import Entry, EntryState, check_tenant, parse_kind
from recstream.keystore.pkcs12 import export_pkcs12, load_pkcs12
from recstream.pki.certs import load_certificate, load_certificates, load_private_key
from recstream.pki.dates import fmt_time, utcnow
from recstream.pki.verify import verify_recording_certificate

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Register the ``keystore`` command group."""
    cmds = command_group(
        sub,
        "keystore",
        "keystore_command",
        help="the keystore: every tenant's certificates and keys, backup, restore",
        description="Keep every tenant's voice and screen recording certificates with their "
        "private keys, old and expired ones included, encrypted under a password "
        "(docs/KEYSTORE.md).",
        epilog="'check' exits 4 when it finds anything. Exit codes: " + EXIT_CODES_HELP,
    )
    for add in (_reg_init, _reg_import, _reg_list, _reg_rotate, _reg_export, _reg_check):
        add(cmds)
    for add in (_reg_backup, _reg_restore, _reg_verify_backup):
        add(cmds)
    register_nodes(cmds)


def _kind(text: str) -> str:
    try:
        parse_kind(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _add_media_kind(p: argparse.ArgumentParser) -> None:
    # --media-kind, as in encrypt and record; --kind was this command's first spelling
    alias(
        p.add_argument(
            "--media-kind",
            "--kind",
            dest="kind",
            required=True,
            type=_kind,
            metavar="voice|screen",
        ),
        "--kind",
    )


_tenant = checked(check_tenant)


# --- init ----------------------------------------------------------------------


def _reg_init(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(cmds, "init", "create an empty keystore (never overwrites one)")
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    path = store.keystore_path(args.keystore)
    if path.exists():
        msg = (
            f"a keystore already exists at {path}; it holds the keys to recordings and "
            "init never overwrites it"
        )
        raise UsageError(msg)
    password = read_keystore_password(args.password_file, confirm=True)
    start = time.perf_counter()
    try:
        store.create(path, password)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    took = time.perf_counter() - start
    eprint(
        f"recstream: created keystore {path} (key derivation: {DEFAULT_KDF.describe()}; "
        f"{took:.2f} s to create here). Back it up, and its password, offsite: "
        "recstream keystore backup --out FILE"
    )
    return 0


# --- import --------------------------------------------------------------------


def _reg_import(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(cmds, "import", "add a certificate with its private key (old ones too)")
    p.add_argument("--tenant", required=True, type=_tenant)
    _add_media_kind(p)
    p.add_argument("--cert", metavar="C.pem", help="the recording certificate")
    p.add_argument("--key", metavar="K.pem", help="its private key (PEM or DER)")
    p.add_argument("--pkcs12", metavar="F.p12", help="certificate and key in one PKCS#12 file")
    p.add_argument(
        "--key-password-file", metavar="F", help="password of the --key or --pkcs12 file"
    )
    p.add_argument("--ca-file", metavar="CA.pem", help="validate the certificate against it")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    cert, key = _read_cert_and_key(args)
    if args.ca_file is not None:
        _validate_for_import(cert, read_input_file(args.ca_file, "CA"), args.ca_file)
    password = read_keystore_password(args.password_file)
    path = store.keystore_path(args.keystore)
    now = utcnow()
    with store.update(path, password) as ks:
        entry = ks.add(args.tenant, parse_kind(args.kind), cert, key, now=now)
    eprint(f"recstream: imported {entry.label()} ({entry.subject}) into {path}")
    if entry.expired(now):
        eprint(
            f"recstream: it expired on {fmt_time(entry.not_after)}: kept as history to decrypt "
            "old recordings, never used to encrypt"
        )
    elif entry.state is EntryState.ACTIVE:
        eprint(f"recstream: it is the active {entry.kind_name} certificate of {entry.tenant}")
    else:
        eprint(
            f"recstream: it is not active; make it active with: recstream keystore rotate "
            f"--tenant {entry.tenant} --media-kind {entry.kind_name} --cert-id {entry.cert_id[:16]}"
        )
    return 0


def _read_cert_and_key(args: argparse.Namespace) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key_password = read_password_file(args.key_password_file)
    if args.pkcs12 is not None:
        if args.cert is not None or args.key is not None:
            msg = "give --pkcs12, or --cert with --key, not both"
            raise UsageError(msg)
        cert, key, _ = load_pkcs12(read_input_file(args.pkcs12, "PKCS#12"), key_password)
        return cert, key
    if args.cert is None or args.key is None:
        msg = "import needs --cert C.pem with --key K.pem, or --pkcs12 F.p12"
        raise UsageError(msg)
    cert = load_certificate(read_input_file(args.cert, "certificate"))
    key_data = read_input_file(args.key, "private key")
    if key_password is None and b"ENCRYPTED" in key_data:
        msg = "the private key file is encrypted; give its password with --key-password-file"
        raise UsageError(msg)
    return cert, load_private_key(key_data, key_password)


def _validate_for_import(cert: x509.Certificate, bundle: bytes, ca_file: str) -> None:
    # An expired certificate is history: check that its chain was valid while it was.
    now = utcnow()
    when = min(now, cert.not_valid_after_utc - timedelta(seconds=1))
    try:
        warnings = verify_recording_certificate(cert, bundle, now=when)
    except CertificateError:
        eprint(f"recstream: the certificate was refused by the CA file {ca_file}")
        raise
    if when < now:
        eprint(f"recstream: validated as of {fmt_time(when)}, its last valid moment")
    for w in warnings if when == now else []:
        eprint(f"recstream: warning: {w}")


# --- list ----------------------------------------------------------------------


def _reg_list(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        cmds, "list", "list every certificate: tenant, kind, ID, subject, status"
    )
    p.add_argument("--json", action="store_true", help="print JSON (full certificate IDs)")
    p.set_defaults(func=cmd_list)


def entry_json(e: Entry, now: datetime) -> dict[str, Any]:
    return {
        "tenant": e.tenant,
        "kind": e.kind_name,
        "cert_id": e.cert_id,
        "key_id": e.key_id.hex(),
        "subject": e.subject,
        "status": e.status(now),
        "active": e.state is EntryState.ACTIVE,
        "days_left": e.days_left(now),
        "not_before": fmt_time(e.certificate.not_valid_before_utc),
        "not_after": fmt_time(e.not_after),
        "imported": fmt_time(e.imported),
        "activated": fmt_time(e.activated) if e.activated else None,
        "retired": fmt_time(e.retired) if e.retired else None,
    }


def cmd_list(args: argparse.Namespace) -> int:
    ks, path = open_keystore(args.keystore, args.password_file)
    now = utcnow()
    entries = sorted(ks.entries, key=lambda e: (e.tenant, e.kind, e.state is not EntryState.ACTIVE))
    if args.json:
        print(json.dumps([entry_json(e, now) for e in entries], indent=2))
        return 0
    if not entries:
        print(f"{path}: no certificates yet (recstream keystore import ...)")
        return 0
    print(f"{'TENANT':<16} {'KIND':<6} {'STATUS':<9} {'DAYS':>5}  {'CERTIFICATE ID':<16}  SUBJECT")
    for e in entries:
        status = e.status(now)
        if status == "expired" and e.state is EntryState.ACTIVE:
            status = "EXPIRED*"  # the active one has expired: see keystore check
        print(
            f"{e.tenant:<16} {e.kind_name:<6} {status:<9} {e.days_left(now):>5}  "
            f"{e.cert_id[:16]}  {e.subject}"
        )
    return 0


# --- rotate --------------------------------------------------------------------


def _reg_rotate(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        cmds, "rotate", "make an imported certificate the active one (the old stays)"
    )
    p.add_argument("--tenant", required=True, type=_tenant)
    _add_media_kind(p)
    p.add_argument("--cert-id", required=True, metavar="ID", help="ID or a unique prefix (8+)")
    p.set_defaults(func=cmd_rotate)


def cmd_rotate(args: argparse.Namespace) -> int:
    password = read_keystore_password(args.password_file)
    path = store.keystore_path(args.keystore)
    with store.update(path, password) as ks:
        old, new = ks.rotate(args.tenant, parse_kind(args.kind), args.cert_id, now=utcnow())
    was = f"; {old.cert_id[:16]} is retired and still decrypts" if old else ""
    eprint(f"recstream: {new.tenant}/{new.kind_name}: active certificate is now {new.cert_id}{was}")
    return 0


# --- export --------------------------------------------------------------------


def _reg_export(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        cmds, "export", "export a certificate and its key as PKCS#12 (Java, openssl)"
    )
    p.add_argument("--cert-id", required=True, metavar="ID", help="ID or a unique prefix (8+)")
    p.add_argument("--out", required=True, metavar="F.p12", type=file_arg)
    p.add_argument(
        "--export-password-file",
        metavar="F",
        help="password for the PKCS#12 file (else a prompt on a terminal)",
    )
    p.add_argument("--chain", metavar="CA.pem", help="CA certificates to include")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        msg = f"output exists: {out} (use --force to overwrite)"
        raise UsageError(msg)
    chain = load_certificates(read_input_file(args.chain, "CA")) if args.chain else []
    ks, _ = open_keystore(args.keystore, args.password_file)
    entry = ks.lookup(args.cert_id)
    p12_password = read_password_file(args.export_password_file)
    if p12_password is None:
        if not _interactive():
            msg = "the PKCS#12 file needs a password: give --export-password-file F"
            raise UsageError(msg)
        p12_password = prompt_password("PKCS#12 export password", confirm=True)
    store.write_file(out, export_pkcs12(entry, ks.private_key(entry), p12_password, chain=chain))
    eprint(f"recstream: exported {entry.label()} with its private key to {out} (PKCS#12)")
    return 0


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


# --- check ---------------------------------------------------------------------


def _reg_check(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(cmds, "check", "report what needs attention (exit 4 if anything does)")
    p.add_argument("--ca-file", metavar="CA.pem", help="also validate active certificates")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    bundle = read_input_file(args.ca_file, "CA") if args.ca_file else None
    ks, path = open_keystore(args.keystore, args.password_file)
    findings = check_keystore(ks, now=utcnow(), ca_bundle=bundle)
    if args.json:
        print(json.dumps([dataclasses.asdict(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{f.code}: {f.message}")
        if not findings:
            print(
                f"{path}: OK: {len(ks.entries)} certificate(s) of {len(ks.tenants())} "
                "tenant(s); every key matches and opens for its certificate"
            )
    return EXIT_KEY if findings else 0


# --- backup, restore, verify-backup ------------------------------------------------


def _reg_backup(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        cmds, "backup", "write one encrypted file with every certificate and key"
    )
    p.add_argument("--out", required=True, metavar="FILE", type=file_arg)
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=cmd_backup)


def cmd_backup(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        msg = f"output exists: {out} (use --force to overwrite)"
        raise UsageError(msg)
    password = read_keystore_password(args.password_file)
    path = store.keystore_path(args.keystore)
    if out.exists() and path.exists() and out.samefile(path):
        msg = (
            f"--out {out} is the keystore itself; a backup never replaces the keystore "
            "(write it elsewhere, ideally offsite)"
        )
        raise UsageError(msg)
    ks = store.load(path, password)
    backup_mod.write_backup(ks, password, out, source=str(path.resolve()), now=utcnow())
    eprint(
        f"recstream: backed up {len(ks.entries)} certificate(s) with their keys"
        f"{_and_nodes(len(ks.nodes))} from {path} "
        f"to {out} (verified; it opens with the keystore password). Keep it, and the "
        "password, offsite."
    )
    return 0


def _and_nodes(count: int) -> str:
    return f" and {count} node signing identit{'y' if count == 1 else 'ies'}" if count else ""


def _reg_restore(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(cmds, "restore", "check a backup completely, then make it the keystore")
    p.add_argument("backup", metavar="FILE", type=file_arg)
    p.add_argument("--force", action="store_true", help="replace an existing keystore")
    p.set_defaults(func=cmd_restore)


def cmd_restore(args: argparse.Namespace) -> int:
    path = store.keystore_path(args.keystore)
    if path.exists() and not args.force:
        msg = (
            f"a keystore already exists at {path}; restore replaces it only with --force "
            "(the old one is then kept beside it)"
        )
        raise UsageError(msg)
    password = read_keystore_password(args.password_file, what="backup password")
    info = backup_mod.restore(Path(args.backup), path, password, force=args.force)
    eprint(
        f"recstream: restored {info.certificates} certificate(s) of {len(info.tenants)} "
        f"tenant(s){_and_nodes(info.signing_identities)} from {args.backup} "
        f"(backup of {info.source}, made "
        f"{fmt_time(info.created)}) into {path}"
    )
    if info.replaced is not None:
        eprint(f"recstream: the keystore it replaced is kept as {info.replaced}")
    return 0


def _reg_verify_backup(cmds: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(cmds, "verify-backup", "prove a backup opens and every key matches")
    p.add_argument("backup", metavar="FILE", type=file_arg)
    p.set_defaults(func=cmd_verify_backup)


def cmd_verify_backup(args: argparse.Namespace) -> int:
    backup = Path(args.backup)
    password = read_keystore_password(args.password_file, what="backup password")
    data = store.read_file(backup, FileKind.BACKUP)
    _, info = backup_mod.read_backup(data, password, f"backup {backup}")
    print(
        f"{backup}: OK: backup of {info.source} made {fmt_time(info.created)}; "
        f"{info.certificates} certificate(s) of {len(info.tenants)} tenant(s)"
        f"{_and_nodes(info.signing_identities)}, every "
        "private key matches its certificate and unwraps for it"
    )
    return 0

"""``recstream rewrap``: move recordings to a new certificate, header only.

Parses options, expands directories, prints one line per file and a summary; the
work is :func:`recstream.ops.rewrap_one` (the same operation as ``batch rewrap``).
A file another process is re-wrapping is waited for (then re-read, so both changes
apply); one being recorded is left alone.  Exit 7 if any file failed or was busy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recstream.cli import EXIT_BATCH_FAILURES, UsageError, eprint
from recstream.cli._keystore_access import add_keystore_options, open_keystore
from recstream.cli._util import checked, file_arg, read_input_file
from recstream.envelope import Recipient
from recstream.errors import CertificateError, KeyPolicyError, RecstreamError
from recstream.format import MediaKind
from recstream.keystore.model import Keystore, check_tenant
from recstream.keystore.resolve import active_recipient
from recstream.ops import DONE, FAILED, SKIPPED, NewRecipients, Tree, resolve_cert_ids, rewrap_one
from recstream.ops.rewrap import for_tenant
from recstream.pki.certs import load_certificate
from recstream.pki.dates import utcnow
from recstream.pki.verify import check_recording_certificate, verify_recording_certificate
from recstream.reader import FileSource, read_header_at

# Another re-wrap of the same file finishes in well under this (it rewrites a header
# and copies the body); a live recording holds its file far longer: then the file is
# reported busy rather than waited for.
LOCK_WAIT_SECONDS = 30.0

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``rewrap``."""
    _reg_rewrap(sub)


_tenant = checked(check_tenant)


# --- rewrap ----------------------------------------------------------------------


def _reg_rewrap(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "rewrap",
        help="re-wrap recordings for a new certificate (header only; media untouched)",
        description="Give each FILE (directories: their *.rsv files) a new recipient: "
        "--to-cert, or the tenant's active certificate of the file's media kind, and "
        "remove --drop recipients. Only the header changes; the body bytes are checked "
        "identical before each file is atomically replaced. This moves recordings off a "
        "compromised or retiring key. Exit 7 if any file failed.",
    )
    add_keystore_options(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to-cert", metavar="NEW.pem", help="the new recipient certificate")
    target.add_argument("--tenant", type=_tenant, help="the tenant's active certificate")
    p.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="CERT_ID",
        help="remove this recipient: its certificate ID or a unique prefix of 8+ hex digits "
        "(among the keystore's certificates and the files' recipients); repeatable",
    )
    p.add_argument("--ca-file", metavar="CA.pem", help="validate the new certificate against it")
    p.add_argument("files", nargs="+", metavar="FILE", type=file_arg)
    p.set_defaults(func=cmd_rewrap)


def cmd_rewrap(args: argparse.Namespace) -> int:
    files = _expand(args.files)
    bundle = read_input_file(args.ca_file, "CA") if args.ca_file else None
    ks, _ = open_keystore(args.keystore, args.password_file)
    drop = _drop_ids(args.drop, ks, files)
    new = _new_recipient(args, ks, bundle, drop)
    failed: list[tuple[Path, str]] = []
    changed = 0
    for path in files:
        done = rewrap_one(Tree(path.parent), path.name, None, ks, new, drop=drop,
                          wait=LOCK_WAIT_SECONDS)  # fmt: skip
        if done.status == DONE:
            changed += 1
            before, after = done.info["before"], done.info["after"]
            eprint(f"recstream: re-wrapped {path}: {_ids(before)} -> {_ids(after)}")
        elif done.status == SKIPPED:
            eprint(f"recstream: {path} already has that recipient and none to drop")
        else:
            why = done.detail if done.status == FAILED else f"busy: {done.detail}"
            failed.append((path, why))
    eprint(
        f"recstream: re-wrapped {changed} of {len(files)} file(s); "
        f"{len(files) - changed - len(failed)} already up to date; {len(failed)} failed"
    )
    for path, reason in failed:
        eprint(f"  {path}: {reason}")
    return EXIT_BATCH_FAILURES if failed else 0


def _new_recipient(
    args: argparse.Namespace, ks: Keystore, bundle: bytes | None, drop: frozenset[str]
) -> NewRecipients:
    now = utcnow()
    if args.tenant is not None:
        ids = set()
        for kind in (MediaKind.VOICE, MediaKind.SCREEN):
            active = ks.active(args.tenant, kind)
            if active is not None:
                ids.add(active.cert_id)
                active_recipient(ks, args.tenant, kind, now=now, ca_bundle=bundle)
        if ids & drop:
            msg = "--drop names the tenant's active certificate, the new recipient"
            raise UsageError(msg)
        return for_tenant(ks, args.tenant, now=now, ca_bundle=bundle)
    cert = load_certificate(read_input_file(args.to_cert, "certificate"))
    try:
        check_recording_certificate(cert, now=now)
        if bundle is not None:
            verify_recording_certificate(cert, bundle, now=now)
    except (CertificateError, KeyPolicyError):
        eprint(f"recstream: the new certificate {args.to_cert} is refused")
        raise
    recipient = Recipient.from_certificate(cert)
    if recipient.cert_id_hex in drop:
        msg = "--drop names the --to-cert certificate, the new recipient"
        raise UsageError(msg)
    if ks.find(recipient.cert_id_hex) is None and drop:
        eprint(
            f"recstream: warning: the keystore holds no key for {args.to_cert}; after the "
            "re-wrap only its private key's holder can open files that lose their other "
            "recipients"
        )
    return lambda _header: [recipient]


def _drop_ids(texts: list[str], ks: Keystore, files: list[Path]) -> frozenset[str]:
    """--drop IDs or unique 8+ digit prefixes among the keystore's certificates and the
    files' recipients; an ID known to neither is refused (exit 2)."""
    if not texts:
        return frozenset()
    known = {e.cert_id for e in ks.entries}
    for path in files:
        try:
            with open(path, "rb", buffering=0) as fh:
                known.update(read_header_at(FileSource(fh.fileno())).cert_ids)
        except (OSError, ValueError, RecstreamError):
            continue  # that file's own re-wrap reports it
    try:
        return resolve_cert_ids(texts, known, what="--drop")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _expand(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*.rsv") if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            msg = f"input file not found: {raw}"
            raise UsageError(msg)
    if not files:
        msg = "no recordings to re-wrap (directories are searched for *.rsv files)"
        raise UsageError(msg)
    return files


def _ids(ids: tuple[str, ...]) -> str:
    return ", ".join(i[:16] for i in ids)

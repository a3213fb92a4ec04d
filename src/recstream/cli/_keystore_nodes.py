"""``recstream keystore node ...``: recording nodes' signing identities (issue 16).

``add``, ``list``, ``show`` and ``remove``.  Options and messages only; the work is
in :mod:`recstream.keystore.nodes`.  Every change is a locked, atomic keystore
update (:func:`recstream.keystore.store.update`), like ``keystore import``.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from recstream.cli import UsageError, eprint
from recstream.cli._keystore_access import (
    keystore_subcommand,
    open_keystore,
    read_keystore_password,
)
from recstream.cli._util import checked, command_group, read_input_file, read_password_file
from recstream.errors import CertificateError
from recstream.keystore import store
from recstream.keystore.nodes import NodeIdentity, NodeState, check_node_name
from recstream.pki.certs import load_certificate
from recstream.pki.dates import days_left, fmt_time, utcnow
from recstream.pki.signing import load_signing_key, validate_signing_certificate

__all__ = ["register_nodes"]


def register_nodes(cmds: argparse._SubParsersAction[Any]) -> None:
    """Register ``keystore node`` and its subcommands."""
    sub = command_group(
        cmds,
        "node",
        "node_command",
        help="recording nodes' signing identities: add, list, show, remove",
        description="Each recording node (media server, SIPREC or streams server) signs "
        "what it records with its own signing key and certificate (made with 'recstream "
        "pki csr --profile signing' and 'pki sign --profile signing'). The keystore keeps "
        "them under its password beside the tenants' certificates; adding a node's new "
        "identity retires the old one, which is kept.",
    )
    _reg_add(sub)
    _reg_list(sub)
    _reg_show(sub)
    _reg_remove(sub)


_node = checked(check_node_name)


# --- add -------------------------------------------------------------------------


def _reg_add(sub: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        sub, "add", "add a node's signing key and certificate; it becomes the active one"
    )
    p.add_argument("node", metavar="NODE", type=_node, help="the node's name, e.g. recorder-01")
    p.add_argument("--cert", required=True, metavar="C.pem", help="the signing certificate")
    p.add_argument("--key", required=True, metavar="K.pem", help="its private key (PEM or DER)")
    p.add_argument("--key-password-file", metavar="F", help="password of the --key file")
    p.add_argument("--ca-file", metavar="CA.pem", help="validate the certificate against it")
    p.set_defaults(func=_cmd_add)


def _cmd_add(args: argparse.Namespace) -> int:
    cert = load_certificate(read_input_file(args.cert, "signing certificate"))
    key_data = read_input_file(args.key, "signing key")
    key_password = read_password_file(args.key_password_file)
    if key_password is None and b"ENCRYPTED" in key_data:
        msg = "the signing key file is encrypted; give its password with --key-password-file"
        raise UsageError(msg)
    key = load_signing_key(key_data, key_password)
    now = utcnow()
    if args.ca_file is not None:
        try:
            validate_signing_certificate(cert, read_input_file(args.ca_file, "CA"), at=now)
        except CertificateError:
            eprint(f"recstream: the signing certificate was refused by the CA file {args.ca_file}")
            raise
    password = read_keystore_password(args.password_file)
    path = store.keystore_path(args.keystore)
    with store.update(path, password) as ks:
        new, retired = ks.nodes.add(args.node, cert, key, now=now)
    eprint(
        f"recstream: added {new.label()} ({new.subject}, {new.key_type}) to {path}; "
        f"node {new.node} signs with it from now on"
    )
    if retired is not None:
        eprint(f"recstream: its previous identity {retired.cert_id[:16]} is retired (kept)")
    if days_left(cert, now) < 30:
        eprint(f"recstream: warning: it expires on {fmt_time(cert.not_valid_after_utc)}")
    return 0


# --- list, show --------------------------------------------------------------------


def _reg_list(sub: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(sub, "list", "list every node's signing identities")
    p.add_argument("--json", action="store_true", help="print JSON (full certificate IDs)")
    p.set_defaults(func=_cmd_list)


def _reg_show(sub: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        sub, "show", "show one node's identities, or one identity by certificate ID"
    )
    p.add_argument("node", metavar="NODE", type=_node)
    p.add_argument("--cert-id", metavar="ID", help="only this identity (ID or a prefix of 8+)")
    p.add_argument("--pem", action="store_true", help="print the certificate(s) as PEM")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_show)


def identity_json(i: NodeIdentity, now: datetime) -> dict[str, Any]:
    return {
        "node": i.node,
        "cert_id": i.cert_id,
        "subject": i.subject,
        "issuer": i.certificate.issuer.rfc4514_string(),
        "key_type": i.key_type,
        "status": i.status(now),
        "active": i.state is NodeState.ACTIVE,
        "not_before": fmt_time(i.certificate.not_valid_before_utc),
        "not_after": fmt_time(i.certificate.not_valid_after_utc),
        "added": fmt_time(i.added),
        "retired": fmt_time(i.retired) if i.retired else None,
    }


def _ordered(items: tuple[NodeIdentity, ...] | list[NodeIdentity]) -> list[NodeIdentity]:
    return sorted(items, key=lambda i: (i.node, i.state is not NodeState.ACTIVE, -_ts(i)))


def _ts(i: NodeIdentity) -> float:
    return i.added.timestamp()


def _cmd_list(args: argparse.Namespace) -> int:
    ks, path = open_keystore(args.keystore, args.password_file)
    now = utcnow()
    items = _ordered(ks.nodes.identities)
    if args.json:
        print(json.dumps([identity_json(i, now) for i in items], indent=2))
        return 0
    if not items:
        print(f"{path}: no signing identities yet (recstream keystore node add NODE ...)")
        return 0
    print(f"{'NODE':<20} {'STATUS':<8} {'KEY':<11} {'CERTIFICATE ID':<16}  SUBJECT")
    for i in items:
        print(f"{i.node:<20} {i.status(now):<8} {i.key_type:<11} {i.cert_id[:16]}  {i.subject}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization

    ks, path = open_keystore(args.keystore, args.password_file)
    now = utcnow()
    if args.cert_id is not None:
        items = [ks.nodes.find(args.cert_id, args.node)]
    else:
        items = _ordered(ks.nodes.for_node(args.node))
    if not items:
        msg = f"node {args.node} has no signing identity in {path} (see: keystore node list)"
        raise UsageError(msg)
    if args.pem:
        for i in items:
            print(i.certificate.public_bytes(serialization.Encoding.PEM).decode(), end="")
    elif args.json:
        print(json.dumps([identity_json(i, now) for i in items], indent=2))
    else:
        for n, i in enumerate(items):
            if n:
                print()
            for label, value in identity_json(i, now).items():
                print(f"{label.replace('_', ' '):<12} {value if value is not None else '-'}")
    return 0


# --- remove ------------------------------------------------------------------------


def _reg_remove(sub: argparse._SubParsersAction[Any]) -> None:
    p = keystore_subcommand(
        sub, "remove", "delete one signing identity (its key) from the keystore"
    )
    p.add_argument("node", metavar="NODE", type=_node)
    p.add_argument("--cert-id", required=True, metavar="ID", help="ID or a prefix of 8+")
    p.add_argument(
        "--active",
        action="store_true",
        help="allow removing the node's active identity (it then stops signing)",
    )
    p.set_defaults(func=_cmd_remove)


def _cmd_remove(args: argparse.Namespace) -> int:
    password = read_keystore_password(args.password_file)
    path = store.keystore_path(args.keystore)
    with store.update(path, password) as ks:
        gone = ks.nodes.remove(args.node, args.cert_id, active_too=args.active)
    eprint(
        f"recstream: removed {gone.label()} from {path}; recordings it signed still verify "
        "(they carry the certificate)"
    )
    if gone.state is NodeState.ACTIVE:
        eprint(f"recstream: node {gone.node} has no active signing identity now")
    return 0

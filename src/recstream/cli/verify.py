"""``recstream verify FILE_OR_DIR... --ca-file CA.pem``: check recordings' signatures.

No key is needed.  Each file's verdict (valid, invalid, unsigned, refused signer)
is printed, one line each (``--json``: one document); the work is
:func:`recstream.ops.verify_one` on threads.  Exit codes (README "Exit codes"):
0 every file valid (unsigned ones too, unless ``--require-signature``), 3 every
failing file is invalid (or unsigned under ``--require-signature``, or not an
envelope), 4 every failing file has a refused signer, 7 mixed results.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path
from typing import Any

from recstream.cli import (
    EXIT_BATCH_FAILURES,
    EXIT_INTEGRITY,
    EXIT_IO,
    EXIT_KEY,
    EXIT_OK,
    UsageError,
)
from recstream.cli._util import file_arg
from recstream.files import DEFAULT_JOBS

__all__ = ["REGISTRARS", "register", "register_one"]


def _register_verify(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "verify",
        help="check recordings' signatures (no key needed)",
        description="Check the signature of each FILE (directories: their *.rsv files): "
        "signed or not, the signer's subject and certificate ID, its chain to --ca-file at "
        "the signing time, and whether header and body are what was signed. No decryption "
        "key is needed. Exit 0 when every file is valid (unsigned files pass unless "
        "--require-signature), 3 when the failures are bad signatures (altered, truncated, "
        "not an envelope), 4 when they are refused signers, 7 for a mix.",
    )
    p.add_argument(
        "--ca-file",
        required=True,
        metavar="CA.pem",
        type=file_arg,
        help="the CA certificate(s) that issue recorders' signing certificates",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument(
        "--require-signature",
        action="store_true",
        help="count unsigned recordings as failures (exit 3)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help="files verified at once (default: %(default)s)",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="FILE_OR_DIR",
        type=file_arg,
        help="a recording, or a directory searched for *.rsv files (recursively)",
    )
    p.set_defaults(func=cmd_verify)


REGISTRARS = {"verify": _register_verify}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    _register_verify(sub)


def register_one(sub: argparse._SubParsersAction[Any], name: str) -> None:
    REGISTRARS[name](sub)


# The exit code each outcome status contributes (None: a pass).
_CODES: dict[str, int | None] = {
    "valid": None,
    "unsigned": None,
    "invalid": EXIT_INTEGRITY,
    "refused_signer": EXIT_KEY,
    "busy": EXIT_INTEGRITY,  # being recorded: not verifiable, so not verified
}


def cmd_verify(args: argparse.Namespace) -> int:
    from recstream.batch.local import expand_inputs, run_threads
    from recstream.ops import Outcome, Tree, verify_one

    if args.jobs < 1:
        msg = "--jobs must be at least 1"
        raise UsageError(msg)
    with open(args.ca_file, "rb") as f:
        ca_pem = f.read()
    _check_ca(ca_pem)
    items = expand_inputs(args.paths)
    if not items:
        msg = "no recordings to verify (directories are searched for *.rsv files)"
        raise UsageError(msg)

    def job(root: Path, rel: str) -> Outcome:
        return verify_one(Tree(root), rel, ca_pem)

    outcomes = run_threads([functools.partial(job, r, p) for r, p in items], jobs=args.jobs)
    names = [str(root / rel) for root, rel in items]
    codes = [_code(o, args.require_signature) for o in outcomes]
    if args.json:
        docs = [{"path": n, **_doc(o)} for n, o in zip(names, outcomes, strict=True)]
        print(json.dumps({"files": docs, "summary": _summary(outcomes)}, indent=2))
    else:
        for name, o in zip(names, outcomes, strict=True):
            print(_line(name, o))
        if len(outcomes) > 1:
            print("summary: " + ", ".join(f"{n} {k}" for k, n in _summary(outcomes).items()))
    failing = {c for c in codes if c is not None}
    if not failing:
        return EXIT_OK
    if len(failing) == 1 and (len(outcomes) == 1 or all(c is not None for c in codes)):
        return failing.pop()
    return EXIT_BATCH_FAILURES


def _check_ca(ca_pem: bytes) -> None:
    """Refuse an unreadable CA file once, up front, instead of once per recording."""
    from recstream.pki.bundle import extract_certificates

    extract_certificates(ca_pem, "the CA file")


def _code(o: Any, require: bool) -> int | None:
    if o.status == "unsigned" and require:
        return EXIT_INTEGRITY
    if o.status == "failed":  # unreadable (5), else not an envelope or malformed (3)
        return EXIT_IO if o.info.get("error") == "io" else EXIT_INTEGRITY
    return _CODES.get(o.status, EXIT_INTEGRITY)


def _doc(o: Any) -> dict[str, Any]:
    if o.status in ("failed", "busy"):
        return {"status": o.status, "reason": o.detail}
    return dict(o.info)


def _summary(outcomes: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    return counts


def _line(name: str, o: Any) -> str:
    from recstream.cli.envelope import shown_text

    info = o.info
    if o.status == "valid":
        extra = f"; {info['note']}" if info.get("note") else ""
        return (
            f"{name}: valid: signed by {shown_text(info['signer'])} (cert ID {info['cert_id']}, "
            f"{info['algorithm']}) at {info['signed_at']}, chain valid at signing{extra}"
        )
    if o.status == "refused_signer":
        return f"{name}: REFUSED SIGNER {shown_text(info['signer'])}: {o.detail}"
    if o.status == "invalid":
        return f"{name}: INVALID: {o.detail}"
    if o.status == "unsigned":
        return f"{name}: unsigned (format version 1: no signature)"
    return f"{name}: {o.status.upper()}: {o.detail}"

"""``recstream mux``: one playable file from a call and its screen recording."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from recstream.cli import UsageError, eprint
from recstream.cli._keystore_access import add_keystore_options, load_identities, open_keystore
from recstream.cli._recording import (
    DEFAULT_TENANT,
    distinct_recipients,
    load_recipients,
    tenant_arg,
)
from recstream.cli._util import file_arg, naming_output
from recstream.envelope import KeyRing, Recipient
from recstream.format import MediaKind


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "mux",
        help="join a call recording and its screen recording into one WebM or MP4",
        description="Mux a call recording (audio) and a screen recording (video) into one "
        "file that browsers play and seek (the index at the front), copying the video: a "
        "WebM (VP8/VP9/AV1 screen video, Opus audio) or, for an H.264 screen recording "
        "(MP4/MOV or Matroska), an MP4 (AAC audio). Both encrypted: they "
        "are decrypted in memory (never to disk) with --key files or the keystore, and the "
        "output is encrypted for --cert, else for the tenant's active screen certificate in "
        "the keystore. Neither encrypted: a plain WebM, or with --cert an encrypted one. One "
        "encrypted and one not: refused, nothing written. The audio is placed on the "
        "timeline by the recordings' start times (encrypt --created sets one).",
    )
    p.add_argument(
        "--voice", required=True, metavar="CALL", type=file_arg, help="the call recording"
    )
    p.add_argument(
        "--screen", required=True, metavar="SCREEN", type=file_arg, help="the screen recording"
    )
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY.pem",
        help="private key to read encrypted inputs (repeatable); else the keystore",
    )
    add_keystore_options(p)
    p.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="CERT.pem",
        help="certificate to encrypt the output for (repeatable, 1 to 16 in all); for "
        "encrypted inputs without --cert, the tenant's active screen certificate in the keystore",
    )
    p.add_argument(
        "--allow-invalid-cert",
        action="store_true",
        help="encrypt even for an expired, not yet valid or CA certificate (a warning)",
    )
    p.add_argument(
        "--tenant",
        type=tenant_arg,
        metavar="T",
        help=f"tenant of an encrypted output made from unencrypted inputs (default: "
        f"{DEFAULT_TENANT}); encrypted inputs keep their own",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "output",
        metavar="OUT",
        type=file_arg,
        help="the output file: .webm or .mp4 as the screen recording's codec makes it "
        "(any name, e.g. .rsv, when encrypted)",
    )
    p.set_defaults(func=cmd_mux)


def cmd_mux(args: argparse.Namespace) -> int:
    for label, path in (("call", args.voice), ("screen", args.screen)):
        if not Path(path).is_file():
            msg = f"{label} recording not found: {path}"
            raise UsageError(msg)
    out = Path(args.output)
    if out.exists() and not args.force:
        msg = f"output exists: {out} (use --force to overwrite)"
        raise UsageError(msg)
    if not out.resolve().parent.is_dir():
        msg = f"output directory does not exist: {out.parent}"
        raise UsageError(msg)
    if args.key and args.keystore is not None:
        msg = "give --key files or --keystore, not both"
        raise UsageError(msg)
    from recstream.mux import is_envelope, mux_files  # PyAV: loaded only for this command

    encrypted = is_envelope(Path(args.voice)) or is_envelope(Path(args.screen))
    recipients: Sequence[Recipient] | Callable[[str], Sequence[Recipient]] = []
    if args.cert:
        recipients = distinct_recipients(load_recipients(args.cert, None, args.allow_invalid_cert))
    keys: KeyRing | None = None
    if args.key:
        keys = load_identities(args.key, args.password_file)
    elif encrypted:
        ks, path = open_keystore(args.keystore, args.password_file)
        keys = ks
        if not recipients:

            def recipients(tenant: str) -> Sequence[Recipient]:
                from recstream.keystore.resolve import active_recipient
                from recstream.pki.dates import utcnow

                recipient, warnings = active_recipient(
                    ks, tenant, MediaKind.SCREEN, now=utcnow(), ca_bundle=None
                )
                for w in warnings:
                    eprint(f"recstream: warning: {tenant}/screen certificate in {path}: {w}")
                return [recipient]

    with naming_output(args.output):
        result = mux_files(
            args.voice,
            args.screen,
            out,
            keys=keys,
            recipients=recipients,
            tenant=args.tenant or DEFAULT_TENANT,
        )
    for warning in result.warnings:
        eprint(f"recstream: warning: {warning}")
    state = (
        f"encrypted for {', '.join(result.cert_ids)}"
        if result.encrypted
        else "not encrypted (neither input was, and no --cert)"
    )
    eprint(
        f"recstream: muxed {args.voice} + {args.screen} -> {out}: {result.bytes_written} "
        f"bytes of {result.format.label}, audio at +{result.audio_offset_s:.3f} s, video at "
        f"+{result.video_offset_s:.3f} s, {state}"
    )
    return 0

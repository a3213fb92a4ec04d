"""``recstream mux``: one playable file from a call and its screen recording."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recstream.cli import UsageError, eprint
from recstream.cli._keystore_access import load_identities, load_recipients


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "mux",
        help="join a call recording and its screen recording into one WebM",
        description="Mux a call recording (audio) and a screen recording (video) into one "
        "WebM (VP8/VP9 video copied, Opus audio) that browsers play. Both encrypted: they "
        "are decrypted in memory (never to disk) and the output is encrypted for --cert. "
        "Neither encrypted: a plain WebM. One encrypted and one not: refused, nothing "
        "written. The audio is placed on the timeline by the recordings' start times.",
    )
    p.add_argument("--voice", required=True, metavar="CALL", help="the call recording")
    p.add_argument("--screen", required=True, metavar="SCREEN", help="the screen recording")
    p.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY.pem",
        help="private key to read encrypted inputs (repeatable)",
    )
    p.add_argument("--password-file", metavar="F", help="password of the --key files")
    p.add_argument(
        "--cert",
        action="append",
        default=[],
        metavar="CERT.pem",
        help="certificate to encrypt the output for (needed for encrypted inputs)",
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("output", metavar="OUT")
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
    from recstream.mux import mux_files  # PyAV: loaded only for this command

    keys = load_identities(args.key, args.password_file) if args.key else None
    recipients = load_recipients(args.cert, None) if args.cert else []
    result = mux_files(args.voice, args.screen, out, keys=keys, recipients=recipients)
    state = (
        f"encrypted for {', '.join(result.cert_ids)}"
        if result.encrypted
        else "not encrypted (neither input was)"
    )
    eprint(
        f"recstream: muxed {args.voice} + {args.screen} -> {out}: {result.bytes_written} "
        f"bytes of WebM, audio at +{result.audio_offset_s:.3f} s, video at "
        f"+{result.video_offset_s:.3f} s, {state}"
    )
    return 0

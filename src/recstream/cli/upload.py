"""``recstream upload`` (spool -> archive store) and ``recstream status`` (the backlog)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from recstream.cli import EXIT_PARTIAL, UsageError, eprint
from recstream.cli._util import file_arg

CREDENTIALS_HELP = (
    "Credentials come from the environment only, never the command line: AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws) and AWS_ENDPOINT_URL_S3 for an "
    "S3-compatible store; RECSTREAM_WEBDAV_USERNAME / RECSTREAM_WEBDAV_PASSWORD or ~/.netrc "
    "for WebDAV."
)


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "upload",
        help="upload finished recordings from a spool directory to an archive store",
        description="Upload every finished recording in SPOOL to the archive store, "
        "verified and never visible under its final name before it is complete, and "
        "remove it from SPOOL only once committed. The store down: recordings stay in "
        "SPOOL and are retried with "
        "back-off (forever, or once with --once). A 403 is reported and the recording "
        "kept. " + CREDENTIALS_HELP,
    )
    p.add_argument("--spool", required=True, type=file_arg, metavar="DIR", help="the spool")
    p.add_argument(
        "--archive",
        required=True,
        metavar="URL",
        help="s3://BUCKET/PREFIX or webdav+https://HOST/PATH",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="one pass: exit 0 if the spool is empty of finished recordings, else 6",
    )
    p.add_argument(
        "--retry-cap",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="longest wait between attempts while the store is down (default: %(default)s)",
    )
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser(
        "status",
        help="show a spool's upload backlog",
        description="Show the recordings waiting in a spool for the archive store, those "
        "still being recorded, and what the uploader last reported (refusals, the store "
        "unreachable). Exit 0 when nothing is held back by a refusal, 6 otherwise.",
    )
    p.add_argument("--spool", required=True, type=file_arg, metavar="DIR", help="the spool")
    p.add_argument("--json", action="store_true", help="one JSON document")
    p.set_defaults(func=cmd_status)


def _uploader(args: argparse.Namespace, **kwargs: Any) -> Any:
    from recstream.upload import RetryPolicy, Uploader

    if not args.retry_cap > 0:
        msg = "--retry-cap must be a positive number of seconds"
        raise UsageError(msg)
    try:
        return Uploader(
            args.spool,
            args.archive,
            retry=RetryPolicy(cap_seconds=args.retry_cap),
            **kwargs,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_upload(args: argparse.Namespace) -> int:
    spool = Path(args.spool)
    if not spool.is_dir():
        msg = f"spool directory does not exist: {spool}"
        raise UsageError(msg)
    # recstream's own events at INFO; the store clients' chatter (botocore, httpx) stays out
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("recstream: %(message)s"))
    ours = logging.getLogger("recstream")
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    uploader = _uploader(args)
    if not args.once:
        # SIGTERM: stop after the file in flight (what is pending stays in the spool).
        signal.signal(signal.SIGTERM, lambda *_: uploader.stop(timeout=0))
    stats = uploader.drain(deadline=time.monotonic() if args.once else None)
    return _report(stats)


def _report(stats: Any) -> int:
    if stats.pending:
        eprint(
            f"recstream: {stats.pending} recording(s) ({stats.pending_bytes} bytes) still "
            f"in the spool for {stats.archive}"
            + (f": {stats.last_error}" if stats.last_error else "")
        )
        return EXIT_PARTIAL
    eprint(f"recstream: spool empty; {stats.uploaded} recording(s) uploaded to {stats.archive}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from recstream.upload import spool_status

    spool = Path(args.spool)
    if not spool.is_dir():
        msg = f"spool directory does not exist: {spool}"
        raise UsageError(msg)
    status = spool_status(spool)
    state: dict[str, Any] = status["uploader"]  # type: ignore[assignment]
    held = state.get("held") or {}
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"spool      {status['spool']} ({status['spool_bytes']} bytes)")
        print(f"archive    {state.get('archive', '(no uploader has run)')}")
        print(f"pending    {status['pending']} recording(s), {status['pending_bytes']} bytes")
        for row in status["recording"]:  # type: ignore[attr-defined]
            print(f"recording  {row['item']}: {row['why']}")
        if state:
            ok = "yes" if state.get("store_available") else "NO"
            print(f"reachable  {ok} (last report {_ago(state.get('written'))})")
            if state.get("last_error"):
                print(f"last error {state['last_error']}")
        for item, why in held.items():
            print(f"held       {item}: {why}")
    return EXIT_PARTIAL if held else 0


def _ago(when: object) -> str:
    if not isinstance(when, int | float):
        return "unknown"
    return f"{max(0.0, time.time() - when):.0f} s ago"

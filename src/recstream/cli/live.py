"""``recstream record`` (live encryption from stdin) and ``recstream recover``."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from recstream.aio.flusher import DEFAULT_FLUSH_INTERVAL, Flusher
from recstream.aio.run import run
from recstream.aio.writer import INCOMPLETE_SUFFIX, RecordingWriter
from recstream.cli import EXIT_PARTIAL, UsageError, eprint
from recstream.cli._keystore_access import add_keystore_options, decryption_keys
from recstream.cli._recording import recording_from_args
from recstream.durable import atomic_output, write_all
from recstream.envelope import Recipient
from recstream.format import Metadata
from recstream.reader import FileSource, recover

READ_SIZE = 64 * 1024


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "record",
        help="encrypt a live stream from stdin as it arrives",
        description="Read a live recording from stdin (e.g. 'arecord -f MU_LAW -r 8000 | "
        "recstream record --cert C.pem call.rsv') and encrypt it as it arrives. While "
        f"recording, the file is OUT{INCOMPLETE_SUFFIX}; at end of input (or SIGINT/SIGTERM) "
        "it is completed, fsynced and renamed to OUT. After a crash, "
        f"'recstream recover' reads OUT{INCOMPLETE_SUFFIX}.",
    )
    p.add_argument(
        "--cert",
        action="append",
        metavar="CERT.pem",
        help="recipient certificate; repeat for more recipients (with the keystore: escrow)",
    )
    p.add_argument(
        "--ca-file", metavar="CA.pem", help="validate the recipients against this CA bundle"
    )
    add_keystore_options(
        p,
        password_help="file whose first line is the keystore password (else "  # noqa: S106
        "$RECSTREAM_KEYSTORE_PASSWORD; stdin is the recording, so there is no prompt)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=DEFAULT_FLUSH_INTERVAL,
        metavar="SECONDS",
        help="longest time a complete 16 KiB segment waits in memory before "
        "it is written and fdatasync'ed (default: %(default)s)",
    )
    p.add_argument("--media-type", metavar="TYPE", help="MIME type (default: audio/basic)")
    p.add_argument("--media-kind", choices=["voice", "screen"], help="default: from the type")
    p.add_argument("--recording-id", help="recording ID (default: a new UUID)")
    p.add_argument(
        "--tenant",
        help="tenant (default with --cert: default); without --cert, the recipient is this "
        "tenant's active certificate in the keystore",
    )
    p.add_argument("output", metavar="OUT")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser(
        "recover",
        help="decrypt the authenticated prefix of an interrupted recording",
        description="Decrypt every complete, authentic segment of an interrupted "
        f"recording (such as OUT{INCOMPLETE_SUFFIX} left by a crash) into OUT. Exits 6 when "
        "the recording was incomplete, 0 when it was in fact complete. A segment that "
        "fails authentication with data after it is tampering: the file is refused (exit 3).",
    )
    p.add_argument(
        "--key",
        action="append",
        metavar="KEY.pem",
        help="private key (repeatable); without --key, the keystore is used",
    )
    p.add_argument("--keystore", metavar="PATH", help="take keys from this keystore")
    p.add_argument(
        "--password-file", metavar="F", help="password of the --key files, or of the keystore"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(func=cmd_recover)


def cmd_record(args: argparse.Namespace) -> int:
    if not args.flush_interval > 0:
        msg = "--flush-interval must be a positive number of seconds"
        raise UsageError(msg)
    out = Path(args.output)
    for path in (out, out.with_name(out.name + INCOMPLETE_SUFFIX)):
        if path.exists():
            msg = f"{path} exists; refusing to overwrite a recording"
            raise UsageError(msg)
    if not out.resolve().parent.is_dir():
        msg = f"output directory does not exist: {out.parent}"
        raise UsageError(msg)
    metadata, recipients = recording_from_args(args, "-", "audio/basic")
    writer = run(_record(out, recipients, metadata, args.flush_interval))
    stats = writer.statistics()
    eprint(
        f"recstream: recorded {stats.bytes_in} bytes into {out} ({stats.segments} segments), "
        f"recording {metadata.recording_id}, complete"
    )
    return 0


async def _record(
    out: Path, recipients: list[Recipient], metadata: Metadata, interval: float
) -> RecordingWriter:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Signalled: finish the recording with what has arrived.
        loop.add_signal_handler(sig, chunks.put_nowait, None)
    async with Flusher(interval) as flusher:
        writer = await RecordingWriter.open(out, recipients, metadata, flusher)
        # A daemon thread: a read blocked on a quiet pipe must not keep the process alive.
        threading.Thread(target=_pump_stdin, args=(loop, chunks), daemon=True).start()
        while (chunk := await chunks.get()) is not None:
            await writer.write(chunk)
        await writer.close()
    return writer


def _pump_stdin(loop: asyncio.AbstractEventLoop, chunks: asyncio.Queue[bytes | None]) -> None:
    fd = sys.stdin.buffer.fileno()
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except OSError:
            chunk = b""
        fut = asyncio.run_coroutine_threadsafe(chunks.put(chunk or None), loop)
        try:
            fut.result()
        except RuntimeError:  # the loop is gone
            return
        if not chunk:
            return


def cmd_recover(args: argparse.Namespace) -> int:
    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        msg = f"input file not found: {src}"
        raise UsageError(msg)
    if out.exists() and not args.force:
        msg = f"output exists: {out} (use --force to overwrite)"
        raise UsageError(msg)
    keys = decryption_keys(args)
    with open(src, "rb", buffering=0) as fh, atomic_output(out, replace=args.force) as dst:
        result = recover(FileSource(fh.fileno()), keys, lambda b: write_all(dst, b))
    if result.complete:
        eprint(
            f"recstream: {src} is a complete recording: decrypted all {result.segments} "
            f"segments ({result.plaintext_bytes} bytes) into {out}"
        )
        return 0
    eprint(
        f"recstream: recovered {result.plaintext_bytes} bytes ({result.segments} complete "
        f"segments) into {out}; the recording is INCOMPLETE: {result.lost_bytes} bytes at "
        "the end did not form an authentic segment and were dropped"
    )
    return EXIT_PARTIAL

"""``recstream record`` (live encryption from stdin) and ``recstream recover``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from recstream.aio.flusher import DEFAULT_FLUSH_INTERVAL, Flusher
from recstream.aio.run import run
from recstream.aio.writer import INCOMPLETE_SUFFIX, RecordingWriter
from recstream.cli import EXIT_PARTIAL, UsageError, eprint
from recstream.cli._keystore_access import add_keystore_options, decryption_keys
from recstream.cli._recording import (
    add_metadata_options,
    add_recipient_options,
    recording_from_args,
)
from recstream.cli._signals import STOP_SIGNALS, StopRequest, stop_request
from recstream.cli._util import STDIO, file_arg, naming_output
from recstream.durable import atomic_output, write_all
from recstream.envelope import Recipient
from recstream.format import Metadata
from recstream.reader import FileSource, recover

READ_SIZE = 64 * 1024
# How often the stdin reader looks at the stop request while the input is quiet.
STOP_POLL_SECONDS = 0.05


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
    add_recipient_options(p)
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
    add_metadata_options(p)
    p.add_argument(
        "--archive",
        metavar="URL",
        help="then upload OUT to this store (s3://BUCKET/PREFIX or webdav+https://HOST/PATH) "
        "as URL/NAME, verified, and remove it locally once committed; if the store is "
        "unreachable OUT stays (exit 6) for 'recstream upload --spool DIR --archive URL'. "
        "Credentials from the environment only (AWS_*, RECSTREAM_WEBDAV_USERNAME/PASSWORD "
        "or ~/.netrc)",
    )
    p.add_argument(
        "--upload-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --archive: how long to keep retrying an unreachable store "
        "(default: %(default)s)",
    )
    p.add_argument(
        "output",
        metavar="OUT",
        type=file_arg,
        help="the recording (a file: it is written as it arrives, then renamed)",
    )
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
    p.add_argument("--keystore", metavar="PATH", type=file_arg, help="take keys from this keystore")
    p.add_argument(
        "--password-file", metavar="F", help="password of the --key files, or of the keystore"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("input", metavar="IN", type=file_arg, help="the interrupted recording (a file)")
    p.add_argument("output", metavar="OUT", help="the plaintext, or '-' for stdout")
    p.set_defaults(func=cmd_recover)


def cmd_record(args: argparse.Namespace) -> int:
    # main() has caught SIGINT/SIGTERM since start-up (recstream.cli._signals): from
    # here on a stop request finishes the recording with what has arrived.
    stop = stop_request()
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
    uploader = _archive_uploader(args, out) if args.archive else None
    eprint(
        f"recstream: recording into {out}{INCOMPLETE_SUFFIX} until end of input, Ctrl-C or SIGTERM"
    )
    metadata, recipients = recording_from_args(args, STDIO, "audio/basic")
    with naming_output(str(out)):
        writer = run(_record(out, recipients, metadata, args.flush_interval, stop))
    stats = writer.statistics()
    how = " (stopped by a signal)" if stop.is_set() else ""
    eprint(
        f"recstream: recorded {stats.bytes_in} bytes into {out} ({stats.segments} segments), "
        f"recording {metadata.recording_id}, complete{how}"
    )
    if uploader is None:
        return 0
    return _upload_recording(uploader, out, args.upload_timeout)


def _archive_uploader(args: argparse.Namespace, out: Path) -> Any:
    """The uploader for ``--archive``, set up before recording (a bad URL or half-given
    credentials stop the command before any media is taken)."""
    from recstream.upload import Uploader

    if not args.upload_timeout >= 0:
        msg = "--upload-timeout must be 0 or more seconds"
        raise UsageError(msg)
    try:
        return Uploader(out.resolve().parent, args.archive, only=frozenset({out.name}))
    except ValueError as exc:
        msg = f"--archive: {exc}"
        raise UsageError(msg) from None


def _upload_recording(uploader: Any, out: Path, timeout: float) -> int:
    stats = uploader.drain(deadline=time.monotonic() + timeout)
    if stats.pending == 0 and not stats.held:
        eprint(f"recstream: uploaded {out.name} to {uploader.url.join(out.name)}")
        return 0
    why = next(iter(stats.held.values()), stats.last_error)
    eprint(
        f"recstream: {out} is complete but NOT uploaded ({why}); it stays here: run "
        f"'recstream upload --spool {out.resolve().parent} --archive {uploader.url}'"
    )
    return EXIT_PARTIAL


async def _record(
    out: Path, recipients: list[Recipient], metadata: Metadata, interval: float, stop: StopRequest
) -> RecordingWriter:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=64)
    for sig in STOP_SIGNALS:
        # The loop's own handlers (uvloop's wakeup fd): still only a latch, never a
        # queue item, so a full queue cannot drop a stop request.
        loop.add_signal_handler(sig, stop.set, sig)
    try:
        async with Flusher(interval) as flusher:
            writer = await RecordingWriter.open(out, recipients, metadata, flusher)
            # A daemon thread: a read blocked on a quiet pipe must not keep the process alive.
            threading.Thread(
                target=_pump_stdin, args=(loop, chunks, stop, sys.stdin.buffer), daemon=True
            ).start()
            while (chunk := await chunks.get()) is not None:
                await writer.write(chunk)
            await writer.close()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    return writer


def _pump_stdin(
    loop: asyncio.AbstractEventLoop,
    chunks: asyncio.Queue[bytes | None],
    stop: StopRequest,
    stdin: IO[bytes],
) -> None:
    """Read stdin into ``chunks`` until end of input or a stop request, then put None.

    After a stop request, what is already in the pipe is read too (the caller
    sent it before asking to stop), without waiting for more.
    """
    fd = stdin.fileno()
    for chunk in _stdin_chunks(fd, stop):
        fut = asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop)
        try:
            fut.result()
        except RuntimeError:  # the loop is gone
            return
    with contextlib.suppress(RuntimeError):  # the loop is gone
        asyncio.run_coroutine_threadsafe(chunks.put(None), loop)


def _stdin_chunks(fd: int, stop: StopRequest) -> Iterator[bytes]:
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while True:
        stopping = stop.is_set()
        if not poller.poll(0 if stopping else STOP_POLL_SECONDS * 1000):
            if stopping:
                return  # nothing more is waiting: finish with what arrived
            continue
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            continue
        except OSError:
            return
        if not chunk:
            return
        yield chunk


def cmd_recover(args: argparse.Namespace) -> int:
    src, out = Path(args.input), Path(args.output)
    if not src.is_file():
        msg = f"input file not found: {src}"
        raise UsageError(msg)
    if args.output != STDIO:
        if out.exists() and not args.force:
            msg = f"output exists: {out} (use --force to overwrite)"
            raise UsageError(msg)
        if not out.resolve().parent.is_dir():
            msg = f"output directory does not exist: {out.parent}"
            raise UsageError(msg)
    keys = decryption_keys(args)
    with (
        open(src, "rb", buffering=0) as fh,
        naming_output(args.output),
        _output(args.output, args.force) as dst,
    ):
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


@contextmanager
def _output(path: str, force: bool) -> Iterator[IO[bytes]]:
    """stdout for '-' (only authenticated segments reach it), else an atomic file."""
    if path == STDIO:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_output(path, replace=force) as fh:  # exclusive without --force
        yield fh

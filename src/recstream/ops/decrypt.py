"""Decrypt one recording into a tree, with the one output-naming rule.

The envelope is authenticated segment by segment and the output committed only
once the whole recording (its final segment included) authenticated
(:func:`recstream.durable.atomic_output`: unnamed temporary, fsync, exclusive or
replacing commit).  A recording still being recorded (``*.incomplete``) or locked
by another process is left alone and reported ``busy``.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Final, Literal

from recstream import durable
from recstream.envelope import EnvelopeDecryptor, KeyRing
from recstream.errors import RecstreamError, TruncatedStreamError
from recstream.format import MAX_HEADER_BYTES, Header, NeedData, parse_header
from recstream.ops.outcome import BUSY, DONE, FAILED, SKIPPED, Outcome, failure_reason
from recstream.ops.tree import Opened, Tree, is_incomplete
from recstream.parallel import pool_for

__all__ = ["ENVELOPE_SUFFIX", "Existing", "decrypt_one", "output_name"]

ENVELOPE_SUFFIX: Final = ".rsv"
PLAIN_SUFFIX: Final = ".decrypted"  # for inputs not named *.rsv
_BLOCK: Final = 1 << 20

# Recording types first, so names do not depend on the platform's mimetypes tables
# (which lack audio/wav on some systems); anything else asks mimetypes.
_EXTENSIONS: Final = {
    "audio/wav": ".wav", "audio/wave": ".wav", "audio/x-wav": ".wav", "audio/basic": ".au",
    "audio/ogg": ".ogg", "audio/opus": ".opus", "audio/mpeg": ".mp3", "audio/webm": ".webm",
    "video/webm": ".webm", "video/mp4": ".mp4", "audio/mp4": ".m4a",
}  # fmt: skip

Existing = Literal["fail", "skip", "replace"]
"""What to do when the output exists: refuse (exit 2 in the CLI), leave it (a resumed
batch: done by an earlier run), or replace it (``--force``)."""


def output_name(rel: str, header: Header) -> str:
    """The decrypted file's relative path: the one rule for every decrypting command.

    ``.rsv`` is dropped (any other name gets ``.decrypted``); a name left without an
    extension gets the media type's (``voice.rsv`` of ``audio/basic`` -> ``voice.au``,
    ``call.wav.rsv`` -> ``call.wav``, ``r1.rsv`` of unknown type -> ``r1.bin``).
    """
    p = PurePosixPath(rel)
    name = p.name
    if name.endswith(ENVELOPE_SUFFIX) and len(name) > len(ENVELOPE_SUFFIX):
        stem = name[: -len(ENVELOPE_SUFFIX)]
    else:
        stem = name + PLAIN_SUFFIX
    if not PurePosixPath(stem).suffix:
        mtype = header.metadata.media_type.lower()
        stem += _EXTENSIONS.get(mtype) or mimetypes.guess_extension(mtype, strict=False) or ".bin"
    return str(p.with_name(stem))


def decrypt_one(
    src: Tree,
    rel: str,
    dst: Tree,
    keys: KeyRing,
    *,
    existing: Existing,
    group: durable.CommitGroup | None = None,
    _again: bool = True,
) -> Outcome:
    """Decrypt ``src/rel`` into ``dst/output_name(rel)``; never raises for a bad file.

    Returns an :class:`Outcome`: ``done``, ``skipped`` (``existing="skip"``: the
    output is there and is this recording's plaintext, byte for byte: the envelope
    is decrypted again, every segment authenticated, and compared with it, nothing
    written; with a ``group``, reported after ``group.sync()`` like a commit), ``busy``
    (being written by another process) or ``failed``
    (the reason in ``detail``; nothing is left at the output).  With a ``group``
    (group commit, :func:`recstream.batch.local.run_threads`) a ``done`` output is
    complete and under its name, but durable only after ``group.sync()``.
    """
    t0 = time.perf_counter()
    if is_incomplete(rel):
        return Outcome(rel, BUSY, "still being recorded (*.incomplete); left alone")
    try:
        with src.open(rel) as opened:
            job = _Decryption(opened, keys)  # the header, no key used yet
            # The key and the header MAC before anything is decided from the header:
            # the output's name comes from it (the media type), and a tampered header
            # must fail as tampered, never pass as "already decrypted" (review, round 3).
            job.unwrap()
            out = output_name(rel, job.header)
            if existing != "replace" and _taken(dst, out):
                if existing == "skip":
                    # Only this recording's own plaintext is "already decrypted": another
                    # input's output under the same name, a planted file, a directory or
                    # a link is not, and neither is a tampered or truncated envelope
                    # whose output is there (security review, round 4).
                    problem = _compare_with_output(job, dst, out)
                    if problem is not None:
                        return Outcome(
                            rel, FAILED, f"output exists: {dst.path(out)}, {problem} (use --force)"
                        )
                    _hold_report(dst, out, group)
                    return Outcome(rel, SKIPPED, "already decrypted", output=out)
                return Outcome(rel, FAILED, f"output exists: {dst.path(out)} (use --force)")
            with dst.output(out, replace=existing == "replace", group=group) as fout:
                plain = job.run(fout)
        return Outcome(rel, DONE, bytes=plain, envelope_bytes=opened.size,
                       seconds=time.perf_counter() - t0, output=out)  # fmt: skip
    except durable.FileBusyError as exc:
        return Outcome(rel, BUSY, failure_reason(exc), seconds=time.perf_counter() - t0)
    except FileExistsError as exc:
        if existing == "skip" and _again:
            # Another thread or process named the output while this one decrypted: see
            # whether it holds this recording's plaintext, as if it had been there.
            return decrypt_one(src, rel, dst, keys, existing=existing, group=group, _again=False)
        return Outcome(rel, FAILED, f"output exists: {exc.filename} (use --force)")
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc), seconds=time.perf_counter() - t0)


def _taken(dst: Tree, out: str) -> bool:
    """Something is at the output's name (a link counts, even a dangling one)."""
    if dst.local is not None:
        return os.path.lexists(dst.local / out)
    return dst.exists(out)


class _Differs(Exception):
    """The plaintext and the existing output part ways (internal to the comparison)."""


class _Comparing:
    """A plaintext sink that compares what it is given with an existing file's bytes."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh

    def write(self, data: memoryview) -> int:
        n = len(data)
        got = self._fh.read(n)
        if got != data:
            raise _Differs
        return n


def _compare_with_output(job: _Decryption, dst: Tree, out: str) -> str | None:
    """None when ``dst/out`` is this recording's plaintext, byte for byte; else why not.

    The envelope is decrypted (every segment authenticated, as for writing) into a
    sink that reads the output alongside: a tampered or truncated envelope raises as
    it would have, a different output stops at the first differing block.  A local
    output must be a regular file, not a link to one.

    Raises:
        RecstreamError, OSError: the envelope does not decrypt (the caller's failure).
    """
    try:
        with _existing(dst, out) as fh:
            try:
                job.run(_Comparing(fh))  # type: ignore[arg-type]
            except _Differs:
                return "and is not this recording's plaintext"
            if fh.read(1):
                return "and is longer than this recording's plaintext"
    except _NotAFile as exc:
        return str(exc)
    return None


class _NotAFile(Exception):
    pass


@contextlib.contextmanager
def _existing(dst: Tree, out: str) -> Iterator[IO[bytes]]:
    if dst.local is None:  # a store: the tree's own reader (its errors say which store)
        with dst.open(out) as opened:
            yield opened.file
        return
    try:
        fd = os.open(dst.local / out, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotAFile("and is a symbolic link, not a decrypted recording") from None
        raise
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:  # pragma: no cover - fstat of an open descriptor
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise _NotAFile("and is not a regular file")
    with open(fd, "rb", buffering=_BLOCK) as fh:
        yield fh


def _hold_report(dst: Tree, out: str, group: durable.CommitGroup | None) -> None:
    """A skipped output is reported like a committed one: after its directory's fsync.

    Its name may come from a run that was killed after committing it but before the
    directory fsync; the group's next ``sync`` makes it durable before the skip is
    reported (and, in a batch job, written to the manifest).
    """
    if group is not None and dst.local is not None:
        group.add((dst.local / out).parent)


_local = threading.local()


def _thread_buffer(name: str, size: int) -> bytearray:
    """This thread's buffer ``name``, at least ``size`` bytes (grown, never shrunk)."""
    buf: bytearray | None = getattr(_local, name, None)
    if buf is None or len(buf) < size:
        buf = bytearray(size)
        setattr(_local, name, buf)
    return buf


class _Decryption:
    """One envelope through an :class:`EnvelopeDecryptor`, the header parsed once.

    The first block is read and its header parsed on construction (no key yet);
    :meth:`unwrap` checks it with the key, before the caller names the output from
    it; :meth:`run` decrypts, starting with the rest of that block.
    """

    def __init__(self, opened: Opened, keys: KeyRing) -> None:
        self._src = opened.file
        self._keys = keys
        self._size = opened.size
        # Reads of up to 1 MiB, never more than the file: the buffers are the
        # thread's own and reused from file to file. Allocating them per file cost
        # more than decrypting a small recording (zeroing, and page faults on fresh
        # mmap'd memory: 150 us a file here; bench/ab_batch.py).
        block = max(1, min(_BLOCK, opened.size + 1))
        self._inbuf = _thread_buffer("inbuf", block)
        self._block = block
        with memoryview(self._inbuf) as view:
            n = self._src.readinto(view[:block])  # type: ignore[attr-defined]
            parsed = parse_header(view[: min(n, MAX_HEADER_BYTES)])
        if isinstance(parsed, NeedData):  # the file ends inside its header (a block
            # holds any whole header): let the decryptor say precisely how
            dec = EnvelopeDecryptor(keys)
            dec.update(self._inbuf[:n])
            dec.finalize()
            msg = "the file ends inside the envelope header"  # pragma: no cover
            raise TruncatedStreamError(0, msg)  # pragma: no cover
        self.header: Header = parsed
        self._first = (parsed.length, n)

    def unwrap(self) -> None:
        """Open the header with the keys (the RSA unwrap and the header MAC).

        Raises:
            KeyAccessError subclasses, HeaderAuthError.
        """
        # A large recording's segments are opened on every core (recstream.parallel);
        # a small one on this thread, with the GIL released per segment when this is
        # one of several worker threads (--out-dir, batch jobs), else by Cobblestone.
        self._dec = EnvelopeDecryptor(self._keys, pool=pool_for(self._size), header=self.header)

    def run(self, dst: IO[bytes]) -> int:
        """Decrypt into ``dst`` (after :meth:`unwrap`); return the plaintext bytes written."""
        dec = self._dec
        outbuf = _thread_buffer("outbuf", dec.output_size(self._block))
        total = 0
        lo, hi = self._first
        with memoryview(self._inbuf) as view:
            while hi:
                need = dec.output_size(hi - lo)
                if need > len(outbuf):
                    outbuf = _thread_buffer("outbuf", need)
                m = dec.update_into(view[lo:hi], outbuf)
                durable.write_all(dst, memoryview(outbuf)[:m])
                total += m
                lo, hi = 0, self._src.readinto(view[: self._block])  # type: ignore[attr-defined]
        tail = dec.finalize()
        durable.write_all(dst, tail)
        return total + len(tail)

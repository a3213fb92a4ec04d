"""Decrypt one recording into a tree, with the one output-naming rule.

The envelope is authenticated segment by segment and the output committed only
once the whole recording (its final segment included) authenticated
(:func:`recstream.durable.atomic_output`: unnamed temporary, fsync, exclusive or
replacing commit).  A recording still being recorded (``*.incomplete``) or locked
by another process is left alone and reported ``busy``.
"""

from __future__ import annotations

import mimetypes
import threading
import time
from pathlib import PurePosixPath
from typing import IO, Final, Literal

from recstream import durable
from recstream.envelope import EnvelopeDecryptor, KeyRing
from recstream.errors import RecstreamError, TruncatedStreamError
from recstream.format import Header
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
) -> Outcome:
    """Decrypt ``src/rel`` into ``dst/output_name(rel)``; never raises for a bad file.

    Returns an :class:`Outcome`: ``done``, ``skipped`` (``existing="skip"`` and the
    output is there), ``busy`` (being written by another process) or ``failed``
    (the reason in ``detail``; nothing is left at the output).  With a ``group``
    (group commit, :func:`recstream.batch.local.run_threads`) a ``done`` output is
    complete and under its name, but durable only after ``group.sync()``.
    """
    t0 = time.perf_counter()
    if is_incomplete(rel):
        return Outcome(rel, BUSY, "still being recorded (*.incomplete); left alone")
    try:
        with src.open(rel) as opened:
            job = _Decryption(opened, keys)
            out = output_name(rel, job.header)
            if dst.exists(out):
                if existing == "skip":
                    return Outcome(rel, SKIPPED, "already decrypted", output=out)
                if existing == "fail":
                    return Outcome(rel, FAILED, f"output exists: {dst.path(out)} (use --force)")
            with dst.output(out, replace=existing == "replace", group=group) as fout:
                plain = job.run(fout)
        return Outcome(rel, DONE, bytes=plain, envelope_bytes=opened.size,
                       seconds=time.perf_counter() - t0, output=out)  # fmt: skip
    except durable.FileBusyError as exc:
        return Outcome(rel, BUSY, failure_reason(exc), seconds=time.perf_counter() - t0)
    except FileExistsError as exc:
        return Outcome(rel, FAILED, f"output exists: {exc.filename} (use --force)")
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc), seconds=time.perf_counter() - t0)


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

    The first block is decrypted on construction, which gives the header (for the
    output name) without reading or parsing it twice; its plaintext waits in the
    output buffer until :meth:`run` has somewhere to write it.
    """

    def __init__(self, opened: Opened, keys: KeyRing) -> None:
        self._src = opened.file
        # A large recording's segments are opened on every core (recstream.parallel);
        # a small one on this thread, with the GIL released per segment when this is
        # one of several worker threads (--out-dir, batch jobs), else by Cobblestone.
        self._dec = EnvelopeDecryptor(keys, pool=pool_for(opened.size))
        # Reads of up to 1 MiB, never more than the file: the buffers are the
        # thread's own and reused from file to file. Allocating them per file cost
        # more than decrypting a small recording (zeroing, and page faults on fresh
        # mmap'd memory: 150 us a file here; bench/ab_batch.py).
        block = max(1, min(_BLOCK, opened.size + 1))
        self._inbuf = _thread_buffer("inbuf", block)
        self._outbuf = _thread_buffer("outbuf", self._dec.output_size(block))
        self._block = block
        self._pending = self._step()
        header = self._dec.header
        if header is None:  # shorter than its header: let the decryptor say how
            self._dec.finalize()
            msg = "the file ends inside the envelope header"  # pragma: no cover
            raise TruncatedStreamError(0, msg)  # pragma: no cover
        self.header: Header = header

    def _step(self) -> int:
        with memoryview(self._inbuf) as view:
            n = self._src.readinto(view[: self._block])  # type: ignore[attr-defined]
            if not n:
                return -1
            need = self._dec.output_size(n)
            if need > len(self._outbuf):
                self._outbuf = _thread_buffer("outbuf", need)
            return self._dec.update_into(view[:n], self._outbuf)

    def run(self, dst: IO[bytes]) -> int:
        """Decrypt the rest into ``dst``; return the plaintext bytes written."""
        total = 0
        m = self._pending
        while m >= 0:
            durable.write_all(dst, memoryview(self._outbuf)[:m])
            total += m
            m = self._step()
        tail = self._dec.finalize()
        durable.write_all(dst, tail)
        return total + len(tail)

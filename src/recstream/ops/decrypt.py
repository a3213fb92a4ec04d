"""Decrypt one recording into a tree, with the one output-naming rule.

The envelope is authenticated segment by segment and the output committed only
once the whole recording (its final segment included) authenticated
(:func:`recstream.durable.atomic_output`: unnamed temporary, fsync, exclusive or
replacing commit).  A recording still being recorded (``*.incomplete``) or locked
by another process is left alone and reported ``busy``.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import PurePosixPath
from typing import IO, Final, Literal

from recstream import durable
from recstream.envelope import EnvelopeDecryptor, KeyRing
from recstream.errors import RecstreamError
from recstream.format import Header
from recstream.ops.outcome import BUSY, DONE, FAILED, SKIPPED, Outcome, failure_reason
from recstream.ops.tree import Opened, Tree, is_incomplete
from recstream.reader import FileSource, StreamPrefix, read_header_at

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


def decrypt_one(src: Tree, rel: str, dst: Tree, keys: KeyRing, *, existing: Existing) -> Outcome:
    """Decrypt ``src/rel`` into ``dst/output_name(rel)``; never raises for a bad file.

    Returns an :class:`Outcome`: ``done``, ``skipped`` (``existing="skip"`` and the
    output is there), ``busy`` (being written by another process) or ``failed``
    (the reason in ``detail``; nothing is left at the output).
    """
    t0 = time.perf_counter()
    if is_incomplete(rel):
        return Outcome(rel, BUSY, "still being recorded (*.incomplete); left alone")
    try:
        with src.open(rel) as opened:
            header = _header(opened)
            out = output_name(rel, header)
            if dst.exists(out):
                if existing == "skip":
                    return Outcome(rel, SKIPPED, "already decrypted", output=out)
                if existing == "fail":
                    return Outcome(rel, FAILED, f"output exists: {dst.path(out)} (use --force)")
            with dst.output(out, replace=existing == "replace") as fout:
                plain = _decrypt_into(opened, keys, fout)
        return Outcome(rel, DONE, bytes=plain, envelope_bytes=opened.size,
                       seconds=time.perf_counter() - t0, output=out)  # fmt: skip
    except durable.FileBusyError as exc:
        return Outcome(rel, BUSY, failure_reason(exc), seconds=time.perf_counter() - t0)
    except FileExistsError as exc:
        return Outcome(rel, FAILED, f"output exists: {exc.filename} (use --force)")
    except (RecstreamError, OSError) as exc:
        return Outcome(rel, FAILED, failure_reason(exc), seconds=time.perf_counter() - t0)


def _header(opened: Opened) -> Header:
    if opened.fd is not None:
        return read_header_at(FileSource(opened.fd))
    header = read_header_at(StreamPrefix(opened.file))
    opened.file.seek(0)
    return header


def _decrypt_into(opened: Opened, keys: KeyRing, dst: IO[bytes]) -> int:
    dec = EnvelopeDecryptor(keys)
    src = opened.file
    # Buffers sized to the file: zeroing 2 MiB per small recording cost more than
    # decrypting it (measured: bench/keystore_batch.py).
    block = max(1, min(_BLOCK, opened.size + 1))
    inbuf = bytearray(block)
    outbuf = bytearray(dec.output_size(block))
    view = memoryview(inbuf)
    total = 0
    while n := src.readinto(inbuf):  # type: ignore[attr-defined]
        need = dec.output_size(n)
        if need > len(outbuf):
            outbuf = bytearray(need)
        m = dec.update_into(view[:n], outbuf)
        durable.write_all(dst, memoryview(outbuf)[:m])
        total += m
    tail = dec.finalize()
    durable.write_all(dst, tail)
    return total + len(tail)

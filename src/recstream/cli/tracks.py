"""``recstream tracks``: per-track audio out of a multi-track recording (docs/TRACKS.md).

Decrypts a front-door recording (SIPREC, media streams) and writes, in
``--out-dir``: ``track-N.raw`` (exactly the payload bytes, silence-filled where
packets were lost), ``track-N.wav`` for G.711 tracks, and ``summary.json``
(session metadata with participant addresses, per-track events and stats).
Everything written is plaintext and personal data: files are owner-only and
appear only once whole.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any

from recstream.cli import EXIT_PARTIAL, UsageError, eprint
from recstream.cli._keystore_access import decryption_keys
from recstream.durable import atomic_output, write_all
from recstream.envelope import EnvelopeDecryptor
from recstream.reader import FileSource, recover
from recstream.tracks import Extraction, TrackAudio, extract

# WAVE format tags (RFC 2361): 6 = A-law, 7 = mu-law.
_WAV_FORMAT = {"PCMA": 6, "PCMU": 7}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "tracks",
        help="extract each track (participant stream) of a SIPREC or media-stream recording",
        description="Decrypt a multi-track recording and write one raw file per track "
        "(payload bytes, codec silence where packets were lost), a WAV per G.711 track, "
        "and summary.json (metadata, events such as DTMF, per-track packet statistics). "
        "With --recover, an interrupted recording (.incomplete) gives its authenticated "
        "prefix and exits 6. With --plain, FILE is an already decrypted container.",
    )
    p.add_argument("--key", action="append", metavar="KEY.pem", help="private key (repeatable)")
    p.add_argument("--keystore", metavar="PATH", help="take keys from this keystore")
    p.add_argument("--password-file", metavar="F", help="password of the keys or keystore")
    p.add_argument(
        "--recover",
        action="store_true",
        help="read an interrupted recording's authenticated prefix",
    )
    p.add_argument("--plain", action="store_true", help="FILE is decrypted plaintext")
    p.add_argument("--out-dir", required=True, metavar="DIR", help="where to write the tracks")
    p.add_argument("--force", action="store_true", help="overwrite files in DIR")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_tracks)


def _plaintext(args: argparse.Namespace) -> tuple[bytes, bool]:
    src = Path(args.file)
    if not src.is_file():
        msg = f"input file not found: {src}"
        raise UsageError(msg)
    if args.plain:
        return src.read_bytes(), True
    keys = decryption_keys(args)
    if args.recover:
        chunks: list[bytes] = []
        with open(src, "rb", buffering=0) as fh:
            result = recover(FileSource(fh.fileno()), keys, chunks.append)
        return b"".join(chunks), result.complete
    dec = EnvelopeDecryptor(keys)
    with open(src, "rb") as fh:
        out = [dec.update(block) for block in iter(lambda: fh.read(1 << 20), b"")]
    out.append(dec.finalize())
    return b"".join(out), True


def wav(track: TrackAudio) -> bytes:
    """A WAVE file around a G.711 track (format 6/7, 8 bits, mono)."""
    fmt = _WAV_FORMAT[track.decl.codec]
    rate = track.decl.clock_rate
    pad = len(track.audio) % 2
    # fmt chunk with cbSize=0 (18 bytes) and a fact chunk: required for non-PCM formats.
    head = struct.pack(
        "<4sI4s4sIHHIIHHH4sII4sI",
        b"RIFF",
        50 + len(track.audio) + pad,
        b"WAVE",
        b"fmt ",
        18,
        fmt,
        1,
        rate,
        rate,
        1,
        8,
        0,
        b"fact",
        4,
        len(track.audio),
        b"data",
        len(track.audio),
    )
    return head + bytes(track.audio) + b"\x00" * pad


def cmd_tracks(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        msg = f"--out-dir is not a directory: {out}"
        raise UsageError(msg)
    plaintext, enveloped_complete = _plaintext(args)
    out.mkdir(parents=True, exist_ok=True)  # an --out-dir is made, as decrypt's and batch's
    result = extract(plaintext)
    files = _outputs(result)
    if not args.force:
        for name in files:
            if (out / name).exists():
                msg = f"{out / name} exists (use --force to overwrite)"
                raise UsageError(msg)
    for name, data in files.items():
        with atomic_output(out / name, replace=args.force) as fh:
            write_all(fh, data)
    complete = result.complete and enveloped_complete
    eprint(
        f"recstream: {len(result.tracks)} track(s) from {args.file} into {out}"
        + ("" if complete else "; the recording is INCOMPLETE (interrupted)")
    )
    return 0 if complete else EXIT_PARTIAL


def _outputs(result: Extraction) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for n, t in result.tracks.items():
        files[f"track-{n}.raw"] = bytes(t.audio)
        if t.decl.codec in _WAV_FORMAT:
            files[f"track-{n}.wav"] = wav(t)
    summary = result.summary()
    files["summary.json"] = (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode()
    return files

"""``recstream encrypt``, ``decrypt`` and ``inspect``."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from recstream.cli import UsageError, eprint
from recstream.cli._keystore_access import add_keystore_options, decryption_keys
from recstream.cli._recording import (
    MAX_DATED_MS,
    add_metadata_options,
    add_recipient_options,
    created_ms_arg,
    recording_from_args,
)
from recstream.cli._signing import (
    add_require_signature_options,
    add_signing_options,
    signature_policy,
    signer_from_args,
)
from recstream.cli._util import (
    STDIO,
    claim_stdin,
    file_arg,
    naming_output,
)
from recstream.durable import atomic_output, write_all
from recstream.envelope import (
    EnvelopeDecryptor,
    EnvelopeEncryptor,
)
from recstream.errors import (
    FinalSegmentAuthError,
    TruncatedStreamError,
)
from recstream.files import BLOCK_SIZE, DEFAULT_JOBS, Codec, pump, size_of
from recstream.format import BodyLayout
from recstream.parallel import file_pool_for, pool_for

if TYPE_CHECKING:
    from recstream.format import Header

INCOMPLETE_SUFFIX = ".incomplete"  # recstream.aio.writer's, without importing asyncio


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Register ``encrypt``, ``decrypt`` and ``inspect``."""
    for name in REGISTRARS:
        register_one(sub, name)


def register_one(sub: argparse._SubParsersAction[Any], name: str) -> None:
    """Register only ``name``: a command line names one command, and building the
    others' parsers is start-up time for nothing."""
    REGISTRARS[name](sub)


def _register_encrypt(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "encrypt",
        help="encrypt a recording for one or more certificates",
        description="Encrypt IN into a recstream envelope OUT for each --cert "
        "(the recording certificate, plus any escrow certificate), or for the tenant's "
        "active certificate of the media kind in the keystore (--tenant without --cert, "
        "or --keystore). IN or OUT may be '-'.",
    )
    add_recipient_options(p)
    add_keystore_options(p)
    add_metadata_options(p)
    p.add_argument(
        "--media-type",
        metavar="TYPE",
        help="MIME type of the recording (default: guessed from IN's name, "
        "else application/octet-stream)",
    )
    p.add_argument(
        "--created",
        "--start",
        metavar="TIME",
        type=created_ms_arg,
        help="when the recording started, which 'mux' uses to line recordings up: ISO 8601 "
        "with a UTC offset (2026-11-27T10:15:00Z) or milliseconds since 1970 (default: now)",
    )
    add_signing_options(p)
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument(
        "--snapshot",
        action="store_true",
        help="IN may still be growing (being written): encrypt the bytes it has when "
        "encryption starts (without it, an IN that grows while it is read is refused)",
    )
    p.add_argument("input", metavar="IN", help="the recording, or '-' for stdin")
    p.add_argument("output", metavar="OUT", help="the envelope, or '-' for stdout")
    p.set_defaults(func=cmd_encrypt)


def _register_decrypt(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "decrypt",
        help="decrypt recordings with their private keys or the keystore",
        usage="recstream decrypt [options] IN OUT\n"
        "       recstream decrypt [options] --out-dir DIR FILE_OR_DIR...",
        description="Decrypt envelope IN into OUT. OUT appears only when the whole "
        "recording authenticated; after any failure it does not exist. To '-' the "
        "plaintext streams and a failure at any point exits non-zero. Keys come from "
        "--key files, else from the keystore (chosen by the certificate IDs in each "
        "header, active, retired and expired alike). With --out-dir, decrypt many "
        "files (directories: their *.rsv files) concurrently: a summary at the end, "
        "exit 7 if any failed, nothing partial left for a failed file; "
        "--skip-existing resumes an interrupted batch.",
    )
    p.add_argument(
        "--key",
        action="append",
        metavar="KEY.pem",
        help="private key (PEM or DER, encrypted or not); repeat to offer several",
    )
    p.add_argument("--keystore", metavar="PATH", type=file_arg, help="take keys from this keystore")
    p.add_argument(
        "--password-file",
        metavar="F",
        help="file whose first line is the password of the --key files, or of the keystore",
    )
    p.add_argument(
        "--out-dir",
        metavar="DIR",
        type=file_arg,
        help="batch: decrypt every FILE into DIR (*.rsv -> *)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help="batch: files decrypted at once (default: %(default)s)",
    )
    add_require_signature_options(p)
    p.add_argument("--force", action="store_true", help="overwrite outputs that exist")
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="batch (resume after a crash or Ctrl-C): leave an input whose output exists "
        "and is its plaintext, reported 'skipped: already decrypted': each such input is "
        "decrypted again (every segment authenticated) and compared with the output, "
        "nothing written; a tampered input, or an output that is not its plaintext (another "
        "input's, a link, a directory), fails; not with --force",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="IN OUT ('-' for stdin or stdout), or with --out-dir the inputs",
    )
    p.set_defaults(func=cmd_decrypt)


def _register_inspect(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "inspect",
        help="show an envelope's header (no key needed)",
        description="Print what FILE's header says: recording, tenant, media, "
        "recipients, and whether the body has the shape of a complete recording.",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("file", metavar="FILE", help="the envelope, or '-' for stdin")
    p.set_defaults(func=cmd_inspect)


REGISTRARS = {
    "encrypt": _register_encrypt,
    "decrypt": _register_decrypt,
    "inspect": _register_inspect,
}


# --- encrypt ---------------------------------------------------------------


def cmd_encrypt(args: argparse.Namespace) -> int:
    _check_paths(args.input, args.output, args.force)
    signer = signer_from_args(args)
    metadata, recipients = recording_from_args(args, args.input)
    with (
        _open_in(args.input) as raw,
        naming_output(args.output),
        _open_out(args.output, args.force) as dst,
    ):
        src = _Counted(raw, snapshot=args.snapshot)
        # From a regular file: the positional path on every core; else the stream pump.
        positional = src.start is not None and _at_start(raw)
        pool = file_pool_for(src.start or 0) if positional else pool_for(size_of(raw))
        enc = EnvelopeEncryptor(recipients, metadata, pool=pool, signer=signer)
        if positional and enc.positional:
            written = _encrypt_positional(src, dst, enc, args.input)
        else:
            written = transform(src, dst, enc)  # type: ignore[arg-type]
        src.check_unchanged(args.input)
    grew = src.grew_note()
    signed = "" if signer is None else f", signed by {signer.subject} (cert ID {signer.cert_id})"
    eprint(
        f"recstream: encrypted {args.input} -> {args.output}: {src.count} bytes{grew}, "
        f"recording {metadata.recording_id}, {enc.segments} segment(s), {written} bytes "
        f"written, for certificate ID(s) {', '.join(enc.cert_ids)}{signed}"
    )
    return 0


def _at_start(src: IO[bytes]) -> bool:
    """Whether ``src`` is read from its first byte: the positional path reads the file
    from offset 0 (stdin may be a file the shell handed over part-way through)."""
    try:
        return os.lseek(src.fileno(), 0, os.SEEK_CUR) == 0
    except (OSError, ValueError):
        return False


def _ordered(dst: IO[bytes]) -> bool:
    """Whether the positional bulk path must write ``dst`` in order: stdout (a pipe, a
    terminal, a file the shell opened); not our own temporary output file."""
    if dst is sys.stdout.buffer:
        dst.flush()
        return True
    return not stat.S_ISREG(os.fstat(dst.fileno()).st_mode)


def _encrypt_positional(src: _Counted, dst: IO[bytes], enc: EnvelopeEncryptor, name: str) -> int:
    """``encrypt``'s bulk path: the file's size at the start, on every core (issue 20)."""
    from recstream.parallel import InputShrankError

    assert src.start is not None
    ordered = _ordered(dst)
    try:
        written = enc.encrypt_file(src.fileno(), src.start, dst.fileno(), ordered=ordered)
    except InputShrankError:
        end = src._size_now()
        kept = "what went to stdout is incomplete" if ordered else "nothing was written"
        msg = (
            f"{name} shrank while it was read ({src.start} bytes when encryption started, "
            f"{end} now): {kept}"
        )
        raise UsageError(msg) from None
    src.count = src.start
    return written


class _Counted:
    """The input of ``encrypt``: counts what is read and notices a file that grows.

    A regular file's size is taken when reading starts.  With ``snapshot``, reading
    stops there (a growing file's first bytes, as they were); without, a file whose
    size changed while it was read is refused: encrypting an arbitrary prefix of a
    file still being written would silently lose its end.
    """

    def __init__(self, fh: IO[bytes], *, snapshot: bool) -> None:
        self._fh = fh
        self.count = 0
        self.start: int | None = None
        self.end: int | None = None
        try:
            st = os.fstat(fh.fileno())
            if stat.S_ISREG(st.st_mode):
                self.start = st.st_size
        except (OSError, ValueError):  # pragma: no cover - no descriptor
            pass
        self._limit = self.start if snapshot else None

    def fileno(self) -> int:
        return self._fh.fileno()

    def read(self) -> bytes:
        """All of it (up to the snapshot's size): the one-read path for short files."""
        if self._limit is None:
            data = self._fh.read()
        else:
            data = self._fh.read(max(0, self._limit - self.count))
        self.count += len(data)
        return data

    def readinto(self, buf: bytearray) -> int:
        want = len(buf)
        if self._limit is not None:
            want = min(want, self._limit - self.count)
            if want <= 0:
                return 0
        with memoryview(buf) as view:
            n = self._fh.readinto(view[:want]) or 0  # type: ignore[attr-defined]
        self.count += n
        return n

    def _size_now(self) -> int | None:
        try:
            return os.fstat(self._fh.fileno()).st_size
        except (OSError, ValueError):  # pragma: no cover
            return None

    def check_unchanged(self, name: str) -> None:
        """Raises UsageError: (without snapshot) the file's size changed while it was read."""
        if self.start is None:
            return
        self.end = self._size_now()
        if self._limit is not None:
            return
        if self.count != self.start or self.end != self.start:
            msg = (
                f"{name} changed size while it was read ({self.start} bytes when encryption "
                f"started, {self.end} now; {self.count} read): it is still being written. "
                "Nothing was written. Encrypt it once it is complete, or give --snapshot "
                f"to encrypt its first {self.start} bytes"
            )
            raise UsageError(msg)

    def grew_note(self) -> str:
        if self.end is not None and self.end != self.count:
            return f" (a snapshot: the file is {self.end} bytes now and still growing)"
        return ""


# --- decrypt ---------------------------------------------------------------


def suggest_recover(path: str) -> None:
    """After a truncation: say how to get the authenticated part back."""
    live = " (an interrupted live recording)" if path.endswith(INCOMPLETE_SUFFIX) else ""
    if path != STDIO:
        eprint(
            f"recstream: hint: {path}{live} can still give up its authenticated segments: "
            f"recstream recover [--key KEY.pem] {path} OUT"
        )


def cmd_decrypt(args: argparse.Namespace) -> int:
    ca_pem = signature_policy(args)
    if args.skip_existing and args.force:
        msg = (
            "--skip-existing keeps the outputs that exist and --force rewrites them: "
            "give one of them"
        )
        raise UsageError(msg)
    if args.skip_existing and args.out_dir is None:
        msg = "--skip-existing resumes a batch: it needs --out-dir DIR"
        raise UsageError(msg)
    if args.out_dir is not None:
        if args.jobs < 1:
            msg = "--jobs must be at least 1"
            raise UsageError(msg)
        from recstream.cli._batch import batch_decrypt

        if ca_pem is not None:
            msg = "--require-signature works on one file (IN OUT); check a batch with 'verify'"
            raise UsageError(msg)

        return batch_decrypt(args.paths, Path(args.out_dir), args, decryption_keys)
    if len(args.paths) != 2:
        msg = "decrypt takes IN OUT, or --out-dir DIR followed by the files to decrypt"
        raise UsageError(msg)
    args.input, args.output = args.paths
    _check_paths(args.input, args.output, args.force)
    if ca_pem is not None and args.input == STDIO:
        msg = "--require-signature needs IN to be a file (stdin cannot be verified first)"
        raise UsageError(msg)
    try:
        with _open_in(args.input) as src:
            # Verified through the descriptor that is then decrypted, before OUT exists.
            verified = None if ca_pem is None else _require_signature(src, args.input, ca_pem)
            keys = decryption_keys(args)
            with naming_output(args.output), _open_out(args.output, args.force) as dst:
                size = size_of(src)
                pool = pool_for(size) if size is None else file_pool_for(size)
                dec = EnvelopeDecryptor(keys, pool=pool)
                done = None
                if size is not None and dec.positional and _at_start(src):  # positional
                    fd = dst.fileno()
                    done = dec.decrypt_file(src.fileno(), size, fd, ordered=_ordered(dst))
                written = transform(src, dst, dec) if done is None else done
                if verified is not None:  # before OUT is committed
                    _check_unchanged(src, args.input, verified)
    except (TruncatedStreamError, FinalSegmentAuthError):
        suggest_recover(args.input)
        raise
    header = dec.header
    assert header is not None
    eprint(
        f"recstream: decrypted {args.input} -> {args.output}: recording "
        f"{header.metadata.recording_id} ({header.metadata.media_type}), "
        f"{dec.segments} segment(s), {written} bytes, authenticated"
    )
    return 0


def _require_signature(src: IO[bytes], path: str, ca_pem: bytes) -> tuple[int, ...]:
    """Refuse ``src`` unless its signature is valid, before any plaintext is written.

    The file is read twice (verified, then decrypted), so it must be a file: a
    stream cannot be verified before its plaintext is released.  Returns the
    file's identity, which :func:`_check_unchanged` compares once decrypted.

    Raises:
        UnsignedRecordingError, BadSignatureError, RefusedSignerError.
    """
    from recstream.reader import FileSource
    from recstream.signing import file_identity, require_valid, verify_source

    fd = src.fileno()
    before = file_identity(os.fstat(fd))
    report = verify_source(FileSource(fd), ca_pem)
    require_valid(report)
    eprint(
        f"recstream: {path}: signature valid, signed by {report.signer_subject} "
        f"(cert ID {report.cert_id}) at {report.signed_at}"
    )
    return before


def _check_unchanged(src: IO[bytes], path: str, before: tuple[int, ...]) -> None:
    """Raises BadSignatureError: the file was written to after its signature was verified."""
    from recstream.errors import BadSignatureError
    from recstream.signing import file_identity

    if file_identity(os.fstat(src.fileno())) != before:
        msg = (
            f"{path} changed while it was decrypted, after its signature was verified; "
            "what was decrypted is not known to be what was signed, and was not kept"
        )
        raise BadSignatureError(msg)


# --- inspect ---------------------------------------------------------------


def read_header(path: str) -> tuple[Header, int, bytes]:
    """Read the header of ``path`` (or stdin for '-'); return it, the body length and the
    file's last TRAILER_BYTES (a signed file's trailer, if it is there: FORMAT.md §10.3)."""
    from recstream.format import TRAILER_BYTES
    from recstream.reader import FileSource, StreamPrefix, read_header_at

    if path == STDIO:
        claim_stdin("input")
        prefix = StreamPrefix(sys.stdin.buffer)
        header = read_header_at(prefix)
        size, last = prefix.drain_keeping(TRAILER_BYTES)
        return header, size - header.length, last
    with open(path, "rb", buffering=0) as fh:
        source = FileSource(fh.fileno())
        header = read_header_at(source)
        tail_at = max(header.length, source.size - TRAILER_BYTES)
        last = source.read_at(tail_at, source.size - tail_at)
        return header, source.size - header.length, last


def describe(header: Header, file_body: int, last: bytes = b"") -> dict[str, Any]:
    """The ``inspect --json`` document (``file_body``: the bytes after the header)."""
    signature, body_length = _signature_fields(header, file_body, last)
    layout = BodyLayout(body_length)
    md = header.metadata
    return {
        "version": header.version,
        "recording_id": md.recording_id,
        "tenant": md.tenant,
        "media_kind": md.media_kind.name.lower(),
        "media_type": md.media_type,
        "created": format_created(md.created_ms),
        "created_ms": md.created_ms,
        "segment_size": md.segment_size,
        "header_length": header.length,
        "body_length": body_length,
        "segments": layout.segments,
        "complete": layout.complete,
        "plaintext_length": layout.plaintext_length,
        "recipients": [
            {
                "type": "rsa-oaep-sha256",
                "cert_id": r.cert_id.hex(),
                "key_id": r.key_id.hex(),
                "rsa_bits": len(r.wrapped_key) * 8,
            }
            for r in header.recipients
        ],
        "signature": signature,
    }


def _signature_fields(header: Header, file_body: int, last: bytes) -> tuple[Any, int]:
    """``inspect``'s "signature" (None when unsigned) and the body length (FORMAT.md §10.3).

    What the header and trailer *say*, not verified: 'recstream verify' checks it.
    """
    if header.signer is None:
        return None, file_body
    from recstream.errors import EnvelopeFormatError
    from recstream.format import TRAILER_BYTES, parse_trailer
    from recstream.pki.certs import certificate_id, load_certificate, name_str
    from recstream.signer import ALGORITHM_NAMES

    info: dict[str, Any] = {"algorithm": ALGORITHM_NAMES[header.signer.algorithm]}
    try:
        cert = load_certificate(header.signer.certificate)
        info["signer"], info["cert_id"] = name_str(cert.subject), certificate_id(cert)
    except Exception:
        info["signer"] = info["cert_id"] = None
    try:
        trailer = parse_trailer(last)
    except EnvelopeFormatError:
        info.update(trailer="missing", signed_ms=None, signed_at=None, verified=False)
        return info, file_body  # interrupted or truncated: no trailer to take off
    info.update(
        trailer="present",
        signed_ms=trailer.signed_ms,
        signed_at=format_created(trailer.signed_ms),
        verified=False,
    )
    return info, file_body - TRAILER_BYTES


def cmd_inspect(args: argparse.Namespace) -> int:
    header, body, last = read_header(args.file)
    info = describe(header, body, last)
    if args.json:
        import json

        print(json.dumps(info, indent=2))
        return 0
    state = "complete" if info["complete"] else "INCOMPLETE (interrupted or truncated)"
    print(f"recstream envelope v{info['version']}  ({state}; shape only, not authenticated)")
    for label, key in (
        ("recording", "recording_id"),
        ("tenant", "tenant"),
        ("kind", "media_kind"),
        ("media type", "media_type"),
        ("created", "created"),
        ("header", "header_length"),
        ("segments", "segments"),
        ("plaintext", "plaintext_length"),
    ):
        value = info[key]
        if key == "created" and value is None:
            value = f"created_ms {info['created_ms']} (after year 9999: no calendar date)"
        print(f"  {label:<11} {shown_text(value)}")
    for r in info["recipients"]:
        print(f"  recipient   cert {r['cert_id']}  (RSA-{r['rsa_bits']})")
    sig = info["signature"]
    if sig is None:
        print("  signature   none (unsigned, format version 1)")
    else:
        when = sig["signed_at"] or "no trailer: interrupted or truncated"
        print(f"  signer      {shown_text(sig['signer'])}  ({sig['algorithm']})")
        print(f"  signer cert {sig['cert_id']}")
        print(f"  signed      {when}  (not verified: use 'recstream verify --ca-file')")
    return 0


def shown_text(value: object) -> str:
    """A header text field for a terminal: format characters (bidi overrides, zero-width
    marks) and line or paragraph separators as ``\\uXXXX``, so a header cannot reorder or
    split what ``inspect`` prints (docs/FORMAT.md §3)."""
    import unicodedata

    text = str(value)
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cf", "Zl", "Zp", "Cc") else c
        for c in text
    )


def format_created(created_ms: int) -> str | None:
    """ISO 8601 UTC with milliseconds, or None past year 9999 (docs/FORMAT.md §3)."""
    if created_ms > MAX_DATED_MS:
        return None
    created = datetime.fromtimestamp(created_ms // 1000, tz=UTC)
    ms = created_ms % 1000
    return created.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


# --- shared ----------------------------------------------------------------


def transform(src: IO[bytes], dst: IO[bytes], codec: Codec) -> int:
    """Run ``codec`` over ``src`` into ``dst``; return the bytes written.

    A regular file smaller than one pump block is done in this thread, in one
    read: the threaded pump's buffers and threads would cost a short file more
    than the work (start-up is most of a one-shot command's time).
    """
    try:
        info = os.fstat(src.fileno())
    except (OSError, ValueError):
        info = None
    if info is not None and stat.S_ISREG(info.st_mode) and info.st_size < BLOCK_SIZE:
        data = src.read()
        out = bytearray(codec.output_size(len(data)))
        n = codec.update_into(data, out)
        write_all(dst, memoryview(out)[:n])
        tail = codec.finalize()
        write_all(dst, tail)
        return n + len(tail)
    return pump(src, dst, codec)


def _check_paths(src: str, dst: str, force: bool) -> None:
    if src != "-" and not Path(src).exists():
        msg = f"input file not found: {src}"
        raise UsageError(msg)
    if src != "-" and Path(src).is_dir():
        msg = f"input is a directory: {src}"
        raise UsageError(msg)
    if dst == "-":
        return
    if src != "-" and Path(src).resolve() == Path(dst).resolve():
        msg = "input and output are the same file"
        raise UsageError(msg)
    if Path(dst).exists() and not force:
        msg = f"output exists: {dst} (use --force to overwrite)"
        raise UsageError(msg)
    if not Path(dst).resolve().parent.is_dir():
        msg = f"output directory does not exist: {Path(dst).parent}"
        raise UsageError(msg)


@contextmanager
def _open_in(path: str) -> Iterator[IO[bytes]]:
    if path == STDIO:
        claim_stdin("input")
        yield sys.stdin.buffer
        return
    with open(path, "rb", buffering=0) as fh:
        yield fh


@contextmanager
def _open_out(path: str, force: bool) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    with atomic_output(path, replace=force) as fh:  # exclusive without --force
        yield fh

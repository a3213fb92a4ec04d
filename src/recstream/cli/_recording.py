"""Who a new recording is for and what its header says: the options and checks that
``encrypt``, ``record`` and ``mux`` share.

Recipients come from ``--cert`` files (checked like ``keystore import`` checks a
certificate: in its validity period, not a CA, an RSA recording key; and its chain
with ``--ca-file``), from the keystore (the tenant's active certificate), or both;
a certificate named twice counts once, and an envelope holds 1 to 16.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from recstream.cli import UsageError, eprint
from recstream.cli._keystore_access import keystore_recipient
from recstream.cli._util import STDIO, hidden_alias, read_input_file
from recstream.envelope import Recipient, new_metadata
from recstream.errors import CertificateError, KeyPolicyError
from recstream.format import MAX_RECIPIENTS, MediaKind, Metadata
from recstream.pki.certs import load_certificate

if TYPE_CHECKING:
    from cryptography import x509

DEFAULT_TENANT = "default"
# The largest created_ms shown as a date: 9999-12-31T23:59:59.999Z (docs/FORMAT.md §3).
MAX_DATED_MS = 253_402_300_799_999


def add_recipient_options(p: argparse.ArgumentParser, *, keystore: bool = True) -> None:
    """``--cert``, ``--ca-file`` and ``--allow-invalid-cert``: who a new envelope is for."""
    extra = "; with the keystore, extra (escrow) recipients" if keystore else ""
    p.add_argument(
        "--cert",
        action="append",
        metavar="CERT.pem",
        help=f"recipient certificate (PEM or DER); repeat for more recipients, 1 to "
        f"{MAX_RECIPIENTS} in all (a repeated one counts once){extra}",
    )
    p.add_argument(
        "--ca-file",
        metavar="CA.pem",
        help="also validate every recipient certificate's chain against this CA bundle",
    )
    p.add_argument(
        "--allow-invalid-cert",
        action="store_true",
        help="encrypt even for a certificate that is expired, not yet valid, a CA "
        "certificate or otherwise unfit for recordings (a warning instead of exit 4)",
    )


def add_metadata_options(p: argparse.ArgumentParser) -> None:
    """``--recording-id``, ``--tenant`` and ``--media-kind`` of ``encrypt`` and ``record``."""
    p.add_argument("--recording-id", metavar="ID", help="recording ID (default: a new UUID)")
    p.add_argument(
        "--tenant",
        type=tenant_arg,
        metavar="T",
        help=f"tenant (default with --cert: {DEFAULT_TENANT}); without --cert, the recipient "
        "is this tenant's active certificate in the keystore",
    )
    p.add_argument(
        "--media-kind",
        choices=["voice", "screen"],
        help="voice or screen recording (default: screen for video/*, else voice)",
    )
    hidden_alias(p, "--kind", "media_kind", choices=["voice", "screen"])


def tenant_arg(text: str) -> str:
    if not text.strip():
        msg = "a tenant cannot be empty (leave --tenant out for the default tenant)"
        raise argparse.ArgumentTypeError(msg)
    return text


def created_ms_arg(text: str) -> int:
    """``--created``: ISO 8601 with an offset, or whole milliseconds since the epoch."""
    if text.isascii() and text.isdigit():
        value = int(text)
    else:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            msg = f"not a time: {text!r} (give e.g. 2026-11-27T10:15:00Z, or milliseconds)"
            raise argparse.ArgumentTypeError(msg) from None
        if when.tzinfo is None:
            msg = f"{text!r} has no UTC offset: add Z or +HH:MM so the time is unambiguous"
            raise argparse.ArgumentTypeError(msg)
        value = round(when.timestamp() * 1000)
    if not 0 <= value <= MAX_DATED_MS:
        msg = f"{text!r} is outside 1970-01-01 to 9999-12-31"
        raise argparse.ArgumentTypeError(msg)
    return value


def check_recipient_certificate(
    cert: x509.Certificate, path: str, ca_file: str | None, allow_invalid: bool
) -> None:
    """Refuse (exit 4) a certificate unfit to encrypt for, unless ``allow_invalid``.

    The same checks as ``keystore import`` and ``rewrap --to-cert``: in its validity
    period, not a CA, a recording key; and its chain when ``ca_file`` is given.
    """
    from recstream.pki.usage import check_recording_certificate

    try:
        warnings = check_recording_certificate(cert)
        if ca_file is not None:
            from recstream.pki.verify import verify_recording_certificate

            warnings = verify_recording_certificate(cert, read_input_file(ca_file, "CA file"))
    except (CertificateError, KeyPolicyError) as exc:
        if not allow_invalid:
            by = f" by the CA file {ca_file}" if ca_file is not None else ""
            eprint(
                f"recstream: the recipient certificate {path} is refused{by} "
                "(--allow-invalid-cert to encrypt for it anyway)"
            )
            raise
        warnings = [f"{exc} (encrypting for it anyway: --allow-invalid-cert)"]
    for w in warnings:
        eprint(f"recstream: warning: {path}: {w}")


def load_recipients(
    paths: Sequence[str], ca_file: str | None, allow_invalid: bool = False
) -> list[Recipient]:
    """Load and check recipient certificates (see :func:`check_recipient_certificate`)."""
    recipients: dict[bytes, Recipient] = {}
    for path in paths:
        cert = load_certificate(read_input_file(path, "certificate"))
        recipient = Recipient.from_certificate(cert)
        if recipient.cert_id in recipients:
            eprint(f"recstream: note: {path} is named twice among the recipients; used once")
            continue
        check_recipient_certificate(cert, path, ca_file, allow_invalid)
        recipients[recipient.cert_id] = recipient
    return list(recipients.values())


def distinct_recipients(recipients: Sequence[Recipient]) -> list[Recipient]:
    """Drop repeated certificates (with a note) and enforce the 1 to 16 limit.

    The format refuses a certificate named twice (docs/FORMAT.md §4); a command
    line that names one twice means it once.

    Raises:
        UsageError: more than MAX_RECIPIENTS distinct certificates.
    """
    seen: dict[bytes, Recipient] = {}
    for r in recipients:
        if r.cert_id in seen:
            eprint(f"recstream: note: certificate {r.cert_id_hex[:16]} is named twice; used once")
            continue
        seen[r.cert_id] = r
    if len(seen) > MAX_RECIPIENTS:
        msg = (
            f"{len(seen)} recipient certificates: an envelope holds 1 to {MAX_RECIPIENTS} "
            "(docs/FORMAT.md §4)"
        )
        raise UsageError(msg)
    return list(seen.values())


def guess_media(path: str, media_type: str | None, kind: str | None) -> tuple[str, MediaKind]:
    if media_type is None:
        guessed = guess_type(path) if path != STDIO else None
        media_type = guessed or "application/octet-stream"
    if kind is None:
        return media_type, MediaKind.SCREEN if media_type.startswith("video/") else MediaKind.VOICE
    return media_type, MediaKind.SCREEN if kind == "screen" else MediaKind.VOICE


# Recording types by extension, so that guessing one needs neither the mimetypes
# module's system tables (~15 ms to read at start-up) nor urllib; others fall back.
_RECORDING_TYPES = {
    ".wav": "audio/x-wav",  # what mimetypes says, and what earlier releases wrote
    ".au": "audio/basic",
    ".ul": "audio/basic",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
    ".m4a": "audio/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp4": "video/mp4",
}


def guess_type(path: str) -> str | None:
    """The MIME type for ``path``'s extension, or None."""
    suffix = Path(path).suffix.lower()
    if not suffix or suffix in _RECORDING_TYPES:
        return _RECORDING_TYPES.get(suffix)
    import mimetypes

    # Python's own table, not the system files mimetypes.guess_type() would read
    return mimetypes.MimeTypes().guess_type(path)[0]


def resolve_recipients(args: argparse.Namespace, kind: MediaKind) -> tuple[str, list[Recipient]]:
    """The tenant and recipients of ``encrypt``/``record``: --cert files, the keystore, or both.

    The keystore is used when --keystore is given, or when --tenant is given without
    --cert; its recipient is the tenant's active certificate of ``kind``.
    """
    use_keystore = args.keystore is not None or (not args.cert and args.tenant is not None)
    if not use_keystore and not args.cert:
        msg = (
            "a recipient is required: --cert CERT.pem, or --tenant T to use T's active "
            "certificate in the keystore"
        )
        raise UsageError(msg)
    if use_keystore and args.tenant is None:
        msg = "--keystore needs --tenant T: T's active certificate becomes the recipient"
        raise UsageError(msg)
    tenant = args.tenant or DEFAULT_TENANT
    recipients = []
    if use_keystore:
        recipients.append(
            keystore_recipient(args.keystore, args.password_file, tenant, kind, args.ca_file)
        )
    recipients += load_recipients(args.cert or [], args.ca_file, args.allow_invalid_cert)
    return tenant, distinct_recipients(recipients)


def recording_from_args(
    args: argparse.Namespace, source: str, default_type: str | None = None
) -> tuple[Metadata, list[Recipient]]:
    """The metadata and recipients that ``encrypt`` and ``record`` options ask for.

    Raises:
        UsageError: a recording ID, tenant or media type that the format refuses.
    """
    media_type, kind = guess_media(source, args.media_type or default_type, args.media_kind)
    try:  # the metadata's own checks first: a bad --recording-id needs no keystore password
        new_metadata(recording_id=args.recording_id or "x", tenant=args.tenant or "x",
                     media_kind=kind, media_type=media_type)  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    tenant, recipients = resolve_recipients(args, kind)
    metadata = new_metadata(
        recording_id=args.recording_id or _new_recording_id(),
        tenant=tenant,
        media_kind=kind,
        media_type=media_type,
        created_ms=getattr(args, "created", None),
    )
    return metadata, recipients


def _new_recording_id() -> str:
    """A random (version 4) UUID, without importing ``uuid`` (and ``platform``) for it."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

"""Helpers ``encrypt`` and ``record`` share: a recording's metadata and recipients from options."""

from __future__ import annotations

import argparse
import mimetypes
import uuid

from recstream.cli import UsageError
from recstream.cli._keystore_access import keystore_recipient, load_recipients
from recstream.envelope import Recipient, new_metadata
from recstream.format import MediaKind, Metadata

__all__ = ["DEFAULT_TENANT", "guess_media", "recording_from_args", "resolve_recipients"]

DEFAULT_TENANT = "default"


def guess_media(path: str, media_type: str | None, kind: str | None) -> tuple[str, MediaKind]:
    if media_type is None:
        guessed = mimetypes.guess_type(path)[0] if path != "-" else None
        media_type = guessed or "application/octet-stream"
    if kind is None:
        return media_type, MediaKind.SCREEN if media_type.startswith("video/") else MediaKind.VOICE
    return media_type, MediaKind.SCREEN if kind == "screen" else MediaKind.VOICE


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
    recipients += load_recipients(args.cert or [], args.ca_file)
    return tenant, recipients


def recording_from_args(
    args: argparse.Namespace, source: str, default_type: str | None = None
) -> tuple[Metadata, list[Recipient]]:
    """The metadata and recipients that ``encrypt`` and ``record`` options ask for.

    Raises:
        UsageError: a recording ID, tenant or media type that the format refuses.
    """
    media_type, kind = guess_media(source, args.media_type or default_type, args.media_kind)
    tenant, recipients = resolve_recipients(args, kind)
    try:
        metadata = new_metadata(
            recording_id=args.recording_id or str(uuid.uuid4()),
            tenant=tenant,
            media_kind=kind,
            media_type=media_type,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return metadata, recipients

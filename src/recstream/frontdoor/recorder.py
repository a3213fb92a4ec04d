"""From the common config sections to a recording hook over the keystore, and the audit log.

:func:`open_hook` reads the keystore password, opens the keystore once (so a
wrong password or a damaged file stops the server at start, not at the first
call) and returns a :class:`~recstream.aio.RecordingHook` filing recordings in
the archive layout with each tenant's active certificate, re-read when the
keystore file changes (:func:`recstream.keystore.resolver`).

The audit log is the RCS's JSON-lines writer (:class:`recstream.service.audit.AuditLog`):
one format for every audit trail the product writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from recstream import keystore
from recstream.aio import RecordingHook
from recstream.format import MediaKind
from recstream.frontdoor.config import KeystoreConfig, RecordingsConfig, keystore_password
from recstream.service.audit import AuditLog
from recstream.upload import Uploader

__all__ = ["AuditLog", "open_hook"]


async def open_hook(
    recordings: RecordingsConfig,
    keys: KeystoreConfig,
    *,
    on_error: Callable[[str, MediaKind, BaseException], None] | None = None,
    sync: bool = True,
) -> RecordingHook:
    """A recording hook (not yet entered) over the keystore.

    Raises:
        ConfigError: the password cannot be read.
        KeystoreError: the keystore does not open (wrong password, damaged, tampered).
        OSError: the CA file cannot be read.
        StorageError: ``[recordings] archive``'s store client cannot be set up.
    """
    password = keystore_password(keys)
    ca = keys.ca_file.read_bytes() if keys.ca_file is not None else None
    resolve = keystore.resolver(keys.path, password, ca_bundle=ca)
    # Argon2id takes ~0.5 s: off the event loop, and once, now.
    await asyncio.to_thread(resolve.current)
    uploader = None
    if recordings.archive is not None:
        uploader = Uploader(
            recordings.root,
            recordings.archive,
            max_spool_bytes=recordings.max_spool_bytes,
            min_free_bytes=recordings.min_free_bytes,
        )
    return RecordingHook(
        recordings.root,
        resolve,
        flush_interval=recordings.flush_interval,
        sync=sync,
        on_error=on_error,
        contact_center=recordings.contact_center,
        uploader=uploader,
    )

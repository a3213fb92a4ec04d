"""From the common config sections to a recording hook over the keystore, and the audit log.

:func:`open_hook` reads the keystore password, opens the keystore once (so a
wrong password or a damaged file stops the server at start, not at the first
call) and returns a :class:`~recstream.aio.RecordingHook` filing recordings in
the archive layout with each tenant's active certificate, re-read when the
keystore file changes (:func:`recstream.keystore.resolver`).  With a
``[signing]`` section every recording is signed: by the node's active identity in
the same keystore (followed as it changes), or by a key and certificate file; the
signer is built and checked now, so a bad one stops the start.

The audit log is the RCS's JSON-lines writer (:class:`recstream.service.audit.AuditLog`):
one format for every audit trail the product writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from recstream import keystore
from recstream.aio import RecordingHook
from recstream.aio.hook import SignerResolver
from recstream.format import MediaKind
from recstream.frontdoor.config import (
    KeystoreConfig,
    RecordingsConfig,
    SigningConfig,
    keystore_password,
    read_secret,
)
from recstream.keysource import NodeSignerResolver
from recstream.service.audit import AuditLog
from recstream.signer import Signer
from recstream.upload import Uploader

__all__ = ["AuditLog", "open_hook"]


async def open_hook(
    recordings: RecordingsConfig,
    keys: KeystoreConfig,
    *,
    on_error: Callable[[str, MediaKind, BaseException], None] | None = None,
    sync: bool = True,
    signing: SigningConfig | None = None,
) -> RecordingHook:
    """A recording hook (not yet entered) over the keystore.

    Raises:
        ConfigError: the password cannot be read.
        KeystoreError: the keystore does not open (wrong password, damaged, tampered),
            or the ``[signing]`` node has no active identity in it.
        KeyLoadError, KeyPolicyError, CertificateError: the signing key or
            certificate cannot sign now.
        OSError: the CA file or a signing file cannot be read.
        StorageError: ``[recordings] archive``'s store client cannot be set up.
    """
    password = keystore_password(keys)
    ca = keys.ca_file.read_bytes() if keys.ca_file is not None else None
    resolve = keystore.resolver(keys.path, password, ca_bundle=ca)
    # Argon2id takes ~0.5 s: off the event loop, and once, now.
    await asyncio.to_thread(resolve.current)
    signer: Signer | SignerResolver | None = None
    if signing is not None and signing.node is not None:
        signer = NodeSignerResolver(resolve.current, signing.node)
        await asyncio.to_thread(signer)  # fail at start, not at the first call
    elif signing is not None:
        assert signing.key_file is not None and signing.cert_file is not None
        key_password = (
            read_secret(signing.key_password_file, "[signing] key_password_file")
            if signing.key_password_file is not None
            else None
        )
        signer = await asyncio.to_thread(
            Signer.from_files, signing.key_file, signing.cert_file, key_password
        )
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
        signer=signer,
        uploader=uploader,
    )

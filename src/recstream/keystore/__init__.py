"""The keystore: every tenant's voice and screen certificates with their private keys.

The vendor's rules it keeps: keep every certificate, expired ones included, so
old recordings stay playable; back up the keystore; provision a screen-recording
certificate wherever screen recording is used.  The file format is
docs/KEYSTORE.md.

Modules: :mod:`._container` (the sealed file: Argon2id, AES-256-GCM, checksum),
:mod:`._content` (the JSON inside it), :mod:`.model` (the :class:`Keystore`, a
:class:`~recstream.pki.recipients.KeyRing`),
:mod:`.store` (paths, atomic locked updates), :mod:`.backup`, :mod:`.pkcs12`,
:mod:`.check` and :mod:`.resolve` (the encrypt side and the hook's resolver).
This package is the key layer: it uses only format, _crypto, pki, errors and
durable output (pyproject's import contract); batch decryption and re-wrapping
are per-recording operations in :mod:`recstream.ops`.
"""

from __future__ import annotations

from recstream.keystore._container import DEFAULT_KDF, FileKind, KdfParams
from recstream.keystore.model import Entry, EntryState, Keystore
from recstream.keystore.resolve import KeystoreResolver, active_recipient, resolver
from recstream.keystore.store import create, default_path, keystore_path, load, update

__all__ = [
    "DEFAULT_KDF",
    "Entry",
    "EntryState",
    "FileKind",
    "KdfParams",
    "Keystore",
    "KeystoreResolver",
    "active_recipient",
    "create",
    "default_path",
    "keystore_path",
    "load",
    "resolver",
    "update",
]

"""The sealed container of keystore and backup files (docs/KEYSTORE.md §2-§5).

Bytes in, bytes out; no file I/O and no clock.  A file is a fixed 88-byte header
(KDF parameters, salt, password check, nonce, payload length), the payload
encrypted with AES-256-GCM under a key derived from the password (the header is
its associated data), and an unkeyed SHA-256 checksum of everything before it.

Opening checks, in this order, each with its own error: magic and version, the
header's fields and limits, the file's length, the checksum (accidental damage),
the KDF caps (before any derivation), the password check value (wrong password),
and last the AEAD tag (deliberate tampering).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from recstream import _crypto
from recstream.errors import (
    KeystoreDamagedError,
    KeystoreFormatError,
    KeystoreLockedError,
    KeystoreTamperedError,
)

__all__ = [
    "DEFAULT_KDF",
    "HEADER_BYTES",
    "MAGIC",
    "MAX_PAYLOAD_BYTES",
    "FileKind",
    "KdfParams",
    "Sealed",
    "Unlocked",
    "open_payload",
    "parse",
    "seal",
    "unlock",
]

MAGIC: Final = b"\x89RSKEY\r\n"  # high bit and CR LF, like the envelope's (FORMAT.md §2)
VERSION: Final = 1
SALT_BYTES: Final = 16
CHECK_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
CHECKSUM_BYTES: Final = 32
# magic, version, kind, kdf, memory KiB, iterations, lanes, 3 zero bytes, salt, check,
# nonce, payload length
_HEADER: Final = struct.Struct(">8sHBBIIB3s16s32s12sI")
HEADER_BYTES: Final = _HEADER.size  # 88
# 64 MiB of ciphertext holds ~15,000 certificates with their keys; far beyond any
# contact centre, and small enough that a hostile length cannot exhaust memory.
MAX_PAYLOAD_BYTES: Final = 64 * 1024 * 1024

KDF_ARGON2ID: Final = 1

# Caps on what a file may ask the KDF to spend, checked before deriving (§3.1).
# Four times the default's memory and ~5x its work: a keystore tuned on a bigger
# machine still opens, and a hostile file costs at most ~3 s and 1 GiB here.
MAX_KDF_MEMORY_KIB: Final = 1024 * 1024  # 1 GiB
MAX_KDF_ITERATIONS: Final = 16
MAX_KDF_LANES: Final = 16
MAX_KDF_WORK: Final = 4 * 1024 * 1024  # memory KiB x iterations: 4 GiB-passes

_INFO_CHECK: Final = b"recstream keystore v1 password check"
_INFO_PAYLOAD: Final = b"recstream keystore v1 payload"
_INFO_KEYS: Final = b"recstream keystore v1 private keys"


class FileKind(IntEnum):
    """§2 ``kind``: what the file is (part of the AEAD's associated data)."""

    KEYSTORE = 1
    BACKUP = 2


@dataclass(frozen=True, slots=True)
class KdfParams:
    """Argon2id cost parameters (RFC 9106 §3.1): memory in KiB, passes, lanes."""

    memory_kib: int
    iterations: int
    lanes: int

    def check(self) -> None:
        """Refuse parameters that are invalid or over the caps, before any work.

        Raises:
            KeystoreFormatError: naming the parameter and its limit.
        """
        if not 1 <= self.lanes <= MAX_KDF_LANES:
            msg = f"KDF lanes {self.lanes} outside 1..{MAX_KDF_LANES}"
            raise KeystoreFormatError(msg)
        if not 1 <= self.iterations <= MAX_KDF_ITERATIONS:
            msg = f"KDF iterations {self.iterations} outside 1..{MAX_KDF_ITERATIONS}"
            raise KeystoreFormatError(msg)
        if not 8 * self.lanes <= self.memory_kib <= MAX_KDF_MEMORY_KIB:
            msg = (
                f"KDF memory {self.memory_kib} KiB outside {8 * self.lanes}.."
                f"{MAX_KDF_MEMORY_KIB} KiB"
            )
            raise KeystoreFormatError(msg)
        if self.memory_kib * self.iterations > MAX_KDF_WORK:
            msg = (
                f"KDF work {self.memory_kib} KiB x {self.iterations} passes is over the "
                f"limit of {MAX_KDF_WORK} KiB-passes"
            )
            raise KeystoreFormatError(msg)

    def derive(self, password: bytes, salt: bytes) -> bytes:
        """The 32-byte master key; checks the caps first."""
        self.check()
        return _crypto.argon2id(
            password,
            salt,
            memory_kib=self.memory_kib,
            iterations=self.iterations,
            lanes=self.lanes,
        )

    def describe(self) -> str:
        return (
            f"Argon2id, {self.memory_kib // 1024} MiB, {self.iterations} passes, {self.lanes} lanes"
        )


# Tuned on the development machine (2 vCPU): ~0.5 s and 256 MiB per derivation.
# RFC 9106 §4 suggests 64 MiB x 3 passes as a floor for memory-constrained uses;
# this is four times its memory.  See docs/KEYSTORE.md §3.1 for the measurement.
DEFAULT_KDF: Final = KdfParams(memory_kib=256 * 1024, iterations=3, lanes=4)


@dataclass(frozen=True, slots=True)
class Unlocked:
    """The keys derived from the password for one salt and KDF parameters.

    Reusable across saves of the same keystore (the salt stays with the keystore),
    so a running process re-reads a changed keystore without deriving again.
    """

    kdf: KdfParams
    salt: bytes
    check: bytes
    payload_key: bytes
    entry_key: bytes

    @classmethod
    def derive(cls, password: bytes, kdf: KdfParams, salt: bytes | None = None) -> Unlocked:
        """Derive from ``password`` (a fresh random salt when ``salt`` is None).

        Raises:
            KeystoreFormatError: the KDF parameters are over the caps.
        """
        salt = os.urandom(SALT_BYTES) if salt is None else salt
        master = kdf.derive(password, salt)
        return cls(
            kdf,
            salt,
            _crypto.hkdf_sha256(master, _INFO_CHECK),
            _crypto.hkdf_sha256(master, _INFO_PAYLOAD),
            _crypto.hkdf_sha256(master, _INFO_KEYS),
        )

    def matches(self, sealed: Sealed) -> bool:
        """True when these keys open ``sealed`` (same salt, parameters and password)."""
        return (
            self.kdf == sealed.kdf
            and self.salt == sealed.salt
            and hmac.compare_digest(self.check, sealed.check)
        )


@dataclass(frozen=True, slots=True)
class Sealed:
    """A parsed container whose length and checksum are right; not yet opened."""

    kind: FileKind
    kdf: KdfParams
    salt: bytes
    check: bytes
    nonce: bytes
    header: bytes
    ciphertext: bytes


def parse(data: bytes, kind: FileKind, what: str) -> Sealed:
    """Check the structure, length and checksum of a keystore or backup file.

    ``what`` names the file in messages (``"keystore /etc/recstream/ks"``).

    Raises:
        KeystoreFormatError: not such a file, unsupported version, a bad field.
        KeystoreDamagedError: truncated, extended, or the checksum fails.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        msg = f"{what} is not a recstream keystore or backup file (wrong magic bytes)"
        raise KeystoreFormatError(msg)
    if len(data) < HEADER_BYTES:
        msg = f"{what} is truncated: {len(data)} bytes, shorter than its {HEADER_BYTES}-byte header"
        raise KeystoreDamagedError(msg)
    (_, version, raw_kind, kdf_id, memory, iterations, lanes, zero, salt, check, nonce,
     length) = _HEADER.unpack_from(data)  # fmt: skip
    if version != VERSION:
        msg = f"{what} has format version {version}; this release reads version {VERSION}"
        raise KeystoreFormatError(msg)
    if raw_kind not in (FileKind.KEYSTORE, FileKind.BACKUP) or zero != b"\0\0\0":
        msg = f"{what} has an invalid header (kind {raw_kind})"
        raise KeystoreFormatError(msg)
    if raw_kind != kind:
        found = "a backup" if raw_kind == FileKind.BACKUP else "a keystore"
        use = "recstream keystore restore" if raw_kind == FileKind.BACKUP else "--keystore"
        msg = f"{what} is {found}, not a {kind.name.lower()}; use it with {use}"
        raise KeystoreFormatError(msg)
    if kdf_id != KDF_ARGON2ID:
        msg = f"{what} uses key derivation function {kdf_id}, unknown to this release"
        raise KeystoreFormatError(msg)
    if not TAG_BYTES <= length <= MAX_PAYLOAD_BYTES:
        msg = (
            f"{what} declares a payload of {length} bytes, outside {TAG_BYTES}..{MAX_PAYLOAD_BYTES}"
        )
        raise KeystoreFormatError(msg)
    expected = HEADER_BYTES + length + CHECKSUM_BYTES
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        msg = (
            f"{what} is {state}: {len(data)} bytes where its header says {expected}; "
            "it was damaged in storage or transfer"
        )
        raise KeystoreDamagedError(msg)
    body = data[:-CHECKSUM_BYTES]
    if not hmac.compare_digest(hashlib.sha256(body).digest(), data[-CHECKSUM_BYTES:]):
        msg = (
            f"{what} is damaged: its checksum does not match (corrupted on disk or in "
            "transfer); restore it from a backup"
        )
        raise KeystoreDamagedError(msg)
    kdf = KdfParams(memory, iterations, lanes)
    try:
        kdf.check()
    except KeystoreFormatError as exc:
        msg = f"{what} asks for more key-derivation work than allowed, refused: {exc}"
        raise KeystoreFormatError(msg) from exc
    return Sealed(
        FileKind(raw_kind),
        kdf,
        salt,
        check,
        nonce,
        data[:HEADER_BYTES],
        data[HEADER_BYTES:-CHECKSUM_BYTES],
    )


def unlock(sealed: Sealed, password: bytes, what: str, cached: Unlocked | None = None) -> Unlocked:
    """Derive (or reuse ``cached``) keys and check the password.

    Raises:
        KeystoreLockedError: wrong password.
    """
    if cached is not None and cached.matches(sealed):
        return cached
    unlocked = Unlocked.derive(password, sealed.kdf, sealed.salt)
    if not unlocked.matches(sealed):
        msg = f"wrong password for {what}"
        raise KeystoreLockedError(msg)
    return unlocked


def open_payload(sealed: Sealed, unlocked: Unlocked, what: str) -> bytes:
    """Decrypt and authenticate the payload.

    Raises:
        KeystoreTamperedError: it does not authenticate though the password is right.
    """
    plain = _crypto.aead_open(unlocked.payload_key, sealed.nonce, sealed.ciphertext, sealed.header)
    if plain is None:
        msg = (
            f"{what} failed authentication although its password is right and its "
            "checksum intact: it was deliberately altered; do not use it, restore a backup"
        )
        raise KeystoreTamperedError(msg)
    return plain


def seal(kind: FileKind, unlocked: Unlocked, payload: bytes) -> bytes:
    """Encrypt ``payload`` into a complete file (a fresh nonce every time)."""
    length = len(payload) + TAG_BYTES
    if length > MAX_PAYLOAD_BYTES:
        msg = f"keystore content of {length} bytes is over the limit of {MAX_PAYLOAD_BYTES}"
        raise KeystoreFormatError(msg)
    kdf = unlocked.kdf
    nonce = os.urandom(NONCE_BYTES)
    header = _HEADER.pack(
        MAGIC,
        VERSION,
        kind,
        KDF_ARGON2ID,
        kdf.memory_kib,
        kdf.iterations,
        kdf.lanes,
        b"\0\0\0",
        unlocked.salt,
        unlocked.check,
        nonce,
        length,
    )
    body = header + _crypto.aead_seal(unlocked.payload_key, nonce, payload, header)
    return body + hashlib.sha256(body).digest()

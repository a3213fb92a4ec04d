"""Deterministic test vectors for the recstream envelope format (docs/FORMAT.md).

This is a second implementation of the format, written from FORMAT.md alone: it
must never import recstream.  It uses ``cryptography`` primitives, the
``blake3`` package (§10.1's segment digests) and the standard library only,
and replaces the two randomized steps with fixed inputs:

* RSA-OAEP (FORMAT.md §4) is EME-OAEP encoding (RFC 8017 §7.1.1, SHA-256,
  MGF1-SHA-256, empty label) with a fixed seed, then raw RSA ``pow(m, e, n)``.
  Every wrap is checked by opening it with ``cryptography``'s own OAEP.
* The body (FORMAT.md §6.1) is C2SP chunked encryption with a fixed salt, built
  from HKDF-Expand-SHA-512 and AES-256-GCM.  Every valid body is checked with
  ``cryptography.cobblestone.Cobblestone256Decryptor``, and every tampered body
  is checked to make it release exactly the vector's ``payload`` and then fail.

Every other "random" input (file keys, salts, OAEP seeds, plaintexts) is SHAKE-256
of a label naming the vector, so vectors are independent of each other.

Usage::

    python tests/vectors/generate.py             # rewrite every *.rsv
    python tests/vectors/generate.py --check     # exit 1 if any file differs
    python tests/vectors/generate.py --new-keys  # new throwaway keys, then rewrite
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from blake3 import blake3
from cryptography import x509
from cryptography.cobblestone import Cobblestone256Decryptor
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
KEY_DIR = HERE / "keys"

# FORMAT.md §2-§6.
MAGIC = b"\x89RSTRM\r\n"
VERSION = 1
SEGMENT = 16384  # plaintext bytes per segment
TAG = 16
WIRE_SEGMENT = SEGMENT + TAG
BODY_PREFIX = 24 + 32  # salt, commitment
MAC_BYTES = 32
CREATED_MS = 1767225600000  # 2026-01-01T00:00:00Z
C2SP_INFO = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00"
U16 = struct.Struct(">H")
META_FIXED = struct.Struct(">IQB")  # segment_size, created_ms, media_kind
STANZA_FIXED = struct.Struct(">B32s32sH")  # type, cert_id, key_id, wrapped_length
OAEP = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)

# Throwaway test keys: name -> RSA bits.  Created only by --new-keys.
PARTIES = {"alice": 2048, "bob": 2048, "carol3072": 3072}
CERT_NOT_BEFORE = datetime(2025, 1, 1, tzinfo=UTC)  # valid for 100 years


def det(label: str, n: int) -> bytes:
    """Fixed stand-in for n random bytes: SHAKE-256 of a label."""
    return hashlib.shake_256(b"recstream test vectors/" + label.encode()).digest(n)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def check(ok: bool, what: str) -> None:
    """Cross-check failures stop generation (unlike assert, not removed by -O)."""
    if not ok:
        raise RuntimeError(f"cross-check failed: {what}")


def flip(data: bytes, at: int) -> bytes:
    """``data`` with one bit flipped at byte ``at`` (negative counts from the end)."""
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


# --- keys and certificates (FORMAT.md §4: cert_id, key_id) --------------------


@dataclass(frozen=True)
class Party:
    name: str
    key: rsa.RSAPrivateKey
    cert_id: bytes  # SHA-256 of the certificate DER
    key_id: bytes  # SHA-256 of the DER SubjectPublicKeyInfo

    @property
    def modulus_bytes(self) -> int:
        return (self.key.key_size + 7) // 8


Keys = dict[str, Party]


def load_party(name: str) -> Party:
    key = serialization.load_pem_private_key((KEY_DIR / f"{name}.key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((KEY_DIR / f"{name}.cert.pem").read_bytes())
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{name}.key.pem is not an RSA key")
    check(cert.public_key() == key.public_key(), f"{name}'s certificate matches its key")
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cert_der = cert.public_bytes(serialization.Encoding.DER)
    return Party(name, key, sha256(cert_der), sha256(spki))


def load_keys() -> Keys:
    return {name: load_party(name) for name in PARTIES}


def self_signed(name: str, key: rsa.RSAPrivateKey, serial: int, not_before: datetime) -> bytes:
    """A self-signed recording certificate (DER), valid 100 years from ``not_before``.

    PKCS #1 v1.5 signatures are deterministic, so equal inputs give equal bytes.
    """
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "recstream test vectors (throwaway)"),
        ]
    )
    usage = x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_before.replace(year=not_before.year + 100))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def renewed_cert_id(party: Party) -> bytes:
    """cert_id of a renewal of ``party``'s certificate: same key, new serial and dates."""
    return sha256(self_signed(party.name, party.key, 1000, datetime(2026, 1, 1, tzinfo=UTC)))


def new_keys() -> None:
    """Replace the throwaway keys and self-signed certificates (random: not reproducible)."""
    KEY_DIR.mkdir(exist_ok=True)
    for serial, (name, bits) in enumerate(PARTIES.items(), start=1):
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        der = self_signed(name, key, serial, CERT_NOT_BEFORE)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (KEY_DIR / f"{name}.key.pem").write_bytes(pem)
        cert = x509.load_der_x509_certificate(der)
        (KEY_DIR / f"{name}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# --- RSA-OAEP with a fixed seed (RFC 8017 §7.1.1) -----------------------------


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def mgf1_sha256(seed: bytes, length: int) -> bytes:
    """MGF1 (RFC 8017 §B.2.1) with SHA-256."""
    blocks = (sha256(seed + struct.pack(">I", i)) for i in range(-(-length // 32)))
    return b"".join(blocks)[:length]


def oaep_encode(message: bytes, k: int, seed: bytes) -> bytes:
    """EME-OAEP encoding, RFC 8017 §7.1.1 step 2, SHA-256 and an empty label."""
    h = 32
    check(len(message) <= k - 2 * h - 2 and len(seed) == h, "OAEP message and seed sizes")
    db = sha256(b"") + bytes(k - len(message) - 2 * h - 2) + b"\x01" + message
    masked_db = xor(db, mgf1_sha256(seed, k - h - 1))
    masked_seed = xor(seed, mgf1_sha256(masked_db, h))
    return b"\x00" + masked_seed + masked_db


def pyca_unwrap(party: Party, wrapped: bytes) -> bytes | None:
    try:
        return party.key.decrypt(wrapped, OAEP)
    except ValueError:
        return None


def oaep_wrap(party: Party, message: bytes, seed: bytes) -> bytes:
    """RSAES-OAEP-ENCRYPT (RFC 8017 §7.1.1) with the given seed, cross-checked."""
    pub = party.key.public_key().public_numbers()
    k = party.modulus_bytes
    m = int.from_bytes(oaep_encode(message, k, seed), "big")
    wrapped = pow(m, pub.e, pub.n).to_bytes(k, "big")
    check(
        pyca_unwrap(party, wrapped) == message,
        f"cryptography's OAEP opens the wrap for {party.name}",
    )
    return wrapped


# --- header encoding (FORMAT.md §2-§4) ----------------------------------------


@dataclass(frozen=True)
class Metadata:
    """§3 fields.  Text fields are raw bytes so a vector can make them invalid UTF-8."""

    recording_id: bytes = b"rec-0001"
    tenant: bytes = b"acme-contact-centre"
    media_type: bytes = b"audio/ogg"
    media_kind: int = 1
    created_ms: int = CREATED_MS
    segment_size: int = SEGMENT

    def encode(self) -> bytes:
        texts = (self.recording_id, self.tenant, self.media_type)
        fields = b"".join(bytes([len(t)]) + t for t in texts)
        return META_FIXED.pack(self.segment_size, self.created_ms, self.media_kind) + fields


def encode_stanza(cert_id: bytes, key_id: bytes, wrapped: bytes, stanza_type: int = 1) -> bytes:
    """One §4 recipient stanza; wrapped_length is the true length of ``wrapped``."""
    return STANZA_FIXED.pack(stanza_type, cert_id, key_id, len(wrapped)) + wrapped


def stanza_for(party: Party, file_key: bytes, label: str) -> bytes:
    wrapped = oaep_wrap(party, file_key, det(f"{label}/oaep seed/{party.name}", 32))
    return encode_stanza(party.cert_id, party.key_id, wrapped)


def fake_stanza(i: int, wrapped_length: int = 256) -> bytes:
    """A well-formed stanza for a certificate nobody here holds."""
    label = f"fake recipient {i}"
    return encode_stanza(
        det(f"{label}/cert", 32), det(f"{label}/key", 32), det(label, wrapped_length)
    )


# --- key schedule (FORMAT.md §6) ----------------------------------------------


def hkdf_sha256(file_key: bytes, info: bytes) -> bytes:
    # salt=None is RFC 5869's HashLen zero bytes, i.e. the spec's empty salt.
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(file_key)


def mac_key(file_key: bytes) -> bytes:
    return hkdf_sha256(file_key, b"recstream/v1 header mac")


def body_key(file_key: bytes) -> bytes:
    return hkdf_sha256(file_key, b"recstream/v1 body")


def header_mac(file_key: bytes, head: bytes) -> bytes:
    mac = HMAC(mac_key(file_key), hashes.SHA256())
    mac.update(head)
    return mac.finalize()


# --- body: C2SP chunked encryption, Cobblestone-256 (FORMAT.md §6.1) ----------


@dataclass(frozen=True)
class BodyCipher:
    salt: bytes
    commitment: bytes
    aead: AESGCM
    base_nonce: int

    @classmethod
    def derive(cls, key: bytes, salt: bytes, context: bytes) -> BodyCipher:
        okm = HKDFExpand(hashes.SHA512(), 32 + 12 + 32, C2SP_INFO + salt + context).derive(key)
        return cls(salt, okm[44:], AESGCM(okm[:32]), int.from_bytes(okm[32:44], "big"))

    def seal(self, index: int, chunk: bytes) -> bytes:
        nonce = (self.base_nonce ^ index).to_bytes(12, "big")
        return self.aead.encrypt(nonce, chunk, b"")


def chunks(plaintext: bytes) -> list[bytes]:
    """Full 16 KiB segments, then the final one, shorter and possibly empty."""
    full = len(plaintext) // SEGMENT
    return [plaintext[i * SEGMENT : (i + 1) * SEGMENT] for i in range(full + 1)]


@dataclass(frozen=True)
class Body:
    prefix: bytes  # salt || commitment
    segments: tuple[bytes, ...]  # ciphertext || tag, in order

    def encode(self) -> bytes:
        return self.prefix + b"".join(self.segments)


def seal_body(key: bytes, context: bytes, salt: bytes, plaintext: bytes) -> Body:
    cipher = BodyCipher.derive(key, salt, context)
    segments = tuple(cipher.seal(i, c) for i, c in enumerate(chunks(plaintext)))
    body = Body(salt + cipher.commitment, segments)
    dec = Cobblestone256Decryptor(key, context)
    check(dec.update(body.encode()) + dec.finalize() == plaintext, "Cobblestone256 opens the body")
    return body


def released_by_cobblestone(key: bytes, context: bytes, body: bytes) -> bytes:
    """What cryptography's Cobblestone-256 releases, fed 1,000 bytes at a time, before failing."""
    dec = Cobblestone256Decryptor(key, context)
    out = bytearray()
    try:
        for i in range(0, len(body), 1000):
            out += dec.update(body[i : i + 1000])
        dec.finalize()
    except InvalidTag:
        return bytes(out)
    raise RuntimeError("cross-check failed: Cobblestone256 accepted a tampered body")


# --- one envelope, from its parts ---------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A recording built from parts; a vector replaces one part and re-assembles."""

    file_key: bytes
    salt: bytes
    plaintext: bytes
    metadata: Metadata
    stanzas: tuple[bytes, ...]
    magic: bytes = MAGIC
    version: int = VERSION
    metadata_suffix: bytes = b""  # bytes after the last metadata field
    metadata_length: int | None = None  # None: the true length
    recipient_count: int | None = None  # None: the true count
    signer_block: bytes = b""  # version 2 (§3.1): algorithm, cert_length, certificate

    def header_without_mac(self) -> bytes:
        meta = self.metadata.encode() + self.metadata_suffix
        m = len(meta) if self.metadata_length is None else self.metadata_length
        r = len(self.stanzas) if self.recipient_count is None else self.recipient_count
        fixed = self.magic + U16.pack(self.version) + U16.pack(m)
        return fixed + meta + self.signer_block + bytes([r]) + b"".join(self.stanzas)

    def context(self) -> bytes:
        """The immutable part, bytes [0, 12 + M) (§3), and the signer block (§3.1)."""
        head = self.header_without_mac()
        m = U16.unpack_from(head, len(self.magic) + 2)[0]
        return head[: 12 + m + len(self.signer_block)]

    def header(self) -> bytes:
        head = self.header_without_mac()
        return head + header_mac(self.file_key, head)

    def body(self) -> Body:
        return seal_body(body_key(self.file_key), self.context(), self.salt, self.plaintext)

    def encode(self) -> bytes:
        return self.header() + self.body().encode()

    def with_mac_of(self, original: Envelope) -> bytes:
        """This header carrying ``original``'s MAC, then ``original``'s body."""
        return self.header_without_mac() + original.header()[-MAC_BYTES:] + original.body().encode()


Meta = Mapping[str, object]  # Metadata fields to set
Edit = Callable[[bytes], bytes]
Stanzas = tuple[bytes, ...]


def recording(
    keys: Keys,
    label: str,
    size: int = 100,
    recipients: tuple[str, ...] = ("alice",),
    meta: Meta | None = None,
) -> Envelope:
    """The envelope a correct encoder makes, every input derived from ``label``."""
    file_key = det(f"{label}/file key", 32)
    fields = {"recording_id": f"rec-{label}".encode(), **(meta or {})}
    return Envelope(
        file_key=file_key,
        salt=det(f"{label}/salt", 24),
        plaintext=det(f"{label}/plaintext", size),
        metadata=Metadata(**fields),  # type: ignore[arg-type]
        stanzas=tuple(stanza_for(keys[p], file_key, label) for p in recipients),
    )


# --- vectors (FORMAT.md §8) ---------------------------------------------------


@dataclass(frozen=True)
class HeaderFacts:
    """What a parser must read back from a success vector's header."""

    recording_id: str
    tenant: str
    media_type: str
    media_kind: int
    created_ms: int
    cert_ids: tuple[str, ...]

    @classmethod
    def of(cls, env: Envelope) -> HeaderFacts:
        m = env.metadata
        cert_ids = tuple(s[1:33].hex() for s in env.stanzas)
        texts = (m.recording_id.decode(), m.tenant.decode(), m.media_type.decode())
        return cls(*texts, m.media_kind, m.created_ms, cert_ids)


@dataclass(frozen=True)
class Vector:
    name: str
    expect: str
    envelope: bytes
    released: bytes  # plaintext a streaming decoder releases before it stops
    file_key: bytes
    comment: str
    identity: str = "alice"
    facts: HeaderFacts | None = None  # success vectors only
    shape: str | None = None  # payload failures only: what `inspect` reports (FORMAT.md §6.1)
    signature: str | None = None  # signed vectors: what `verify` reports (FORMAT.md §10.3)
    verify_at: int | None = None  # the verification time (ms) where it matters

    def encode(self) -> bytes:
        lines = [
            f"expect: {self.expect}",
            f"identity: {self.identity}",
            f"payload: {sha256(self.released).hex()}",
            f"file key: {self.file_key.hex()}",
            f"comment: {self.comment}",
        ]
        if self.shape is not None:
            lines.append(f"shape: {self.shape}")
        if self.signature is not None:
            lines.append(f"signature: {self.signature}")
        if self.verify_at is not None:
            lines.append(f"verify at: {self.verify_at}")
        return ("\n".join(lines) + "\n\n").encode() + self.envelope


def success(name: str, env: Envelope, comment: str, identity: str = "alice") -> Vector:
    envelope, facts = env.encode(), HeaderFacts.of(env)
    return Vector(name, "success", envelope, env.plaintext, env.file_key, comment, identity, facts)


def failure(
    expect: str,
    name: str,
    env: Envelope,
    comment: str,
    data: bytes | None = None,
    who: str = "alice",
) -> Vector:
    """A vector that fails before any plaintext: ``data`` defaults to ``env.encode()``."""
    data = env.encode() if data is None else data
    return Vector(name, expect, data, b"", env.file_key, comment, who)


def payload_failure(name: str, env: Envelope, body: bytes, released: bytes, comment: str) -> Vector:
    """``env``'s header (which opens) followed by a bad ``body``."""
    got = released_by_cobblestone(body_key(env.file_key), env.context(), body)
    check(got == released, f"{name}: Cobblestone256 releases exactly the expected prefix")
    return Vector(
        name,
        "payload failure",
        env.header() + body,
        released,
        env.file_key,
        comment,
        shape=body_shape(len(body)),
    )


def body_shape(length: int) -> str:
    """FORMAT.md §6.1's shape of a body of ``length`` bytes, as `inspect` reports it."""
    prefix, wire = 24 + 32, SEGMENT + 16
    if length < prefix:
        full, rest = 0, 0
    else:
        full, rest = divmod(length - prefix, wire)
    complete = length >= prefix and rest >= 16
    segments = full + (1 if complete else 0)
    plaintext = full * SEGMENT + (rest - 16 if complete else 0)
    return f"complete={str(complete).lower()} segments={segments} plaintext_length={plaintext}"


Family = Callable[[Keys], Iterator[Vector]]
FAMILIES: list[Family] = []


def family(fn: Family) -> Family:
    FAMILIES.append(fn)
    return fn


# --- success ------------------------------------------------------------------

SHORTEST_FIELDS: Meta = {"recording_id": b"r", "tenant": b"t", "media_type": b"a/b"}
LONGEST_FIELDS: Meta = {  # 4 + 8 + 1 + 256 + 256 + 128 = 653 bytes, the largest valid metadata
    "recording_id": b"R" * 255,
    "tenant": ("\u00e9" * 127 + "x").encode(),  # 255 bytes of UTF-8
    "media_type": b"application/" + b"x" * 115,  # 127 bytes
}
UNICODE_IDS: Meta = {
    "recording_id": "\u901a\u8bdd-2026-Gr\u00f6\u00dfe-\u260e".encode(),
    "tenant": "Soci\u00e9t\u00e9 G\u00e9n\u00e9rale \u2014 Z\u00fcrich \U0001f3a7".encode(),
}
# A ZWJ emoji sequence and a combining accent (not NFC): no control character.
UNICODE_FORMAT: Meta = {"tenant": "e\u0301cole \U0001f469\u200d\U0001f4bb".encode()}
RESTRICTED_NAME: Meta = {"media_type": b"application/vnd.A-z_0!#$&^.9+x"}  # RFC 6838 §4.2
SCREEN: Meta = {"media_kind": 2, "media_type": b"video/webm"}
# FORMAT.md §3: format characters and separators are valid text; users must escape them.
BIDI: Meta = {
    "recording_id": "call\u202eexe.vaw\u2028line 2".encode(),
    "tenant": "acme\u2066 \u2069corp".encode(),
}
UPPER: Meta = {"media_type": b"audio/L16"}  # registered (RFC 4856); RFC 6838 names are ALPHA


@family
def success_sizes(keys: Keys) -> Iterator[Vector]:
    for name, size, comment in [
        ("success_empty", 0, "empty recording: a single empty final segment"),
        ("success_1_byte", 1, "one final segment of 1 byte"),
        ("success_16383_bytes", SEGMENT - 1, "largest single-segment recording"),
        ("success_16384_bytes", SEGMENT, "a full segment, then an empty final segment"),
        ("success_16385_bytes", SEGMENT + 1, "a full segment, then a 1-byte final segment"),
        ("success_3_segments_and_tail", 3 * SEGMENT + 1000, "3 full segments, 1000-byte final"),
    ]:
        yield success(name, recording(keys, name, size), comment)


@family
def success_metadata(keys: Keys) -> Iterator[Vector]:
    cases: list[tuple[str, str, Meta]] = [
        ("success_unicode_ids", "recording_id, tenant: Latin, CJK, emoji", UNICODE_IDS),
        ("success_unicode_zwj_and_combining", "ZWJ emoji, combining accent", UNICODE_FORMAT),
        ("success_shortest_fields", "1-byte ids, 3-byte media_type", SHORTEST_FIELDS),
        ("success_longest_fields", "255-byte ids, 127-byte media_type", LONGEST_FIELDS),
        ("success_screen_recording", "media_kind 2 (screen), video/webm", SCREEN),
        ("success_media_type_uppercase", "audio/L16: RFC 6838 allows upper case", UPPER),
        ("success_media_type_restricted_chars", "every RFC 6838 name character", RESTRICTED_NAME),
        ("success_created_ms_zero", "created_ms 0 (1970-01-01)", {"created_ms": 0}),
        ("success_created_ms_max", "created_ms 2^64-1", {"created_ms": 2**64 - 1}),
        (
            "success_created_ms_last_date",
            "created_ms 253402300799999: 9999-12-31T23:59:59.999Z, the last one shown as a date",
            {"created_ms": 253402300799999},
        ),
        (
            "success_text_bidi_and_line_separator",
            "U+202E, U+2066 and U+2028 in the tenant and recording_id: valid, not controls",
            BIDI,
        ),
    ]
    for name, comment, meta in cases:
        yield success(name, recording(keys, name, meta=meta), comment)


@family
def success_recipients(keys: Keys) -> Iterator[Vector]:
    both = recording(keys, "success_two_recipients", 1000, ("alice", "bob"))
    for who in ("alice", "bob"):
        comment = f"stanzas for alice then bob; opened by {who}"
        yield success(f"success_two_recipients_{who}", both, comment, identity=who)
    carol = recording(keys, "success_rsa_3072", 1000, ("carol3072",))
    yield success("success_rsa_3072", carol, "RSA-3072: wrapped_length 384", "carol3072")
    big = recording(keys, "success_largest_header", 10, meta=LONGEST_FIELDS)
    big = replace(big, stanzas=tuple(fake_stanza(i, 1024) for i in range(15)) + big.stanzas)
    comment = "653-byte metadata, 16 stanzas: 15 unknown of 1024 bytes, then alice's"
    yield success("success_largest_header", big, comment)


@family
def success_cert_id_and_key_id_disagree(keys: Keys) -> Iterator[Vector]:
    """FORMAT.md §4: cert_id names bob's certificate, key_id alice's key, wrapped for alice.

    A decoder holding alice's bare key (no certificate) picks it by key_id.
    """
    name = "success_cert_id_bob_key_id_alice"
    env, alice = recording(keys, name, 1000), keys["alice"]
    wrapped = oaep_wrap(alice, env.file_key, det(f"{name}/oaep", 32))
    stanza = encode_stanza(keys["bob"].cert_id, alice.key_id, wrapped)
    comment = "cert_id of bob's certificate, key_id of alice's key; alice's bare key opens it"
    yield success(name, replace(env, stanzas=(stanza,)), comment)


@family
def success_renewed_certificate(keys: Keys) -> Iterator[Vector]:
    name = "success_same_key_two_cert_ids"
    env, alice = recording(keys, name, 1000), keys["alice"]
    wrapped = oaep_wrap(alice, env.file_key, det(f"{name}/renewed oaep", 32))
    renewed = encode_stanza(renewed_cert_id(alice), alice.key_id, wrapped)
    comment = "alice's certificate renewed, same key: two cert_ids, one key_id"
    yield success(name, replace(env, stanzas=(*env.stanzas, renewed)), comment)


@family
def success_rewrapped(keys: Keys) -> Iterator[Vector]:
    name = "success_rewrapped_for_bob_and_carol"
    original = recording(keys, name, 20000, ("alice",))
    new = tuple(
        stanza_for(keys[p], original.file_key, f"{name}/rewrap") for p in ("bob", "carol3072")
    )
    rewrapped = replace(original, stanzas=new)
    check(rewrapped.body() == original.body(), "re-wrapping leaves the body unchanged (§7)")
    comment = "§7: re-wrapped from alice to bob and carol3072; same immutable part and body"
    yield success(name, rewrapped, comment, identity="bob")


# --- header failure -----------------------------------------------------------


def header_failure(name: str, env: Envelope, comment: str, data: bytes | None = None) -> Vector:
    return failure("header failure", name, env, comment, data)


@family
def header_parts(keys: Keys) -> Iterator[Vector]:
    """One envelope part replaced; every other byte (and the MAC) is valid."""
    cases: list[tuple[str, str, Mapping[str, Any]]] = [
        ("header_magic_high_bit_stripped", "magic 89 sent as 09", {"magic": b"\x09" + MAGIC[1:]}),
        ("header_version_0", "version 0", {"version": 0}),
        ("header_version_3", "version 3, otherwise a version 1 header", {"version": 3}),
        ("header_version_99", "version 99, otherwise a version 1 header", {"version": 99}),
        ("header_metadata_length_16", "metadata_length 16 (minimum 17)", {"metadata_length": 16}),
        (
            "header_metadata_trailing_byte",
            "a zero byte after media_type",
            {"metadata_suffix": b"\0"},
        ),
        ("header_zero_recipients", "recipient_count 0", {"stanzas": ()}),
    ]
    for name, comment, parts in cases:
        yield header_failure(name, replace(recording(keys, name), **parts), comment)


@family
def header_metadata_fields(keys: Keys) -> Iterator[Vector]:
    cases: list[tuple[str, str, Meta]] = [
        ("header_media_kind_0", "media_kind 0", {"media_kind": 0}),
        ("header_media_kind_3", "media_kind 3", {"media_kind": 3}),
        ("header_segment_size_65536", "segment_size 65536", {"segment_size": 65536}),
        ("header_recording_id_empty", "recording_id of length 0", {"recording_id": b""}),
        ("header_tenant_empty", "tenant of length 0", {"tenant": b""}),
        ("header_tenant_control_character", "tenant has ESC [2J", {"tenant": b"acme\x1b[2J"}),
        ("header_recording_id_c1_control", "U+009B (C1 CSI)", {"recording_id": b"r\xc2\x9b2J"}),
        ("header_recording_id_del", "recording_id has U+007F", {"recording_id": b"rec\x7f"}),
        ("header_recording_id_invalid_utf8", "bytes C3 28", {"recording_id": b"rec-\xc3\x28"}),
        ("header_recording_id_overlong_utf8", "overlong C0 AF", {"recording_id": b"rec-\xc0\xaf"}),
        ("header_recording_id_surrogate_utf8", "U+D800", {"recording_id": b"rec-\xed\xa0\x80"}),
        ("header_media_type_length_2", "media_type of 2 bytes", {"media_type": b"a/"}),
        ("header_media_type_length_128", "128 bytes", {"media_type": b"x/" + b"x" * 126}),
        ("header_media_type_parameters", "parameter", {"media_type": b"audio/ogg;codecs=opus"}),
        ("header_media_type_no_slash", "no '/'", {"media_type": b"audioogg"}),
        ("header_media_type_empty_subtype", "empty subtype", {"media_type": b"audio/"}),
        ("header_media_type_non_ascii", "non-ASCII", {"media_type": "audio/\u00f6gg".encode()}),
    ]
    for name, comment, meta in cases:
        yield header_failure(name, recording(keys, name, meta=meta), comment)


@family
def header_metadata_length(keys: Keys) -> Iterator[Vector]:
    env = recording(keys, "header_metadata_length_1025")
    pad = bytes(1025 - len(env.metadata.encode()))
    comment = "metadata_length 1025 (limit 1024): the fields, then zero bytes"
    yield header_failure("header_metadata_length_1025", replace(env, metadata_suffix=pad), comment)
    env = recording(keys, "header_metadata_length_one_short")
    short = replace(env, metadata_length=len(env.metadata.encode()) - 1)
    comment = "metadata_length one short: media_type runs past it"
    yield header_failure("header_metadata_length_one_short", short, comment)
    env = recording(keys, "header_magic_crlf_to_lf")
    data = MAGIC[:6] + b"\n" + env.encode()[8:]
    yield header_failure("header_magic_crlf_to_lf", env, "magic's CR LF became LF", data)


@family
def header_recipient_list(keys: Keys) -> Iterator[Vector]:
    env = recording(keys, "header_17_recipients")
    many = replace(env, stanzas=tuple(fake_stanza(i) for i in range(16)) + env.stanzas)
    comment = "recipient_count 17 (limit 16): 16 unknown stanzas, then alice's"
    yield header_failure("header_17_recipients", many, comment)
    env = recording(keys, "header_duplicate_cert_id")
    again = stanza_for(keys["alice"], env.file_key, "header_duplicate_cert_id/again")
    comment = "two stanzas for alice's cert_id, each a valid wrap"
    yield header_failure(
        "header_duplicate_cert_id", replace(env, stanzas=(*env.stanzas, again)), comment
    )


@family
def header_stanza_fields(keys: Keys) -> Iterator[Vector]:
    alice = keys["alice"]
    cases: list[tuple[str, str, int, Edit]] = [
        (
            "header_wrapped_length_1025",
            "alice's wrap, then 769 zero bytes",
            1,
            lambda w: w + bytes(769),
        ),
        ("header_wrapped_length_255", "alice's wrap less its last byte", 1, lambda w: w[:255]),
        ("header_recipient_type_2", "stanza type 2 (only 1 is defined)", 2, lambda w: w),
        ("header_recipient_type_0", "stanza type 0 (only 1 is defined)", 0, lambda w: w),
    ]
    for name, comment, stanza_type, edit in cases:
        env = recording(keys, name)
        wrapped = edit(env.stanzas[0][STANZA_FIXED.size :])
        stanza = encode_stanza(alice.cert_id, alice.key_id, wrapped, stanza_type)
        yield header_failure(name, replace(env, stanzas=(stanza,)), comment)


@family
def header_truncated(keys: Keys) -> Iterator[Vector]:
    """Files that end inside the header: only end of input tells (see README)."""
    env = recording(keys, "header_truncated")
    data, m = env.encode(), len(env.metadata.encode())
    for where, cut, comment in [
        ("empty_file", 0, "a 0-byte file"),
        ("in_magic", 5, "the first 5 bytes of the magic"),
        ("in_metadata", 12 + 10, "cut 10 bytes into the metadata"),
        ("in_stanza", 12 + m + 1 + 40, "cut 40 bytes into the first stanza"),
        ("in_mac", len(env.header()) - 1, "the header less the MAC's last byte"),
    ]:
        yield header_failure(
            f"header_truncated_{where}", env, f"ends in the header: {comment}", data[:cut]
        )


@family
def header_refused_before_eof(keys: Keys) -> Iterator[Vector]:
    """Files that end right after a bad field: it must be refused when read (§2, §5)."""
    base = recording(keys, "header_then_eof")
    m, alice = len(base.metadata.encode()), keys["alice"]
    over = encode_stanza(alice.cert_id, alice.key_id, bytes(1025))
    for name, env, cut in [
        ("magic_wrong", replace(base, magic=b"\x09" + MAGIC[1:]), 8),
        ("version_3", replace(base, version=3), 12),
        ("metadata_length_1025", replace(base, metadata_suffix=bytes(1025 - m)), 12),
        ("zero_recipients", replace(base, stanzas=()), 12 + m + 1),
        (
            "17_recipients",
            replace(base, stanzas=tuple(fake_stanza(i) for i in range(17))),
            12 + m + 1,
        ),
        ("wrapped_length_1025", replace(base, stanzas=(over,)), 12 + m + 1 + STANZA_FIXED.size),
    ]:
        comment = f"file ends right after the bad field ({name.replace('_', ' ')})"
        yield header_failure(f"header_{name}_then_eof", env, comment, env.encode()[:cut])


# --- no match, unwrap failure --------------------------------------------------


@family
def no_match(keys: Keys) -> Iterator[Vector]:
    both = recording(keys, "no_match_alice_and_bob", 100, ("alice", "bob"))
    comment = "stanzas for alice and bob, opened by carol3072"
    yield failure("no match", "no_match_alice_and_bob", both, comment, who="carol3072")
    alice = recording(keys, "no_match_alice_only", 100, ("alice",))
    yield failure("no match", "no_match_alice_only", alice, "for alice, opened by bob", who="bob")


def unwrap_failure(
    keys: Keys, name: str, comment: str, wrap: Callable[[Envelope], bytes]
) -> Vector:
    """Alice's stanza carrying ``wrap(env)``, which her key must not open to a 32-byte key."""
    env, alice = recording(keys, name), keys["alice"]
    wrapped = wrap(env)
    unwrapped = pyca_unwrap(alice, wrapped)
    check(unwrapped is None or len(unwrapped) != 32, f"{name}: alice cannot unwrap a file key")
    stanza = encode_stanza(alice.cert_id, alice.key_id, wrapped)
    return failure("unwrap failure", name, replace(env, stanzas=(stanza,)), comment)


@family
def unwrap_failures(keys: Keys) -> Iterator[Vector]:
    def real(env: Envelope) -> bytes:
        return env.stanzas[0][STANZA_FIXED.size :]

    def for_bob(env: Envelope) -> bytes:
        return oaep_wrap(keys["bob"], env.file_key, det("unwrap_wrapped_for_bob/oaep", 32))

    for name, comment, wrap in [
        ("unwrap_wrapped_key_altered", "a bit of the wrap flipped", lambda e: flip(real(e), 99)),
        ("unwrap_ciphertext_over_modulus", "FF..FF > modulus", lambda e: b"\xff" * 256),
        ("unwrap_wrapped_for_bob", "alice's ids, the file key wrapped for bob", for_bob),
        ("unwrap_wrapped_length_not_modulus", "W 257: 00 || valid wrap", lambda e: b"\0" + real(e)),
    ]:
        yield unwrap_failure(keys, name, comment, wrap)


@family
def unwrap_file_key_length(keys: Keys) -> Iterator[Vector]:
    for n in (31, 33):
        name = f"unwrap_file_key_{n}_bytes"
        env = replace(recording(keys, name), file_key=det(f"{name}/odd key", n))
        wrapped = oaep_wrap(keys["alice"], env.file_key, det(f"{name}/oaep", 32))
        stanza = encode_stanza(keys["alice"].cert_id, keys["alice"].key_id, wrapped)
        comment = f"wraps a {n}-byte file key; MAC and body are made with it"
        yield failure("unwrap failure", name, replace(env, stanzas=(stanza,)), comment)


# --- header auth failure ------------------------------------------------------


@family
def header_auth(keys: Keys) -> Iterator[Vector]:
    """A header byte changed after the MAC was made (the MAC itself, or what it covers)."""
    env = recording(keys, "header_auth_mac_altered")
    data = flip(env.header(), -1) + env.body().encode()
    yield failure("header auth failure", "header_auth_mac_altered", env, "MAC bit flipped", data)
    env = recording(keys, "header_auth_metadata_altered")
    data = replace(env, metadata=later(env)).with_mac_of(env)
    yield failure(
        "header auth failure",
        "header_auth_metadata_altered",
        env,
        "created_ms + 1, MAC unchanged",
        data,
    )
    cases: list[tuple[str, str, Callable[[Stanzas], Stanzas]]] = [
        ("header_auth_recipient_removed", "bob's stanza removed", lambda s: s[:1]),
        (
            "header_auth_recipients_reordered",
            "alice's and bob's stanzas swapped",
            lambda s: s[::-1],
        ),
        (
            "header_auth_other_key_id_altered",
            "a bit of bob's key_id",
            lambda s: (s[0], flip(s[1], 40)),
        ),
    ]
    for name, comment, edit in cases:
        env = recording(keys, name, 100, ("alice", "bob"))
        data = replace(env, stanzas=edit(env.stanzas)).with_mac_of(env)
        yield failure("header auth failure", name, env, f"{comment}, MAC unchanged", data)


def later(env: Envelope) -> Metadata:
    return replace(env.metadata, created_ms=env.metadata.created_ms + 1)


def forged_for_alice(keys: Keys, name: str) -> tuple[Envelope, Envelope]:
    """Bob's stanza wraps the real file key; alice's a forged one, which makes the MAC."""
    real = recording(keys, name, 100, ("alice", "bob"))
    forged_key = det(f"{name}/forged file key", 32)
    alice = stanza_for(keys["alice"], forged_key, f"{name}/forged")
    return real, replace(real, file_key=forged_key, stanzas=(alice, real.stanzas[1]))


@family
def header_auth_commits_to_file_key(keys: Keys) -> Iterator[Vector]:
    real, forged = forged_for_alice(keys, "header_auth_two_file_keys")
    data = forged.header() + real.body().encode()
    comment = "alice's stanza wraps another key, which makes the MAC; opened by bob"
    yield failure("header auth failure", "header_auth_two_file_keys", real, comment, data, "bob")


# --- payload failure ----------------------------------------------------------


@family
def payload_prefix(keys: Keys) -> Iterator[Vector]:
    cases: list[tuple[str, str, Edit]] = [
        ("payload_commitment_altered", "one bit of the commitment flipped", lambda b: flip(b, 30)),
        ("payload_salt_altered", "one bit of the salt flipped", lambda b: flip(b, 0)),
        ("payload_body_missing", "the file ends right after the header", lambda b: b""),
        ("payload_body_shorter_than_prefix", "a 40-byte body (< 56)", lambda b: b[:40]),
        ("payload_body_prefix_only", "salt and commitment, no segment", lambda b: b[:56]),
    ]
    for name, comment, edit in cases:
        env = recording(keys, name, 1000)
        yield payload_failure(name, env, edit(env.body().encode()), b"", comment)


@family
def payload_segments(keys: Keys) -> Iterator[Vector]:
    """2 full segments + 1000 bytes; ``good`` segments authenticate before the bad one."""
    cases: list[tuple[str, str, int, Callable[[list[bytes]], list[bytes]]]] = [
        ("payload_first_segment_altered", "segment 0", 0, lambda s: [flip(s[0], 9), *s[1:]]),
        (
            "payload_second_segment_tag_altered",
            "segment 1's tag",
            1,
            lambda s: [s[0], flip(s[1], -1), s[2]],
        ),
        (
            "payload_final_segment_tag_altered",
            "the final tag",
            2,
            lambda s: [s[0], s[1], flip(s[2], -1)],
        ),
        ("payload_segment_dropped", "segment 1 removed", 1, lambda s: [s[0], s[2]]),
        ("payload_segment_duplicated", "segment 1 repeated", 2, lambda s: [s[0], s[1], s[1], s[2]]),
        ("payload_segments_swapped", "segments 0 and 1 exchanged", 0, lambda s: [s[1], s[0], s[2]]),
    ]
    for name, comment, good, edit in cases:
        env = recording(keys, name, 2 * SEGMENT + 1000)
        body = env.body()
        data = body.prefix + b"".join(edit(list(body.segments)))
        yield payload_failure(name, env, data, env.plaintext[: good * SEGMENT], comment)


MID_SEGMENT_1 = BODY_PREFIX + WIRE_SEGMENT + WIRE_SEGMENT // 2  # §6.3: interrupted


@family
def payload_truncated(keys: Keys) -> Iterator[Vector]:
    """Bodies cut short: ``good`` full segments authenticate before the end."""
    for name, size, good, cut, comment in [
        ("payload_no_final_segment", 2 * SEGMENT + 1000, 2, -(1000 + TAG), "ends after 2 full"),
        ("payload_empty_final_stripped", SEGMENT, 1, -TAG, "16384 bytes less the empty final"),
        ("payload_final_segment_truncated", 2 * SEGMENT + 1000, 2, -1, "final segment less 1 byte"),
        ("payload_empty_final_truncated", SEGMENT, 1, -1, "16384 bytes, empty final cut to 15"),
        (
            "payload_interrupted_mid_segment",
            2 * SEGMENT + 1000,
            1,
            MID_SEGMENT_1,
            "cut in segment 1",
        ),
    ]:
        env = recording(keys, name, size)
        body = env.body().encode()[:cut]
        yield payload_failure(name, env, body, env.plaintext[: good * SEGMENT], comment)


@family
def payload_extended(keys: Keys) -> Iterator[Vector]:
    """16384 + 1000 bytes, then more: only the full segment may be released."""
    cases: list[tuple[str, str, Callable[[BodyCipher], bytes]]] = [
        ("payload_trailing_garbage", "7 bytes after the final segment", lambda c: b"garbage"),
        ("payload_extra_empty_segment", "a valid empty segment 2", lambda c: c.seal(2, b"")),
        (
            "payload_extra_full_segment",
            "a valid full segment 2",
            lambda c: c.seal(2, bytes(SEGMENT)),
        ),
    ]
    for name, comment, extra in cases:
        env = recording(keys, name, SEGMENT + 1000)
        cipher = BodyCipher.derive(body_key(env.file_key), env.salt, env.context())
        data = env.body().encode() + extra(cipher)
        yield payload_failure(name, env, data, env.plaintext[:SEGMENT], comment)


@family
def payload_moved_body(keys: Keys) -> Iterator[Vector]:
    """A body that authenticates, but not under this header."""
    name = "payload_body_of_other_recording"
    env = recording(keys, name, 1000)
    meta = replace(env.metadata, recording_id=b"rec-other")
    other = replace(env, metadata=meta, salt=det(f"{name}/other salt", 24))
    comment = "another recording's body (same file key, other recording_id)"
    yield payload_failure(name, env, other.body().encode(), b"", comment)
    name = "payload_metadata_altered_mac_recomputed"
    env = recording(keys, name, 1000)
    comment = "created_ms + 1 and a valid MAC (made by a key holder): body context differs"
    yield payload_failure(
        name, replace(env, metadata=later(env)), env.body().encode(), b"", comment
    )
    real, forged = forged_for_alice(keys, "payload_two_file_keys")
    comment = "alice's stanza wraps another key, which makes the MAC; opened by alice"
    yield payload_failure("payload_two_file_keys", forged, real.body().encode(), b"", comment)


# --- signatures (FORMAT.md §3.1, §10) ------------------------------------------
# Throwaway signing identities under keys/, made once by new_signing_keys() (ECDSA
# certificate signatures are randomized, so certificates are kept, like the RSA
# ones).  The recordings' own signatures are deterministic: Ed25519, and ECDSA with
# RFC 6979 nonces, so re-running the generator reproduces every byte.

SIGNATURE_DOMAIN = b"recstream/v2 signature\x00"
SEGMENTS_DOMAIN = b"recstream/v2 segments\x00"
TRAILER_MAGIC = b"\x89RSTSIG\n"
ALG_P256, ALG_ED25519 = 1, 2
SIGNED_MS = 1767229200000  # 2026-01-01T01:00:00Z
SIGNING_CA = "signing-ca"
# name -> (key type, issuer, keyUsage digitalSignature?, not_before, not_after)
SIGNERS: dict[str, tuple[str, str, bool, datetime, datetime]] = {
    "signer-p256": ("p256", SIGNING_CA, True, CERT_NOT_BEFORE, datetime(2125, 1, 1, tzinfo=UTC)),
    "signer-ed25519": ("ed25519", SIGNING_CA, True, CERT_NOT_BEFORE,
                       datetime(2125, 1, 1, tzinfo=UTC)),
    "signer-expired": ("p256", SIGNING_CA, True, CERT_NOT_BEFORE, datetime(2026, 6, 1, tzinfo=UTC)),
    "signer-unknown": ("p256", "other-ca", True, CERT_NOT_BEFORE, datetime(2125, 1, 1, tzinfo=UTC)),
    "signer-no-digital-signature": ("p256", SIGNING_CA, False, CERT_NOT_BEFORE,
                                    datetime(2125, 1, 1, tzinfo=UTC)),
}  # fmt: skip
SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _usage(signing: bool, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signing, content_commitment=False,
        key_encipherment=not signing and not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _pem_key(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_signing_keys() -> None:
    """Replace the throwaway signing CA and signers (random: not reproducible)."""
    KEY_DIR.mkdir(exist_ok=True)
    cas: dict[str, tuple[ec.EllipticCurvePrivateKey, x509.Certificate]] = {}
    for ca_name in (SIGNING_CA, "other-ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{ca_name} (throwaway)")])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(CERT_NOT_BEFORE).not_valid_after(datetime(2125, 1, 1, tzinfo=UTC))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(False, ca=True), critical=True)
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        cas[ca_name] = (key, cert)
    (KEY_DIR / f"{SIGNING_CA}.cert.pem").write_bytes(
        cas[SIGNING_CA][1].public_bytes(serialization.Encoding.PEM)
    )
    for name, (kind, issuer, signing, nb, na) in SIGNERS.items():
        key: SigningKey = (
            ec.generate_private_key(ec.SECP256R1()) if kind == "p256"
            else ed25519.Ed25519PrivateKey.generate()
        )  # fmt: skip
        ca_key, ca_cert = cas[issuer]
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} (throwaway)")])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(na)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(signing), critical=True)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        (KEY_DIR / f"{name}.key.pem").write_bytes(_pem_key(key))
        (KEY_DIR / f"{name}.cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class SigningIdentity:
    name: str
    key: SigningKey
    cert_der: bytes

    @property
    def algorithm(self) -> int:
        return ALG_ED25519 if isinstance(self.key, ed25519.Ed25519PrivateKey) else ALG_P256

    def block(self, algorithm: int | None = None) -> bytes:
        """The §3.1 signer block."""
        alg = self.algorithm if algorithm is None else algorithm
        return bytes([alg]) + U16.pack(len(self.cert_der)) + self.cert_der

    def sign(self, message: bytes) -> bytes:
        """64 bytes: Ed25519, or ECDSA P-256/SHA-256 (RFC 6979 nonce) as raw r || s."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(message)
        der = self.key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Cross-check with cryptography's verifier (the raw form re-encoded as DER)."""
        pub = x509.load_der_x509_certificate(self.cert_der).public_key()
        try:
            if isinstance(pub, ed25519.Ed25519PublicKey):
                pub.verify(signature, message)
            else:
                assert isinstance(pub, ec.EllipticCurvePublicKey)
                r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
                pub.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def load_signer(name: str) -> SigningIdentity:
    key = serialization.load_pem_private_key((KEY_DIR / f"{name}.key.pem").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((KEY_DIR / f"{name}.cert.pem").read_bytes())
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise TypeError(f"{name}.key.pem is not a P-256 or Ed25519 key")
    check(cert.public_key() == key.public_key(), f"{name}'s certificate matches its key")
    return SigningIdentity(name, key, cert.public_bytes(serialization.Encoding.DER))


def blake3_256(data: bytes) -> bytes:
    """BLAKE3, plain hashing mode, 32-byte output (FORMAT.md §10.1)."""
    return blake3(data).digest()


def segments_root(body: Body) -> bytes:
    """§10.1: BLAKE3 over the per-segment BLAKE3 digests."""
    return blake3_256(SEGMENTS_DOMAIN + b"".join(blake3_256(s) for s in body.segments))


def signed_message(context: bytes, body: Body, root: bytes, signed_ms: int) -> bytes:
    """§10.2."""
    return (
        SIGNATURE_DOMAIN + U16.pack(len(context)) + context + body.prefix
        + struct.pack(">Q", len(body.segments)) + root + struct.pack(">Q", signed_ms)
    )  # fmt: skip


def trailer(signature: bytes, root: bytes, signed_ms: int) -> bytes:
    """§10.3: signed_ms, segments_root, signature, trailer magic (112 bytes)."""
    return struct.pack(">Q", signed_ms) + root + signature + TRAILER_MAGIC


def signed_recording(
    keys: Keys, label: str, signer: SigningIdentity, size: int = 20000, **parts: Any
) -> Envelope:
    env = recording(keys, label, size)
    return replace(env, version=2, signer_block=signer.block(), **parts)


def sign(env: Envelope, signer: SigningIdentity, signed_ms: int = SIGNED_MS) -> bytes:
    """The trailer a correct signer writes for ``env`` (cross-checked)."""
    body = env.body()
    root = segments_root(body)
    message = signed_message(env.context(), body, root, signed_ms)
    signature = signer.sign(message)
    check(signer.verify(message, signature), f"cryptography verifies {signer.name}'s signature")
    return trailer(signature, root, signed_ms)


def signed_vector(
    name: str,
    env: Envelope,
    data: bytes,
    signature: str,
    comment: str,
    *,
    identity: str = "alice",
    verify_at: int | None = None,
) -> Vector:
    """A signed envelope that decrypts (success), with what `verify` must say."""
    body = env.body().encode()
    check(data.startswith(env.header() + body), f"{name}: header and body as built")
    facts = HeaderFacts.of(env)
    return Vector(name, "success", data, env.plaintext, env.file_key, comment, identity, facts,
                  signature=signature, verify_at=verify_at)  # fmt: skip


@family
def signed(keys: Keys) -> Iterator[Vector]:
    p256, ed = load_signer("signer-p256"), load_signer("signer-ed25519")
    for name, who, size, comment in [
        ("signed_p256", p256, 20000, "ECDSA P-256, 2 segments"),
        ("signed_ed25519", ed, 20000, "Ed25519, 2 segments"),
        ("signed_empty", p256, 0, "ECDSA P-256, an empty recording (one empty segment)"),
        ("signed_16384_bytes", ed, SEGMENT, "Ed25519, a full segment then an empty final one"),
    ]:
        env = signed_recording(keys, name, who, size)
        yield signed_vector(name, env, env.encode() + sign(env, who), "valid", comment)

    name = "signed_wrong_key"
    env = signed_recording(keys, name, p256)
    impostor = SigningIdentity("impostor", ec.derive_private_key(
        int.from_bytes(det(f"{name}/key", 31), "big"), ec.SECP256R1()), p256.cert_der)  # fmt: skip
    body = env.body()
    root = segments_root(body)
    bad_sig = impostor.sign(signed_message(env.context(), body, root, SIGNED_MS))
    check(not p256.verify(signed_message(env.context(), body, root, SIGNED_MS), bad_sig),
          "the impostor's signature does not verify under the certificate")  # fmt: skip
    data = env.encode() + trailer(bad_sig, root, SIGNED_MS)
    yield signed_vector(name, env, data, "invalid",
                        "signed by another P-256 key than the certificate's")  # fmt: skip

    name = "signed_rewrapped_for_bob"
    env = signed_recording(keys, name, p256)
    sig = sign(env, p256)
    rewrapped = replace(env, stanzas=(stanza_for(keys["bob"], env.file_key, f"{name}/rewrap"),))
    check(rewrapped.body() == env.body() and rewrapped.context() == env.context(),
          "re-wrapping keeps the immutable part and the body")  # fmt: skip
    yield signed_vector(name, rewrapped, rewrapped.encode() + sig, "valid",
                        "§7: re-wrapped from alice to bob after signing; still valid",
                        identity="bob")  # fmt: skip

    name = "signed_unknown_signer"
    who = load_signer("signer-unknown")
    env = signed_recording(keys, name, who)
    yield signed_vector(name, env, env.encode() + sign(env, who), "refused_signer",
                        "signer issued by a CA that is not in the CA file")  # fmt: skip

    name = "signed_signer_without_digital_signature"
    who = load_signer("signer-no-digital-signature")
    env = signed_recording(keys, name, who)
    yield signed_vector(
        name,
        env,
        env.encode() + sign(env, who),
        "refused_signer",
        "signer certificate's keyUsage is keyEncipherment, not digitalSignature",
    )

    name = "signed_expired_signer_valid_at_signing"
    who = load_signer("signer-expired")
    env = signed_recording(keys, name, who)
    later_ms = 1798761600000  # 2027-01-01: the certificate expired on 2026-06-01
    yield signed_vector(name, env, env.encode() + sign(env, who), "valid",
                        "signed 2026-01-01 by a certificate that expired 2026-06-01; "
                        "verified 2027-01-01", verify_at=later_ms)  # fmt: skip
    name = "signed_expired_signer_signed_after_expiry"
    env = signed_recording(keys, name, who)
    yield signed_vector(
        name,
        env,
        env.encode() + sign(env, who, later_ms),
        "refused_signer",
        "signed 2027-01-01 by a certificate that expired 2026-06-01",
    )

    name = "signed_algorithm_mismatch"
    env = replace(signed_recording(keys, name, p256), signer_block=p256.block(ALG_ED25519))
    yield signed_vector(
        name,
        env,
        env.encode() + sign(env, p256),
        "invalid",
        "the header says Ed25519 but the certificate's key is P-256",
    )

    name = "signed_trailer_root_altered"
    env = signed_recording(keys, name, p256)
    data = flip(env.encode() + sign(env, p256), -TRAILER_BYTES + 8)
    yield signed_vector(
        name,
        env,
        data,
        "invalid",
        "segments_root in the trailer altered (the signature is over the body)",
    )


TRAILER_BYTES = 8 + 32 + 64 + 8


def signed_failure(
    expect: str,
    name: str,
    env: Envelope,
    data: bytes,
    released: bytes,
    comment: str,
    header: Envelope | None = None,
) -> Vector:
    """A signed envelope that fails to decrypt; a decoder takes the last 112 bytes as the
    trailer (§10.3), so Cobblestone sees what lies between header and those bytes."""
    head = header or env
    body = data[len(head.header()) : len(data) - TRAILER_BYTES]
    got = released_by_cobblestone(body_key(env.file_key), head.context(), body)
    check(got == released, f"{name}: Cobblestone256 releases exactly the expected prefix")
    return Vector(name, expect, data, released, env.file_key, comment, signature="invalid")


@family
def signed_tampered(keys: Keys) -> Iterator[Vector]:
    p256 = load_signer("signer-p256")
    size = SEGMENT + 1000
    name = "signed_body_byte_altered"
    env = signed_recording(keys, name, p256, size)
    data = env.encode() + sign(env, p256)
    at = len(env.header()) + BODY_PREFIX + WIRE_SEGMENT + 10  # inside the final segment
    yield signed_failure(
        "payload failure",
        name,
        env,
        flip(data, at),
        env.plaintext[:SEGMENT],
        "a ciphertext byte of the final segment flipped after signing",
    )

    name = "signed_header_field_changed"
    env = signed_recording(keys, name, p256, size)
    sig = sign(env, p256)
    changed = replace(env, metadata=later(env))
    data = changed.header() + env.body().encode() + sig
    yield signed_failure(
        "payload failure",
        name,
        env,
        data,
        b"",
        "created_ms + 1, MAC recomputed by a key holder, body and trailer kept",
        header=changed,
    )

    name = "signed_signature_truncated"
    env = signed_recording(keys, name, p256, size)
    data = (env.encode() + sign(env, p256))[:-1]
    yield signed_failure(
        "payload failure",
        name,
        env,
        data,
        env.plaintext[:SEGMENT],
        "the last byte of the trailer is missing",
    )

    name = "signed_trailer_missing"
    env = signed_recording(keys, name, p256, size)
    yield signed_failure(
        "payload failure",
        name,
        env,
        env.encode(),
        env.plaintext[:SEGMENT],
        "an interrupted signed recording: no trailer after the final segment",
    )


@family
def header_signer_block(keys: Keys) -> Iterator[Vector]:
    p256 = load_signer("signer-p256")
    der = p256.cert_der
    for name, block, comment in [
        ("header_signer_algorithm_3", bytes([3]) + U16.pack(len(der)) + der, "algorithm 3"),
        ("header_signer_cert_length_0", bytes([1]) + U16.pack(0), "no certificate"),
        ("header_signer_cert_length_4097", bytes([1]) + U16.pack(4097) + bytes(4097),
         "cert_length 4097 (limit 4096)"),
    ]:  # fmt: skip
        env = replace(recording(keys, name), version=2, signer_block=block)
        yield header_failure(name, env, comment)


# --- output -------------------------------------------------------------------


def build_all() -> list[Vector]:
    keys = load_keys()
    vectors = [v for fam in FAMILIES for v in fam(keys)]
    names = [v.name for v in vectors]
    check(len(set(names)) == len(names), "vector names are unique")
    return vectors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the files on disk")
    parser.add_argument("--new-keys", action="store_true", help="replace the throwaway keys first")
    args = parser.parse_args(argv)
    if args.new_keys:
        new_keys()
    if args.new_keys or not (KEY_DIR / "signing-ca.cert.pem").exists():
        new_signing_keys()
    wanted = {f"{v.name}.rsv": v.encode() for v in build_all()}
    on_disk = {p.name: p.read_bytes() for p in HERE.glob("*.rsv")}
    stale = sorted(set(on_disk) - set(wanted))
    differ = sorted(n for n, data in wanted.items() if on_disk.get(n) != data)
    if args.check:
        for n in differ:
            print(f"differs or missing: {n}")
        for n in stale:
            print(f"not generated: {n}")
        return 1 if differ or stale else 0
    for n in stale:
        (HERE / n).unlink()
    for n in differ:
        (HERE / n).write_bytes(wanted[n])
    total = sum(len(d) for d in wanted.values())
    print(f"{len(wanted)} vectors, {total} bytes; {len(differ)} written, {len(stale)} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

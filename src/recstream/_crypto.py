"""The only importer of ``cryptography.hazmat``, ``cryptography.cobblestone`` and ``blake3``.

Primitives for docs/FORMAT.md §4, §6 and §10: the key schedule, the header MAC,
RSA-OAEP wrap/unwrap, Cobblestone-256 streaming, single-segment AES-GCM for
random access, signatures, and §10.1's BLAKE3 segment digests.  pyca exceptions
are caught here and only here, and turned into :mod:`recstream.errors` types
that never say why a tag or an unwrap failed.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from blake3 import blake3
from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor
from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as pyca_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

if TYPE_CHECKING:  # 40 ms of import: only where a certificate is parsed (below)
    from cryptography import x509

from recstream.errors import (
    CommitmentError,
    KeyLoadError,
    KeyPolicyError,
    KeyUnwrapError,
    SegmentAuthError,
)
from recstream.format import (
    BODY_PREFIX_BYTES,
    COMMITMENT_BYTES,
    FILE_KEY_BYTES,
    SALT_BYTES,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    SEGMENTS_DOMAIN,
    SIGNATURE_BYTES,
    TAG_BYTES,
    Buffer,
    SignatureAlgorithm,
)

__all__ = [
    "BodyDecryptor",
    "BodyKeys",
    "Cobblestone256Encryptor",
    "SegmentCipher",
    "SegmentDigester",
    "SigningPrivateKey",
    "TagMismatch",
    "certificate_der",
    "csr_signature_valid",
    "derive_body_keys",
    "digest_run",
    "header_mac",
    "is_directly_issued_by",
    "load_signer_certificate",
    "load_signing_key",
    "new_file_key",
    "new_salt",
    "oaep_decrypt",
    "public_key_matches",
    "segment_digest",
    "sign_message",
    "signature_algorithm_of",
    "signature_hash",
    "unwrap_file_key",
    "verify_header_mac",
    "verify_message",
    "wrap_file_key",
]

_MAC_INFO: Final = b"recstream/v1 header mac"
_BODY_INFO: Final = b"recstream/v1 body"
# C2SP chunked-encryption §"Key derivation" for AEAD_AES_256_GCM.
_COBBLESTONE_INFO: Final = b"c2sp.org/chunked-encryption@v1+AEAD_AES_256_GCM\x00"
_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def new_file_key() -> bytes:
    """A fresh 256-bit file key from the OS CSPRNG."""
    return os.urandom(FILE_KEY_BYTES)


def _hkdf(file_key: Buffer, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(bytes(file_key))


def mac_key(file_key: Buffer) -> bytes:
    """§6 ``mac_key``."""
    return _hkdf(file_key, _MAC_INFO)


def body_key(file_key: Buffer) -> bytes:
    """§6 ``body_key``: Cobblestone's input key."""
    return _hkdf(file_key, _BODY_INFO)


def header_mac(file_key: Buffer, authenticated: Buffer) -> bytes:
    """§6 ``header_mac`` over ``authenticated`` (the header before the MAC)."""
    h = pyca_hmac.HMAC(mac_key(file_key), hashes.SHA256())
    h.update(bytes(authenticated))
    return h.finalize()


def verify_header_mac(file_key: Buffer, authenticated: Buffer, mac: bytes) -> bool:
    """Constant-time check of ``header_mac``."""
    return hmac.compare_digest(header_mac(file_key, authenticated), mac)


def wrap_file_key(public_key: rsa.RSAPublicKey, file_key: Buffer) -> bytes:
    """RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) encryption of the file key."""
    return public_key.encrypt(bytes(file_key), _OAEP)


def oaep_decrypt(private_key: rsa.RSAPrivateKey, ciphertext: bytes, cert_id: str) -> bytes:
    """RSA-OAEP (SHA-256, MGF1-SHA-256, empty label) decryption.

    Raises:
        KeyUnwrapError: decryption failed (deliberately without detail: no oracle).
    """
    try:
        return private_key.decrypt(ciphertext, _OAEP)
    except ValueError as exc:
        raise KeyUnwrapError(cert_id) from exc


def unwrap_file_key(private_key: rsa.RSAPrivateKey, wrapped: bytes, cert_id: str) -> bytes:
    """Unwrap a file key.

    Raises:
        KeyUnwrapError: OAEP failed or the result is not a 32-byte key (no detail).
    """
    key = oaep_decrypt(private_key, wrapped, cert_id)
    if len(key) != FILE_KEY_BYTES:
        raise KeyUnwrapError(cert_id)
    return key


class BodyKeys:
    """Cobblestone's derived ``key``, ``base_nonce`` and ``commitment`` (§6.1)."""

    __slots__ = ("aead_key", "base_nonce", "commitment")

    def __init__(self, aead_key: bytes, base_nonce: bytes, commitment: bytes) -> None:
        self.aead_key = aead_key
        self.base_nonce = base_nonce
        self.commitment = commitment


def derive_body_keys(input_key: Buffer, salt: Buffer, context: Buffer) -> BodyKeys:
    """HKDF-Expand-SHA-512 of C2SP chunked-encryption (for random access)."""
    if len(salt) != SALT_BYTES:
        msg = f"salt must be {SALT_BYTES} bytes"
        raise ValueError(msg)
    out = HKDFExpand(
        algorithm=hashes.SHA512(),
        length=32 + 12 + COMMITMENT_BYTES,
        info=_COBBLESTONE_INFO + bytes(salt) + bytes(context),
    ).derive(bytes(input_key))
    return BodyKeys(out[:32], out[32:44], out[44:])


class SegmentCipher:
    """Single-segment AES-256-GCM of a Cobblestone body, for random access.

    Built from the body prefix (salt and commitment); the commitment is checked
    in constant time before any segment can be opened (C2SP requires it).
    """

    __slots__ = ("_aead", "_base")

    def __init__(self, input_key: Buffer, body_prefix: Buffer, context: Buffer) -> None:
        """Raises IntegrityError: the commitment does not match (wrong key or context)."""
        if len(body_prefix) != BODY_PREFIX_BYTES:
            msg = f"body prefix must be {BODY_PREFIX_BYTES} bytes"
            raise ValueError(msg)
        prefix = bytes(body_prefix)
        keys = derive_body_keys(input_key, prefix[:SALT_BYTES], context)
        if not hmac.compare_digest(keys.commitment, prefix[SALT_BYTES:]):
            raise CommitmentError
        self._set(keys.aead_key, keys.base_nonce)

    @classmethod
    def from_raw(cls, aead_key: bytes, base_nonce: bytes) -> SegmentCipher:
        """C2SP "raw mode": the derived key and base nonce given directly."""
        obj = cls.__new__(cls)
        obj._set(aead_key, base_nonce)
        return obj

    def _set(self, aead_key: bytes, base_nonce: bytes) -> None:
        if len(aead_key) != 32 or len(base_nonce) != 12:
            msg = "AES-256-GCM needs a 32-byte key and a 12-byte base nonce"
            raise ValueError(msg)
        self._aead = AESGCM(aead_key)
        self._base = int.from_bytes(base_nonce, "big")

    def nonce(self, index: int) -> bytes:
        """§6.1: base_nonce XOR index, as a 96-bit big-endian integer."""
        return (self._base ^ index).to_bytes(12, "big")

    def open_into(self, index: int, segment: Buffer, out: Buffer) -> int:
        """Decrypt segment ``index`` into ``out``; return the plaintext length.

        Raises:
            SegmentAuthError: the segment does not authenticate at this index.
        """
        n = len(segment) - TAG_BYTES
        if n < 0:
            raise SegmentAuthError(index)
        try:
            # decrypt_into wants an output of exactly the plaintext length.
            return self._aead.decrypt_into(self.nonce(index), segment, None, memoryview(out)[:n])
        except InvalidTag as exc:
            raise SegmentAuthError(index) from exc

    def seal_into(self, index: int, plaintext: Buffer, out: Buffer) -> int:
        """Encrypt one segment (the final one of a body, or for tests and vectors)."""
        n = len(plaintext) + TAG_BYTES
        return self._aead.encrypt_into(self.nonce(index), plaintext, None, memoryview(out)[:n])

    def seal_run(self, first: int, plaintext: memoryview, out: memoryview) -> int:
        """Encrypt whole segments ``first, first + 1, ...``; return the bytes written.

        ``plaintext`` holds whole segments only (the final, short segment goes
        through :meth:`seal_into`).  pyca releases the GIL inside each call of
        2 KiB or more, so runs given to different threads use different cores.
        """
        seal, base, step = self._aead.encrypt_into, self._base, SEGMENT_SIZE
        wire = step + TAG_BYTES
        count = len(plaintext) // step
        for i in range(count):
            nonce = (base ^ (first + i)).to_bytes(12, "big")
            at, to = i * step, i * wire
            seal(nonce, plaintext[at : at + step], None, out[to : to + wire])
        return count * wire

    def open_run(self, first: int, segments: memoryview, out: memoryview) -> int:
        """Decrypt whole wire segments ``first, first + 1, ...``; return the plaintext length.

        Raises:
            SegmentAuthError: the first segment of the run that does not
                authenticate (its index); ``out`` is then zeroed, so no
                unauthenticated plaintext is left in it.
        """
        open_, base, step = self._aead.decrypt_into, self._base, SEGMENT_SIZE
        wire = step + TAG_BYTES
        count = len(segments) // wire
        for i in range(count):
            nonce = (base ^ (first + i)).to_bytes(12, "big")
            try:
                at, to = i * wire, i * step
                open_(nonce, segments[at : at + wire], None, out[to : to + step])
            except InvalidTag as exc:
                out[: count * step] = bytes(count * step)
                raise SegmentAuthError(first + i) from exc
        return count * step


def new_salt() -> bytes:
    """A fresh Cobblestone salt (C2SP chunked-encryption: random per message)."""
    return os.urandom(SALT_BYTES)


def new_segment_sealer(input_key: Buffer, context: Buffer) -> tuple[bytes, SegmentCipher]:
    """A fresh body prefix (random salt, commitment) and the cipher for it, for writers that
    seal segments out of order (the seekable muxer). Each index must be sealed only once."""
    salt = os.urandom(SALT_BYTES)
    keys = derive_body_keys(input_key, salt, context)
    return salt + keys.commitment, SegmentCipher.from_raw(keys.aead_key, keys.base_nonce)


# --- keystore primitives (docs/KEYSTORE.md §3) ------------------------------
# Appended for the keystore; the envelope code above does not use them.


def argon2id(
    password: bytes, salt: bytes, *, memory_kib: int, iterations: int, lanes: int
) -> bytes:
    """Argon2id (RFC 9106, version 0x13) of ``password``: a 32-byte key.

    The caller checks the cost parameters against its caps *before* calling:
    this function spends whatever memory and time it is asked to.
    """
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    kdf = Argon2id(salt=salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory_kib)
    return kdf.derive(password)


def hkdf_sha256(key: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA-256 (RFC 5869) with an empty salt: independent subkeys of one key."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(key)


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encryption: ciphertext followed by the 16-byte tag."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes | None:
    """AES-256-GCM decryption; None when it does not authenticate (no detail given)."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        return None


class TagMismatch(Exception):
    """A Cobblestone body failed authentication (pyca's ``InvalidTag``, caught here)."""


class BodyDecryptor:
    """Cobblestone-256 decryption whose tag failures are :class:`TagMismatch`.

    A thin wrapper so that pyca's exception is caught in this module only; the
    stream layer decides what the failure means (which segment, truncation).
    """

    __slots__ = ("_dec",)

    def __init__(self, input_key: bytes, context: bytes) -> None:
        self._dec = Cobblestone256Decryptor(input_key, context)

    def update_into(self, data: Buffer, out: Buffer) -> int:
        try:
            return self._dec.update_into(data, out)
        except InvalidTag:
            raise TagMismatch from None

    def update(self, data: Buffer) -> bytes:
        try:
            return self._dec.update(data)
        except InvalidTag:
            raise TagMismatch from None

    def finalize(self) -> bytes:
        try:
            return self._dec.finalize()
        except InvalidTag:
            raise TagMismatch from None


def is_directly_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s key signed ``cert`` and names match (no chain building)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def signature_hash(cert: x509.Certificate) -> hashes.HashAlgorithm | None:
    """The certificate's signature hash, or None when pyca does not support it."""
    try:
        return cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None


def csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool | None:
    """Whether a CSR's self-signature verifies; None when its algorithm is unsupported."""
    try:
        return csr.is_signature_valid
    except UnsupportedAlgorithm:
        return None


# --- signatures (docs/FORMAT.md §10) ----------------------------------------
# ECDSA P-256/SHA-256 with raw r || s, and Ed25519; SHA-256 segment digests.

SigningPrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def signature_algorithm_of(key: object) -> SignatureAlgorithm | None:
    """The §3.1 algorithm for a (public or private) key, or None if it cannot sign recordings."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return SignatureAlgorithm.ECDSA_P256_SHA256 if key.curve.name == "secp256r1" else None
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return SignatureAlgorithm.ED25519
    return None


def load_private_key_bytes(
    data: bytes, password: bytes | None, *, what: str, option: str, forms: str
) -> PrivateKeyTypes:
    """A PEM or DER private key of any type, with the messages every key loader gives.

    Args:
        what: the key's name in messages ("private key", "signing key").
        option: the command-line option that gives its password.
        forms: the traditional format named beside PKCS#8 ("PKCS#1", "SEC 1").

    Raises:
        KeyLoadError: unreadable, encrypted without a password, or a wrong password.
    """
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        # pyca's RSA validation (OpenSSL's RSA_check_key: primality of p and q) is
        # 0.14 s of an RSA-3072 ``decrypt``'s 0.29 s.  Skipped, and replaced by the
        # arithmetic checks of :func:`_check_rsa_numbers`; see there for why that is safe.
        key = loader(data, password=password, unsafe_skip_rsa_key_validation=True)
    except TypeError as exc:
        if password is None:
            msg = f"the {what} is encrypted; give its password ({option})"
        else:
            msg = f"a password was given but the {what} is not encrypted"
        raise KeyLoadError(msg) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        if password is not None and b"ENCRYPTED" in data:
            msg = f"could not decrypt the {what}: wrong password"
        else:
            msg = f"not a readable private key (expected PEM or DER, PKCS#8 or {forms})"
        raise KeyLoadError(msg) from exc
    if isinstance(key, rsa.RSAPrivateKey):
        _check_rsa_numbers(key, what)
    return key


# Each prime of an RSA modulus of n bits has n/2 bits (FIPS 186-5 A.1.3: within
# 2^-100 of sqrt(2) * 2^(n/2 - 1) and 2^(n/2)); a little slack for keys made elsewhere.
_PRIME_SLACK_BITS: Final = 8


def _check_rsa_numbers(key: rsa.RSAPrivateKey, what: str) -> None:
    """Cheap arithmetic consistency of an RSA private key's numbers (tens of microseconds).

    What OpenSSL's ``RSA_check_key`` checks, less the primality tests of p and q
    (Miller-Rabin on two 1,536-bit numbers: 0.14 s of every RSA-3072 ``decrypt``):
    n = p * q with p and q of about half n's size, 1 < e < n odd, e * d = 1 mod
    (p - 1) and (q - 1), dmp1 = d mod (p - 1), dmq1 = d mod (q - 1), q * iqmp = 1
    mod p.  A key damaged on disk or in a keystore (a flipped bit, a truncated or
    swapped number) fails one of them and is refused here, with a clear message,
    instead of decrypting nothing but :class:`KeyUnwrapError` later.

    Why skipping the primality test is safe here: these are the user's own private
    keys (key files and the keystore, never a key someone else hands us), so a
    composite "prime" is not an attack on anyone but the key's owner, and such a
    key can only make its own unwraps fail (OAEP's check refuses the garbage).  A
    damaged CRT value cannot leak the key through a faulty result either (the
    Bellcore attack): OpenSSL checks every CRT private-key operation by raising
    the result to e mod n, and on a mismatch recomputes it with d, without CRT
    (``rsa_ossl_mod_exp`` in crypto/rsa/rsa_ossl.c, the block after ``tail:``
    that compares ``vrfy`` with the input; openssl/openssl at 0223dfcf).

    Raises:
        KeyLoadError: the numbers are inconsistent (a damaged key).
    """
    priv = key.private_numbers()
    pub = priv.public_numbers
    n, e, p, q, d = pub.n, pub.e, priv.p, priv.q, priv.d
    half = n.bit_length() // 2
    problem = None
    if not (1 < p < n and 1 < q < n) or p == q or p * q != n:
        problem = "n is not the product of p and q"
    elif not all(abs(x.bit_length() - half) <= _PRIME_SLACK_BITS for x in (p, q)):
        problem = "p and q are not of half the modulus's size"
    elif not (2 < e < n and e % 2 == 1) or not (0 < d < n):
        problem = "the exponents are out of range"
    elif (e * d) % (p - 1) != 1 or (e * d) % (q - 1) != 1:
        problem = "d is not the inverse of e"
    elif priv.dmp1 != d % (p - 1) or priv.dmq1 != d % (q - 1):
        problem = "the CRT exponents do not match d"
    elif not (0 < priv.iqmp < p) or (q * priv.iqmp) % p != 1:
        problem = "the CRT coefficient is not the inverse of q mod p"
    if problem is not None:
        msg = f"the {what} is damaged: its RSA numbers are inconsistent ({problem})"
        raise KeyLoadError(msg)


def load_signing_key(data: bytes, password: bytes | None) -> SigningPrivateKey:
    """Load a PEM or DER (PKCS#8 or SEC 1) ECDSA P-256 or Ed25519 private key.

    Raises:
        KeyLoadError: unreadable, encrypted without a password, or a wrong password.
        KeyPolicyError: another key type (RSA, another curve).
    """
    key = load_private_key_bytes(
        data, password, what="signing key", option="--sign-key-password-file", forms="SEC 1"
    )
    if signature_algorithm_of(key) is None or not isinstance(
        key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    ):
        kind = type(key).__name__.removeprefix("_").replace("PrivateKey", "")
        msg = f"a signing key must be ECDSA P-256 or Ed25519, not {kind}"
        raise KeyPolicyError(msg)
    return key


def public_key_matches(private_key: SigningPrivateKey, public_key: object) -> bool:
    """True when ``public_key`` (a certificate's) is ``private_key``'s."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = private_key.public_key().public_bytes(serialization.Encoding.DER, fmt)
    if not isinstance(public_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return False
    return hmac.compare_digest(mine, public_key.public_bytes(serialization.Encoding.DER, fmt))


def sign_message(key: SigningPrivateKey, message: bytes) -> bytes:
    """A 64-byte signature: ECDSA P-256/SHA-256 as raw r || s, or Ed25519 (§10)."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify_message(
    public_key: object, algorithm: SignatureAlgorithm, message: bytes, signature: bytes
) -> bool:
    """Whether ``signature`` over ``message`` verifies (False for a key of the wrong type).

    ECDSA: r and s must each be in 1..n-1 (the raw encoding has one form; pyca
    rejects out-of-range values); no detail is given on failure.
    """
    if len(signature) != SIGNATURE_BYTES or signature_algorithm_of(public_key) is not algorithm:
        return False
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
            return True
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            return False
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def segment_digest(wire: Buffer) -> bytes:
    """§10.1 ``d_i``: BLAKE3 (32 bytes) of one wire segment (ciphertext and tag)."""
    return blake3(wire).digest()


DIGEST_BYTES: Final = 32


def digest_run(_first: int, wire: memoryview, out: memoryview) -> int:
    """§10.1 digests of whole wire segments into ``out`` (32 bytes each); bytes written.

    The blake3 binding releases the GIL while it hashes, so runs given to
    different threads (:meth:`recstream.parallel.SegmentPool.digest`) use different cores.
    """
    step = SEGMENT_WIRE_SIZE
    count = len(wire) // step
    for i in range(count):
        at = i * DIGEST_BYTES
        out[at : at + DIGEST_BYTES] = blake3(wire[i * step : (i + 1) * step]).digest()
    return count * DIGEST_BYTES


DigestRuns = Callable[[memoryview, memoryview], int]
"""Digests whole wire segments into an output (32 bytes each), e.g. on a thread pool."""


class SegmentDigester:
    """§10.1 ``segments_root`` over body bytes fed in order, in O(1) memory.

    Feed the body (prefix first) with :meth:`update`, in any chunking; the
    prefix is kept, each full wire segment is digested as it completes, and at
    most one partial segment is held.  :meth:`finish` digests the rest as the
    final segment.  With ``keep=True`` the per-segment digests are kept too
    (32 bytes per 16 KiB segment), for a verifier that checks Range reads later.
    """

    __slots__ = ("_carry", "_keep", "_prefix", "_root", "_runs", "digests", "segments")

    def __init__(self, *, keep: bool = False, runs: DigestRuns | None = None) -> None:
        self._prefix = bytearray()
        self._carry = bytearray()
        self._root = blake3(SEGMENTS_DOMAIN)
        self._keep = keep
        self._runs = runs  # digests whole segments elsewhere (a thread pool), or None
        self.digests = bytearray()
        self.segments = 0

    @property
    def prefix(self) -> bytes:
        return bytes(self._prefix)

    def update(self, data: Buffer) -> None:
        view = memoryview(data).cast("B")
        pos = 0
        if len(self._prefix) < BODY_PREFIX_BYTES:
            pos = min(BODY_PREFIX_BYTES - len(self._prefix), len(view))
            self._prefix += view[:pos]
        if self._carry:
            take = min(SEGMENT_WIRE_SIZE - len(self._carry), len(view) - pos)
            self._carry += view[pos : pos + take]
            pos += take
            if len(self._carry) < SEGMENT_WIRE_SIZE:
                return
            self._add(blake3(self._carry).digest())
            self._carry.clear()
        count = (len(view) - pos) // SEGMENT_WIRE_SIZE
        if count:
            block = view[pos : pos + count * SEGMENT_WIRE_SIZE]
            out = bytearray(count * DIGEST_BYTES)
            with memoryview(out) as into:
                (self._runs or _digest_all)(block, into)
            self._root.update(out)
            if self._keep:
                self.digests += out
            self.segments += count
            pos += count * SEGMENT_WIRE_SIZE
        self._carry += view[pos:]

    def add_digest(self, digest: bytes) -> None:
        """Add the next segment's digest directly (writers that digest segments themselves)."""
        self._add(digest)

    def add_digests(self, digests: Buffer) -> None:
        """Add the next whole segments' digests (32 bytes each), made elsewhere.

        Raises:
            ValueError: not whole digests, or fed before the prefix is complete or
                while a partial segment is held (they would be out of order).
        """
        block = memoryview(digests).cast("B")
        if len(block) % DIGEST_BYTES or self._carry or len(self._prefix) < BODY_PREFIX_BYTES:
            msg = "segment digests are added whole, after the prefix, between whole segments"
            raise ValueError(msg)
        self._root.update(block)
        if self._keep:
            self.digests += block
        self.segments += len(block) // DIGEST_BYTES

    def _add(self, digest: bytes) -> None:
        self._root.update(digest)
        if self._keep:
            self.digests += digest
        self.segments += 1

    def finish(self) -> bytes:
        """Digest the held partial segment as the final one; return ``segments_root``."""
        self._add(blake3(self._carry).digest())
        self._carry.clear()
        return self._root.digest()

    def root(self) -> bytes:
        """``segments_root`` of the digests added so far (writers that add every digest)."""
        return self._root.digest()


def _digest_all(wire: memoryview, out: memoryview) -> int:
    return digest_run(0, wire, out)


def load_signer_certificate(der: bytes) -> x509.Certificate | None:
    """A header's signer certificate, every field verify uses parsed now; None if malformed.

    pyca parses lazily, so a damaged subject, key, version or extension would
    otherwise surface as an exception wherever it is first used.
    """
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.version, cert.subject, cert.issuer, cert.public_key(), list(cert.extensions))
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc)
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.InvalidVersion,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
    ):
        return None
    return cert


def certificate_der(cert: x509.Certificate) -> bytes:
    """A certificate's DER encoding."""
    return cert.public_bytes(serialization.Encoding.DER)

"""Recipients and key rings: the public and private halves of a recording certificate.

A :class:`Recipient` wraps file keys for a certificate's public key; a
:class:`KeyRing` finds the private key for a recipient stanza.  They live in the
key layer (beside the certificates they come from) so that the keystore can
hand out recipients and act as a key ring without importing the envelope
recipes; :mod:`recstream.envelope` re-exports them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives.asymmetric import rsa

from recstream import _crypto
from recstream.format import Buffer, RecipientStanza
from recstream.pki.certs import certificate_id, check_recording_key, public_key_id

if TYPE_CHECKING:  # x509 is 40 ms of import that `decrypt --key` never needs
    from cryptography import x509

__all__ = ["Identity", "IdentitySet", "KeyRing", "Recipient"]


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recording certificate's public key, ready to wrap file keys for."""

    cert_id: bytes
    key_id: bytes
    public_key: rsa.RSAPublicKey

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> Recipient:
        """Raises KeyPolicyError: the certificate's key is not RSA of 2048+ bits."""
        key = check_recording_key(cert.public_key())
        return cls(bytes.fromhex(certificate_id(cert)), public_key_id(key), key)

    @property
    def cert_id_hex(self) -> str:
        return self.cert_id.hex()

    def stanza(self, file_key: Buffer) -> RecipientStanza:
        wrapped = _crypto.wrap_file_key(self.public_key, file_key)
        return RecipientStanza(self.cert_id, self.key_id, wrapped)


class KeyRing(Protocol):
    """Anything that can find the private key for a recipient stanza."""

    def private_key_for(self, stanza: RecipientStanza) -> rsa.RSAPrivateKey | None:
        """The private key for ``stanza``, or None if not held."""
        ...

    def describe(self) -> Sequence[str]:
        """Public key IDs (hex) of the keys held, for error messages."""
        ...


@dataclass(frozen=True, slots=True)
class Identity:
    """A private key (with its certificate ID when known)."""

    private_key: rsa.RSAPrivateKey
    key_id: bytes
    cert_id: bytes | None = None

    @classmethod
    def from_private_key(
        cls, key: rsa.RSAPrivateKey, cert: x509.Certificate | None = None
    ) -> Identity:
        check_recording_key(key.public_key(), "private key")
        cid = bytes.fromhex(certificate_id(cert)) if cert is not None else None
        return cls(key, public_key_id(key.public_key()), cid)


class IdentitySet:
    """A :class:`KeyRing` over explicit identities, matched by key ID or cert ID."""

    def __init__(self, identities: Iterable[Identity]) -> None:
        self._ids = tuple(identities)

    def private_key_for(self, stanza: RecipientStanza) -> rsa.RSAPrivateKey | None:
        # FORMAT.md §4: the certificate named by cert_id decides, else the key named
        # by key_id; never the order the identities were given in.
        for ident in self._ids:
            if ident.cert_id == stanza.cert_id:
                return ident.private_key
        for ident in self._ids:
            if ident.key_id == stanza.key_id:
                return ident.private_key
        return None

    def describe(self) -> Sequence[str]:
        return [i.key_id.hex() for i in self._ids]

"""Recording nodes' signing identities, kept in the keystore beside the tenants' certificates.

A *node* is one recorder (a media server, a SIPREC server, a streams server) with
its own signing key and signing certificate (:mod:`recstream.pki.signing`); what it
records, it signs (issue 16).  Per node name there is at most one **active**
identity (new recordings are signed with it) and any number of **retired** ones:
adding a new identity for a node retires the previous one, which is kept, so the
keystore remains the record of every key a node signed with (a signature itself
carries its certificate, so verification needs only the CA file).  ``remove``
deletes one identity for good, e.g. a compromised key; the active one only when
asked explicitly.

Private keys are sealed like recording keys (AES-256-GCM under the keystore's
entry key) but with their own associated data, ``"recstream keystore v2 node
signing key " || cert_id``, so a node key can never be passed off as a recording
key or the reverse (docs/KEYSTORE.md §4.1).  ``now`` is always an argument.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recstream import _crypto
from recstream.errors import (
    CertificateKeyMismatchError,
    CertificateNotInKeystoreError,
    KeystoreEntryError,
    KeystoreTamperedError,
    RecstreamError,
)
from recstream.keystore._container import NONCE_BYTES, Unlocked
from recstream.keystore._ids import id_prefix
from recstream.pki.certs import certificate_id, name_str
from recstream.pki.dates import fmt_time
from recstream.pki.signing import (
    SigningPrivateKey,
    check_signing_certificate,
    describe_key_type,
    load_signing_key,
)

__all__ = [
    "MAX_NODES",
    "NodeIdentity",
    "NodeState",
    "Nodes",
    "check_node_name",
]

MAX_NODES: Final = 10_000  # identities, all nodes together
NODE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEY_AAD: Final = b"recstream keystore v2 node signing key "


class NodeState(StrEnum):
    ACTIVE = "active"  # new recordings are signed with it
    RETIRED = "retired"  # replaced by a newer identity, or retired by hand; kept


def check_node_name(name: str) -> str:
    """A node name: 1 to 64 of letters, digits, ``.``, ``_``, ``-``, starting alphanumeric.

    Raises:
        ValueError: anything else.
    """
    if not NODE_NAME.fullmatch(name):
        msg = (
            f"node name {name!r} must be 1 to 64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (e.g. recorder-01)"
        )
        raise ValueError(msg)
    return name


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """One signing identity of a node: its certificate and its sealed private key."""

    node: str
    certificate: x509.Certificate
    cert_id: str
    state: NodeState
    added: datetime
    retired: datetime | None
    key_nonce: bytes
    key_blob: bytes

    @property
    def subject(self) -> str:
        return name_str(self.certificate.subject)

    @property
    def key_type(self) -> str:
        return describe_key_type(check_signing_certificate(self.certificate))

    def status(self, now: datetime) -> str:
        """``active``, ``retired``, or ``expired`` (a certificate past notAfter)."""
        return "expired" if now > self.certificate.not_valid_after_utc else self.state.value

    def label(self) -> str:
        return f"node {self.node} signing certificate {self.cert_id[:16]}"


class Nodes:
    """Every node's signing identities (see module doc); part of a :class:`Keystore`."""

    def __init__(self, unlocked: Unlocked, identities: list[NodeIdentity] | None = None) -> None:
        self._unlocked = unlocked
        self._items: list[NodeIdentity] = list(identities or [])
        self._keys: dict[str, SigningPrivateKey] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def identities(self) -> tuple[NodeIdentity, ...]:
        return tuple(self._items)

    def names(self) -> list[str]:
        return sorted({i.node for i in self._items})

    def for_node(self, node: str) -> list[NodeIdentity]:
        return [i for i in self._items if i.node == node]

    def active(self, node: str) -> NodeIdentity | None:
        return next((i for i in self.for_node(node) if i.state is NodeState.ACTIVE), None)

    def find(self, id_or_prefix: str, node: str | None = None) -> NodeIdentity:
        """The one identity whose certificate ID starts with ``id_or_prefix``.

        Raises:
            CertificateNotInKeystoreError: none matches.
            KeystoreEntryError: the prefix is too short, not hex, or ambiguous.
        """
        wanted = id_prefix(id_or_prefix)
        found = [i for i in self._items if i.cert_id.startswith(wanted) and node in (None, i.node)]
        if not found:
            where = f" of node {node}" if node else ""
            msg = f"no signing identity with ID {wanted}{where} (see: keystore node list)"
            raise CertificateNotInKeystoreError(msg, wanted)
        if len(found) > 1:
            msg = f"certificate ID prefix {wanted} matches several identities; give more digits"
            raise KeystoreEntryError(msg)
        return found[0]

    # --- changes -------------------------------------------------------------

    def add(
        self, node: str, certificate: x509.Certificate, key: SigningPrivateKey, *, now: datetime
    ) -> tuple[NodeIdentity, NodeIdentity | None]:
        """Add a signing identity and make it the node's active one.

        The previous active identity, if any, is retired and kept.  A certificate
        that is expired or not yet valid is refused: a node must not start signing
        with it (history needs no import: signatures carry their certificates).

        Returns:
            (the new identity, the one it retired or None).

        Raises:
            ValueError: bad node name.
            KeyPolicyError, CertificatePurposeError: not a signing certificate.
            CertificateKeyMismatchError: the key is not the certificate's.
            KeystoreEntryError: already held, not valid now, or over the limit.
        """
        check_node_name(node)
        public = check_signing_certificate(certificate)
        if _spki(key.public_key()) != _spki(public):
            msg = (
                f"the signing key does not belong to the certificate "
                f"'{name_str(certificate.subject)}': their public keys differ"
            )
            raise CertificateKeyMismatchError(msg)
        cert_id = certificate_id(certificate)
        holder = next((i for i in self._items if i.cert_id == cert_id), None)
        if holder is not None:
            msg = (
                f"signing certificate {cert_id} is already in the keystore, for node {holder.node}"
            )
            raise KeystoreEntryError(msg)
        if now > certificate.not_valid_after_utc:
            msg = (
                f"the signing certificate expired on {fmt_time(certificate.not_valid_after_utc)}"
                "; a node cannot sign with it"
            )
            raise KeystoreEntryError(msg)
        if now < certificate.not_valid_before_utc:
            msg = (
                "the signing certificate is not valid until "
                f"{fmt_time(certificate.not_valid_before_utc)}; add it then"
            )
            raise KeystoreEntryError(msg)
        if len(self._items) >= MAX_NODES:
            msg = f"the keystore holds {MAX_NODES} signing identities, its limit"
            raise KeystoreEntryError(msg)
        stamp = _second(now)
        old = self.active(node)
        retired = None
        if old is not None:
            retired = replace(old, state=NodeState.RETIRED, retired=stamp)
            self._items[self._items.index(old)] = retired
        nonce, blob = self._seal(key, cert_id)
        new = NodeIdentity(node, certificate, cert_id, NodeState.ACTIVE, stamp, None, nonce, blob)
        self._items.append(new)
        self._keys[cert_id] = key
        return new, retired

    def remove(self, node: str, id_or_prefix: str, *, active_too: bool = False) -> NodeIdentity:
        """Delete one identity for good (its key is gone; its signatures still verify).

        Raises:
            CertificateNotInKeystoreError, KeystoreEntryError: unknown or ambiguous;
                the active identity without ``active_too``.
        """
        target = self.find(id_or_prefix, node)
        if target.state is NodeState.ACTIVE and not active_too:
            msg = (
                f"{target.label()} is the node's active identity; recordings it makes would "
                "stop being signed. Remove it with --active, or add its successor first"
            )
            raise KeystoreEntryError(msg)
        self._items.remove(target)
        self._keys.pop(target.cert_id, None)
        return target

    # --- keys ------------------------------------------------------------------

    def private_key(self, identity: NodeIdentity) -> SigningPrivateKey:
        """Decrypt (once, then cached) an identity's signing key.

        Raises:
            KeystoreTamperedError: the sealed key does not authenticate.
            KeyLoadError, KeyPolicyError: it cannot be loaded.
        """
        cached = self._keys.get(identity.cert_id)
        if cached is not None:
            return cached
        der = self._open(identity)
        key = load_signing_key(der, None)
        self._keys[identity.cert_id] = key
        return key

    def key_problem(self, identity: NodeIdentity) -> str | None:
        """Why an identity's key is unusable, or None when it opens and matches."""
        try:
            key = self.private_key(identity)
        except RecstreamError as exc:
            return f"the signing key cannot be used: {exc}"
        if _spki(key.public_key()) != _spki(identity.certificate.public_key()):
            return "the signing key does not match the certificate (their public keys differ)"
        return None

    def rekeyed(self, unlocked: Unlocked) -> Nodes:
        """A copy whose keys are sealed under ``unlocked`` (backups, password changes).

        Raises:
            KeystoreTamperedError: a key does not authenticate.
        """
        items = []
        for i in self._items:
            nonce = os.urandom(NONCE_BYTES)
            blob = _crypto.aead_seal(unlocked.entry_key, nonce, self._open(i), _aad(i.cert_id))
            items.append(replace(i, key_nonce=nonce, key_blob=blob))
        return Nodes(unlocked, items)

    def _open(self, identity: NodeIdentity) -> bytes:
        der = _crypto.aead_open(
            self._unlocked.entry_key, identity.key_nonce, identity.key_blob, _aad(identity.cert_id)
        )
        if der is None:
            msg = f"the signing key of {identity.label()} failed authentication"
            raise KeystoreTamperedError(msg)
        return der

    def _seal(self, key: SigningPrivateKey, cert_id: str) -> tuple[bytes, bytes]:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(NONCE_BYTES)
        return nonce, _crypto.aead_seal(self._unlocked.entry_key, nonce, der, _aad(cert_id))


def _aad(cert_id: str) -> bytes:
    return _KEY_AAD + bytes.fromhex(cert_id)


def _spki(key: object) -> bytes:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _second(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(microsecond=0)

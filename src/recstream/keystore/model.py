"""The keystore in memory: tenants x media kinds x certificates, each with its key.

Per tenant and kind there is at most one *active* certificate (new recordings are
encrypted for it) and any number of *inactive* (imported, never active) and
*retired* (once active) ones; a certificate past its not-after date shows as
*expired* whatever its state.  Nothing is ever dropped: old recordings stay
playable (the vendor's rule).  Lookup by certificate ID, or public key ID, spans
them all, so :class:`Keystore` is an :class:`~recstream.envelope.KeyRing`.

Private keys stay encrypted in memory (AES-256-GCM under the keystore's entry key,
bound to their certificate ID) until a recording needs one.  The content codec is
:mod:`recstream.keystore._content` (docs/KEYSTORE.md §4).  ``now`` is always an
argument.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream import _crypto
from recstream.errors import (
    CertificateKeyMismatchError,
    CertificateNotInKeystoreError,
    KeystoreEntryError,
    KeystoreTamperedError,
    KeyUnwrapError,
    RecstreamError,
)
from recstream.format import MediaKind, Metadata, RecipientStanza
from recstream.keystore._container import NONCE_BYTES, Unlocked
from recstream.keystore._ids import MIN_ID_PREFIX, id_prefix
from recstream.keystore.nodes import NodeIdentity, Nodes
from recstream.pki.certs import (
    certificate_id,
    check_recording_key,
    load_private_key,
    name_str,
    public_key_id,
)
from recstream.pki.dates import days_left, fmt_time
from recstream.pki.verify import check_recording_certificate

__all__ = ["MIN_ID_PREFIX", "Entry", "EntryState", "Keystore", "kind_name", "parse_kind"]

MAX_ENTRIES: Final = 10_000
_KEY_AAD: Final = b"recstream keystore v1 private key "
_KINDS: Final = {"voice": MediaKind.VOICE, "screen": MediaKind.SCREEN}


class EntryState(StrEnum):
    """Stored state of a certificate within its tenant and kind."""

    ACTIVE = "active"  # new recordings are encrypted for it
    INACTIVE = "inactive"  # imported, never made active
    RETIRED = "retired"  # was active; kept to decrypt what it protected


def kind_name(kind: MediaKind) -> str:
    return "voice" if kind is MediaKind.VOICE else "screen"


def parse_kind(text: str) -> MediaKind:
    """``"voice"`` or ``"screen"`` to a :class:`MediaKind`.

    Raises:
        ValueError: anything else.
    """
    try:
        return _KINDS[text]
    except KeyError:
        msg = f"media kind must be voice or screen, not {text!r}"
        raise ValueError(msg) from None


def check_tenant(tenant: str) -> str:
    """The envelope's rule for tenant names (FORMAT.md §3).

    Raises:
        ValueError: empty, over 255 bytes, or with control characters.
    """
    Metadata("x", tenant, MediaKind.VOICE, "application/octet-stream", 0)
    return tenant


@dataclass(frozen=True, slots=True)
class Entry:
    """One certificate of a tenant and kind, with its encrypted private key."""

    tenant: str
    kind: MediaKind
    certificate: x509.Certificate
    cert_id: str
    key_id: bytes
    state: EntryState
    imported: datetime
    activated: datetime | None
    retired: datetime | None
    key_nonce: bytes
    key_blob: bytes

    @property
    def kind_name(self) -> str:
        return kind_name(self.kind)

    @property
    def subject(self) -> str:
        return name_str(self.certificate.subject)

    @property
    def not_after(self) -> datetime:
        return self.certificate.not_valid_after_utc

    def expired(self, now: datetime) -> bool:
        return now > self.certificate.not_valid_after_utc

    def not_yet_valid(self, now: datetime) -> bool:
        return now < self.certificate.not_valid_before_utc

    def days_left(self, now: datetime) -> int:
        return days_left(self.certificate, now)

    def status(self, now: datetime) -> str:
        """``active``, ``inactive``, ``retired`` or ``expired`` (expiry wins)."""
        return "expired" if self.expired(now) else self.state.value

    def label(self) -> str:
        return f"{self.tenant}/{self.kind_name} certificate {self.cert_id[:16]}"


class Keystore:
    """Certificates and encrypted private keys of every tenant (see module doc)."""

    def __init__(
        self,
        unlocked: Unlocked,
        entries: Iterable[Entry] = (),
        *,
        created: datetime,
        nodes: Iterable[NodeIdentity] = (),
    ) -> None:
        self.unlocked = unlocked
        self.created = created
        self._entries: list[Entry] = []
        # The first entry of each certificate ID and of each public key ID, kept with
        # _entries (every change goes through _append or _replace): find and the
        # key ring's lookups cost one dict access, not a scan of up to MAX_ENTRIES.
        self._by_cert_id: dict[str, Entry] = {}
        self._by_key_id: dict[bytes, Entry] = {}
        # Every tenant holding each certificate and each key (one certificate may be
        # imported for several tenants): the RCS's tenant check asks.
        self._tenants_by_cert_id: dict[str, set[str]] = {}
        self._tenants_by_key_id: dict[bytes, set[str]] = {}
        for e in entries:
            self._append(e)
        # the recording nodes' signing identities (issue 16; keystore/nodes.py)
        self.nodes = Nodes(unlocked, list(nodes))
        self._keys: dict[str, rsa.RSAPrivateKey] = {}
        self._lock = threading.Lock()

    # --- queries -------------------------------------------------------------

    @property
    def entries(self) -> tuple[Entry, ...]:
        return tuple(self._entries)

    def tenants(self) -> list[str]:
        return sorted({e.tenant for e in self._entries})

    def entries_for(self, tenant: str, kind: MediaKind | None = None) -> list[Entry]:
        return [e for e in self._entries if e.tenant == tenant and kind in (None, e.kind)]

    def active(self, tenant: str, kind: MediaKind) -> Entry | None:
        return next(
            (e for e in self.entries_for(tenant, kind) if e.state is EntryState.ACTIVE), None
        )

    def find(self, cert_id: str) -> Entry | None:
        """The first entry with exactly this certificate ID (lowercase hex)."""
        return self._by_cert_id.get(cert_id)

    def entry_for(self, stanza: RecipientStanza) -> Entry | None:
        """The entry holding ``stanza``'s key: the first with its certificate ID, else
        the first with its public key ID (a recording sealed to a certificate that was
        renewed with the same key, the new certificate imported)."""
        return self._by_cert_id.get(stanza.cert_id.hex()) or self._by_key_id.get(stanza.key_id)

    def tenants_holding(self, stanza: RecipientStanza) -> frozenset[str]:
        """Every tenant holding ``stanza``'s key, found as :meth:`entry_for` finds it: by
        its certificate ID, else by its public key ID."""
        cid = stanza.cert_id.hex()
        if cid in self._tenants_by_cert_id:
            return frozenset(self._tenants_by_cert_id[cid])
        return frozenset(self._tenants_by_key_id.get(stanza.key_id, ()))

    def lookup(
        self, id_or_prefix: str, *, tenant: str | None = None, kind: MediaKind | None = None
    ) -> Entry:
        """The one entry whose certificate ID starts with ``id_or_prefix``.

        Raises:
            CertificateNotInKeystoreError: none matches.
            KeystoreEntryError: the prefix is too short or matches several certificates.
        """
        wanted = id_prefix(id_or_prefix)
        found = [
            e
            for e in self._entries
            if e.cert_id.startswith(wanted)
            and tenant in (None, e.tenant)
            and kind in (None, e.kind)
        ]
        if not found:
            where = f" for {tenant}/{kind_name(kind)}" if tenant and kind else ""
            msg = f"no certificate with ID {wanted} in the keystore{where} (see: keystore list)"
            raise CertificateNotInKeystoreError(msg, wanted)
        if len({e.cert_id for e in found}) > 1:
            msg = f"certificate ID prefix {wanted} matches several certificates; give more digits"
            raise KeystoreEntryError(msg)
        return found[0]

    # --- changes -------------------------------------------------------------

    def add(
        self,
        tenant: str,
        kind: MediaKind,
        certificate: x509.Certificate,
        key: rsa.RSAPrivateKey,
        *,
        now: datetime,
    ) -> Entry:
        """Import a certificate with its private key.

        It becomes active by itself when the tenant has no active certificate of this
        kind and it is valid now; an expired certificate is kept as history only.

        Raises:
            ValueError: the tenant name breaks the envelope's rules.
            KeyPolicyError, CertificatePurposeError: unfit for recordings.
            CertificateKeyMismatchError: the key is not the certificate's.
            KeystoreEntryError: already in the keystore for this tenant and kind.
        """
        check_tenant(tenant)
        check_certificate_purpose(certificate)
        key_id = public_key_id(check_recording_key(key.public_key(), "private key"))
        if key_id != public_key_id(check_recording_key(certificate.public_key())):
            subject = name_str(certificate.subject)
            msg = (
                f"the private key does not belong to the certificate '{subject}': "
                "their public keys differ"
            )
            raise CertificateKeyMismatchError(msg)
        cert_id = certificate_id(certificate)
        if any(e.cert_id == cert_id for e in self.entries_for(tenant, kind)):
            msg = f"certificate {cert_id} is already in the keystore for {tenant}/{kind_name(kind)}"
            raise KeystoreEntryError(msg)
        if len(self._entries) >= MAX_ENTRIES:
            msg = f"the keystore holds {MAX_ENTRIES} certificates, its limit"
            raise KeystoreEntryError(msg)
        valid_now = not (
            now > certificate.not_valid_after_utc or now < certificate.not_valid_before_utc
        )
        activate = valid_now and self.active(tenant, kind) is None
        nonce, blob = self._seal_key(key, cert_id)
        entry = Entry(
            tenant=tenant,
            kind=kind,
            certificate=certificate,
            cert_id=cert_id,
            key_id=key_id,
            state=EntryState.ACTIVE if activate else EntryState.INACTIVE,
            imported=_second(now),
            activated=_second(now) if activate else None,
            retired=None,
            key_nonce=nonce,
            key_blob=blob,
        )
        self._append(entry)
        with self._lock:
            self._keys[cert_id] = key
        return entry

    def rotate(
        self, tenant: str, kind: MediaKind, id_or_prefix: str, *, now: datetime
    ) -> tuple[Entry | None, Entry]:
        """Make a certificate the active one; the previous one is retired (kept).

        Returns:
            (previous active entry or None, new active entry), as now stored.

        Raises:
            CertificateNotInKeystoreError, KeystoreEntryError: unknown, already active,
                expired or not yet valid.
        """
        target = self.lookup(id_or_prefix, tenant=tenant, kind=kind)
        if target.state is EntryState.ACTIVE:
            msg = f"{target.label()} is already the active one"
            raise KeystoreEntryError(msg)
        if target.expired(now):
            msg = (
                f"{target.label()} expired on {fmt_time(target.not_after)}; expired "
                "certificates are kept to decrypt old recordings but are never made active"
            )
            raise KeystoreEntryError(msg)
        if target.not_yet_valid(now):
            msg = (
                f"{target.label()} is not valid until "
                f"{fmt_time(target.certificate.not_valid_before_utc)}; rotate to it then"
            )
            raise KeystoreEntryError(msg)
        old = self.active(tenant, kind)
        stamp = _second(now)
        retired = None
        if old is not None:
            retired = replace(old, state=EntryState.RETIRED, retired=stamp)
            self._replace(old, retired)
        new = replace(target, state=EntryState.ACTIVE, activated=stamp, retired=None)
        self._replace(target, new)
        return retired, new

    def _append(self, entry: Entry) -> None:
        self._entries.append(entry)
        self._by_cert_id.setdefault(entry.cert_id, entry)
        self._by_key_id.setdefault(entry.key_id, entry)
        self._tenants_by_cert_id.setdefault(entry.cert_id, set()).add(entry.tenant)
        self._tenants_by_key_id.setdefault(entry.key_id, set()).add(entry.tenant)

    def _replace(self, old: Entry, new: Entry) -> None:
        """Put ``new`` in ``old``'s place (a change of state: same certificate and key)."""
        assert (new.cert_id, new.key_id) == (old.cert_id, old.key_id)
        self._entries[self._entries.index(old)] = new
        if self._by_cert_id.get(old.cert_id) is old:
            self._by_cert_id[old.cert_id] = new
        if self._by_key_id.get(old.key_id) is old:
            self._by_key_id[old.key_id] = new

    # --- private keys ----------------------------------------------------------

    def private_key(self, entry: Entry) -> rsa.RSAPrivateKey:
        """Decrypt (once, then cached) the private key of ``entry``.

        Raises:
            KeystoreTamperedError: the key does not authenticate.
            KeyLoadError, KeyPolicyError: it cannot be loaded.
        """
        with self._lock:
            cached = self._keys.get(entry.cert_id)
        if cached is not None:
            return cached
        der = _crypto.aead_open(
            self.unlocked.entry_key, entry.key_nonce, entry.key_blob, _key_aad(entry.cert_id)
        )
        if der is None:
            msg = f"the private key of {entry.label()} failed authentication"
            raise KeystoreTamperedError(msg)
        key = load_private_key(der)
        with self._lock:
            self._keys[entry.cert_id] = key
        return key

    def private_key_for(self, stanza: RecipientStanza) -> rsa.RSAPrivateKey | None:
        """:class:`~recstream.envelope.KeyRing`: by certificate ID, else public key ID
        (:meth:`entry_for`)."""
        entry = self.entry_for(stanza)
        return None if entry is None else self.private_key(entry)

    def describe(self) -> Sequence[str]:
        """:class:`~recstream.envelope.KeyRing`: the public key IDs held."""
        return sorted({e.key_id.hex() for e in self._entries})

    def key_problem(self, entry: Entry) -> str | None:
        """Why ``entry``'s private key is unusable, or None when it works.

        Loads the key, compares it with the certificate's public key, and wraps and
        unwraps a test key with it: proof the recordings it protects will open.
        """
        try:
            key = self.private_key(entry)
        except RecstreamError as exc:
            return f"the private key cannot be used: {exc}"
        if public_key_id(key.public_key()) != public_key_id(
            check_recording_key(entry.certificate.public_key())
        ):
            return "the private key does not match the certificate (their public keys differ)"
        probe = os.urandom(32)
        wrapped = _crypto.wrap_file_key(check_recording_key(entry.certificate.public_key()), probe)
        try:
            ok = _crypto.unwrap_file_key(key, wrapped, entry.cert_id) == probe
        except KeyUnwrapError:
            ok = False
        return None if ok else "the private key fails to unwrap a test key for its certificate"

    def rekeyed(self, unlocked: Unlocked) -> Keystore:
        """A copy whose private keys are encrypted under ``unlocked`` (a new salt).

        Raises:
            KeystoreTamperedError: a key does not authenticate under the old keys.
        """
        entries = []
        for e in self._entries:
            der = _crypto.aead_open(
                self.unlocked.entry_key, e.key_nonce, e.key_blob, _key_aad(e.cert_id)
            )
            if der is None:
                msg = f"the private key of {e.label()} failed authentication"
                raise KeystoreTamperedError(msg)
            nonce = os.urandom(NONCE_BYTES)
            blob = _crypto.aead_seal(unlocked.entry_key, nonce, der, _key_aad(e.cert_id))
            entries.append(replace(e, key_nonce=nonce, key_blob=blob))
        nodes = self.nodes.rekeyed(unlocked).identities
        return Keystore(unlocked, entries, created=self.created, nodes=nodes)

    def _seal_key(self, key: rsa.RSAPrivateKey, cert_id: str) -> tuple[bytes, bytes]:
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = os.urandom(NONCE_BYTES)
        return nonce, _crypto.aead_seal(self.unlocked.entry_key, nonce, der, _key_aad(cert_id))


def check_certificate_purpose(cert: x509.Certificate) -> None:
    """X.509 v3, RSA 2048..8192, not a CA, key usage allows keyEncipherment.

    Validity is not checked: expired certificates are kept as history.
    """
    check_recording_certificate(cert, now=cert.not_valid_before_utc)


def _key_aad(cert_id: str) -> bytes:
    return _KEY_AAD + bytes.fromhex(cert_id)


def _second(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(microsecond=0)

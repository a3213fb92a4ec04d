"""How workers get keys: a picklable spec of paths, opened in each worker process."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from recstream.envelope import Identity, IdentitySet, KeyRing
from recstream.errors import KeystoreLockedError
from recstream.pki.certs import certificate_id, load_certificates, load_private_key

__all__ = ["CertInfo", "KeySpec", "OpenedKeys"]


@dataclass(frozen=True, slots=True)
class CertInfo:
    cert_id: str
    subject: str
    not_after: dt.datetime
    has_key: bool


@dataclass(frozen=True, slots=True)
class OpenedKeys:
    keyring: KeyRing
    certs: dict[str, CertInfo]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """Paths only: safe to send to a remote worker in a task graph.

    Attributes:
        keystore: a keystore file, opened with the password in ``password_file``.
        key_files: PEM private keys (the password, if any, in ``password_file``).
        cert_files: certificates, for their IDs and validity (audit).
    """

    keystore: str | None = None
    password_file: str | None = None
    key_files: tuple[str, ...] = ()
    cert_files: tuple[str, ...] = field(default=())

    def open(self) -> OpenedKeys:
        """Open the keys (cached per process: a keystore's KDF runs once per worker)."""
        cached = _CACHE.get(self)
        if cached is None:
            cached = _CACHE[self] = self._open()
        return cached

    def _open(self) -> OpenedKeys:
        password = _read_password(self.password_file)
        certs: dict[str, CertInfo] = {}
        if self.keystore is not None:
            from recstream.keystore import load

            if password is None:
                msg = "the keystore needs its password: give --password-file"
                raise KeystoreLockedError(msg)
            ks = load(Path(self.keystore), password)
            for entry in ks.entries:
                certs[entry.cert_id] = CertInfo(
                    entry.cert_id, entry.subject, entry.not_after, has_key=True
                )
            return OpenedKeys(ks, certs)
        identities = []
        loaded_certs: list[x509.Certificate] = []
        for path in self.cert_files:
            loaded_certs.extend(load_certificates(Path(path).read_bytes()))
        by_key = {c.public_key().public_numbers(): c for c in loaded_certs}  # type: ignore[union-attr]
        for path in self.key_files:
            data = Path(path).read_bytes()
            key = load_private_key(data, password if b"ENCRYPTED" in data else None)
            cert = by_key.get(key.public_key().public_numbers())
            identities.append(Identity.from_private_key(key, cert))
        have = {i.cert_id.hex() for i in identities if i.cert_id}
        for cert in loaded_certs:
            cid = certificate_id(cert)
            certs[cid] = CertInfo(
                cid, cert.subject.rfc4514_string(), cert.not_valid_after_utc, cid in have
            )
        return OpenedKeys(IdentitySet(identities), certs)


_CACHE: dict[KeySpec, OpenedKeys] = {}


def _read_password(path: str | None) -> bytes | None:
    if path is None:
        return None
    line = Path(path).read_bytes().split(b"\n", 1)[0].rstrip(b"\r")
    return line or None

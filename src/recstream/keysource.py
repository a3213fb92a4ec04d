"""The one key source: where the keys that open recordings come from, and the password.

Keys come from a keystore (``recstream.keystore``) or from private key files, with
certificates for their IDs and validity.  A :class:`KeySource` names them by path
only, so it can travel in a Dask task graph to a remote worker without carrying
a secret; each process opens it once (:meth:`KeySource.open`, cached per process).

Passwords are read by :func:`read_password` only: a file's first line (an empty
one is an error, never "no password"), else an environment variable, else a
prompt the caller supplies (the CLI's, on a terminal).  Never from a command line.

Used by the CLI (``decrypt``, ``rewrap``, ``batch``), the RCS (its ``[keystore]``),
the recording hook (:meth:`KeySource.resolver`) and the Dask workers.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recstream.errors import PasswordError
from recstream.pki.certs import certificate_id, load_certificates, load_private_key
from recstream.pki.recipients import Identity, IdentitySet, KeyRing, Recipient

if TYPE_CHECKING:
    from cryptography import x509

    from recstream.format import MediaKind
    from recstream.keystore.model import Keystore
    from recstream.keystore.resolve import KeystoreResolver
    from recstream.signer import Signer

__all__ = [
    "ENV_PASSWORD",
    "ENV_PATH",
    "CertInfo",
    "KeySource",
    "NodeSignerResolver",
    "OpenedKeys",
    "Prompt",
    "node_signer",
    "read_password",
    "read_password_file",
]

# The same names as recstream.keystore.store's ENV_PATH/ENV_PASSWORD (a test keeps
# them equal): the keystore package is imported only when a keystore is opened, so
# `encrypt --cert` and `decrypt --key` never pay for it at start-up.
ENV_PATH = "RECSTREAM_KEYSTORE"
ENV_PASSWORD = "RECSTREAM_KEYSTORE_PASSWORD"  # noqa: S105 - a variable's name

Prompt = Callable[[str], bytes]
"""Asks the user for ``what`` (e.g. "keystore password") and returns it."""


def read_password_file(path: str | os.PathLike[str]) -> bytes:
    """A password from a file: its first line, without the line ending.

    Raises:
        PasswordError: the first line is empty.
        OSError: the file cannot be read.
    """
    data = Path(path).read_bytes()
    line = data.split(b"\n", 1)[0].rstrip(b"\r")
    if not line:
        msg = f"password file {path} is empty"
        raise PasswordError(msg)
    return line


def read_password(
    password_file: str | os.PathLike[str] | None = None,
    *,
    env: str | None = ENV_PASSWORD,
    prompt: Prompt | None = None,
    what: str = "keystore password",
) -> bytes:
    """The password from ``password_file``, else ``$env``, else ``prompt(what)``.

    Raises:
        PasswordError: none of them gave one (or the file is empty).
        OSError: the file cannot be read.
    """
    if password_file is not None:
        return read_password_file(password_file)
    value = os.environ.get(env) if env else None
    if value:
        return os.fsencode(value)
    if prompt is not None:
        got = prompt(what)
        if not got:
            msg = f"the {what} is empty"
            raise PasswordError(msg)
        return got
    where = f", or set ${env}" if env else ""
    msg = f"the {what} is needed: give a password file{where}"
    raise PasswordError(msg)


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What is known of a certificate: for the audit's expiry and orphan checks."""

    cert_id: str
    subject: str
    not_after: dt.datetime
    has_key: bool


@dataclass(frozen=True, slots=True)
class OpenedKeys:
    """An opened key source: a key ring and the certificates it knows."""

    keyring: KeyRing
    certs: dict[str, CertInfo]


@dataclass(frozen=True, slots=True)
class KeySource:
    """Where keys come from, by path only (safe to send to a remote worker).

    Attributes:
        keystore: a keystore file (``None`` with no ``key_files``: ``$RECSTREAM_KEYSTORE``
            or the default, resolved by :meth:`keystore_file`).
        key_files: PEM or DER private keys, instead of a keystore.
        cert_files: certificates of the key files (their IDs and validity).
        password_file: the keystore's password, or the key files'.
        password_env: environment variable holding the password when there is no
            file (``$RECSTREAM_KEYSTORE_PASSWORD`` by default; None: none).
    """

    keystore: str | None = None
    key_files: tuple[str, ...] = ()
    cert_files: tuple[str, ...] = ()
    password_file: str | None = None
    password_env: str | None = ENV_PASSWORD

    def keystore_file(self) -> Path:
        """The keystore: ``keystore``, else ``$RECSTREAM_KEYSTORE``, else the default."""
        from recstream.keystore.store import keystore_path

        return keystore_path(self.keystore)

    def password(self, prompt: Prompt | None = None, what: str = "keystore password") -> bytes:
        """The keystore's password (see :func:`read_password`)."""
        return read_password(self.password_file, env=self.password_env, prompt=prompt, what=what)

    def open(self, prompt: Prompt | None = None) -> OpenedKeys:
        """Open the keys; cached per process (a keystore's KDF runs once per worker).

        Raises:
            PasswordError, KeystoreError, KeyLoadError, KeyPolicyError, OSError.
        """
        cached = _CACHE.get(self)
        if cached is None:
            cached = _CACHE[self] = self._open(prompt)
        return cached

    def keyring(self, prompt: Prompt | None = None) -> KeyRing:
        return self.open(prompt).keyring

    def resolver(
        self, prompt: Prompt | None = None, *, ca_bundle: bytes | None = None
    ) -> KeystoreResolver:
        """The keystore as a :class:`~recstream.aio.RecordingHook` resolver (re-read on change)."""
        from recstream.keystore.resolve import KeystoreResolver

        return KeystoreResolver(self.keystore_file(), self.password(prompt), ca_bundle=ca_bundle)

    def recipient(
        self, tenant: str, kind: MediaKind, *, now: dt.datetime, ca_bundle: bytes | None = None,
        prompt: Prompt | None = None,
    ) -> tuple[Recipient, list[str]]:  # fmt: skip
        """The tenant's active certificate of ``kind`` in the keystore, and any warnings."""
        from recstream.keystore.resolve import active_recipient
        from recstream.keystore.store import load

        ks = load(self.keystore_file(), self.password(prompt))
        return active_recipient(ks, tenant, kind, now=now, ca_bundle=ca_bundle)

    def _open(self, prompt: Prompt | None) -> OpenedKeys:
        if not self.key_files:
            from recstream.keystore.store import load

            ks = load(self.keystore_file(), self.password(prompt))
            certs = {
                e.cert_id: CertInfo(e.cert_id, e.subject, e.not_after, has_key=True)
                for e in ks.entries
            }
            return OpenedKeys(ks, certs)
        loaded: list[x509.Certificate] = []
        for path in self.cert_files:
            loaded.extend(load_certificates(Path(path).read_bytes()))
        by_key = {c.public_key().public_numbers(): c for c in loaded}  # type: ignore[union-attr]
        identities = []
        password: bytes | None = None
        for path in self.key_files:
            data = Path(path).read_bytes()
            if _encrypted(data) and password is None:
                password = read_password(
                    self.password_file, env=None, prompt=prompt, what=f"password of {path}"
                )
            key = load_private_key(data, password if _encrypted(data) else None)
            identities.append(
                Identity.from_private_key(key, by_key.get(key.public_key().public_numbers()))
            )
        have = {i.cert_id.hex() for i in identities if i.cert_id}
        certs = {}
        for cert in loaded:
            cid = certificate_id(cert)
            certs[cid] = CertInfo(
                cid, cert.subject.rfc4514_string(), cert.not_valid_after_utc, cid in have
            )
        return OpenedKeys(IdentitySet(identities), certs)


def node_signer(ks: Keystore, node: str, *, now: dt.datetime | None = None) -> Signer:
    """A signer from a recording node's active signing identity in the keystore.

    Raises:
        KeystoreEntryError: the node has no active identity.
        KeystoreTamperedError, KeyLoadError: its key does not open.
        CertificateExpiredError, CertificateNotYetValidError, CertificatePurposeError:
            its certificate may not sign now.
    """
    from recstream.errors import KeystoreEntryError
    from recstream.signer import Signer

    identity = ks.nodes.active(node)
    if identity is None:
        held = ", ".join(ks.nodes.names()) or "none"
        msg = (
            f"node {node} has no active signing identity in the keystore (nodes: {held}); "
            f"add one: recstream keystore node add {node} --cert C.pem --key K.pem"
        )
        raise KeystoreEntryError(msg)
    return Signer.from_objects(ks.nodes.private_key(identity), identity.certificate, at=now)


class NodeSignerResolver:
    """A recording hook's signer: a node's active identity, following keystore changes.

    ``current`` returns the keystore as it is now (a
    :class:`~recstream.keystore.resolve.KeystoreResolver`'s ``current``, which
    re-reads the file when it changes).  The signer is rebuilt only when the
    keystore object or the active identity changes, or its certificate expires.
    """

    def __init__(
        self,
        current: Callable[[], Keystore],
        node: str,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._current = current
        self.node = node
        self._clock = clock
        self._cached: tuple[int, str, Signer] | None = None

    def __call__(self) -> Signer:
        """The signer for a recording starting now.

        Raises:
            The errors of :func:`node_signer`.
        """
        ks = self._current()
        now = self._clock()
        cached = self._cached
        identity = ks.nodes.active(self.node)
        if (
            cached is not None
            and identity is not None
            and cached[:2] == (id(ks), identity.cert_id)
            and now <= identity.certificate.not_valid_after_utc
        ):
            return cached[2]
        signer = node_signer(ks, self.node, now=now)
        self._cached = (id(ks), signer.cert_id, signer)
        return signer


def _encrypted(data: bytes) -> bool:
    # PEM "ENCRYPTED PRIVATE KEY" or legacy "Proc-Type: 4,ENCRYPTED"; DER keys are
    # tried without a password and the loader says if one was needed.
    return b"ENCRYPTED" in data


_CACHE: dict[KeySource, OpenedKeys] = {}

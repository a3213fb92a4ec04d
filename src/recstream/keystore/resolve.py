"""The encrypt side: a tenant's active certificate as the recipient, failing closed.

:func:`active_recipient` is what ``recstream encrypt --keystore`` uses;
:class:`KeystoreResolver` is the :class:`~recstream.aio.hook.RecordingHook`
resolver: at each recording start it checks (one ``open`` + ``fstat``) whether
the keystore file changed and re-reads it if so, so a rotation reaches the
recordings started after it without a restart, while those in progress keep the
certificate they started with.  Re-reading reuses the derived keys while the
keystore's salt is unchanged (every update keeps it), so it costs an AES-GCM
decryption, not a key derivation.

There is never a fallback: no active certificate, an expired one, one refused by
the CA file, or a keystore that fails to open are errors for that recording.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from recstream.errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    KeyPolicyError,
    NoActiveCertificateError,
    ScreenCertificateMissingError,
)
from recstream.format import MediaKind
from recstream.keystore._container import FileKind, Unlocked
from recstream.keystore.model import Keystore, kind_name
from recstream.keystore.store import open_bytes, read_file
from recstream.pki.dates import fmt_time, utcnow
from recstream.pki.recipients import Recipient
from recstream.pki.verify import check_recording_certificate, verify_recording_certificate

__all__ = ["KeystoreResolver", "active_recipient", "resolver"]


def active_recipient(
    ks: Keystore,
    tenant: str,
    kind: MediaKind,
    *,
    now: datetime,
    ca_bundle: bytes | None = None,
) -> tuple[Recipient, list[str]]:
    """The recipient for a new ``kind`` recording of ``tenant``, and any warnings.

    Raises:
        ScreenCertificateMissingError: a screen recording for a tenant that has voice
            certificates but no screen certificate (says what to provision).
        NoActiveCertificateError: no active certificate of this kind.
        CertificateExpiredError, CertificateNotYetValidError: the active one is not
            valid now (never a fallback to another).
        CertificateError, KeyPolicyError: it is unfit, or the CA file refuses it.
    """
    entry = ks.active(tenant, kind)
    name = kind_name(kind)
    if entry is None:
        if kind is MediaKind.SCREEN and ks.entries_for(tenant, MediaKind.VOICE):
            msg = (
                f"tenant {tenant} has voice encryption but no screen recording certificate, so "
                "its screen recordings cannot be encrypted (and could not be muxed with its "
                "encrypted calls); provision one: recstream keystore import --tenant "
                f"{tenant} --media-kind screen --cert SCREEN.pem --key SCREEN.key.pem"
            )
            raise ScreenCertificateMissingError(msg, tenant, name)
        if ks.entries_for(tenant, kind):
            msg = (
                f"tenant {tenant} has {name} certificates in the keystore but none is active; "
                f"import a valid one or run: recstream keystore rotate --tenant {tenant} "
                f"--media-kind {name} --cert-id ID"
            )
        else:
            msg = (
                f"tenant {tenant} has no {name} recording certificate in the keystore; import "
                f"one: recstream keystore import --tenant {tenant} --media-kind {name} "
                "--cert C.pem --key K.pem"
            )
        raise NoActiveCertificateError(msg, tenant, name)
    cert = entry.certificate
    if entry.expired(now):
        msg = (
            f"the active {entry.label()} expired on {fmt_time(entry.not_after)}; refusing to "
            f"encrypt under it: import its successor and run 'recstream keystore rotate "
            f"--tenant {tenant} --media-kind {name} --cert-id NEW_ID'"
        )
        raise CertificateExpiredError(msg, entry.not_after)
    if entry.not_yet_valid(now):
        msg = (
            f"the active {entry.label()} is not valid until "
            f"{fmt_time(cert.not_valid_before_utc)} (check this machine's clock)"
        )
        raise CertificateNotYetValidError(msg, cert.not_valid_before_utc)
    warnings = check_recording_certificate(cert, now=now)
    if ca_bundle is not None:
        try:
            warnings += verify_recording_certificate(cert, ca_bundle, now=now)
        except (CertificateError, KeyPolicyError) as exc:
            msg = f"the CA file refuses the active {entry.label()}: {exc}"
            raise CertificateError(msg) from exc
    return Recipient.from_certificate(cert), sorted(set(warnings))


class KeystoreResolver:
    """``(tenant, kind) -> recipients`` from the keystore file, re-read when it changes.

    Args:
        path: the keystore file.
        password: the keystore password (needed to check its integrity).
        ca_bundle: validate each active certificate against this CA file.
        escrow: recipients added to every recording.
        on_warning: called with each warning (e.g. a certificate expiring soon).
        clock: the current time (a seam for tests).

    Thread-safe; one file read per call at most, and only after a change.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        password: bytes,
        *,
        ca_bundle: bytes | None = None,
        escrow: Sequence[Recipient] = (),
        on_warning: Callable[[str], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.path = Path(path)
        self._password = password
        self._ca_bundle = ca_bundle
        self._escrow = tuple(escrow)
        self._on_warning = on_warning
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._keystore: Keystore | None = None
        self._unlocked: Unlocked | None = None
        self.reloads = 0
        self.current()  # fail at construction if the keystore cannot be opened

    def current(self) -> Keystore:
        """The keystore as the file holds it now (re-read only if it changed).

        Raises:
            KeystoreError and subclasses: it cannot be opened (no stale fallback).
        """
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                read_file(self.path)  # raises KeystoreNotFoundError with the message
                raise
            try:
                st = os.fstat(fd)
                stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                if self._keystore is None or stamp != self._stamp:
                    self._load(fd, stamp)
            finally:
                os.close(fd)
            assert self._keystore is not None
            return self._keystore

    def _load(self, fd: int, stamp: tuple[int, int, int, int]) -> None:
        # Forget the old keystore first: if the new file does not open, every
        # recording fails until it is fixed rather than using a stale certificate.
        self._keystore = None
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
        ks, _ = open_bytes(
            data,
            self._password,
            kind=FileKind.KEYSTORE,
            what=f"keystore {self.path}",
            cached=self._unlocked,
        )
        self._keystore, self._unlocked, self._stamp = ks, ks.unlocked, stamp
        self.reloads += 1

    def __call__(self, tenant: str, kind: MediaKind) -> list[Recipient]:
        """The recipients of a new recording (raises instead of falling back)."""
        recipient, warnings = active_recipient(
            self.current(), tenant, kind, now=self._clock(), ca_bundle=self._ca_bundle
        )
        if self._on_warning is not None:
            for w in warnings:
                self._on_warning(f"{tenant}/{kind_name(kind)}: {w}")
        return [recipient, *self._escrow]


def resolver(
    path: str | os.PathLike[str],
    password: bytes,
    *,
    ca_bundle: bytes | None = None,
    escrow: Sequence[Recipient] = (),
    on_warning: Callable[[str], None] | None = None,
) -> KeystoreResolver:
    """A :class:`~recstream.aio.hook.RecordingHook` resolver over the keystore at ``path``.

    Raises:
        KeystoreError and subclasses: the keystore cannot be opened now.
    """
    return KeystoreResolver(
        path, password, ca_bundle=ca_bundle, escrow=escrow, on_warning=on_warning
    )

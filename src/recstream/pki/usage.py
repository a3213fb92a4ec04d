"""A recording certificate's own fitness, without a CA file: the checks every command
that encrypts applies by default (``encrypt``, ``record``, ``mux``, ``rewrap
--to-cert``, ``keystore import``).

Kept apart from :mod:`recstream.pki.verify` (chains, ``x509.verification``) so that
a one-shot ``encrypt --cert`` does not pay for importing path validation.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from recstream.errors import (
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificatePurposeError,
)
from recstream.pki._util import (
    EXPIRY_WARNING_DAYS,
    basic_constraints,
    days_left,
    fmt_time,
    key_usage,
    key_usage_names,
    quoted,
    utcnow,
)
from recstream.pki.certs import check_recording_key

__all__ = ["check_recording_certificate"]


def check_recording_certificate(
    cert: x509.Certificate, *, now: datetime | None = None
) -> list[str]:
    """Checks 1 to 5 (everything but the chain); return expiry warnings.

    Raises:
        CertificatePurposeError, KeyPolicyError, CertificateExpiredError,
        CertificateNotYetValidError: as for :func:`verify_recording_certificate`.
    """
    now = now or utcnow()
    if cert.version is not x509.Version.v3:
        msg = (
            f"the certificate is X.509 {cert.version.name}; recording certificates must be "
            "X.509 v3 (openssl signs v3 only with extensions, e.g. 'x509 -req -extfile')"
        )
        raise CertificatePurposeError(msg, "version")
    check_recording_key(cert.public_key())
    bc = basic_constraints(cert)
    if bc is not None and bc.ca:
        msg = (
            f"{quoted(cert.subject)} is a CA certificate (basicConstraints CA:TRUE), not a "
            "recording certificate; use the certificate the CA issued for recordings"
        )
        raise CertificatePurposeError(msg, "ca")
    ku = key_usage(cert)
    if ku is not None and not ku.key_encipherment:
        allowed = ", ".join(key_usage_names(ku)) or "nothing"
        msg = (
            f"the certificate's key usage allows {allowed} but not keyEncipherment, so "
            "its key may not wrap recording keys"
        )
        raise CertificatePurposeError(msg, "key-usage")
    _check_validity(cert, "the certificate", now)
    return _expiry_warning(cert, "the certificate", now)


def _check_validity(cert: x509.Certificate, who: str, now: datetime) -> None:
    if now > cert.not_valid_after_utc:
        ago = (now - cert.not_valid_after_utc).days
        msg = (
            f"{who} expired on {fmt_time(cert.not_valid_after_utc)} ({ago} days ago); "
            "nothing can be encrypted under it"
        )
        raise CertificateExpiredError(msg, cert.not_valid_after_utc)
    if now < cert.not_valid_before_utc:
        msg = (
            f"{who} is not valid until {fmt_time(cert.not_valid_before_utc)} (check the "
            "clocks of this machine and of the CA)"
        )
        raise CertificateNotYetValidError(msg, cert.not_valid_before_utc)


def _expiry_warning(cert: x509.Certificate, who: str, now: datetime) -> list[str]:
    left = days_left(cert, now)
    if left >= EXPIRY_WARNING_DAYS:
        return []
    return [
        f"{who} expires in {left} days, on {fmt_time(cert.not_valid_after_utc)}; "
        "provision its successor"
    ]

"""Describe certificates, bundles and CSRs as data (the CLI prints them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from recstream.errors import CertificateError
from recstream.pki._util import (
    days_left,
    fmt_time,
    is_ca,
    is_self_signed,
    key_kind,
    key_usage,
    key_usage_names,
    name_str,
    utcnow,
)
from recstream.pki.bundle import extract_certificates
from recstream.pki.certs import certificate_id
from recstream.pki.csr import load_csr

__all__ = ["CertificateSummary", "CsrSummary", "Description", "describe"]

JsonValue = str | int | bool | None | list[str]


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """What an operator checks about a certificate before provisioning it."""

    certificate_id: str  # SHA-256 of the DER, as the envelope names recipients
    subject: str
    issuer: str
    serial: str  # upper-case hex, as ``openssl x509 -serial`` prints it
    not_before: datetime
    not_after: datetime
    days_left: int
    key_type: str
    key_size: int | None
    version: int
    is_ca: bool
    self_signed: bool
    key_usage: tuple[str, ...] | None  # None: no key usage extension (any use)

    @classmethod
    def of(cls, cert: x509.Certificate, now: datetime) -> CertificateSummary:
        kind, size = key_kind(cert.public_key())
        ku = key_usage(cert)
        return cls(
            certificate_id=certificate_id(cert),
            subject=name_str(cert.subject),
            issuer=name_str(cert.issuer),
            serial=_hex(cert.serial_number),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            days_left=days_left(cert, now),
            key_type=kind,
            key_size=size,
            version=cert.version.value + 1,
            is_ca=is_ca(cert),
            self_signed=is_self_signed(cert),
            key_usage=None if ku is None else tuple(key_usage_names(ku)),
        )

    def to_dict(self) -> dict[str, JsonValue]:
        return {
            "certificate_id": self.certificate_id,
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "days_left": self.days_left,
            "key_type": self.key_type,
            "key_size": self.key_size,
            "version": self.version,
            "is_ca": self.is_ca,
            "self_signed": self.self_signed,
            "key_usage": None if self.key_usage is None else list(self.key_usage),
        }

    def text_fields(self) -> list[tuple[str, str]]:
        """``(label, value)`` pairs for a human-readable listing."""
        expired = self.days_left < 0
        left = f"EXPIRED {-self.days_left} days ago" if expired else f"{self.days_left} days left"
        if self.is_ca:
            ca = "yes, self-signed root" if self.self_signed else "yes, intermediate"
        else:
            ca = "no, self-signed" if self.self_signed else "no"
        if self.key_usage is None:
            usage = "(no key usage extension: any use)"
        else:
            usage = ", ".join(self.key_usage) or "(none)"
        size = f" {self.key_size} bits" if self.key_size else ""
        return [
            ("certificate ID", self.certificate_id),
            ("subject", self.subject),
            ("issuer", self.issuer),
            ("serial", self.serial),
            ("valid from", fmt_time(self.not_before)),
            ("valid until", f"{fmt_time(self.not_after)} ({left})"),
            ("key", self.key_type + size),
            ("version", f"X.509 v{self.version}"),
            ("CA", ca),
            ("key usage", usage),
        ]


@dataclass(frozen=True, slots=True)
class CsrSummary:
    """A certificate signing request's subject and key (its signature is verified)."""

    subject: str
    key_type: str
    key_size: int | None

    @classmethod
    def of(cls, csr: x509.CertificateSigningRequest) -> CsrSummary:
        kind, size = key_kind(csr.public_key())
        return cls(name_str(csr.subject), kind, size)

    def to_dict(self) -> dict[str, JsonValue]:
        return {"subject": self.subject, "key_type": self.key_type, "key_size": self.key_size}


@dataclass(frozen=True, slots=True)
class Description:
    """A file's contents: ``kind`` is ``"certificate"``, ``"bundle"`` or ``"csr"``."""

    kind: str
    certificates: tuple[CertificateSummary, ...] = ()
    csr: CsrSummary | None = None

    def to_dict(self) -> dict[str, object]:
        if self.csr is not None:
            return {"kind": self.kind, "csr": self.csr.to_dict()}
        return {"kind": self.kind, "certificates": [c.to_dict() for c in self.certificates]}

    def to_text(self) -> list[str]:
        """The description as lines of text, a bundle's certificates in file order."""
        if self.csr is not None:
            size = f" {self.csr.key_size} bits" if self.csr.key_size else ""
            return [
                "certificate request (signature verified)",
                f"  {'subject':<15} {self.csr.subject}",
                f"  {'key':<15} {self.csr.key_type}{size}",
            ]
        lines: list[str] = []
        n = len(self.certificates)
        for i, c in enumerate(self.certificates, 1):
            lines.append("certificate" if n == 1 else f"certificate {i} of {n}")
            lines += [f"  {label:<15} {value}" for label, value in c.text_fields()]
        return lines


def describe(data: bytes, *, now: datetime | None = None, source: str = "input") -> Description:
    """Describe a certificate, a bundle (each certificate in file order) or a CSR.

    Raises:
        CertificateError: ``data`` is a private key, or holds none of those.
        CertificateRequestError: a CSR that cannot be read or whose signature fails.
        BundleError: a damaged certificate block.
    """
    now = now or utcnow()
    if b"CERTIFICATE REQUEST-----" in data:
        return Description("csr", csr=CsrSummary.of(load_csr(data)))
    if b"PRIVATE KEY-----" in data and b"BEGIN CERTIFICATE-----" not in data:
        msg = (
            f"{source}: this is a private key; show describes certificates, CA bundles "
            "and requests (keys are never printed)"
        )
        raise CertificateError(msg)
    if b"-----BEGIN" not in data and _is_der_csr(data):
        return Description("csr", csr=CsrSummary.of(load_csr(data)))
    certs, _ = extract_certificates(data, source)
    kind = "certificate" if len(certs) == 1 else "bundle"
    return Description(kind, tuple(CertificateSummary.of(c, now) for c in certs))


def _is_der_csr(data: bytes) -> bool:
    try:
        x509.load_der_x509_csr(data)
    except ValueError:
        return False
    return True


def _hex(n: int) -> str:
    # openssl prints whole octets: an odd number of hex digits gets a leading zero
    digits = f"{n:X}"
    return digits.zfill(len(digits) + len(digits) % 2)

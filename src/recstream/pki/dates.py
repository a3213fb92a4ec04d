"""Dates for certificates: the current time, how they are shown, expiry warnings."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography import x509

__all__ = ["EXPIRY_WARNING_DAYS", "days_left", "fmt_time", "utcnow"]

# A certificate expiring within this many days gets a warning: time enough to have
# a successor issued and provisioned before recordings stop being encrypted.
EXPIRY_WARNING_DAYS = 30


def utcnow() -> datetime:
    """The current time, timezone-aware (the default for every ``now=None``)."""
    return datetime.now(UTC)


def fmt_time(when: datetime) -> str:
    """A UTC timestamp for messages: ``2026-11-26 23:52:29 UTC``."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def days_left(cert: x509.Certificate, now: datetime) -> int:
    """Whole days from ``now`` until the certificate expires (negative once expired)."""
    return (cert.not_valid_after_utc - now).days

"""``keystore check``: what needs an operator's attention before it loses recordings.

Findings, each with a code for scripts:

==================  =========================================================
screen-missing      voice encryption but no screen certificate (the vendor:
                    screen recordings must be encrypted too, or muxing fails)
no-active           certificates of a kind, none active (new recordings fail)
active-expired      the active certificate has expired (new recordings fail)
active-not-valid    the active certificate is not valid yet
active-expiring     the active certificate expires within 30 days
active-refused      the active certificate fails the CA file (``--ca-file``)
key-mismatch        a private key does not match or unwrap for its certificate
node-expired        a node's active signing certificate has expired (it cannot sign)
node-expiring       a node's active signing certificate expires within 30 days
node-key-mismatch   a node's signing key does not open or match its certificate
==================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recstream.errors import CertificateError, KeyPolicyError
from recstream.format import MediaKind
from recstream.keystore.model import Entry, Keystore, kind_name
from recstream.pki.dates import EXPIRY_WARNING_DAYS, fmt_time
from recstream.pki.verify import verify_recording_certificate

__all__ = ["Finding", "check_keystore"]


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    tenant: str
    kind: str | None
    cert_id: str | None
    message: str


def check_keystore(ks: Keystore, *, now: datetime, ca_bundle: bytes | None = None) -> list[Finding]:
    """Every finding for ``ks`` at ``now`` (empty: nothing to do)."""
    findings: list[Finding] = []
    for tenant in ks.tenants():
        findings += _tenant_findings(ks, tenant, now, ca_bundle)
    for entry in ks.entries:
        problem = ks.key_problem(entry)
        if problem is not None:
            findings.append(_finding("key-mismatch", entry, f"{entry.label()}: {problem}"))
    return findings + _node_findings(ks, now)


def _node_findings(ks: Keystore, now: datetime) -> list[Finding]:
    """Signing identities (issue 16); ``tenant`` is empty and ``kind`` is ``signing``."""
    out = []
    for node in ks.nodes.names():
        active = ks.nodes.active(node)
        if active is None:
            continue
        not_after = active.certificate.not_valid_after_utc
        left = (not_after - now).days
        if now > not_after:
            code, text = "node-expired", f"expired on {fmt_time(not_after)}; it cannot sign"
        elif left < EXPIRY_WARNING_DAYS:
            code, text = "node-expiring", f"expires in {left} days, on {fmt_time(not_after)}"
        else:
            continue
        message = f"the active {active.label()} {text}: add its successor"
        out.append(Finding(code, "", "signing", active.cert_id, message))
    for identity in ks.nodes.identities:
        problem = ks.nodes.key_problem(identity)
        if problem is not None:
            message = f"{identity.label()}: {problem}"
            out.append(Finding("node-key-mismatch", "", "signing", identity.cert_id, message))
    return out


def _tenant_findings(
    ks: Keystore, tenant: str, now: datetime, ca_bundle: bytes | None
) -> list[Finding]:
    out: list[Finding] = []
    if ks.entries_for(tenant, MediaKind.VOICE) and not ks.entries_for(tenant, MediaKind.SCREEN):
        out.append(
            Finding(
                "screen-missing",
                tenant,
                "screen",
                None,
                f"tenant {tenant} encrypts voice recordings but has no screen recording "
                f"certificate; provision one: recstream keystore import --tenant {tenant} "
                "--media-kind screen --cert C.pem --key K.pem",
            )
        )
    for kind in (MediaKind.VOICE, MediaKind.SCREEN):
        if not ks.entries_for(tenant, kind):
            continue
        active = ks.active(tenant, kind)
        if active is None:
            out.append(
                Finding(
                    "no-active",
                    tenant,
                    kind_name(kind),
                    None,
                    f"tenant {tenant} has {kind_name(kind)} certificates but none is active; "
                    f"import a valid one or run: recstream keystore rotate --tenant {tenant} "
                    f"--media-kind {kind_name(kind)} --cert-id ID",
                )
            )
            continue
        out += _active_findings(active, now, ca_bundle)
    return out


def _active_findings(entry: Entry, now: datetime, ca_bundle: bytes | None) -> list[Finding]:
    if entry.expired(now):
        return [
            _finding(
                "active-expired",
                entry,
                f"the active {entry.label()} expired on {fmt_time(entry.not_after)}; "
                "new recordings cannot be encrypted: import its successor and rotate",
            )
        ]
    if entry.not_yet_valid(now):
        return [
            _finding(
                "active-not-valid",
                entry,
                f"the active {entry.label()} is not valid until "
                f"{fmt_time(entry.certificate.not_valid_before_utc)}",
            )
        ]
    out = []
    left = entry.days_left(now)
    if left < EXPIRY_WARNING_DAYS:
        out.append(
            _finding(
                "active-expiring",
                entry,
                f"the active {entry.label()} expires in {left} days, on "
                f"{fmt_time(entry.not_after)}; import its successor and rotate",
            )
        )
    if ca_bundle is not None:
        try:
            verify_recording_certificate(entry.certificate, ca_bundle, now=now)
        except (CertificateError, KeyPolicyError) as exc:
            out.append(
                _finding(
                    "active-refused",
                    entry,
                    f"the CA file refuses the active {entry.label()}: {exc}",
                )
            )
    return out


def _finding(code: str, entry: Entry, message: str) -> Finding:
    return Finding(code, entry.tenant, entry.kind_name, entry.cert_id, message)

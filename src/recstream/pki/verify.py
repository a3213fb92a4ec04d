"""Is this certificate fit to encrypt recordings, against the media server's CA file?

The checks, each failing with its own error and message:

1. X.509 v3 (:class:`~recstream.errors.CertificatePurposeError`, ``check="version"``);
2. RSA of 2048 to 8192 bits (:class:`~recstream.errors.KeyPolicyError`);
3. not a CA certificate (``check="ca"``): a CA's key signs, it does not encrypt;
4. key usage, when present, allows keyEncipherment (``check="key-usage"``);
5. inside its validity period (``CertificateExpiredError``/``CertificateNotYetValidError``);
6. a chain to a self-signed root in the CA file through intermediates there, every
   CA valid now (:class:`~recstream.errors.ChainVerificationError` and the two above).

Step 6 first walks the issuer links itself to name the exact missing or bad link,
then lets ``cryptography.x509.verification`` validate the path with extension
policies fit for recording certificates (no TLS name or EKU demands).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from recstream.errors import (
    ChainVerificationError,
)
from recstream.pki._util import (
    is_ca,
    is_issued_by,
    is_self_signed,
    quoted,
    utcnow,
    weak_signature,
)
from recstream.pki.bundle import MAX_CHAIN_LENGTH, extract_certificates
from recstream.pki.usage import _check_validity, _expiry_warning, check_recording_certificate

__all__ = [
    "Validation",
    "check_recording_certificate",
    "validate_recording_certificate",
    "verify_recording_certificate",
]


_LISTED = 5  # CA names quoted in a "not in the CA file" message


@dataclass(frozen=True, slots=True)
class Validation:
    """A successful validation: the chain found (certificate first, root last)."""

    chain: tuple[x509.Certificate, ...]
    warnings: tuple[str, ...]


def verify_recording_certificate(
    cert: x509.Certificate, ca_bundle_pem: bytes, *, now: datetime | None = None
) -> list[str]:
    """Validate a recording certificate against a CA file; return warnings.

    Warnings name a certificate of the chain that expires within 30 days, and a
    private key found in the CA file (it is ignored, but does not belong there).

    Raises:
        CertificatePurposeError: not X.509 v3, a CA certificate, or key usage without
            keyEncipherment.
        KeyPolicyError: not an RSA key of 2048 to 8192 bits.
        CertificateExpiredError, CertificateNotYetValidError: it, or a CA of its chain,
            is outside its validity period.
        BundleError: the CA file holds no readable certificate.
        ChainVerificationError: no valid chain to a root in the CA file.
    """
    return list(validate_recording_certificate(cert, ca_bundle_pem, now=now).warnings)


def validate_recording_certificate(
    cert: x509.Certificate, ca_bundle_pem: bytes, *, now: datetime | None = None
) -> Validation:
    """Like :func:`verify_recording_certificate`, also returning the chain found.

    Raises:
        The same errors as :func:`verify_recording_certificate`.
    """
    now = now or utcnow()
    warnings = check_recording_certificate(cert, now=now)
    cas, dropped = extract_certificates(ca_bundle_pem, "the CA file")
    warnings += dropped
    chain = _walk(cert, cas, now)
    _verify_path(cert, chain, cas, now)
    for ca in chain[1:]:
        warnings += _expiry_warning(ca, f"the CA {quoted(ca.subject)}", now)
    return Validation(tuple(chain), tuple(warnings))


def _walk(
    cert: x509.Certificate, cas: list[x509.Certificate], now: datetime
) -> list[x509.Certificate]:
    """Follow issuer links through the CA file up to a root, naming any break."""
    chain = [cert]
    current = cert
    while not (is_self_signed(current) and current in cas):
        if len(chain) > MAX_CHAIN_LENGTH:
            msg = f"no root within {MAX_CHAIN_LENGTH} links of the certificate"
            raise ChainVerificationError(msg)
        who = "the certificate" if current is cert else f"the CA {quoted(current.subject)}"
        weak = weak_signature(current)
        if weak is not None:
            msg = (
                f"{who} is signed with {weak}, which can be forged and is not accepted; "
                "have it reissued with SHA-256"
            )
            raise ChainVerificationError(msg)
        named = [c for c in cas if c.subject == current.issuer]
        if current is cert and is_self_signed(cert):
            msg = (
                "the certificate is self-signed and is not in the CA file; add it to the "
                "CA file to trust it, or have a CA in the file sign its key"
            )
            raise ChainVerificationError(msg)
        if not named:
            held = ", ".join(quoted(c.subject) for c in cas[:_LISTED])
            if len(cas) > _LISTED:
                held += f" and {len(cas) - _LISTED} more"
            msg = (
                f"{who} was issued by {quoted(current.issuer)}, which is not in the CA "
                f"file (it holds {held})"
            )
            raise ChainVerificationError(msg)
        issuer = next((c for c in named if is_issued_by(current, c)), None)
        if issuer is None:
            msg = (
                f"the signature on {who} does not verify under the key of "
                f"{quoted(current.issuer)} in the CA file: a different CA with the same "
                "name signed it, or it was altered"
            )
            raise ChainVerificationError(msg)
        if issuer in chain:
            msg = f"the issuer links of {who} loop back to {quoted(issuer.subject)}"
            raise ChainVerificationError(msg)
        if not is_ca(issuer):
            msg = (
                f"{quoted(issuer.subject)} in the CA file signed {who} but is not a CA "
                "certificate (no basicConstraints CA:TRUE)"
            )
            raise ChainVerificationError(msg)
        _check_validity(issuer, f"the CA {quoted(issuer.subject)} in the CA file", now)
        chain.append(issuer)
        current = issuer
    return chain


def _verify_path(
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    cas: list[x509.Certificate],
    now: datetime,
    ee_policy: ExtensionPolicy | None = None,
) -> None:
    """The authoritative RFC 5280 path validation, over what the CA file holds.

    ``ee_policy`` replaces the recording-certificate policy for the end entity
    (:mod:`recstream.pki.signers` passes the signing-certificate one).
    """
    roots = [c for c in cas if is_self_signed(c)]
    intermediates = [c for c in cas if not is_self_signed(c)]
    verifier = (
        PolicyBuilder()
        .store(Store(roots))
        .time(now)
        .max_chain_depth(MAX_CHAIN_LENGTH)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=ee_policy or _RECORDING_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(cert, intermediates)
    except VerificationError as exc:
        reason = re.sub(r"\s*\(encountered processing <Certificate.*\)$", "", str(exc))
        msg = f"the chain to {quoted(chain[-1].subject)} in the CA file does not validate: {reason}"
        raise ChainVerificationError(msg) from exc


def _require_ca(_policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints) -> None:
    if not bc.ca:
        msg = "basicConstraints does not say CA:TRUE"
        raise ValueError(msg)


def _ca_may_sign(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.key_cert_sign:
        msg = "the CA's key usage lacks keyCertSign"
        raise ValueError(msg)


def _not_ca(_policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None) -> None:
    if bc is not None and bc.ca:
        msg = "a CA certificate is not a recording certificate"
        raise ValueError(msg)


def _may_encipher(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.key_encipherment:
        msg = "key usage lacks keyEncipherment"
        raise ValueError(msg)


# The webpki defaults demand TLS things (a subjectAltName, CA key usage present); the
# media server's CA file follows RFC 5280, so: CAs need basicConstraints CA:TRUE and,
# if they carry key usage, keyCertSign; the recording certificate must not be a CA and
# its key usage, if any, must allow keyEncipherment.  Other extensions are allowed.
_CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _require_ca)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ca_may_sign)
)
_RECORDING_POLICY = (
    ExtensionPolicy.permit_all()
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _not_ca)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _may_encipher)
)

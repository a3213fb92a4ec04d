"""Is this certificate fit to sign recordings (docs/FORMAT.md §10.3)?

The checks a verifier applies to the certificate in a signed recording's header,
at the time the recording says it was signed, each failing with its own error:

1. X.509 v3 (:class:`~recstream.errors.CertificatePurposeError`, ``check="version"``);
2. an ECDSA P-256 or Ed25519 key (:class:`~recstream.errors.KeyPolicyError`);
3. not a CA certificate (``check="ca"``);
4. key usage present and allowing digitalSignature (``check="key-usage"``): a
   recording certificate (keyEncipherment only) is not a signer;
5. inside its validity period at that time;
6. a chain to a root in the CA file, through :mod:`recstream.pki.verify`'s walk and
   RFC 5280 path validation (the same code as for recording certificates, with the
   signing profile's end-entity policy).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509.verification import Criticality, ExtensionPolicy, Policy

from recstream import _crypto
from recstream.errors import CertificatePurposeError, KeyPolicyError
from recstream.pki._util import basic_constraints, key_usage, key_usage_names, quoted
from recstream.pki.bundle import extract_certificates
from recstream.pki.usage import _check_validity
from recstream.pki.verify import Validation, _verify_path, _walk

__all__ = ["check_signing_certificate", "validate_signing_certificate"]


def check_signing_certificate(cert: x509.Certificate, *, at: datetime) -> None:
    """Checks 1 to 5 (everything but the chain) at time ``at``.

    Raises:
        CertificatePurposeError, KeyPolicyError, CertificateExpiredError,
        CertificateNotYetValidError.
    """
    if cert.version is not x509.Version.v3:
        msg = f"the signer certificate is X.509 {cert.version.name}; signers must be X.509 v3"
        raise CertificatePurposeError(msg, "version")
    if _crypto.signature_algorithm_of(cert.public_key()) is None:
        kind = type(cert.public_key()).__name__.removeprefix("_").replace("PublicKey", "")
        msg = f"the signer certificate has a {kind} key; signers use ECDSA P-256 or Ed25519"
        raise KeyPolicyError(msg)
    bc = basic_constraints(cert)
    if bc is not None and bc.ca:
        msg = f"{quoted(cert.subject)} is a CA certificate, not a recording signer"
        raise CertificatePurposeError(msg, "ca")
    ku = key_usage(cert)
    if ku is None or not ku.digital_signature:
        allowed = "no key usage extension" if ku is None else ", ".join(key_usage_names(ku))
        msg = (
            f"the signer certificate {quoted(cert.subject)} does not allow digitalSignature "
            f"({allowed}); it is not a signing certificate"
        )
        raise CertificatePurposeError(msg, "key-usage")
    _check_validity(cert, "the signer certificate", at)


def validate_signing_certificate(
    cert: x509.Certificate, ca_bundle_pem: bytes, *, at: datetime
) -> Validation:
    """Validate a signer certificate and its chain to the CA file as of ``at``.

    ``at`` is the signing time the recording states: a certificate that has
    expired since but was valid then still validates (FORMAT.md §10.3).

    Returns:
        The chain found (certificate first, root last) and warnings about the CA file.

    Raises:
        The errors of :func:`check_signing_certificate`; BundleError (no readable
        certificate in the CA file); ChainVerificationError (no valid chain).
    """
    check_signing_certificate(cert, at=at)
    cas, dropped = extract_certificates(ca_bundle_pem, "the CA file")
    chain = _walk(cert, cas, at)
    _verify_path(cert, chain, cas, at, ee_policy=_SIGNING_POLICY)
    return Validation(tuple(chain), tuple(dropped))


def _not_ca(_policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints | None) -> None:
    if bc is not None and bc.ca:
        msg = "a CA certificate is not a recording signer"
        raise ValueError(msg)


def _may_sign(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is None or not ku.digital_signature:
        msg = "key usage lacks digitalSignature"
        raise ValueError(msg)


# RFC 5280 end-entity policy for signers: key usage required with digitalSignature;
# no TLS demands (no SAN, no EKU required); other extensions allowed.
_SIGNING_POLICY = (
    ExtensionPolicy.permit_all()
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _not_ca)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _may_sign)
)

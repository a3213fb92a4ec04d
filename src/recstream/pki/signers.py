"""Is this certificate fit to sign recordings (docs/FORMAT.md §10.3)?

The checks a verifier applies to the certificate in a signed recording's header,
at the time the recording says it was signed, each failing with its own error:

1. X.509 v3 (:class:`~recstream.errors.CertificatePurposeError`, ``check="version"``);
2. an ECDSA P-256 or Ed25519 key (:class:`~recstream.errors.KeyPolicyError`);
3. not a CA certificate (``check="ca"``);
4. key usage present and allowing digitalSignature, and not keyCertSign
   (``check="key-usage"``): a recording certificate (keyEncipherment only) is not
   a signer;
5. extended key usage, when present, lists id-kp-documentSigning (RFC 9336) or
   anyExtendedKeyUsage (``check="extended-key-usage"``): a TLS-only certificate
   from a shared CA does not sign recordings;
6. inside its validity period at that time;
7. a chain to a root in the CA file, through :mod:`recstream.pki.verify`'s walk and
   RFC 5280 path validation (the same code as for recording certificates, with the
   signing profile's end-entity policy).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier
from cryptography.x509.verification import Criticality, ExtensionPolicy, Policy

from recstream import _crypto
from recstream.errors import CertificatePurposeError, KeyPolicyError
from recstream.pki._util import basic_constraints, key_usage, key_usage_names, quoted
from recstream.pki.bundle import extract_certificates
from recstream.pki.usage import _check_validity
from recstream.pki.verify import Validation, _verify_path, _walk

__all__ = ["DOCUMENT_SIGNING", "check_signing_certificate", "validate_signing_certificate"]

DOCUMENT_SIGNING = ObjectIdentifier("1.3.6.1.5.5.7.3.36")  # id-kp-documentSigning, RFC 9336


def check_signing_certificate(cert: x509.Certificate, *, at: datetime) -> None:
    """Checks 1 to 6 (everything but the chain) at time ``at``.

    Raises:
        CertificatePurposeError, KeyPolicyError, CertificateExpiredError,
        CertificateNotYetValidError.
    """
    _check_kind(cert)
    _check_usage(cert)
    _check_validity(cert, "the signer certificate", at)


def _check_kind(cert: x509.Certificate) -> None:
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


def _check_usage(cert: x509.Certificate) -> None:
    ku = key_usage(cert)
    if ku is None or not ku.digital_signature or ku.key_cert_sign:
        allowed = "no key usage extension" if ku is None else ", ".join(key_usage_names(ku))
        msg = (
            f"the signer certificate {quoted(cert.subject)} must allow digitalSignature and not "
            f"keyCertSign (it has {allowed}); it is not a signing certificate"
        )
        raise CertificatePurposeError(msg, "key-usage")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not {DOCUMENT_SIGNING, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(eku):
        names = ", ".join(o._name for o in eku) or "nothing"
        msg = (
            f"the signer certificate {quoted(cert.subject)} has extended key usage {names}, "
            "without documentSigning (1.3.6.1.5.5.7.3.36) or anyExtendedKeyUsage: it was "
            "issued for something else and does not sign recordings"
        )
        raise CertificatePurposeError(msg, "extended-key-usage")


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
    if ku is None or not ku.digital_signature or ku.key_cert_sign:
        msg = "key usage lacks digitalSignature, or allows keyCertSign"
        raise ValueError(msg)


# RFC 5280 end-entity policy for signers: key usage required with digitalSignature;
# no TLS demands (no SAN, no EKU required); other extensions allowed.
_SIGNING_POLICY = (
    ExtensionPolicy.permit_all()
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, _not_ca)
    .require_present(x509.KeyUsage, Criticality.AGNOSTIC, _may_sign)
)

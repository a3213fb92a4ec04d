"""Small helpers shared by the pki modules: naming certificates in messages,
telling CAs and roots apart, key descriptions, dates.  No I/O."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from recstream import _crypto
from recstream.pki.certs import name_str
from recstream.pki.dates import EXPIRY_WARNING_DAYS, days_left, fmt_time, utcnow

# Moved to public modules (dates, certs); kept importable here for the pki modules.
__all__ = ["EXPIRY_WARNING_DAYS", "days_left", "fmt_time", "name_str", "utcnow"]


def quoted(name: x509.Name) -> str:
    return f"'{name_str(name)}'"


def basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def is_ca(cert: x509.Certificate) -> bool:
    """True when basicConstraints says CA:TRUE (RFC 5280 §4.2.1.9)."""
    bc = basic_constraints(cert)
    return bc is not None and bc.ca


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s subject is ``cert``'s issuer and its key signed ``cert``."""
    return _crypto.is_directly_issued_by(cert, issuer)


def weak_signature(cert: x509.Certificate) -> str | None:
    """The hash's name if ``cert`` is signed with SHA-1 or MD5 (forgeable), else None."""
    alg = _crypto.signature_hash(cert)
    if isinstance(alg, hashes.SHA1 | hashes.MD5):
        return "SHA-1" if isinstance(alg, hashes.SHA1) else "MD5"
    return None


def is_self_signed(cert: x509.Certificate) -> bool:
    """True for a root: issuer equals subject and its own key verifies the signature.

    A root's self-signature protects nothing (it is trusted as given), so an old
    root self-signed with SHA-1, which cryptography no longer verifies, still counts.
    """
    if cert.issuer != cert.subject:
        return False
    return weak_signature(cert) is not None or is_issued_by(cert, cert)


def key_kind(key: object) -> tuple[str, int | None]:
    """A public key's type name and size in bits (size None where it has none)."""
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC ({key.curve.name})", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", None
    return type(key).__name__, None


KEY_USAGE_NAMES = (
    ("digital_signature", "digitalSignature"),
    ("content_commitment", "nonRepudiation"),
    ("key_encipherment", "keyEncipherment"),
    ("data_encipherment", "dataEncipherment"),
    ("key_agreement", "keyAgreement"),
    ("key_cert_sign", "keyCertSign"),
    ("crl_sign", "cRLSign"),
)


def key_usage_names(ku: x509.KeyUsage) -> list[str]:
    """The usages a KeyUsage extension allows, in openssl's spelling."""
    names = [label for attr, label in KEY_USAGE_NAMES if getattr(ku, attr)]
    # encipherOnly/decipherOnly are only defined (and only readable) with keyAgreement
    if ku.key_agreement and ku.encipher_only:
        names.append("encipherOnly")
    if ku.key_agreement and ku.decipher_only:
        names.append("decipherOnly")
    return names


def parse_failure(exc: BaseException) -> str:
    """Plain words for why pyca could not parse PEM or DER, without its internals.

    pyca's messages carry Rust debug output (``ParseError { kind: InvalidLength }``,
    ``InvalidData(Invalid padding)``) and a FAQ link; a user needs the fact.
    """
    text = str(exc)
    if "Unable to load PEM" in text or ("PEM" in text and "Invalid" in text):
        return "the PEM block's base64 is damaged (truncated, edited, or not PEM)"
    if "asn1" in text.lower() or "ParseError" in text or "DER" in text:
        return "its encoded structure is malformed: truncated, damaged, or another kind of object"
    if "unsupported" in text.lower():
        return "it uses an algorithm or version this build does not support"
    return "it is malformed"

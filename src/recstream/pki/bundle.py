"""CA bundles: the media server's CA file, cleaned and put in order.

The vendor document asks for "the bundle of all the intermediate CA's and the root
CA in specific order" (``cat crt_inter3.pem crt_inter2.pem crt_inter1.pem
root_ca.pem > ca.pem``), holding only what lies between ``BEGIN CERTIFICATE`` and
``END CERTIFICATE`` with Unix line endings.  :func:`build_bundle` does that from
files in any order, and checks every link's signature on the way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recstream.errors import BundleError
from recstream.pki._util import (
    EXPIRY_WARNING_DAYS,
    days_left,
    fmt_time,
    is_ca,
    is_issued_by,
    is_self_signed,
    parse_failure,
    quoted,
    utcnow,
    weak_signature,
)
from recstream.pki.certs import certificate_id

__all__ = ["MAX_CHAIN_LENGTH", "Bundle", "build_bundle", "extract_certificates"]

MAX_CHAIN_LENGTH = 8  # root plus 7 intermediates; deeper chains are mistakes (or loops)

# Five or more dashes: copies from web pages and the vendor document itself stretch them.
_BLOCK = re.compile(
    rb"-{5,}BEGIN ([A-Z0-9 #]+?)-{5,}[ \t]*\n(.*?)-{5,}END \1-{5,}",
    re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A CA file's certificates in the vendor's order: intermediates, then the root.

    ``certificates[0]`` is the CA that signs recording certificates and each next
    one is the issuer of the one before; the last is the self-signed root.
    """

    certificates: tuple[x509.Certificate, ...]
    warnings: tuple[str, ...] = ()

    def to_pem(self) -> bytes:
        """The CA file: PEM blocks only, LF line endings, in chain order."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certificates)


def extract_certificates(
    data: bytes, source: str = "input"
) -> tuple[list[x509.Certificate], list[str]]:
    """Read every certificate in ``data``, ignoring anything outside the PEM blocks.

    Bag attributes, ``openssl x509 -text`` dumps, CRLF or CR line endings and keys
    are tolerated; a file without PEM markers is read as one DER certificate.

    Returns:
        The certificates in file order, and warnings about what was dropped.

    Raises:
        BundleError: a certificate block is damaged, or ``data`` holds no certificate.
    """
    text = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if b"-----BEGIN" not in text:
        try:
            return [x509.load_der_x509_certificate(data)], []
        except ValueError as exc:
            msg = f"{source}: no certificate found (no PEM BEGIN CERTIFICATE block, not DER)"
            raise BundleError(msg) from exc
    certs: list[x509.Certificate] = []
    warnings: list[str] = []
    others: list[str] = []
    for match in _BLOCK.finditer(text):
        label = match.group(1).decode("ascii")
        if label == "CERTIFICATE":
            certs.append(_load_block(match.group(2), source, len(certs) + 1))
        elif label.endswith("PRIVATE KEY"):
            warnings.append(f"{source}: dropped a private key block; never put keys in a CA file")
        else:
            others.append(label)
    if not certs:
        raise BundleError(_no_certificates_message(source, others))
    return certs, warnings


def build_bundle(inputs: Sequence[tuple[str, bytes]], *, now: datetime | None = None) -> Bundle:
    """Build a CA file from ``(name, bytes)`` inputs given in any order.

    Keeps only CA certificates (end certificates and keys are dropped with a
    warning), drops exact duplicates, then orders them from the CA that issues end
    certificates up to the one root by following issuer links and checking each
    link's signature.  Warns about CAs expired or expiring within 30 days.

    Raises:
        BundleError: no CA certificates; two roots; no root; a missing link (a
            certificate whose issuer is not among the inputs); a signature that does
            not verify; or two chains at once.
    """
    now = now or utcnow()
    found: list[tuple[x509.Certificate, str]] = []
    warnings: list[str] = []
    seen: dict[str, str] = {}
    for name, data in inputs:
        certs, dropped = extract_certificates(data, name)
        warnings += dropped
        for i, cert in enumerate(certs, 1):
            where = f"{name} #{i}" if len(certs) > 1 else name
            cid = certificate_id(cert)
            if cid in seen:
                warnings.append(f"{where}: dropped a duplicate of {seen[cid]}")
                continue
            seen[cid] = where
            found.append((cert, where))
    cas = [(c, w) for c, w in found if is_ca(c)]
    warnings += [
        f"{where}: dropped {quoted(cert.subject)}, which is not a CA certificate "
        "(a CA file holds the intermediate and root CAs, not end certificates)"
        for cert, where in found
        if not is_ca(cert)
    ]
    if not cas:
        msg = "no CA certificates given" + (" (only end certificates)" if found else "")
        raise BundleError(msg)
    chain = _order(cas)
    warnings += _expiry_warnings(chain, now)
    return Bundle(tuple(chain), tuple(warnings))


def _order(found: list[tuple[x509.Certificate, str]]) -> list[x509.Certificate]:
    roots = [(c, w) for c, w in found if is_self_signed(c)]
    if len(roots) > 1:
        names = " and ".join(f"{quoted(c.subject)} ({w})" for c, w in roots)
        msg = (
            f"two roots: {names}; a CA file holds one chain ending in one root "
            "(use one bundle per root)"
        )
        raise BundleError(msg)
    if not roots:
        raise BundleError(_missing_link_message(found))
    for cert, where in found:
        weak = weak_signature(cert)
        if weak is not None and cert is not roots[0][0]:
            msg = (
                f"{where}: {quoted(cert.subject)} is signed with {weak}, which can be "
                "forged and is not accepted; have it reissued with SHA-256"
            )
            raise BundleError(msg)
    chain = [roots[0][0]]
    rest = [pair for pair in found if pair[0] is not chain[0]]
    while rest:
        children = [(c, w) for c, w in rest if is_issued_by(c, chain[-1])]
        if not children:
            raise BundleError(_missing_link_message(rest, chain[-1]))
        if len(children) > 1:
            names = " and ".join(f"{quoted(c.subject)} ({w})" for c, w in children)
            msg = (
                f"{names} are both issued by {quoted(chain[-1].subject)}; a CA file "
                "holds a single chain, so make one bundle for each"
            )
            raise BundleError(msg)
        chain.append(children[0][0])
        rest = [pair for pair in rest if pair[0] is not children[0][0]]
    if len(chain) > MAX_CHAIN_LENGTH:
        msg = f"the chain has {len(chain)} certificates, over the limit of {MAX_CHAIN_LENGTH}"
        raise BundleError(msg)
    chain.reverse()
    return chain


def _missing_link_message(
    pending: list[tuple[x509.Certificate, str]], top: x509.Certificate | None = None
) -> str:
    present = {c.subject for c, _ in pending}
    if top is not None:
        present.add(top.subject)
    for cert, where in pending:
        if cert.issuer not in present:
            return (
                f"missing link: {quoted(cert.subject)} ({where}) was issued by "
                f"{quoted(cert.issuer)}, which is not among the inputs; add that CA's "
                "certificate"
            )
    for cert, where in pending:
        if top is not None and cert.issuer == top.subject:
            return (
                f"{quoted(cert.subject)} ({where}) names {quoted(top.subject)} as its "
                "issuer, but its signature does not verify under that certificate's key: "
                "a different CA with the same name, or a damaged certificate"
            )
    names = ", ".join(quoted(c.subject) for c, _ in pending)
    return (
        f"{names} do not lead to a self-signed root: a signature does not verify, or "
        "the root is missing"
    )


def _expiry_warnings(chain: list[x509.Certificate], now: datetime) -> list[str]:
    out: list[str] = []
    for cert in chain:
        left = days_left(cert, now)
        when = fmt_time(cert.not_valid_after_utc)
        if cert.not_valid_after_utc < now:
            out.append(f"{quoted(cert.subject)} expired on {when}")
        elif left < EXPIRY_WARNING_DAYS:
            out.append(f"{quoted(cert.subject)} expires in {left} days, on {when}")
    return out


def _load_block(body: bytes, source: str, index: int) -> x509.Certificate:
    # Re-wrap the base64 cleanly: editors leave trailing blanks and indentation.
    lines = b"\n".join(line.strip() for line in body.split(b"\n") if line.strip())
    pem = b"-----BEGIN CERTIFICATE-----\n" + lines + b"\n-----END CERTIFICATE-----\n"
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        msg = (
            f"{source}: certificate block {index} is damaged and cannot be read "
            f"({parse_failure(exc)})"
        )
        raise BundleError(msg) from exc


def _no_certificates_message(source: str, others: list[str]) -> str:
    if "PKCS7" in others:
        return (
            f"{source}: holds a PKCS#7 bundle, not certificates; convert it with "
            "'openssl pkcs7 -print_certs -in FILE'"
        )
    if "TRUSTED CERTIFICATE" in others:
        return (
            f"{source}: holds an OpenSSL TRUSTED CERTIFICATE; strip its trust settings "
            "with 'openssl x509 -in FILE'"
        )
    if others:
        kinds = ", ".join(sorted(set(others)))
        return f"{source}: no certificate found, only {kinds}"
    return f"{source}: no complete BEGIN/END CERTIFICATE block found"

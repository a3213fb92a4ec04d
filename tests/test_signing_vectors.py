"""recstream's verifier against the signed vectors of tests/vectors (FORMAT.md §10).

Each vector with a ``signature:`` line must verify as it says, with
``keys/signing-ca.cert.pem`` as the CA file and ``verify at`` (ms) as the time
where given; every version-1 success vector is ``unsigned``.  Valid ones are also
read at random through a ``VerifiedBody`` and re-wrapped, staying valid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest

from recstream.envelope import Identity, IdentitySet, amend_header, open_file_key
from recstream.format import Header, parse_header
from recstream.pki.certs import load_certificate, load_private_key
from recstream.reader import BytesSource, SegmentReader
from recstream.signing import SignatureStatus, verify_source

VECTOR_DIR = Path(__file__).parent / "vectors"
CA = (VECTOR_DIR / "keys" / "signing-ca.cert.pem").read_bytes()


def read(path: Path) -> tuple[dict[str, str], bytes]:
    text, _, envelope = path.read_bytes().partition(b"\n\n")
    return dict(line.split(": ", 1) for line in text.decode().splitlines()), envelope


SIGNED = [p for p in sorted(VECTOR_DIR.glob("*.rsv")) if "signature" in read(p)[0]]
UNSIGNED_OK = [
    p for p in sorted(VECTOR_DIR.glob("*.rsv"))
    if read(p)[0]["expect"] == "success" and "signature" not in read(p)[0]
]  # fmt: skip


@cache
def keys(name: str) -> IdentitySet:
    pem = (VECTOR_DIR / "keys" / f"{name}.key.pem").read_bytes()
    cert = load_certificate((VECTOR_DIR / "keys" / f"{name}.cert.pem").read_bytes())
    return IdentitySet([Identity.from_private_key(load_private_key(pem), cert)])


def test_signed_vectors_cover_the_issue() -> None:
    names = {p.stem for p in SIGNED}
    for wanted in ("signed_p256", "signed_ed25519", "signed_wrong_key", "signed_body_byte_altered",
                   "signed_rewrapped_for_bob", "signed_header_field_changed",
                   "signed_signature_truncated", "signed_unknown_signer",
                   "signed_expired_signer_valid_at_signing"):  # fmt: skip
        assert wanted in names


@pytest.mark.parametrize("path", SIGNED, ids=lambda p: p.stem)
def test_signed_vector(path: Path) -> None:
    fields, envelope = read(path)
    at = None
    if "verify at" in fields:
        at = datetime.fromtimestamp(int(fields["verify at"]) / 1000, UTC)
    report = verify_source(BytesSource(envelope), CA, at=at, keep_digests=True)
    assert report.status.value == fields["signature"], report.reason
    if report.status is not SignatureStatus.VALID:
        assert report.reason and report.verified is None
        return
    assert report.verified is not None and report.signed_ms is not None
    if "expired" in path.stem:
        assert report.valid_now is False and "expired" in report.note
    # random access checked against the signed digests
    ring = keys(fields["identity"])
    reader = SegmentReader(BytesSource(envelope), ring, verified=report.verified)
    whole = reader.read_at(0, reader.size)
    assert reader.read_at(max(0, reader.size - 5000), 5000) == whole[-5000:]
    # re-wrapping (adding a recipient) keeps it valid
    header = parse_header(envelope)
    assert isinstance(header, Header)
    file_key = open_file_key(header, ring)
    other = "bob" if fields["identity"] == "alice" else "alice"
    cert = load_certificate((VECTOR_DIR / "keys" / f"{other}.cert.pem").read_bytes())
    from recstream.envelope import Recipient

    amended = amend_header(header, file_key, add=[Recipient.from_certificate(cert)])
    again = verify_source(BytesSource(amended + envelope[header.length :]), CA, at=at)
    assert again.status is SignatureStatus.VALID


@pytest.mark.parametrize("path", UNSIGNED_OK[:8], ids=lambda p: p.stem)
def test_version_1_vectors_are_unsigned(path: Path) -> None:
    report = verify_source(BytesSource(read(path)[1]), CA)
    assert report.status is SignatureStatus.UNSIGNED

"""Signed recordings (FORMAT.md §10): sign with every writer, verify without a key,
random access checked against the signature, rewrap keeps it, tampering detected."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream import errors
from recstream.envelope import (
    EnvelopeDecryptor,
    EnvelopeEncryptor,
    RandomAccessEncryptor,
    amend_header,
    open_file_key,
    rewrap_header,
)
from recstream.format import (
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    SIGNED_VERSION,
    TRAILER_BYTES,
    Header,
    Metadata,
    parse_header,
)
from recstream.reader import BytesSource, SegmentReader, recover
from recstream.signing import SignatureStatus, Signer, require_valid, verify_file, verify_source
from tests.conftest import Party
from tests.signing_helpers import NOW, RECORDING_USAGE, Ca, ed, p256, write_identity

SIZES = [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, 3 * SEGMENT_SIZE + 100]


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make()


@pytest.fixture(scope="module")
def signer(ca: Ca) -> Signer:
    key = p256()
    return Signer.from_objects(key, ca.issue("recorder-01", key))


@pytest.fixture(scope="module")
def ed_signer(ca: Ca) -> Signer:
    key = ed()
    return Signer.from_objects(key, ca.issue("recorder-ed", key))


def seal(
    alice: Party, metadata: Metadata, data: bytes, signer: Signer | None, step: int = 0
) -> bytes:
    enc = EnvelopeEncryptor([alice.recipient], metadata, signer=signer)
    if not step:
        return enc.update(data) + enc.finalize()
    out = b"".join(enc.update(data[i : i + step]) for i in range(0, len(data), step))
    return out + enc.finalize()


def decrypt(alice: Party, env: bytes, step: int = 0) -> bytes:
    dec = EnvelopeDecryptor(alice.keys)
    if not step:
        return dec.update(env) + dec.finalize()
    out = b"".join(dec.update(env[i : i + step]) for i in range(0, len(env), step))
    return out + dec.finalize()


def report(env: bytes, ca: Ca, **kw: object):  # type: ignore[no-untyped-def]
    return verify_source(BytesSource(env), ca.pem, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", SIZES)
def test_signed_round_trip_and_verify(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca, size: int
) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    env = seal(alice, metadata, data, signer)
    header = parse_header(env)
    assert isinstance(header, Header) and header.version == SIGNED_VERSION and header.signed
    assert decrypt(alice, env) == data
    assert decrypt(alice, env, step=7919) == data
    rep = report(env, ca)
    assert rep.status is SignatureStatus.VALID, rep.reason
    assert rep.cert_id == signer.cert_id and rep.algorithm == "ecdsa-p256-sha256"
    assert rep.chain_valid_at_signing and rep.valid_now
    reader = SegmentReader(BytesSource(env), alice.keys)
    assert reader.size == size and reader.read_at(0, size) == data


def test_ed25519_and_chunked_writes(
    alice: Party, metadata: Metadata, ed_signer: Signer, ca: Ca
) -> None:
    data = bytes(5 * SEGMENT_SIZE + 3)
    env = seal(alice, metadata, data, ed_signer, step=SEGMENT_SIZE - 1)
    assert env == env
    rep = report(env, ca)
    assert rep.status is SignatureStatus.VALID and rep.algorithm == "ed25519"
    assert decrypt(alice, env, step=1000) == data


def test_unsigned_stays_version_1_and_reports_unsigned(
    alice: Party, metadata: Metadata, ca: Ca
) -> None:
    env = seal(alice, metadata, b"hello", None)
    header = parse_header(env)
    assert isinstance(header, Header) and header.version == 1 and not header.signed
    rep = report(env, ca)
    assert rep.status is SignatureStatus.UNSIGNED
    with pytest.raises(errors.UnsignedRecordingError):
        require_valid(rep)


def test_every_body_byte_and_trailer_byte_is_covered(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    env = seal(alice, metadata, bytes(2 * SEGMENT_SIZE + 10), signer)
    header = parse_header(env)
    assert isinstance(header, Header)
    body_start = header.length
    # a byte in each body segment, the prefix, the final tag, and each trailer field
    spots = [body_start + 3, body_start + 56 + 5, body_start + 56 + SEGMENT_WIRE_SIZE + 9,
             len(env) - TRAILER_BYTES - 1, len(env) - TRAILER_BYTES + 2,
             len(env) - TRAILER_BYTES + 20, len(env) - TRAILER_BYTES + 60]  # fmt: skip
    for at in spots:
        bad = bytearray(env)
        bad[at] ^= 1
        rep = report(bytes(bad), ca)
        assert rep.status is SignatureStatus.INVALID, at
        assert rep.reason
    with pytest.raises(errors.BadSignatureError):
        require_valid(report(env[:-1], ca))


def test_header_metadata_change_invalidates(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    env = seal(alice, metadata, b"x" * 100, signer)
    bad = env.replace(b"rec-0001", b"rec-0002")
    assert report(bad, ca).status is SignatureStatus.INVALID


def test_rewrap_and_amend_keep_signature(
    alice: Party, bob: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    env = seal(alice, metadata, bytes(SEGMENT_SIZE * 2), signer)
    header = parse_header(env)
    assert isinstance(header, Header)
    key = open_file_key(header, alice.keys)
    for new_head in (
        rewrap_header(header, key, [bob.recipient]),
        amend_header(header, key, add=[bob.recipient]),
    ):
        rewrapped = new_head + env[header.length :]
        assert report(rewrapped, ca).status is SignatureStatus.VALID
        assert decrypt(bob, rewrapped) == bytes(SEGMENT_SIZE * 2)


def test_refused_signers(alice: Party, metadata: Metadata, ca: Ca) -> None:
    other_ca = Ca.make("Someone Else's CA")
    key = p256()
    stranger = Signer.from_objects(key, other_ca.issue("stranger", key))
    rep = report(seal(alice, metadata, b"abc", stranger), ca)
    assert rep.status is SignatureStatus.REFUSED_SIGNER
    assert "Someone Else" in rep.reason and rep.chain_valid_at_signing is False
    with pytest.raises(errors.RefusedSignerError):
        require_valid(rep)


def test_signer_construction_checks(ca: Ca, tmp_path: Path) -> None:
    key = p256()
    with pytest.raises(errors.CertificatePurposeError, match="digitalSignature"):
        Signer.from_objects(key, ca.issue("enc-only", key, usage=RECORDING_USAGE))
    with pytest.raises(errors.CertificateKeyMismatchError):
        Signer.from_objects(p256(), ca.issue("other", key))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(errors.KeyPolicyError):
        Signer.from_objects(rsa_key, ca.issue("rsa", rsa_key))  # type: ignore[arg-type]
    old = ca.issue(
        "old", key, not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=1)
    )
    with pytest.raises(errors.CertificateExpiredError):
        Signer.from_objects(key, old)
    key_path, cert_path = write_identity(tmp_path, "node", key, ca.issue("node", key), b"pw")
    with pytest.raises(errors.KeyLoadError, match="encrypted"):
        Signer.from_files(key_path, cert_path)
    with pytest.raises(errors.KeyLoadError, match="wrong password"):
        Signer.from_files(key_path, cert_path, b"nope")
    assert Signer.from_files(key_path, cert_path, b"pw").subject == "CN=node"
    assert "PRIVATE" not in repr(Signer.from_files(key_path, cert_path, b"pw"))


def test_expired_now_but_valid_at_signing(alice: Party, metadata: Metadata, ca: Ca) -> None:
    key = p256()
    then = NOW - timedelta(days=20)
    cert = ca.issue(
        "retired", key, not_before=NOW - timedelta(days=30), not_after=NOW - timedelta(days=10)
    )
    old = Signer.from_objects(key, cert, at=then)
    enc = EnvelopeEncryptor([alice.recipient], metadata, signer=old)
    env = enc.update(b"evidence") + enc.finalize(signed_ms=int(then.timestamp() * 1000))
    rep = report(env, ca)
    assert rep.status is SignatureStatus.VALID and rep.valid_now is False and "expired" in rep.note
    # signed "now" with the expired certificate: refused
    enc = EnvelopeEncryptor([alice.recipient], metadata, signer=old)
    env = enc.update(b"evidence") + enc.finalize()
    rep = report(env, ca)
    assert rep.status is SignatureStatus.REFUSED_SIGNER and "expired" in rep.reason


def test_verified_body_checks_range_reads(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca, tmp_path: Path
) -> None:
    data = bytes(range(256)) * (4 * SEGMENT_SIZE // 256) + b"tail"
    env = seal(alice, metadata, data, signer)
    path = tmp_path / "r.rsv"
    path.write_bytes(env)
    rep = verify_file(path, ca.pem, keep_digests=True)
    assert rep.status is SignatureStatus.VALID and rep.verified is not None
    assert rep.verified.file_identity is not None and rep.verified.segments == 5
    reader = SegmentReader(BytesSource(env), alice.keys, verified=rep.verified)
    assert (
        reader.read_at(SEGMENT_SIZE - 3, SEGMENT_SIZE + 10)
        == data[SEGMENT_SIZE - 3 : 2 * SEGMENT_SIZE + 7]
    )
    assert reader.read_at(len(data) - 4, 100) == b"tail"
    # another signed recording (same shape) under the same verified digests: refused
    other = seal(alice, metadata, data, signer)
    with pytest.raises(errors.SignedSegmentMismatchError):
        SegmentReader(BytesSource(other), alice.keys, verified=rep.verified)
    # the file altered after verification (one segment swapped in from the other file)
    header = parse_header(env)
    assert isinstance(header, Header)
    at = header.length + 56 + 2 * SEGMENT_WIRE_SIZE
    mixed = env[:at] + other[at : at + SEGMENT_WIRE_SIZE] + env[at + SEGMENT_WIRE_SIZE :]
    reader = SegmentReader(BytesSource(mixed), alice.keys, verified=rep.verified)
    assert reader.read_at(0, 100) == data[:100]
    with pytest.raises(errors.SignedSegmentMismatchError) as caught:
        reader.read_at(2 * SEGMENT_SIZE, 10)
    assert caught.value.index == 2


def test_random_access_encryptor_signs(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    enc = RandomAccessEncryptor([alice.recipient], metadata, signer=signer)
    out = io.BytesIO()
    out.write(enc.head)
    chunks = [bytes([i]) * SEGMENT_SIZE for i in range(4)] + [b"end"]
    for index in (3, 1, 2, 4, 0):  # out of order, like the muxer's reserved head
        out.seek(enc.offset(index))
        out.write(enc.seal(index, chunks[index]))
    out.seek(enc.trailer_offset())
    out.write(enc.trailer())
    env = out.getvalue()
    assert report(env, ca).status is SignatureStatus.VALID
    assert decrypt(alice, env) == b"".join(chunks)
    with pytest.raises(errors.StreamStateError):
        enc.trailer()


def test_interrupted_signed_recording(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    data = bytes(3 * SEGMENT_SIZE + 5)
    env = seal(alice, metadata, data, signer)
    cut = env[: -TRAILER_BYTES - 5 - 16]  # the final segment and trailer never written
    rep = report(cut, ca)
    assert rep.status is SignatureStatus.INVALID and "trailer" in rep.reason
    with pytest.raises(errors.TruncatedStreamError):
        decrypt(alice, cut)
    got: list[bytes] = []
    rec = recover(BytesSource(cut), alice.keys, got.append)
    assert not rec.complete and not rec.signed and b"".join(got) == data[: 3 * SEGMENT_SIZE]
    got.clear()
    whole = recover(BytesSource(env), alice.keys, got.append)
    assert whole.complete and whole.signed and b"".join(got) == data


def test_pool_digests_equal_serial_ones(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    from recstream import _crypto
    from recstream.parallel import SegmentPool

    pool = SegmentPool(2, min_segments=2)
    try:
        data = bytes(range(256)) * (70 * SEGMENT_SIZE // 256) + b"x" * 5
        enc = EnvelopeEncryptor([alice.recipient], metadata, signer=signer, pool=pool)
        env = enc.update(data) + enc.finalize()
        assert report(env, ca).status is SignatureStatus.VALID
        assert decrypt(alice, env) == data
        body = env[parse_header(env).length : -TRAILER_BYTES]  # type: ignore[union-attr]
        serial, pooled = (
            _crypto.SegmentDigester(keep=True),
            _crypto.SegmentDigester(keep=True, runs=pool.digest),
        )
        for d in (serial, pooled):
            for i in range(0, len(body), 100_003):  # odd chunking: partial segments carried
                d.update(body[i : i + 100_003])
        assert serial.finish() == pooled.finish() and serial.digests == pooled.digests
        assert serial.segments == 71
    finally:
        pool.shutdown()


def test_pool_seals_and_hashes_in_one_pass(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    """A signed writer on a pool: the threads that seal a block hash it (seal_digest);
    odd chunking takes the caller-thread path for segments completed across calls.
    The trailer's root is the one a serial digester computes from the file's body."""
    from recstream import _crypto
    from recstream.format import parse_trailer
    from recstream.parallel import SegmentPool

    pool = SegmentPool(2, min_segments=2)
    try:
        data = bytes(range(256)) * (40 * SEGMENT_SIZE // 256) + b"tail"
        enc = EnvelopeEncryptor([alice.recipient], metadata, signer=signer, pool=pool)
        parts = [enc.update(data[i : i + 5 * SEGMENT_SIZE + 7])
                 for i in range(0, len(data), 5 * SEGMENT_SIZE + 7)]  # fmt: skip
        env = b"".join(parts) + enc.finalize()
        assert report(env, ca).status is SignatureStatus.VALID
        assert decrypt(alice, env) == data
        body = env[parse_header(env).length : -TRAILER_BYTES]  # type: ignore[union-attr]
        serial = _crypto.SegmentDigester()
        serial.update(body)
        assert parse_trailer(env[-TRAILER_BYTES:]).segments_root == serial.finish()
        assert serial.segments == 41
    finally:
        pool.shutdown()


def test_digests_out_of_order_are_refused() -> None:
    from recstream import _crypto

    d = _crypto.SegmentDigester()
    with pytest.raises(ValueError, match="after the prefix"):
        d.add_digests(bytes(32))  # no prefix yet
    d.update(bytes(56) + bytes(100))  # prefix, then a partial segment held
    with pytest.raises(ValueError, match="between whole segments"):
        d.add_digests(bytes(32))
    e = _crypto.SegmentDigester()
    e.update(bytes(56))
    with pytest.raises(ValueError, match="whole"):
        e.add_digests(bytes(31))
    e.add_digests(bytes(64))
    assert e.segments == 2


def test_muxed_output_is_signed(
    alice: Party, bob: Party, signer: Signer, ca: Ca, tmp_path: Path
) -> None:
    pytest.importorskip("av")
    from recstream.errors import MuxError
    from recstream.format import MediaKind
    from recstream.mux import mux_files
    from tests.test_mux import CALL, SCREEN, T0, seal_file

    voice = seal_file(CALL, tmp_path / "v.rsv", alice, MediaKind.VOICE, T0)
    screen = seal_file(SCREEN, tmp_path / "s.rsv", alice, MediaKind.SCREEN, T0 + 2500)
    out = tmp_path / "out.rsv"
    mux_files(voice, screen, out, keys=alice.keys, recipients=[bob.recipient], signer=signer)
    rep = verify_file(out, ca.pem)
    assert rep.status is SignatureStatus.VALID, rep.reason
    raw = out.read_bytes()
    assert len(decrypt(bob, raw)) > 0
    with pytest.raises(MuxError, match="only an encrypted recording can be signed"):
        mux_files(CALL, SCREEN, tmp_path / "plain.webm", signer=signer)
    assert not (tmp_path / "plain.webm").exists()


@pytest.mark.parametrize(
    ("purposes", "accepted"),
    [
        (None, True),
        (["1.3.6.1.5.5.7.3.36"], True),  # id-kp-documentSigning (RFC 9336)
        (["2.5.29.37.0"], True),  # anyExtendedKeyUsage
        (["1.3.6.1.5.5.7.3.1"], False),  # serverAuth only: a TLS certificate
    ],
)
def test_extended_key_usage_of_signers(
    alice: Party, metadata: Metadata, ca: Ca, purposes: list[str] | None, accepted: bool
) -> None:
    from datetime import UTC, datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    from tests.signing_helpers import SIGNING_USAGE

    key = p256()
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eku")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(SIGNING_USAGE, critical=True)
    )
    if purposes is not None:
        eku = x509.ExtendedKeyUsage([ObjectIdentifier(p) for p in purposes])
        builder = builder.add_extension(eku, critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    if not accepted:
        with pytest.raises(errors.CertificatePurposeError, match="extended key usage") as caught:
            Signer.from_objects(key, cert)
        assert caught.value.check == "extended-key-usage"
        return
    env = seal(alice, metadata, b"eku", Signer.from_objects(key, cert))
    assert report(env, ca).status is SignatureStatus.VALID


def test_any_bit_flip_outside_the_recipients_invalidates(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    """Every single-bit flip in a signed envelope: never 'valid' unless it falls in the
    recipient stanzas or the header MAC (not signed, so rewrap works, FORMAT.md §10.2),
    and never anything but a report or a RecstreamError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    env = seal(alice, metadata, bytes(range(256)) * 70, signer)
    header = parse_header(env)
    assert isinstance(header, Header)
    unsigned_region = range(len(header.context), header.length)

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(st.integers(0, len(env) * 8 - 1))
    def flip(bit: int) -> None:
        bad = bytearray(env)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            rep = report(bytes(bad), ca)
        except errors.RecstreamError:
            return  # a header that no longer parses
        if bit // 8 not in unsigned_region:
            assert rep.status is not SignatureStatus.VALID, bit

    flip()


def test_inspect_signed_from_stdin(
    alice: Party, metadata: Metadata, signer: Signer, tmp_path: Path
) -> None:
    import json
    import subprocess
    import sys

    env = seal(alice, metadata, b"stdin", signer)
    done = subprocess.run(
        [sys.executable, "-m", "recstream", "inspect", "--json", "-"],
        input=env, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    info = json.loads(done.stdout)
    assert info["signature"]["trailer"] == "present" and info["plaintext_length"] == 5
    assert info["signature"]["cert_id"] == signer.cert_id


def test_every_byte_of_the_signer_block_is_checked(
    alice: Party, metadata: Metadata, signer: Signer, ca: Ca
) -> None:
    """A flipped byte anywhere in the signer certificate: a report (never valid) or a
    header failure, never another exception (pyca parses certificates lazily)."""
    env = seal(alice, metadata, b"cert bytes", signer)
    header = parse_header(env)
    assert isinstance(header, Header) and header.signer is not None
    start = len(header.context) - len(header.signer.certificate) - 3
    for at in range(start, len(header.context)):
        bad = bytearray(env)
        bad[at] ^= 0x20
        try:
            rep = report(bytes(bad), ca)
        except errors.EnvelopeFormatError:
            continue
        assert rep.status is not SignatureStatus.VALID, at

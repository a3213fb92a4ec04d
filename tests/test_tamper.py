"""Tampering: bit flips, truncation, extension, reordering, header swaps, wrong keys."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from recstream import errors
from recstream.envelope import EnvelopeDecryptor, IdentitySet
from recstream.format import SEGMENT_SIZE, SEGMENT_WIRE_SIZE, Header, parse_header
from tests.conftest import Party

Seal = Callable[..., bytes]


def open_all(data: bytes, keys: IdentitySet, step: int | None = None) -> bytes:
    dec = EnvelopeDecryptor(keys)
    step = step or len(data) + 1
    out = b"".join(dec.update(data[i : i + step]) for i in range(0, len(data), step))
    return out + dec.finalize()


def split(envelope: bytes) -> tuple[bytes, bytes]:
    header = parse_header(envelope)
    assert isinstance(header, Header)
    return envelope[: header.length], envelope[header.length :]


def segments(body: bytes) -> tuple[bytes, list[bytes]]:
    prefix, rest = body[:56], body[56:]
    return prefix, [rest[i : i + SEGMENT_WIRE_SIZE] for i in range(0, len(rest), SEGMENT_WIRE_SIZE)]


def test_every_single_bit_flip_is_rejected(seal: Seal, alice: Party) -> None:
    envelope = seal(os.urandom(SEGMENT_SIZE + 100))
    assert open_all(envelope, alice.keys)
    header_len = len(split(envelope)[0])
    # Every bit of the header, and every bit of a sample of body bytes.
    positions = list(range(header_len)) + list(range(header_len, len(envelope), 97))
    positions += [len(envelope) - 1]
    for pos in positions:
        for bit in range(8) if pos < header_len or pos % 5 == 0 else (pos % 8,):
            bad = bytearray(envelope)
            bad[pos] ^= 1 << bit
            with pytest.raises(errors.RecstreamError):
                open_all(bytes(bad), alice.keys)


def test_truncation_at_and_inside_every_boundary(seal: Seal, alice: Party) -> None:
    envelope = seal(os.urandom(3 * SEGMENT_SIZE + 10))
    header, _body = split(envelope)
    cuts = {0, 5, len(header) - 1, len(header), len(header) + 30, len(header) + 56}
    for k in range(4):
        boundary = len(header) + 56 + k * SEGMENT_WIRE_SIZE
        cuts |= {boundary - 1, boundary, boundary + 1, boundary + 15, boundary + 16}
    cuts |= {len(envelope) - 1}
    with pytest.raises(errors.EmptyInputError):  # 0 bytes: not an envelope at all
        open_all(b"", alice.keys)
    for cut in sorted(c for c in cuts if 0 < c < len(envelope)):
        with pytest.raises(errors.IntegrityError):
            open_all(envelope[:cut], alice.keys)
    assert len(open_all(envelope, alice.keys)) == 3 * SEGMENT_SIZE + 10


def test_cut_at_full_segment_boundary_is_reported_as_truncation(seal: Seal, alice: Party) -> None:
    envelope = seal(os.urandom(2 * SEGMENT_SIZE + 10))
    header, _ = split(envelope)
    cut = len(header) + 56 + 2 * SEGMENT_WIRE_SIZE
    with pytest.raises(errors.TruncatedStreamError) as info:
        open_all(envelope[:cut], alice.keys)
    assert info.value.segments == 2


@pytest.mark.parametrize("extra", [b"\x00", b"garbage" * 10, os.urandom(SEGMENT_WIRE_SIZE)])
def test_appended_bytes_rejected(seal: Seal, alice: Party, extra: bytes) -> None:
    envelope = seal(os.urandom(SEGMENT_SIZE + 1))
    with pytest.raises(errors.IntegrityError):
        open_all(envelope + extra, alice.keys)


@pytest.mark.parametrize(
    "rearrange",
    [
        lambda s: [s[1], s[0], *s[2:]],  # swapped
        lambda s: [s[0], s[0], *s[1:]],  # duplicated
        lambda s: s[1:],  # first dropped
        lambda s: [*s[:1], *s[2:]],  # middle dropped
        lambda s: s[:-1],  # final dropped
        lambda s: [*s[:-1], s[0], s[-1]],  # inserted before final
    ],
    ids=["swap", "duplicate", "drop-first", "drop-middle", "drop-final", "insert"],
)
def test_reordered_segments_rejected(seal: Seal, alice: Party, rearrange) -> None:  # type: ignore[no-untyped-def]
    envelope = seal(os.urandom(3 * SEGMENT_SIZE + 10))
    header, body = split(envelope)
    prefix, segs = segments(body)
    forged = header + prefix + b"".join(rearrange(segs))
    with pytest.raises(errors.IntegrityError):
        open_all(forged, alice.keys)


def test_header_of_one_file_on_body_of_another(seal: Seal, alice: Party) -> None:
    a, b = seal(b"first recording" * 1000), seal(b"second recording" * 1000)
    (ha, _), (_, bb) = split(a), split(b)
    with pytest.raises(errors.IntegrityError, match="commitment"):
        open_all(ha + bb, alice.keys)


def test_wrong_key_names_the_certificates_the_file_was_made_for(
    seal: Seal, alice: Party, bob: Party
) -> None:
    envelope = seal(b"secret")
    with pytest.raises(errors.NoMatchingKeyError) as info:
        open_all(envelope, bob.keys)
    assert info.value.cert_ids == (alice.cert_id,)
    assert alice.cert_id in str(info.value)


def test_two_recipients_each_decrypt(seal: Seal, alice: Party, bob: Party) -> None:
    envelope = seal(b"for both" * 5000, [alice.recipient, bob.recipient])
    assert open_all(envelope, alice.keys) == open_all(envelope, bob.keys) == b"for both" * 5000


def test_swapping_a_stanza_from_another_file_fails_header_auth(
    seal: Seal, alice: Party, bob: Party
) -> None:
    """The header MAC commits to one file key: a stanza grafted in cannot open it."""
    victim = seal(b"victim", [alice.recipient, bob.recipient])
    donor = seal(b"donor", [bob.recipient])
    hv, bv = split(victim)
    hd, _ = split(donor)
    pv, pd = parse_header(hv), parse_header(hd)
    assert isinstance(pv, Header) and isinstance(pd, Header)
    bob_v = pv.recipients[1].encode()
    bob_d = pd.recipients[0].encode()
    forged = hv.replace(bob_v, bob_d)
    assert forged != hv
    with pytest.raises(errors.HeaderAuthError):
        open_all(forged + bv, bob.keys)
    assert open_all(victim, alice.keys) == b"victim"

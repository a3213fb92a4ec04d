"""The multi-core body path writes and reads exactly Cobblestone-256's bytes.

Proof by three independent references: pyca's own Cobblestone (same salt, any
split of the input, any number of threads), the spec-derived vectors in
tests/vectors (decrypted, and their bodies re-sealed byte for byte), and the
Wycheproof chunked-encryption vectors (C2SP's reference ciphertexts).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.cobblestone import Cobblestone256Encryptor
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream import _crypto, errors, parallel
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, open_file_key
from recstream.format import (
    BODY_PREFIX_BYTES,
    SALT_BYTES,
    SEGMENT_SIZE,
    SEGMENT_WIRE_SIZE,
    Header,
    parse_header,
)
from recstream.parallel import (
    ParallelStreamDecryptor,
    ParallelStreamEncryptor,
    SegmentPool,
    pool_for,
)
from recstream.stream import StreamDecryptor
from tests.test_vectors import FILES, VectorFile, check_error, key_set
from tests.test_wycheproof import cases

SEG = SEGMENT_SIZE
KEY = bytes(range(32))
CONTEXT = b"recstream test context"
SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 9 * SEG, 9 * SEG + 5, 40 * SEG + 7]
STEPS = [1 << 20, 7 * SEG + 3, SEG, SEG - 1, 1000]


@pytest.fixture(scope="module", params=[1, 2, 3], ids=lambda n: f"{n}threads")
def pool(request: pytest.FixtureRequest) -> Iterator[SegmentPool]:
    """Runs split from two segments up, so even the small vectors cross threads."""
    p = SegmentPool(request.param, min_segments=2)
    yield p
    p.shutdown()


def data_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def split(data: bytes, step: int) -> list[bytes]:
    return [data[i : i + step] for i in range(0, len(data), step)] or [b""]


def cobblestone(data: bytes, pieces: list[bytes]) -> tuple[list[bytes], bytes]:
    enc = Cobblestone256Encryptor(KEY, CONTEXT)
    outs = [enc.update(p) for p in pieces]
    return outs, enc.finalize()


def sealed_by_pool(
    salt: bytes, pieces: list[bytes], pool: SegmentPool
) -> tuple[list[bytes], bytes]:
    enc = ParallelStreamEncryptor(KEY, CONTEXT, pool, salt=salt)
    outs = [enc.update(p) for p in pieces]
    return outs, enc.finalize()


def check_identical(data: bytes, pieces: list[bytes], pool: SegmentPool) -> bytes:
    want_outs, want_tail = cobblestone(data, pieces)
    body = b"".join(want_outs) + want_tail
    got_outs, got_tail = sealed_by_pool(body[:SALT_BYTES], pieces, pool)
    # Call by call, not only in total: output_size and buffering agree too.
    assert [len(o) for o in got_outs] == [len(o) for o in want_outs]
    assert b"".join(got_outs) + got_tail == body
    return body


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("step", STEPS)
def test_encrypt_identical_to_cobblestone(size: int, step: int, pool: SegmentPool) -> None:
    data = data_of(size)
    body = check_identical(data, split(data, step), pool)
    dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
    assert b"".join(dec.update(p) for p in split(body, step)) + dec.finalize() == data


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 24 * SEG + 100),
    cuts=st.lists(st.integers(0, 24 * SEG + 100), max_size=6),
    threads=st.integers(1, 4),
    min_segments=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_property_any_split_any_pool(
    size: int, cuts: list[int], threads: int, min_segments: int, seed: int
) -> None:
    """Any input, cut anywhere, on any pool: Cobblestone's bytes; and back, cut anywhere."""
    data = data_of(size, seed)
    bounds = [0, *sorted(c for c in cuts if c <= size), size]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    pool = SegmentPool(threads, min_segments=min_segments)
    try:
        body = check_identical(data, pieces, pool)
        dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
        wire = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
        out = b"".join(dec.update(body[a:b]) for a, b in itertools.pairwise(wire))
        assert out + dec.finalize() == data
    finally:
        pool.shutdown()


# --- failures: the same errors, at the same segment, as the single-thread path


def sealed(nseg: int, tail: int = 100) -> bytes:
    enc = Cobblestone256Encryptor(KEY, CONTEXT)
    return enc.update(data_of(nseg * SEG + tail)) + enc.finalize()


def first_error(dec: StreamDecryptor, body: bytes, step: int) -> tuple[type[Exception], int]:
    released = 0
    try:
        for p in split(body, step):
            released += len(dec.update(p))
        dec.finalize()
    except errors.IntegrityError as exc:
        with pytest.raises(errors.StreamStateError):
            dec.update(b"")
        return type(exc), getattr(exc, "index", -1)
    raise AssertionError("the tampered body decrypted")


@pytest.mark.parametrize("bad", [[0], [5], [11], [3, 9], [19], [20]])
@pytest.mark.parametrize("step", [1 << 20, 3 * SEG])
def test_tampered_segment_reported_like_cobblestone(
    bad: list[int], step: int, pool: SegmentPool
) -> None:
    body = bytearray(sealed(20))
    for i in bad:  # flip a bit inside segment i (index 20 is the short final one)
        body[BODY_PREFIX_BYTES + i * SEGMENT_WIRE_SIZE + 50] ^= 0x01
    want = first_error(StreamDecryptor(KEY, CONTEXT), bytes(body), step)
    got = first_error(ParallelStreamDecryptor(KEY, CONTEXT, pool), bytes(body), step)
    assert got == want
    assert got[1] == min(bad)


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda b: b[: BODY_PREFIX_BYTES - 1], errors.TruncatedStreamError),
        (lambda b: b[: BODY_PREFIX_BYTES + 3 * SEGMENT_WIRE_SIZE], errors.TruncatedStreamError),
        (lambda b: b[:-1], errors.FinalSegmentAuthError),
        (lambda b: b + b"x", errors.FinalSegmentAuthError),
        (lambda b: b[:30] + bytes([b[30] ^ 1]) + b[31:], errors.CommitmentError),
        (lambda b: b[:5] + bytes([b[5] ^ 1]) + b[6:], errors.CommitmentError),
    ],
    ids=["short_prefix", "no_final", "final_cut", "trailing_byte", "commitment", "salt"],
)
def test_malformed_bodies_refused(mangle: Any, error: type[Exception], pool: SegmentPool) -> None:
    body = mangle(sealed(10))
    dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
    with pytest.raises(error):
        dec.update(body)
        dec.finalize()


def test_failed_run_leaves_no_unauthenticated_plaintext() -> None:
    pool = SegmentPool(2, min_segments=2)
    body = bytearray(sealed(16, tail=0))
    body[BODY_PREFIX_BYTES + 12 * SEGMENT_WIRE_SIZE + 7] ^= 0x80
    dec = ParallelStreamDecryptor(KEY, CONTEXT, pool)
    out = bytearray(dec.output_size(len(body)))
    with pytest.raises(errors.SegmentAuthError) as info:
        dec.update_into(body, out)
    assert info.value.index == 12
    # The run holding segment 12 (segments 8..15) was wiped.
    assert out[8 * SEG : 16 * SEG] == bytes(8 * SEG)
    pool.shutdown()


def test_misuse_refused() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        SegmentPool(0)
    pool = SegmentPool(2)
    with pytest.raises(ValueError, match="salt"):
        ParallelStreamEncryptor(KEY, CONTEXT, pool, salt=b"short")
    with pytest.raises(ValueError, match="32-byte"):
        ParallelStreamEncryptor(KEY[:16], CONTEXT, pool)
    enc = ParallelStreamEncryptor(KEY, CONTEXT, pool)
    with pytest.raises(ValueError, match="too small"):
        enc.update_into(bytes(2 * SEG), bytearray(10))
    with pytest.raises(errors.StreamStateError):  # poisoned by the failure
        enc.update(b"")
    enc = ParallelStreamEncryptor(KEY, CONTEXT, pool)
    enc.finalize()
    with pytest.raises(errors.StreamStateError):
        enc.finalize()
    pool.shutdown()


def test_pool_for_chooses_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSTREAM_BULK_THREADS", raising=False)
    monkeypatch.setattr(parallel, "_cpus", lambda: 2)
    monkeypatch.setattr(parallel.os, "getloadavg", lambda: (0.2, 0.2, 0.2))
    assert pool_for(1000) is None  # small: single-thread Cobblestone
    big = pool_for(1 << 30)
    assert big is not None and big.threads >= 2
    assert pool_for(None) is big  # a pipe: size unknown, assume it is large
    monkeypatch.setattr(parallel.os, "getloadavg", lambda: (1.0, 0.5, 0.5))
    assert pool_for(1 << 30) is None  # the other core is busy: no gain, only hand-offs
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "2")
    assert pool_for(1 << 30) is big  # the operator insists
    assert pool_for(1000) is None
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "1")
    monkeypatch.setattr(parallel.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert pool_for(1 << 30) is None
    monkeypatch.setenv("RECSTREAM_BULK_THREADS", "lots")  # not a number: ignored
    assert pool_for(1 << 30) is big
    for odd in ("\u00b2", "9" * 5000):  # a digit int() refuses; more digits than int() reads
        monkeypatch.setenv("RECSTREAM_BULK_THREADS", odd)
        assert pool_for(1 << 30) is big
    monkeypatch.setattr(parallel, "_cpus", lambda: 1)
    monkeypatch.delenv("RECSTREAM_BULK_THREADS")
    assert pool_for(1 << 30) is None  # one core


def test_small_inputs_on_worker_threads_open_segments_without_the_gil(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """decrypt --out-dir's threads: a small file gets the one-thread, GIL-releasing
    pool (the same bytes), the main thread keeps Cobblestone, and
    RECSTREAM_BULK_THREADS=1 keeps Cobblestone everywhere."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.delenv("RECSTREAM_BULK_THREADS", raising=False)
    assert pool_for(1000) is None
    with ThreadPoolExecutor(1) as ex:
        assert ex.submit(pool_for, 1000).result() is parallel.GIL_FREE
        assert parallel.GIL_FREE.threads == 1
        monkeypatch.setenv("RECSTREAM_BULK_THREADS", "1")
        assert ex.submit(pool_for, 1000).result() is None
    # The same bytes either way, for a body of a few segments and a short final one.
    data = data_of(3 * SEGMENT_SIZE + 77, seed=5)
    salt = bytes(range(SALT_BYTES))
    enc = ParallelStreamEncryptor(KEY, CONTEXT, parallel.GIL_FREE, salt=salt)
    body = enc.update(data) + enc.finalize()
    dec = ParallelStreamDecryptor(KEY, CONTEXT, parallel.GIL_FREE)
    assert dec.update(body) + dec.finalize() == data
    plain = StreamDecryptor(KEY, CONTEXT)
    assert plain.update(body) + plain.finalize() == data


# --- tests/vectors: every file decrypts as its expect line says; bodies re-seal


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_vectors_through_pool(path: Any, pool: SegmentPool) -> None:
    vector = VectorFile.read(path)
    for step in (len(vector.envelope) + 1, 1000):
        dec = EnvelopeDecryptor(key_set(vector.identity), pool=pool)
        released = bytearray()
        error: Exception | None = None
        stage = ""
        try:
            for p in split(vector.envelope, step):
                stage = "update"
                released += dec.update(p)
            stage = "finalize"
            released += dec.finalize()
            stage = ""
        except Exception as exc:  # classified by check_error
            error = exc
        payload = hashlib.sha256(released).hexdigest()
        if vector.expect == "success":
            assert error is None, f"{vector.comment}: {error!r}"
            assert payload == vector.payload
            reseal(vector, bytes(released), pool)
            continue
        from tests.test_vectors import Outcome

        check_error(vector, Outcome(bytes(released), error, stage))
        if step == 1000 or stage == "finalize":
            assert payload == vector.payload


def reseal(vector: VectorFile, plaintext: bytes, pool: SegmentPool) -> None:
    """The parallel encryptor, given the vector's salt, writes the vector's body."""
    header = parse_header(vector.envelope)
    assert isinstance(header, Header)
    file_key = open_file_key(header, key_set(vector.identity))
    body = vector.envelope[header.length :][: header.body_length(len(vector.envelope))]
    enc = ParallelStreamEncryptor(
        _crypto.body_key(file_key), header.context, pool, salt=body[:SALT_BYTES]
    )
    assert enc.update(plaintext) + enc.finalize() == body


def test_envelope_through_pool_and_back(alice: Any, metadata: Any, pool: SegmentPool) -> None:
    """An envelope sealed on a pool opens on the single-thread path, and the other way."""
    data = data_of(30 * SEG + 77, seed=3)
    for enc_pool, dec_pool in ((pool, None), (None, pool)):
        enc = EnvelopeEncryptor([alice.recipient], metadata, pool=enc_pool)
        sealed_env = b"".join(enc.update(p) for p in split(data, 5 * SEG + 1)) + enc.finalize()
        assert enc.segments == 31
        dec = EnvelopeDecryptor(alice.keys, pool=dec_pool)
        assert dec.update(sealed_env) + dec.finalize() == data


# --- Wycheproof chunked-encryption vectors (C2SP's reference ciphertexts) ----


@pytest.mark.parametrize(("group", "tc"), cases("c2sp_chunked_encryption_aes_256_gcm_test.json"))
def test_wycheproof_through_pool(group: Any, tc: Any, pool: SegmentPool) -> None:
    key, ctx = bytes.fromhex(tc["key"]), bytes.fromhex(tc["ctx"])
    ct = zlib.decompress(bytes.fromhex(tc["ct"]))
    if "InvalidKeySize" in tc["flags"]:
        with pytest.raises(ValueError):
            ParallelStreamEncryptor(key, ctx, pool)
        return
    for step in (len(ct) + 1, 50_000):
        dec = ParallelStreamDecryptor(key, ctx, pool)
        digest, n = hashlib.sha512(), 0
        try:
            for p in split(ct, step):
                part = dec.update(p)
                digest.update(part)
                n += len(part)
            tail = dec.finalize()
        except errors.IntegrityError:
            assert tc["result"] == "invalid", tc["comment"]
            assert n <= tc.get("msgLength", 0)
            if n and n == tc["msgLength"]:
                assert digest.hexdigest() == tc["msgSha512"]
            continue
        digest.update(tail)
        assert tc["result"] == "valid", tc["comment"]
        assert n + len(tail) == tc["msgLength"]
        assert digest.hexdigest() == tc["msgSha512"]
        # Re-sealing with the vector's salt reproduces the reference ciphertext.
        full = ParallelStreamDecryptor(key, ctx, pool)
        plain = full.update(ct) + full.finalize()
        enc = ParallelStreamEncryptor(key, ctx, pool, salt=ct[:SALT_BYTES])
        assert enc.update(plain) + enc.finalize() == ct

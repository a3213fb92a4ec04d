"""Segment encrypt and decrypt through the sans-I/O core, with raw AES-GCM beside it.

``StreamEncryptor`` / ``StreamDecryptor`` (Cobblestone-256, 16 KiB segments) over
1 MiB fed in one ``update_into`` call (the file pump's block size) and in
16 KiB calls (one segment per call); ``SegmentCipher.open_into`` for random
access; and raw single-thread ``AESGCM.encrypt_into`` / ``decrypt_into`` over
the same 1 MiB at 4, 16, 64 and 256 KiB segments: the baseline.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recstream import _crypto
from recstream.format import BODY_PREFIX_BYTES, SEGMENT_SIZE, SEGMENT_WIRE_SIZE, TAG_BYTES
from recstream.stream import StreamDecryptor, StreamEncryptor

TOTAL = 1 << 20
KEY = os.urandom(32)
CONTEXT = b"recstream bench context"
PLAIN = os.urandom(TOTAL)


def _sealed() -> bytes:
    enc = StreamEncryptor(KEY, CONTEXT)
    return enc.update(PLAIN) + enc.finalize()


SEALED = _sealed()


def _mark(benchmark: Any, nbytes: int) -> None:
    benchmark.extra_info["bytes"] = nbytes
    benchmark.extra_info["note"] = "MB/s = bytes / mean seconds / 1e6"


@pytest.mark.parametrize("feed", [SEGMENT_SIZE, TOTAL], ids=["16KiB-calls", "1MiB-call"])
def test_stream_encrypt(benchmark: Any, feed: int) -> None:
    out = bytearray(TOTAL + 128 * TAG_BYTES + BODY_PREFIX_BYTES + SEGMENT_WIRE_SIZE)
    view = memoryview(PLAIN)

    def run() -> None:
        enc = StreamEncryptor(KEY, CONTEXT)
        pos = 0
        for off in range(0, TOTAL, feed):
            pos += enc.update_into(view[off : off + feed], memoryview(out)[pos:])
        enc.finalize()

    _mark(benchmark, TOTAL)
    benchmark.group = "segments: encrypt 1 MiB"
    benchmark(run)


@pytest.mark.parametrize("feed", [SEGMENT_WIRE_SIZE, TOTAL], ids=["1-segment-calls", "1MiB-call"])
def test_stream_decrypt(benchmark: Any, feed: int) -> None:
    out = bytearray(TOTAL + SEGMENT_SIZE)
    view = memoryview(SEALED)

    def run() -> None:
        dec = StreamDecryptor(KEY, CONTEXT)
        pos = 0
        for off in range(0, len(SEALED), feed):
            pos += dec.update_into(view[off : off + feed], memoryview(out)[pos:])
        dec.finalize()

    _mark(benchmark, TOTAL)
    benchmark.group = "segments: decrypt 1 MiB"
    benchmark(run)


def test_random_access_open_one_segment(benchmark: Any) -> None:
    cipher = _crypto.SegmentCipher(KEY, SEALED[:BODY_PREFIX_BYTES], CONTEXT)
    seg = SEALED[BODY_PREFIX_BYTES : BODY_PREFIX_BYTES + SEGMENT_WIRE_SIZE]
    out = bytearray(SEGMENT_SIZE)
    _mark(benchmark, SEGMENT_SIZE)
    benchmark.group = "segments: random access"
    benchmark(cipher.open_into, 0, seg, out)


@pytest.mark.parametrize(
    "segment", [4096, 16384, 65536, 262144], ids=["4KiB", "16KiB", "64KiB", "256KiB"]
)
@pytest.mark.parametrize("op", ["encrypt_into", "decrypt_into"])
def test_raw_aesgcm_baseline(benchmark: Any, segment: int, op: str) -> None:
    aead = AESGCM(KEY)
    nonce = bytes(12)  # fixed nonce: a timing baseline, never for data
    n = TOTAL // segment
    plain = [memoryview(PLAIN)[i * segment : (i + 1) * segment] for i in range(n)]
    sealed_buf = bytearray(n * (segment + TAG_BYTES))
    sealed = [
        memoryview(sealed_buf)[i * (segment + TAG_BYTES) : (i + 1) * (segment + TAG_BYTES)]
        for i in range(n)
    ]
    opened = bytearray(segment)
    for p, s in zip(plain, sealed, strict=True):
        aead.encrypt_into(nonce, p, None, s)

    def encrypt() -> None:
        for p, s in zip(plain, sealed, strict=True):
            aead.encrypt_into(nonce, p, None, s)

    def decrypt() -> None:
        for s in sealed:
            aead.decrypt_into(nonce, s, None, opened)

    _mark(benchmark, TOTAL)
    benchmark.group = f"segments: raw AES-GCM {op} 1 MiB"
    benchmark(encrypt if op == "encrypt_into" else decrypt)

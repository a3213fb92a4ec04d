"""RSA-OAEP (SHA-256) wrap and unwrap of a 32-byte file key at 2048, 3072, 4096 bits.

The per-recording cost that bounds ``bench small``: encrypt pays one wrap per
recipient, decrypt one unwrap.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream import _crypto

BITS = [2048, 3072, 4096]


@pytest.mark.parametrize("bits", BITS)
def test_wrap(benchmark: Any, rsa_keys: dict[int, rsa.RSAPrivateKey], bits: int) -> None:
    public = rsa_keys[bits].public_key()
    benchmark.group = "rsa: wrap (public key)"
    benchmark(_crypto.wrap_file_key, public, os.urandom(32))


@pytest.mark.parametrize("bits", BITS)
def test_unwrap(benchmark: Any, rsa_keys: dict[int, rsa.RSAPrivateKey], bits: int) -> None:
    key = rsa_keys[bits]
    wrapped = _crypto.wrap_file_key(key.public_key(), os.urandom(32))
    benchmark.group = "rsa: unwrap (private key)"
    assert len(benchmark(_crypto.unwrap_file_key, key, wrapped, "bench")) == 32

"""Wycheproof vectors (read from ../shared, never copied) through recstream's crypto layer."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream import _crypto, errors
from recstream.stream import StreamDecryptor

# shared/ lies beside the checkout, for developers and for CI alike.
ROOT = Path(
    os.environ.get(
        "RECSTREAM_WYCHEPROOF",
        Path(__file__).resolve().parents[2] / "shared" / "vectors" / "wycheproof",
    )
)
if os.environ.get("CI") and not ROOT.is_dir():
    raise RuntimeError(f"Wycheproof vectors missing at {ROOT}; CI must run them")


def cases(name: str, keep: Any = lambda g: True) -> list[Any]:
    path = ROOT / name
    if not path.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"{path} missing"))]
    data = json.loads(path.read_text())
    return [
        pytest.param(g, t, id=f"{t['tcId']}")
        for g in data["testGroups"]
        if keep(g)
        for t in g["tests"]
    ]


# --- C2SP chunked encryption (Cobblestone-256): the body --------------------


@pytest.mark.parametrize(("group", "tc"), cases("c2sp_chunked_encryption_aes_256_gcm_test.json"))
def test_c2sp_streaming(group: Any, tc: Any) -> None:
    key, ctx = bytes.fromhex(tc["key"]), bytes.fromhex(tc["ctx"])
    ct = zlib.decompress(bytes.fromhex(tc["ct"]))
    if "InvalidKeySize" in tc["flags"]:
        with pytest.raises(ValueError):
            StreamDecryptor(key, ctx)
        return
    for step in (len(ct) + 1, 50_000):
        dec = StreamDecryptor(key, ctx)
        released = hashlib.sha512()
        n = 0
        try:
            for i in range(0, len(ct), step):
                part = dec.update(ct[i : i + step])
                released.update(part)
                n += len(part)
            tail = dec.finalize()
            released.update(tail)
            n += len(tail)
        except errors.IntegrityError:
            assert tc["result"] == "invalid", tc["comment"]
            # Never more than the authenticated prefix; sticky afterwards.
            assert n <= tc.get("msgLength", 0)
            if n and n == tc["msgLength"]:
                assert released.hexdigest() == tc["msgSha512"]
            with pytest.raises(errors.StreamStateError):
                dec.update(b"")
            continue
        assert tc["result"] == "valid", tc["comment"]
        assert n == tc["msgLength"]
        assert released.hexdigest() == tc["msgSha512"]


@pytest.mark.parametrize(("group", "tc"), cases("c2sp_chunked_encryption_aes_256_gcm_test.json"))
def test_c2sp_random_access(group: Any, tc: Any) -> None:
    """Our own key derivation and nonce layout (used for seeking) agree with the vectors."""
    if "InvalidKeySize" in tc["flags"]:
        return
    key, ctx = bytes.fromhex(tc["key"]), bytes.fromhex(tc["ctx"])
    ct = zlib.decompress(bytes.fromhex(tc["ct"]))
    if "aeadKey" in tc:
        derived = _crypto.derive_body_keys(key, ct[:24], ctx)
        assert derived.aead_key.hex() == tc["aeadKey"]
        assert derived.base_nonce.hex() == tc["baseNonce"]
    try:
        cipher = _crypto.SegmentCipher(key, ct[:56], ctx)
    except (errors.IntegrityError, ValueError):
        assert tc["result"] == "invalid"
        return
    body = memoryview(ct)[56:]
    full, rest = divmod(len(body), 16400)
    out = bytearray(16384)
    digest = hashlib.sha512()
    ok = rest >= 16
    try:
        for i in range(full + (1 if ok else 0)):
            n = cipher.open_into(i, body[i * 16400 : (i + 1) * 16400], out)
            digest.update(out[:n])
            if i == full:
                assert n < 16384
    except errors.SegmentAuthError:
        ok = False
    if tc["result"] == "valid":
        assert ok
        assert digest.hexdigest() == tc["msgSha512"]
        # Raw mode is deterministic: re-sealing reproduces the ciphertext.
        raw = _crypto.SegmentCipher.from_raw(
            bytes.fromhex(tc["aeadKey"]), bytes.fromhex(tc["baseNonce"])
        )
        seg = bytearray(16400)
        n = raw.seal_into(0, b"", seg) if tc["msgLength"] == 0 else None
        if n is not None:
            assert bytes(seg[:n]) == bytes(body[:16])
    else:
        assert not ok, "reading the whole message must fail for an invalid vector"


# --- AES-256-GCM: the segment cipher ----------------------------------------


def _gcm_applies(g: Any) -> bool:
    return g["keySize"] == 256 and g["ivSize"] == 96 and g["tagSize"] == 128


@pytest.mark.parametrize(("group", "tc"), cases("aes_gcm_test.json", _gcm_applies))
def test_aes_gcm_segment_open(group: Any, tc: Any) -> None:
    if tc["aad"]:
        pytest.skip("recstream segments use an empty AAD (FORMAT.md §6.1)")
    cipher = _crypto.SegmentCipher.from_raw(bytes.fromhex(tc["key"]), bytes.fromhex(tc["iv"]))
    data = bytes.fromhex(tc["ct"] + tc["tag"])
    out = bytearray(max(len(data) - 16, 0))
    if tc["result"] == "invalid":
        with pytest.raises(errors.SegmentAuthError):
            cipher.open_into(0, data, out)
        return
    assert cipher.open_into(0, data, out) == len(out)
    assert out.hex() == tc["msg"]
    sealed = bytearray(len(data))
    assert cipher.seal_into(0, bytes.fromhex(tc["msg"]), sealed) == len(data)
    assert sealed.hex() == tc["ct"] + tc["tag"]


# --- RSA-OAEP SHA-256 / MGF1-SHA-256: key unwrap -----------------------------

OAEP_FILES = [
    "rsa_oaep_2048_sha256_mgf1sha256_test.json",
    "rsa_oaep_3072_sha256_mgf1sha256_test.json",
    "rsa_oaep_4096_sha256_mgf1sha256_test.json",
    "rsa_oaep_misc_test.json",
]


def _oaep_applies(g: Any) -> bool:
    return g["sha"] == "SHA-256" and g["mgfSha"] == "SHA-256" and int(g["keySize"]) >= 2048


_KEYS: dict[str, rsa.RSAPrivateKey] = {}


def _key(g: Any) -> rsa.RSAPrivateKey:
    pem = g["privateKeyPem"]
    if pem not in _KEYS:
        # Published test keys: re-validating them (primality checks, seconds for the
        # 4096-bit ones on a loaded machine) proves nothing about recstream.
        key = serialization.load_pem_private_key(
            pem.encode(), None, unsafe_skip_rsa_key_validation=True
        )
        assert isinstance(key, rsa.RSAPrivateKey)
        _KEYS[pem] = key
    return _KEYS[pem]


@pytest.mark.parametrize(
    ("group", "tc"),
    [p for f in OAEP_FILES for p in cases(f, _oaep_applies)],
)
def test_rsa_oaep_unwrap(group: Any, tc: Any) -> None:
    if tc["label"]:
        pytest.skip("recstream wraps with an empty OAEP label (FORMAT.md §4)")
    key = _key(group)
    ct = bytes.fromhex(tc["ct"])
    if tc["result"] == "invalid":
        with pytest.raises(errors.KeyUnwrapError):
            _crypto.oaep_decrypt(key, ct, "vector")
        return
    assert _crypto.oaep_decrypt(key, ct, "vector").hex() == tc["msg"]

"""The one private-key loader skips pyca's primality validation but refuses damaged keys.

``_crypto.load_private_key_bytes`` loads with ``unsafe_skip_rsa_key_validation``
(0.14 s of an RSA-3072 ``decrypt``) and checks the numbers' arithmetic instead:
a key whose prime, exponent or CRT value was altered is a KeyLoadError, from the
library, from a key file on the CLI and from a keystore.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from recstream import _crypto
from recstream.errors import KeyLoadError
from recstream.pki.certs import load_private_key
from tests.keystore_helpers import Cert, recording_cert, run_cli, seal

_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def cert() -> Cert:
    return recording_cert("loader")


def _der_int(value: int) -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0: non-negative
    return b"\x02" + _der_len(len(body)) + body


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _pem(numbers: rsa.RSAPrivateNumbers) -> bytes:
    """PKCS#1 ``RSAPrivateKey`` (RFC 8017 A.1.2), encoded here: pyca refuses to build a
    key from inconsistent numbers, and a damaged file is exactly that."""
    pub = numbers.public_numbers
    fields = (0, pub.n, pub.e, numbers.d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1)
    body = b"".join(_der_int(v) for v in (*fields, numbers.iqmp))
    der = b"\x30" + _der_len(len(body)) + body
    b64 = base64.encodebytes(der).replace(b"\n", b"")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        b"-----BEGIN RSA PRIVATE KEY-----\n"
        + b"\n".join(lines)
        + (b"\n-----END RSA PRIVATE KEY-----\n")
    )


def _load(data: bytes, password: bytes | None = None) -> object:
    return _crypto.load_private_key_bytes(
        data, password, what="private key", option="--password-file", forms="PKCS#1"
    )


def test_good_keys_load_in_every_form(cert: Cert) -> None:
    key = cert.key
    forms = {
        "pem pkcs8": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "der pkcs1": key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        "pem encrypted": key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        ),
    }
    wrapped = key.public_key().encrypt(b"k" * 32, _OAEP)
    for form, data in forms.items():
        loaded = _load(data, b"pw" if "encrypted" in form else None)
        assert isinstance(loaded, rsa.RSAPrivateKey), form
        assert loaded.private_numbers() == key.private_numbers(), form
        assert loaded.decrypt(wrapped, _OAEP) == b"k" * 32, form


def _tampered(n: rsa.RSAPrivateNumbers, field: str) -> rsa.RSAPrivateNumbers:
    """``n`` with one number altered the way a damaged file could alter it."""
    pub = n.public_numbers
    values = {"p": n.p, "q": n.q, "d": n.d, "dmp1": n.dmp1, "dmq1": n.dmq1, "iqmp": n.iqmp}
    if field == "n":  # the modulus itself (a flipped bit)
        pub = rsa.RSAPublicNumbers(pub.e, pub.n ^ (1 << 1000))
    elif field == "p and n":  # another odd number for p, n made to match: only d betrays it
        values["p"] = n.p + 2
        pub = rsa.RSAPublicNumbers(pub.e, values["p"] * n.q)
    elif field == "swapped":  # a CRT exponent in the other's place
        values["dmp1"], values["dmq1"] = n.dmq1, n.dmp1
    elif field == "short p":  # a truncated prime
        values["p"] = n.p >> 64
        pub = rsa.RSAPublicNumbers(pub.e, values["p"] * n.q)
    else:
        values[field] ^= 1 << 5
    return rsa.RSAPrivateNumbers(
        p=values["p"],
        q=values["q"],
        d=values["d"],
        dmp1=values["dmp1"],
        dmq1=values["dmq1"],
        iqmp=values["iqmp"],
        public_numbers=pub,
    )


DAMAGE = ["p", "q", "d", "dmp1", "dmq1", "iqmp", "n", "p and n", "swapped", "short p"]


@pytest.mark.parametrize("field", DAMAGE)
def test_a_damaged_key_is_refused(cert: Cert, field: str) -> None:
    data = _pem(_tampered(cert.key.private_numbers(), field))
    with pytest.raises(KeyLoadError, match="is damaged: its RSA numbers"):
        _load(data)
    with pytest.raises(KeyLoadError):
        load_private_key(data)  # the recording-key loader over it (files, keystore)


def test_the_check_names_what_is_wrong(cert: Cert) -> None:
    n = cert.key.private_numbers()
    cases: dict[str, Callable[[], rsa.RSAPrivateNumbers]] = {
        "n is not the product of p and q": lambda: _tampered(n, "q"),
        "d is not the inverse of e": lambda: _tampered(n, "d"),
        "the CRT exponents do not match d": lambda: _tampered(n, "dmq1"),
        "the CRT coefficient is not the inverse of q mod p": lambda: _tampered(n, "iqmp"),
        "p and q are not of half the modulus's size": lambda: _tampered(n, "short p"),
    }
    for message, make in cases.items():
        with pytest.raises(KeyLoadError) as info:
            _load(_pem(make()))
        assert message in str(info.value)
        assert "the private key is damaged" in str(info.value)


def test_cli_decrypt_refuses_a_damaged_key_file(
    cert: Cert, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = tmp_path / "rec.rsv"
    env.write_bytes(seal(b"hello " * 100, [cert.recipient]))
    good = tmp_path / "good.pem"
    good.write_bytes(_pem(cert.key.private_numbers()))
    bad = tmp_path / "bad.pem"
    bad.write_bytes(_pem(_tampered(cert.key.private_numbers(), "dmp1")))
    code, _, err = run_cli(capsys, "decrypt", "--key", bad, env, tmp_path / "out")
    assert code == 4
    assert "damaged" in err and "CRT exponents" in err
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(capsys, "decrypt", "--key", good, env, tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out").read_bytes() == b"hello " * 100


def test_decrypt_with_a_key_file_loads_no_x509_and_no_thread_pool(
    cert: Cert, tmp_path: Path
) -> None:
    """Start-up of `decrypt --key` (issue 20): no certificate is parsed, so the x509
    package (40 ms of import) is not imported, nor concurrent.futures for a small file."""
    env = tmp_path / "rec.rsv"
    env.write_bytes(seal(b"x" * 5000, [cert.recipient]))
    key = tmp_path / "k.pem"
    key.write_bytes(_pem(cert.key.private_numbers()))
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "recstream", "decrypt", "--key", str(key),
         str(env), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "recstream._crypto" in imported  # -X importtime did report
    assert not {m for m in imported if m.startswith(("cryptography.x509", "concurrent"))}
    assert (tmp_path / "out").read_bytes() == b"x" * 5000

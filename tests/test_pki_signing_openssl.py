"""Signing certificates and the openssl CLI, both ways (issue 16).

openssl -> recstream: a P-256 and an Ed25519 signing key and request made by openssl,
signed by openssl under an openssl CA (the documented ``-extfile``), and one made by
openssl but signed by ``recstream pki sign --profile signing``, are accepted by our
loader and validation; openssl-made keys load.  recstream -> openssl: our signing
certificates pass ``openssl verify -purpose any -CAfile``, our requests pass
``openssl req -verify``, and our encrypted keys open with ``openssl pkey``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from recstream.cli import main
from recstream.pki.certs import load_certificate
from recstream.pki.dates import utcnow
from recstream.pki.signing import load_signing_key, validate_signing_certificate
from tests.pki_helpers import needs_openssl, openssl

pytestmark = needs_openssl

PASSWORD = "signing interop"
CA_EXT = (
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
)
# what docs/FORMAT-less users would write for a signing certificate with openssl
SIGN_EXT = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    "extendedKeyUsage=1.3.6.1.5.5.7.3.36\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
)


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("openssl-signing")
    (d / "pw").write_text(PASSWORD + "\n")
    (d / "pw").chmod(0o600)
    (d / "ca.ext").write_text(CA_EXT)
    (d / "sign.ext").write_text(SIGN_EXT)
    (d / "wrong.ext").write_text(SIGN_EXT.replace("digitalSignature", "keyEncipherment"))
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "root.key",
            "-out", "root.pem", "-days", "30", "-subj", "/O=OpenSSL Test/CN=OpenSSL Root",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    return d


def openssl_node(d: Path, stem: str, algorithm: str) -> None:
    """An openssl-made signing key (encrypted PKCS#8) and request."""
    extra = ["-pkeyopt", "ec_paramgen_curve:P-256"] if algorithm == "EC" else []
    openssl("genpkey", "-algorithm", algorithm, *extra, "-aes-256-cbc", "-pass", "file:pw",
            "-out", f"{stem}.key", cwd=d)  # fmt: skip
    openssl("req", "-new", "-key", f"{stem}.key", "-passin", "file:pw",
            "-subj", f"/O=Acme/CN={stem}", "-out", f"{stem}.req", cwd=d)  # fmt: skip


def openssl_sign(d: Path, stem: str, out: str, ext: str = "sign.ext") -> None:
    openssl("x509", "-req", "-in", f"{stem}.req", "-CA", "root.pem", "-CAkey", "root.key",
            "-days", "10", "-extfile", ext, "-out", out, cwd=d)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["EC", "ED25519"])
def test_openssl_made_signing_certificate_accepted(d: Path, algorithm: str) -> None:
    stem = f"node-{algorithm.lower()}"
    openssl_node(d, stem, algorithm)
    openssl_sign(d, stem, f"{stem}.pem")
    cert = load_certificate((d / f"{stem}.pem").read_bytes())
    result = validate_signing_certificate(cert, (d / "root.pem").read_bytes(), at=utcnow())
    assert result.chain[0] == cert
    key = load_signing_key((d / f"{stem}.key").read_bytes(), PASSWORD.encode())
    assert key.public_key() == cert.public_key()
    assert run("pki", "verify", "--profile", "signing", "--ca-file", d / "root.pem",
               d / f"{stem}.pem") == 0  # fmt: skip


def test_openssl_request_signed_by_recstream(d: Path) -> None:
    openssl_node(d, "node-rs", "EC")
    assert run("pki", "sign", "--profile", "signing", "--ca-cert", d / "root.pem",
               "--ca-key", d / "root.key", "--csr", d / "node-rs.req", "--days", "5",
               "--out", d / "node-rs.pem") == 0  # fmt: skip
    result = openssl("verify", "-purpose", "any", "-CAfile", "root.pem", "node-rs.pem", cwd=d)
    assert result.stdout.strip() == "node-rs.pem: OK"


def test_openssl_certificate_with_wrong_key_usage_refused(
    d: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    openssl_node(d, "node-ke", "EC")
    openssl_sign(d, "node-ke", "node-ke.pem", ext="wrong.ext")
    capsys.readouterr()
    assert run("pki", "verify", "--profile", "signing", "--ca-file", d / "root.pem",
               d / "node-ke.pem") == 4  # fmt: skip
    err = capsys.readouterr().err
    assert "(it has keyEncipherment)" in err and "Traceback" not in err


@pytest.mark.parametrize("key_type", ["p256", "ed25519"])
def test_recstream_signing_certificate_passes_openssl_verify(d: Path, key_type: str) -> None:
    stem = f"rs-{key_type}"
    assert run("pki", "csr", "--profile", "signing", "--key-type", key_type, "--cn", stem,
               "--out-key", d / f"{stem}.key", "--out-csr", d / f"{stem}.req",
               "--out-key-password-file", d / "pw") == 0  # fmt: skip
    assert "verify OK" in openssl("req", "-verify", "-in", f"{stem}.req", "-noout", cwd=d).stderr
    openssl("pkey", "-in", f"{stem}.key", "-passin", "file:pw", "-noout", cwd=d)
    assert run("pki", "sign", "--profile", "signing", "--ca-cert", d / "root.pem",
               "--ca-key", d / "root.key", "--csr", d / f"{stem}.req", "--days", "5",
               "--out", d / f"{stem}.pem") == 0  # fmt: skip
    result = openssl("verify", "-purpose", "any", "-CAfile", "root.pem", f"{stem}.pem", cwd=d)
    assert result.stdout.strip() == f"{stem}.pem: OK"
    text = openssl("x509", "-in", f"{stem}.pem", "-noout", "-text", cwd=d).stdout
    assert "Digital Signature" in text and "Key Encipherment" not in text
    assert "CA:FALSE" in text
    cert = x509.load_pem_x509_certificate((d / f"{stem}.pem").read_bytes())
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).critical

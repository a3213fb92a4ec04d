"""Interop with the openssl CLI, both ways, through ``recstream pki``.

openssl -> recstream: CAs, keys (PKCS#1 and encrypted PKCS#8), CSRs, certificates,
PKCS#12 exports with bag attributes and text dumps are accepted; v1, EC, 1024-bit and
SHA-1 certificates are refused.  recstream -> openssl: our CSRs pass ``openssl req
-verify`` and are signed by ``openssl x509 -req``; our encrypted keys open with
``openssl pkey``; our certificates and bundles pass ``openssl verify -CAfile``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from recstream.cli import main
from tests.pki_helpers import OPENSSL_SUBJ, needs_openssl, openssl

pytestmark = needs_openssl

CA_EXT = (
    "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n"
)
LEAF_EXT = (
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyEncipherment\n"
    "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
)
PASSWORD = "openssl and recstream agree"


@dataclass(frozen=True)
class Pki:
    """A root and an intermediate CA made by openssl, and a recstream-made CA."""

    dir: Path

    def __truediv__(self, name: str) -> Path:
        return self.dir / name

    def __str__(self) -> str:
        return str(self.dir)


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("openssl")
    (d / "pw").write_text(PASSWORD + "\n")
    (d / "pw").chmod(0o600)
    (d / "ca.ext").write_text(CA_EXT)
    (d / "leaf.ext").write_text(LEAF_EXT)
    # openssl root (its default v3_ca: CA:TRUE, no key usage), PKCS#1 key
    openssl("genrsa", "-traditional", "-out", "root.key", "2048", cwd=d)
    openssl("req", "-x509", "-key", "root.key", "-out", "root.pem", "-days", "30",
            "-subj", "/O=OpenSSL Test/CN=OpenSSL Root", cwd=d)  # fmt: skip
    # openssl intermediate with an encrypted PKCS#8 key
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-aes-256-cbc", "-pass", "file:pw", "-out", "inter.key", cwd=d)  # fmt: skip
    openssl("req", "-new", "-key", "inter.key", "-passin", "file:pw",
            "-subj", "/CN=OpenSSL Inter", "-out", "inter.req", cwd=d)  # fmt: skip
    openssl("x509", "-req", "-in", "inter.req", "-CA", "root.pem", "-CAkey", "root.key",
            "-days", "20", "-extfile", "ca.ext", "-out", "inter.pem", cwd=d)  # fmt: skip
    # an openssl-made recording key and request with the full DN, as the vendor shows
    openssl("req", "-nodes", "-newkey", "rsa:2048", "-keyout", "leaf.key", "-out", "leaf.req",
            "-subj", OPENSSL_SUBJ, cwd=d)  # fmt: skip
    return Pki(d)


def openssl_sign(pki: Pki, req: str, out: str, *extra: str, ext: str | None = "leaf.ext") -> None:
    args = ["x509", "-req", "-in", req, "-CA", "inter.pem", "-CAkey", "inter.key",
            "-passin", "file:pw", "-days", "10", "-out", out, *extra]  # fmt: skip
    if ext is not None:
        args += ["-extfile", ext]
    openssl(*args, cwd=pki.dir)


# --- openssl -> recstream ------------------------------------------------------------


def test_openssl_certificates_bundle_and_verify(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    openssl_sign(pki, "leaf.req", "leaf.pem")
    assert run("pki", "bundle", "--out", pki / "ca.pem", pki / "root.pem", pki / "inter.pem") == 0
    bundle = x509.load_pem_x509_certificates((pki / "ca.pem").read_bytes())
    assert [c.subject.rfc4514_string() for c in bundle] == [
        "CN=OpenSSL Inter",
        "CN=OpenSSL Root,O=OpenSSL Test",
    ]
    assert run("pki", "verify", "--ca-file", pki / "ca.pem", pki / "leaf.pem") == 0
    out = capsys.readouterr().out
    assert "OK: " in out
    assert "<- CN=OpenSSL Inter <- CN=OpenSSL Root,O=OpenSSL Test" in out
    # and openssl itself agrees on our bundle
    assert "OK" in openssl("verify", "-CAfile", "ca.pem", "leaf.pem", cwd=pki.dir).stdout


def test_openssl_pkcs12_export_and_text_dump_bundle(pki: Pki) -> None:
    openssl("pkcs12", "-export", "-in", "inter.pem", "-inkey", "inter.key", "-passin",
            "file:pw", "-certfile", "root.pem", "-passout", "pass:p12", "-out", "chain.p12",
            cwd=pki.dir)  # fmt: skip
    dump = openssl(
        "pkcs12", "-in", "chain.p12", "-nokeys", "-passin", "pass:p12", cwd=pki.dir
    ).stdout
    assert dump.count("Bag Attributes") == 2
    (pki / "chain-bags.pem").write_text(dump.replace("\n", "\r\n"))
    text = openssl("x509", "-in", "root.pem", "-text", cwd=pki.dir).stdout
    assert "Certificate:" in text and "BEGIN CERTIFICATE" in text
    (pki / "root-text.pem").write_text(text)
    out = pki / "from-p12.pem"
    assert run("pki", "bundle", "--out", out, pki / "root-text.pem", pki / "chain-bags.pem") == 0
    expected = [pki / "inter.pem", pki / "root.pem"]
    certs = x509.load_pem_x509_certificates(out.read_bytes())
    assert certs == [x509.load_pem_x509_certificate(p.read_bytes()) for p in expected]
    # (not just "Bag": base64 of a random certificate can contain those three letters)
    assert b"Bag Attributes" not in out.read_bytes() and b"localKeyID" not in out.read_bytes()
    assert b"\r" not in out.read_bytes()


def test_recstream_signs_openssl_csr_with_openssl_ca_key(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    # encrypted PKCS#8 CA key from openssl genpkey
    cert = pki / "rs-signed.pem"
    rc = run("pki", "sign", "--ca-cert", pki / "inter.pem", "--ca-key", pki / "inter.key",
             "--ca-password-file", pki / "pw", "--csr", pki / "leaf.req", "--days", "5",
             "--out", cert)  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    bundle = pki / "ca-rs.pem"
    assert run("pki", "bundle", "--out", bundle, pki / "inter.pem", pki / "root.pem") == 0
    assert run("pki", "verify", "--ca-file", bundle, cert) == 0
    # (not -x509_strict: openssl's own default root has no key usage extension)
    result = openssl("verify", "-CAfile", "ca-rs.pem", "rs-signed.pem", cwd=pki.dir)
    assert result.stdout.strip() == "rs-signed.pem: OK"


def test_recstream_signs_with_openssl_pkcs1_root_key(pki: Pki) -> None:
    # the openssl root's key is a traditional unencrypted "BEGIN RSA PRIVATE KEY"
    assert (pki / "root.key").read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    cert = pki / "root-signed.pem"
    rc = run("pki", "sign", "--ca-cert", pki / "root.pem", "--ca-key", pki / "root.key",
             "--csr", pki / "leaf.req", "--days", "5", "--out", cert)  # fmt: skip
    assert rc == 0
    assert openssl("verify", "-CAfile", "root.pem", "root-signed.pem", cwd=pki.dir).returncode == 0


def test_openssl_v1_certificate_refused(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    openssl_sign(pki, "leaf.req", "v1.pem", ext=None)  # openssl x509 -req makes v1 without -extfile
    assert x509.load_pem_x509_certificate((pki / "v1.pem").read_bytes()).version is x509.Version.v1
    run("pki", "bundle", "--force", "--out", pki / "ca-v1.pem", pki / "root.pem", pki / "inter.pem")
    capsys.readouterr()
    assert run("pki", "verify", "--ca-file", pki / "ca-v1.pem", pki / "v1.pem") == 4
    assert (
        "the certificate is X.509 v1; recording certificates must be X.509 v3"
        in capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("keyspec", "expect"),
    [
        (
            "rsa:1024",
            "the certificate has an RSA key of 1024 bits; recording certificates need 2048",
        ),
        ("ec:secp256r1", "recording certificates must be RSA"),
    ],
)
def test_openssl_weak_or_ec_certificate_refused(
    pki: Pki, capsys: pytest.CaptureFixture[str], keyspec: str, expect: str
) -> None:
    if keyspec.startswith("ec:"):
        openssl("ecparam", "-name", "prime256v1", "-out", "ec.param", cwd=pki.dir)
        keyspec = "ec:ec.param"
    stem = keyspec.split(":")[0]
    openssl("req", "-nodes", "-newkey", keyspec, "-keyout", f"{stem}.key", "-out", f"{stem}.req",
            "-subj", OPENSSL_SUBJ, cwd=pki.dir)  # fmt: skip
    openssl_sign(pki, f"{stem}.req", f"{stem}.pem")
    run("pki", "bundle", "--force", "--out", pki / "ca-x.pem", pki / "root.pem", pki / "inter.pem")
    capsys.readouterr()
    assert run("pki", "verify", "--ca-file", pki / "ca-x.pem", pki / f"{stem}.pem") == 4
    assert expect in capsys.readouterr().err


def test_openssl_sha1_certificate_refused(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    openssl_sign(pki, "leaf.req", "sha1.pem", "-sha1")
    run("pki", "bundle", "--force", "--out", pki / "ca-s.pem", pki / "root.pem", pki / "inter.pem")
    capsys.readouterr()
    assert run("pki", "verify", "--ca-file", pki / "ca-s.pem", pki / "sha1.pem") == 4
    err = capsys.readouterr().err
    assert "the certificate is signed with SHA-1, which can be forged and is not accepted" in err


def test_openssl_self_signed_ca_offered_as_recording_certificate(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("pki", "verify", "--ca-file", pki / "root.pem", pki / "root.pem") == 4
    assert "is a CA certificate (basicConstraints CA:TRUE)" in capsys.readouterr().err


# --- recstream -> openssl ------------------------------------------------------------


def test_recstream_csr_and_key_work_in_openssl(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run("pki", "csr", "--cn", "Interaction Recording", "--org", "Monster & Sons, Inc.",
             "--ou", "Robot Repairs", "--locality", "Pleasant Hill", "--state", "California",
             "--country", "US", "--key-size", "2048", "--out-key", pki / "rs.key",
             "--out-csr", pki / "rs.req", "--password-file", pki / "pw")  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    verified = openssl("req", "-verify", "-noout", "-in", "rs.req", cwd=pki.dir)
    assert "verify OK" in verified.stdout + verified.stderr
    subject = openssl(
        "req", "-noout", "-subject", "-nameopt", "compat", "-in", "rs.req", cwd=pki.dir
    )
    assert subject.stdout.strip() == f"subject={OPENSSL_SUBJ}"
    # the encrypted key opens in openssl and matches the request
    key_mod = openssl(
        "rsa", "-noout", "-modulus", "-in", "rs.key", "-passin", "file:pw", cwd=pki.dir
    )
    req_mod = openssl("req", "-noout", "-modulus", "-in", "rs.req", cwd=pki.dir)
    assert key_mod.stdout == req_mod.stdout
    wrong = openssl(
        "pkey", "-noout", "-in", "rs.key", "-passin", "pass:wrong", cwd=pki.dir, check=False
    )
    assert wrong.returncode != 0
    # openssl signs our request; we accept what it issued
    openssl_sign(pki, "rs.req", "rs-by-openssl.pem")
    run("pki", "bundle", "--force", "--out", pki / "ca-o.pem", pki / "root.pem", pki / "inter.pem")
    assert run("pki", "verify", "--ca-file", pki / "ca-o.pem", pki / "rs-by-openssl.pem") == 0


def test_recstream_chain_passes_openssl_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("pw").write_text("pw\n")
    Path("pw").chmod(0o600)
    Path("leaf.ext").write_text(LEAF_EXT)
    root = ["--out-cert", "root.pem", "--out-key", "root.key", "--password-file", "pw"]
    assert run("pki", "ca", "--cn", "RS Root", "--key-size", "2048", *root) == 0
    inter = ["--out-cert", "inter.pem", "--out-key", "inter.key", "--no-encrypt"]
    issuer = ["--issuer-cert", "root.pem", "--issuer-key", "root.key"]
    issuer += ["--issuer-password-file", "pw"]
    assert run("pki", "ca", "--cn", "RS Inter", "--key-size", "2048", *inter, *issuer) == 0
    openssl("req", "-nodes", "-newkey", "rsa:2048", "-keyout", "leaf.key", "-out", "leaf.req",
            "-subj", OPENSSL_SUBJ, cwd=tmp_path)  # fmt: skip
    sign = ["--ca-cert", "inter.pem", "--ca-key", "inter.key", "--csr", "leaf.req"]
    assert run("pki", "sign", *sign, "--days", "30", "--out", "leaf.pem") == 0
    assert run("pki", "bundle", "--out", "ca.pem", "root.pem", "inter.pem") == 0
    ok = openssl("verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem", cwd=tmp_path)
    assert ok.stdout.strip() == "leaf.pem: OK"
    # the check can fail: without the intermediate openssl refuses too
    missing = openssl("verify", "-CAfile", "root.pem", "leaf.pem", cwd=tmp_path, check=False)
    assert missing.returncode != 0
    # openssl signs with our CA and our encrypted CA key; we accept what it issued
    assert Path("root.key").read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    openssl("x509", "-req", "-in", "leaf.req", "-CA", "root.pem", "-CAkey", "root.key",
            "-passin", "file:pw", "-days", "5", "-extfile", "leaf.ext", "-out", "by-openssl.pem",
            cwd=tmp_path)  # fmt: skip
    assert run("pki", "verify", "--ca-file", "root.pem", "by-openssl.pem") == 0
    # the recording certificate as openssl sees it: v3, keyEncipherment only, not a CA
    text = openssl("x509", "-noout", "-text", "-in", "leaf.pem", cwd=tmp_path).stdout
    assert "Version: 3 (0x2)" in text
    assert "X509v3 Key Usage: critical\n                Key Encipherment\n" in text
    assert "CA:FALSE" in text
    # show's ID and serial are openssl's SHA-256 fingerprint and serial
    serial = openssl("x509", "-noout", "-serial", "-in", "leaf.pem", cwd=tmp_path).stdout
    fp = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", "leaf.pem", cwd=tmp_path)
    capsys.readouterr()
    assert run("pki", "show", "--json", "leaf.pem") == 0
    shown = json.loads(capsys.readouterr().out)["certificates"][0]
    assert f"serial={shown['serial']}" == serial.strip()
    assert shown["certificate_id"] == fp.stdout.split("=", 1)[1].strip().replace(":", "").lower()
    assert shown["key_usage"] == ["keyEncipherment"]

"""``recstream pki ...`` through ``recstream.cli.main``: files, exit codes, messages."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recstream.cli import main
from recstream.pki.certs import certificate_id, load_private_key
from tests.pki_helpers import full_name, make_cert, name, pem, rsa_key

PASSWORD = b"recording keys are precious"
DN_ARGS = [
    "--cn", "Interaction Recording", "--org", "Monster & Sons, Inc.", "--ou", "Robot Repairs",
    "--locality", "Pleasant Hill", "--state", "California", "--country", "US",
]  # fmt: skip


def run(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


@dataclass(frozen=True)
class Setup:
    """A root and intermediate CA made by ``recstream pki ca``, and a password file."""

    dir: Path

    def __truediv__(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    d = tmp_path_factory.mktemp("cli")
    (d / "pw").write_bytes(PASSWORD + b"\n")
    (d / "pw").chmod(0o600)
    assert run("pki", "ca", "--cn", "CLI Root", "--org", "Monster & Sons, Inc.", "--country", "US",
               "--key-size", "2048", "--out-cert", d / "root.pem", "--out-key", d / "root.key",
               "--password-file", d / "pw") == 0  # fmt: skip
    assert run("pki", "ca", "--cn", "CLI Inter", "--key-size", "2048", "--days", "400",
               "--out-cert", d / "inter.pem", "--out-key", d / "inter.key", "--password-file",
               d / "pw", "--issuer-cert", d / "root.pem", "--issuer-key", d / "root.key",
               "--issuer-password-file", d / "pw") == 0  # fmt: skip
    assert run("pki", "csr", *DN_ARGS, "--key-size", "2048", "--out-key", d / "rec.key",
               "--out-csr", d / "rec.req", "--password-file", d / "pw") == 0  # fmt: skip
    assert run("pki", "sign", "--ca-cert", d / "inter.pem", "--ca-key", d / "inter.key",
               "--ca-password-file", d / "pw", "--csr", d / "rec.req", "--days", "365",
               "--out", d / "rec.pem") == 0  # fmt: skip
    assert run("pki", "bundle", "--out", d / "ca.pem", d / "root.pem", d / "inter.pem") == 0
    return Setup(d)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the happy path ----------------------------------------------------------


def test_ca_files(setup: Setup) -> None:
    root, inter = load(setup / "root.pem"), load(setup / "inter.pem")
    assert root.subject.rfc4514_string() == "CN=CLI Root,O=Monster & Sons\\, Inc.,C=US"
    inter.verify_directly_issued_by(root)
    days = (inter.not_valid_after_utc - inter.not_valid_before_utc).days
    assert days == 400
    for key in ("root.key", "inter.key"):
        assert mode(setup / key) == 0o600
        data = (setup / key).read_bytes()
        assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert load_private_key(data, PASSWORD)
    assert mode(setup / "root.pem") == 0o644


def test_csr_and_recording_certificate(setup: Setup) -> None:
    assert mode(setup / "rec.key") == 0o600
    key = load_private_key((setup / "rec.key").read_bytes(), PASSWORD)
    csr = x509.load_pem_x509_csr((setup / "rec.req").read_bytes())
    assert csr.subject == full_name()
    cert = load(setup / "rec.pem")
    assert cert.public_key() == key.public_key() == csr.public_key()
    assert cert.issuer == load(setup / "inter.pem").subject
    assert x509.load_pem_x509_certificates((setup / "ca.pem").read_bytes()) == [
        load(setup / "inter.pem"),
        load(setup / "root.pem"),
    ]


def test_verify_ok(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("pki", "verify", "--ca-file", setup / "ca.pem", setup / "rec.pem") == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"OK: {setup / 'rec.pem'} is a valid recording certificate\n")
    assert certificate_id(load(setup / "rec.pem")) in out
    assert "<- CN=CLI Inter <- CN=CLI Root" in out
    assert err == ""


def test_default_key_size_is_3072(tmp_path: Path) -> None:
    assert run("pki", "csr", *DN_ARGS, "--out-key", tmp_path / "k", "--out-csr", tmp_path / "r",
               "--no-encrypt") == 0  # fmt: skip
    data = (tmp_path / "k").read_bytes()
    assert data.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert mode(tmp_path / "k") == 0o600
    assert load_private_key(data).key_size == 3072


def test_show_certificate_text_and_json(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    cert = load(setup / "rec.pem")
    assert run("pki", "show", setup / "rec.pem") == 0
    text = capsys.readouterr().out
    assert f"certificate ID  {certificate_id(cert)}" in text
    assert "key             RSA 2048 bits" in text
    assert "key usage       keyEncipherment" in text
    assert "CA              no\n" in text
    assert run("pki", "show", "--json", setup / "rec.pem") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "certificate"
    (shown,) = data["certificates"]
    assert shown["certificate_id"] == certificate_id(cert)
    assert shown["subject"] == cert.subject.rfc4514_string()
    assert shown["issuer"] == "CN=CLI Inter"
    assert int(shown["serial"], 16) == cert.serial_number
    assert shown["key_type"] == "RSA" and shown["key_size"] == 2048
    assert 363 <= shown["days_left"] <= 365
    assert datetime.fromisoformat(shown["not_after"]) == cert.not_valid_after_utc
    assert shown["is_ca"] is False and shown["version"] == 3


def test_show_bundle_in_order_and_csr(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("pki", "show", "--json", setup / "ca.pem") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "bundle"
    assert [c["subject"] for c in data["certificates"]] == [
        "CN=CLI Inter",
        "CN=CLI Root,O=Monster & Sons\\, Inc.,C=US",
    ]
    assert [c["self_signed"] for c in data["certificates"]] == [False, True]
    assert run("pki", "show", setup / "ca.pem") == 0
    text = capsys.readouterr().out
    assert "certificate 1 of 2" in text and "yes, self-signed root" in text
    assert run("pki", "show", "--json", setup / "rec.req") == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "kind": "csr",
        "csr": {"subject": full_name().rfc4514_string(), "key_type": "RSA", "key_size": 2048},
    }


def test_show_refuses_private_key(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("pki", "show", setup / "rec.key") == 4
    err = capsys.readouterr().err
    assert f"{setup / 'rec.key'}: this is a private key" in err
    assert "ENCRYPTED" not in err


# --- usage errors (exit 2) -----------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "expect"),
    [
        ("--cn", "--cn: the common name (CN) is missing"),
        ("--org", "--org: the organization (O) is missing"),
        ("--ou", "--ou: the organizational unit (OU) is missing"),
        ("--locality", "--locality: the locality (L) is missing"),
        ("--state", "--state: the state or province (ST) is missing"),
        ("--country", "--country: the country (C) is missing"),
    ],
)
def test_csr_each_missing_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str, expect: str
) -> None:
    i = DN_ARGS.index(drop)
    args = DN_ARGS[:i] + DN_ARGS[i + 2 :]
    rc = run("pki", "csr", *args, "--out-key", tmp_path / "k", "--out-csr", tmp_path / "r",
             "--no-encrypt")  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith(f"recstream: error: {expect}: give ")
    assert not (tmp_path / "k").exists() and not (tmp_path / "r").exists()


def test_csr_invalid_fields_listed_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        a if a not in ("US", "California") else {"US": "UK", "California": "CA"}[a] for a in DN_ARGS
    ]
    rc = run("pki", "csr", *args, "--out-key", tmp_path / "k", "--out-csr", tmp_path / "r",
             "--no-encrypt")  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "2 subject fields need fixing:" in err
    assert "--country: country (C) 'UK' is not an ISO 3166 code; the United Kingdom is GB" in err
    assert "--state: the state or province (ST) 'CA' is an abbreviation" in err


def test_key_must_be_encrypted_or_explicitly_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["--out-key", tmp_path / "k", "--out-csr", tmp_path / "r"]
    assert run("pki", "csr", *DN_ARGS, *out) == 2
    assert "give --out-key-password-file FILE" in capsys.readouterr().err
    (tmp_path / "pw").write_text("x\n")
    assert (
        run("pki", "csr", *DN_ARGS, *out, "--no-encrypt", "--password-file", tmp_path / "pw") == 2
    )
    assert "not allowed with argument" in capsys.readouterr().err
    assert run("pki", "csr", *DN_ARGS, *out, "--password-file", tmp_path / "missing") == 2
    assert "password file not found" in capsys.readouterr().err
    (tmp_path / "empty").write_text("\n")
    assert run("pki", "csr", *DN_ARGS, *out, "--password-file", tmp_path / "empty") == 2
    assert "is empty" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def test_world_readable_password_file_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text("x\n")
    (tmp_path / "pw").chmod(0o644)
    assert run("pki", "ca", "--cn", "R", "--key-size", "2048", "--out-cert", tmp_path / "c",
               "--out-key", tmp_path / "k", "--password-file", tmp_path / "pw") == 0  # fmt: skip
    assert "is readable by other users" in capsys.readouterr().err


def test_refuses_to_overwrite_without_force(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "existing.key").write_bytes(b"precious")
    (tmp_path / "existing.key").chmod(0o644)
    out = ["--out-key", tmp_path / "existing.key", "--out-csr", tmp_path / "r", "--no-encrypt"]
    assert run("pki", "csr", *DN_ARGS, "--key-size", "2048", *out) == 2
    assert (
        f"{tmp_path / 'existing.key'} already exists; use --force to overwrite it"
        in capsys.readouterr().err
    )
    assert (tmp_path / "existing.key").read_bytes() == b"precious"
    assert not (tmp_path / "r").exists()
    assert run("pki", "csr", *DN_ARGS, "--key-size", "2048", *out, "--force") == 0
    assert (tmp_path / "existing.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert mode(tmp_path / "existing.key") == 0o600  # tightened on overwrite
    (tmp_path / "ca.pem").write_bytes(b"old")
    assert run("pki", "bundle", "--out", tmp_path / "ca.pem", setup / "root.pem") == 2
    assert (tmp_path / "ca.pem").read_bytes() == b"old"
    assert run("pki", "sign", "--ca-cert", setup / "inter.pem", "--ca-key", setup / "inter.key",
               "--ca-password-file", setup / "pw", "--csr", setup / "rec.req", "--days", "1",
               "--out", tmp_path / "ca.pem") == 2  # fmt: skip


def test_same_output_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = run("pki", "csr", *DN_ARGS, "--out-key", tmp_path / "x", "--out-csr", tmp_path / "x",
             "--no-encrypt")  # fmt: skip
    assert rc == 2
    assert "output files must differ" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        ("pki", "required: SUBCOMMAND"),
        ("pki sign --days 0", "must be 1 to"),
        ("pki sign --days ten", "not a whole number of days"),
        ("pki csr --key-size 1024", "invalid choice: 1024"),
        ("pki verify x.pem", "the following arguments are required: --ca-file"),
        (
            "pki ca --cn X --issuer-cert a --out-cert c --out-key k --no-encrypt",
            "needs both --issuer-cert and --issuer-key",
        ),
        (
            "pki ca --cn X --country Germany --out-cert c --out-key k --no-encrypt",
            "--country: country (C) must be the two-letter ISO 3166 code, not the name: use DE",
        ),
        ("pki verify --ca-file nope.pem nope.pem", "file not found: nope.pem"),
    ],
)
def test_usage_errors(argv: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv.split()) == 2
    assert expect in capsys.readouterr().err


# --- certificate problems (exit 4) ---------------------------------------------


def test_sign_with_wrong_or_missing_ca_password(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["pki", "sign", "--ca-cert", setup / "inter.pem", "--ca-key", setup / "inter.key",
            "--csr", setup / "rec.req", "--days", "1", "--out", tmp_path / "c.pem"]  # fmt: skip
    assert run(*base) == 4
    assert "is encrypted; give its password with --ca-password-file FILE" in capsys.readouterr().err
    (tmp_path / "wrong").write_text("wrong\n")
    (tmp_path / "wrong").chmod(0o600)
    assert run(*base, "--ca-password-file", tmp_path / "wrong") == 4
    assert "wrong password" in capsys.readouterr().err
    assert not (tmp_path / "c.pem").exists()


def test_sign_with_mismatched_ca_key(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run("pki", "sign", "--ca-cert", setup / "inter.pem", "--ca-key", setup / "root.key",
             "--ca-password-file", setup / "pw", "--csr", setup / "rec.req", "--days", "1",
             "--out", tmp_path / "c.pem")  # fmt: skip
    assert rc == 4
    assert (
        "the CA key does not belong to the CA certificate 'CN=CLI Inter'" in capsys.readouterr().err
    )


def test_sign_days_beyond_ca(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run("pki", "sign", "--ca-cert", setup / "inter.pem", "--ca-key", setup / "inter.key",
             "--ca-password-file", setup / "pw", "--csr", setup / "rec.req", "--days", "500",
             "--out", tmp_path / "c.pem")  # fmt: skip
    assert rc == 4
    assert "would outlive its CA 'CN=CLI Inter'" in capsys.readouterr().err


def test_sign_refuses_incomplete_openssl_style_csr(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import hashes

    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name("only CN"))
        .sign(rsa_key("cli-leaf"), hashes.SHA256())
    )
    (tmp_path / "cn.req").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    rc = run("pki", "sign", "--ca-cert", setup / "inter.pem", "--ca-key", setup / "inter.key",
             "--ca-password-file", setup / "pw", "--csr", tmp_path / "cn.req", "--days", "1",
             "--out", tmp_path / "c.pem")  # fmt: skip
    assert rc == 4
    err = capsys.readouterr().err
    assert "5 subject (DN) fields need fixing" in err
    assert "the state or province (ST) is missing" in err


def test_show_and_sign_name_the_wrong_kind_of_file(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    assert run("pki", "show", tmp_path / "notes.txt") == 4
    assert f"{tmp_path / 'notes.txt'}: no certificate found" in capsys.readouterr().err
    sign = ["--ca-cert", setup / "inter.pem", "--ca-key", setup / "inter.key"]
    sign += ["--ca-password-file", setup / "pw", "--days", "1", "--out", tmp_path / "c.pem"]
    assert run("pki", "sign", *sign, "--csr", setup / "rec.pem") == 4
    assert "this is a certificate, not a certificate signing request" in capsys.readouterr().err


def test_sign_with_a_recording_certificate_as_ca(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run("pki", "sign", "--ca-cert", setup / "rec.pem", "--ca-key", setup / "rec.key",
             "--ca-password-file", setup / "pw", "--csr", setup / "rec.req", "--days", "1",
             "--out", tmp_path / "c.pem")  # fmt: skip
    assert rc == 4
    assert (
        "is not a CA certificate (no basicConstraints CA:TRUE), so it cannot sign"
        in capsys.readouterr().err
    )


def write(tmp_path: Path, name_: str, *certs: x509.Certificate) -> Path:
    path = tmp_path / name_
    path.write_bytes(pem(*certs))
    return path


def test_verify_refusals_exit_4(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inter = load(setup / "inter.pem")
    inter_key = load_private_key((setup / "inter.key").read_bytes(), PASSWORD)
    now = datetime.now(UTC)

    def leaf(key: str, bits: int, start: int, end: int) -> x509.Certificate:
        before, after = now + timedelta(days=start), now + timedelta(days=end)
        key_ = rsa_key(key, bits)
        return make_cert(full_name(), key_, inter, inter_key, not_before=before, not_after=after)

    cases = {
        "small": (leaf("cli-small", 1024, -1, 9), "RSA key of 1024 bits"),
        "expired": (leaf("cli-leaf", 2048, -9, -2), "the certificate expired on"),
        "future": (leaf("cli-leaf", 2048, 2, 9), "the certificate is not valid until"),
        "ca": (inter, "is a CA certificate"),
    }
    for label, (cert, expect) in cases.items():
        path = write(tmp_path, f"{label}.pem", cert)
        assert run("pki", "verify", "--ca-file", setup / "ca.pem", path) == 4, label
        out, err = capsys.readouterr()
        assert out == ""
        assert err.startswith("recstream: error: ") and expect in err, (label, err)
        assert "Traceback" not in err


def test_verify_warns_when_expiring_soon(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inter = load(setup / "inter.pem")
    inter_key = load_private_key((setup / "inter.key").read_bytes(), PASSWORD)
    now = datetime.now(UTC)
    before, after = now - timedelta(days=1), now + timedelta(days=10, hours=1)
    cert = make_cert(
        full_name(), rsa_key("cli-leaf"), inter, inter_key, not_before=before, not_after=after
    )
    path = write(tmp_path, "soon.pem", cert)
    assert run("pki", "verify", "--ca-file", setup / "ca.pem", path) == 0
    out, err = capsys.readouterr()
    assert out.startswith("OK: ")
    assert err.startswith("recstream: warning: the certificate expires in 10 days")


def test_verify_missing_intermediate_and_foreign_ca(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("pki", "verify", "--ca-file", setup / "root.pem", setup / "rec.pem") == 4
    assert (
        "the certificate was issued by 'CN=CLI Inter', which is not in the CA file"
        in capsys.readouterr().err
    )
    other = make_cert(name("Foreign Root"), rsa_key("cli-foreign"), ca=True,
                      not_before=datetime.now(UTC) - timedelta(days=1),
                      not_after=datetime.now(UTC) + timedelta(days=9))  # fmt: skip
    assert (
        run("pki", "verify", "--ca-file", write(tmp_path, "f.pem", other), setup / "rec.pem") == 4
    )
    assert "not in the CA file (it holds 'CN=Foreign Root')" in capsys.readouterr().err


def test_bundle_errors_exit_4(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = make_cert(name("Other Root"), rsa_key("cli-foreign"), ca=True,
                      not_before=datetime.now(UTC) - timedelta(days=1),
                      not_after=datetime.now(UTC) + timedelta(days=9))  # fmt: skip
    two = [setup / "root.pem", write(tmp_path, "other.pem", other), setup / "inter.pem"]
    assert run("pki", "bundle", "--out", tmp_path / "ca.pem", *two) == 4
    assert "two roots: 'CN=CLI Root" in capsys.readouterr().err
    assert run("pki", "bundle", "--out", tmp_path / "ca.pem", setup / "inter.pem") == 4
    assert "missing link: 'CN=CLI Inter'" in capsys.readouterr().err
    assert not (tmp_path / "ca.pem").exists()


def test_bundle_prints_order_and_warnings(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crlf = tmp_path / "inter-crlf.pem"
    crlf.write_bytes((setup / "inter.pem").read_bytes().replace(b"\n", b"\r\n"))
    rc = run("pki", "bundle", "--out", tmp_path / "ca.pem", setup / "root.pem", crlf,
             setup / "inter.pem")  # fmt: skip
    assert rc == 0
    out, err = capsys.readouterr()
    assert "1. CN=CLI Inter (intermediate)" in out and "2. CN=CLI Root" in out
    assert f"recstream: warning: {setup / 'inter.pem'}: dropped a duplicate of {crlf}" in err
    assert (tmp_path / "ca.pem").read_bytes() == (setup / "ca.pem").read_bytes()


def test_private_file_is_owner_only_from_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without the later fchmod the file must still be created 0600 (no window where
    # another user could open the key)
    monkeypatch.setattr("os.fchmod", lambda fd, m: None)
    old_umask = os.umask(0o022)
    try:
        out = ["--out-key", tmp_path / "k", "--out-csr", tmp_path / "r", "--no-encrypt"]
        rc = run("pki", "csr", *DN_ARGS, "--key-size", "2048", *out)
    finally:
        os.umask(old_umask)
    assert rc == 0
    assert mode(tmp_path / "k") == 0o600
    assert mode(tmp_path / "r") == 0o644  # the request is public


def test_write_never_replaces_a_file_that_appears_meanwhile(tmp_path: Path) -> None:
    # _check_outputs looks first, but a file created after that look must survive too
    from recstream.cli import UsageError
    from recstream.cli.pki import _write

    target = tmp_path / "raced.pem"
    target.write_bytes(b"someone else's")
    with pytest.raises(UsageError, match="already exists; use --force"):
        _write(str(target), b"new", force=False)
    assert target.read_bytes() == b"someone else's"
    _write(str(target), b"new", force=True)
    assert target.read_bytes() == b"new"

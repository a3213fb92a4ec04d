"""The encrypt / decrypt / inspect commands, exit codes, and openssl interop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from recstream.cli import main
from tests.conftest import Party

PLAIN = os.urandom(3 * 16384 + 999)


@pytest.fixture
def files(tmp_path: Path, alice: Party) -> dict[str, Path]:
    cert, key = alice.write(tmp_path, b"correct horse")
    (tmp_path / "pw").write_bytes(b"correct horse\n")
    (tmp_path / "in.wav").write_bytes(PLAIN)
    return {
        "cert": cert,
        "key": key,
        "pw": tmp_path / "pw",
        "in": tmp_path / "in.wav",
        "dir": tmp_path,
    }


def run(*args: object) -> int:
    return main([str(a) for a in args])


def encrypt(f: dict[str, Path], out: Path, *extra: object) -> int:
    return run("encrypt", "--cert", f["cert"], "--tenant", "acme", *extra, f["in"], out)


def decrypt(f: dict[str, Path], src: Path, out: Path) -> int:
    return run("decrypt", "--key", f["key"], "--password-file", f["pw"], src, out)


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".partial")]


def test_round_trip_and_inspect(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env, out = files["dir"] / "in.rsv", files["dir"] / "out.wav"
    assert encrypt(files, env, "--recording-id", "call-42") == 0
    assert decrypt(files, env, out) == 0
    assert out.read_bytes() == PLAIN
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()
    assert run("inspect", "--json", env) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recording_id"] == "call-42"
    assert info["tenant"] == "acme"
    assert info["media_type"] == "audio/x-wav"
    assert info["segment_size"] == 16384
    assert info["segments"] == 4
    assert info["complete"] is True
    assert info["version"] == 1
    assert info["header_length"] > 0
    assert len(info["recipients"]) == 1 and len(info["recipients"][0]["cert_id"]) == 64
    assert run("inspect", env) == 0
    assert "call-42" in capsys.readouterr().out


def test_tampered_file_exit_3_and_nothing_left(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env, out = files["dir"] / "in.rsv", files["dir"] / "out.wav"
    assert encrypt(files, env) == 0
    data = bytearray(env.read_bytes())
    data[-20000] ^= 0x10
    env.write_bytes(bytes(data))
    assert decrypt(files, env, out) == 3
    assert not out.exists()
    assert leftovers(files["dir"]) == []
    assert "failed authentication" in capsys.readouterr().err


def test_truncated_file_exit_3(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env, out = files["dir"] / "in.rsv", files["dir"] / "out.wav"
    assert encrypt(files, env) == 0
    whole = env.read_bytes()
    env.write_bytes(whole[:-100])  # inside the final segment: fails authentication
    assert decrypt(files, env, out) == 3
    assert not out.exists() and leftovers(files["dir"]) == []
    env.write_bytes(whole[: -(999 + 16)])  # the final segment gone: the shape says so
    assert decrypt(files, env, out) == 3
    assert "incomplete" in capsys.readouterr().err
    run("inspect", env)
    assert "INCOMPLETE" in capsys.readouterr().out


def test_wrong_key_exit_4_names_cert_ids(
    files: dict[str, Path], bob: Party, capsys: pytest.CaptureFixture[str], alice: Party
) -> None:
    env, out = files["dir"] / "in.rsv", files["dir"] / "out.wav"
    assert encrypt(files, env) == 0
    _, bob_key = bob.write(files["dir"])
    assert run("decrypt", "--key", bob_key, env, out) == 4
    err = capsys.readouterr().err
    assert alice.cert_id in err and "Traceback" not in err
    assert not out.exists()


def test_wrong_or_missing_password_exit_4(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env, out = files["dir"] / "in.rsv", files["dir"] / "out.wav"
    assert encrypt(files, env) == 0
    assert run("decrypt", "--key", files["key"], env, out) == 4
    assert "password" in capsys.readouterr().err
    (files["dir"] / "bad").write_text("wrong\n")
    assert (
        run("decrypt", "--key", files["key"], "--password-file", files["dir"] / "bad", env, out)
        == 4
    )
    assert "wrong password" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["encrypt", "--cert", "{cert}", "{dir}/missing.wav", "{dir}/o"], "not found"),
        (["encrypt", "--cert", "{cert}", "{in}", "{in}"], "same file"),
        (["encrypt", "--cert", "{cert}", "{in}", "{cert}"], "exists"),
        (["encrypt", "--cert", "{cert}", "{dir}", "{dir}/o"], "directory"),
        (["encrypt", "--cert", "{dir}/nocert.pem", "{in}", "{dir}/o"], "not found"),
        (
            ["encrypt", "--cert", "{cert}", "--recording-id", "bad\x01id", "{in}", "{dir}/o"],
            "control",
        ),
        (["encrypt", "--cert", "{cert}", "--media-type", "nonsense", "{in}", "{dir}/o"], "MIME"),
        (
            ["decrypt", "--key", "{key}", "{in}", "{dir}/o", "--password-file", "{dir}/none"],
            "No such file",
        ),
        (["encrypt", "{in}", "{dir}/o"], "required"),
    ],
)
def test_usage_errors_exit_2_without_traceback(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = [a.format(**{k: str(v) for k, v in files.items()}) for a in argv]
    code = main(args)
    err = capsys.readouterr().err
    assert code in (2, 5), err
    assert message in err and "Traceback" not in err
    assert not (files["dir"] / "o").exists()


def test_not_an_envelope_exit_3(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert decrypt(files, files["in"], files["dir"] / "o") == 3
    assert "not a recstream envelope" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["rsa1024", "ec"])
def test_policy_refuses_weak_or_non_rsa_certificates(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = (
        rsa.generate_private_key(65537, 1024)
        if kind == "rsa1024"
        else ec.generate_private_key(ec.SECP256R1())
    )
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kind)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = files["dir"] / f"{kind}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    assert run("encrypt", "--cert", path, files["in"], files["dir"] / "o") == 4
    err = capsys.readouterr().err
    assert ("1024 bits" in err) if kind == "rsa1024" else ("RSA" in err)
    assert not (files["dir"] / "o").exists()


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "recstream", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_stdin_stdout_streaming_and_failure_at_the_end(files: dict[str, Path]) -> None:
    enc = _cli("encrypt", "--cert", str(files["cert"]), "-", "-", stdin=PLAIN)
    assert enc.returncode == 0, enc.stderr
    dec = _cli(
        "decrypt",
        "--key",
        str(files["key"]),
        "--password-file",
        str(files["pw"]),
        "-",
        "-",
        stdin=enc.stdout,
    )
    assert dec.returncode == 0 and dec.stdout == PLAIN
    bad = bytearray(enc.stdout)
    bad[-3] ^= 1  # in the final segment: everything before streams out, then it fails
    dec = _cli(
        "decrypt",
        "--key",
        str(files["key"]),
        "--password-file",
        str(files["pw"]),
        "-",
        "-",
        stdin=bytes(bad),
    )
    assert dec.returncode == 3
    assert len(dec.stdout) < len(PLAIN)
    assert b"Traceback" not in dec.stderr and b"failed authentication" in dec.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI not installed")
def test_openssl_made_certificate_and_encrypted_key(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "2",
            "-subj",
            "/CN=openssl recording cert",
            "-passout",
            "file:pw",
            # `req -x509` makes a CA certificate by default: encrypt refuses those
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    (tmp_path / "in").write_bytes(PLAIN)
    assert run("encrypt", "--cert", tmp_path / "c.pem", tmp_path / "in", tmp_path / "e") == 0
    assert (
        run(
            "decrypt",
            "--key",
            tmp_path / "k.pem",
            "--password-file",
            tmp_path / "pw",
            tmp_path / "e",
            tmp_path / "o",
        )
        == 0
    )
    assert (tmp_path / "o").read_bytes() == PLAIN
    fp = subprocess.run(
        ["openssl", "x509", "-in", "c.pem", "-noout", "-fingerprint", "-sha256"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cert_id = fp.split("=", 1)[1].strip().replace(":", "").lower()
    assert main(["inspect", "--json", str(tmp_path / "e")]) == 0
    # The certificate ID is openssl's SHA-256 fingerprint without colons.
    from recstream.pki.certs import certificate_id, load_certificate

    assert certificate_id(load_certificate((tmp_path / "c.pem").read_bytes())) == cert_id
    # A PKCS#1 key from `openssl genrsa -traditional` works too.
    subprocess.run(
        ["openssl", "genrsa", "-traditional", "-out", "k1.pem", "2048"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-key",
            "k1.pem",
            "-out",
            "c1.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pkcs1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ],
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert run("encrypt", "--cert", tmp_path / "c1.pem", tmp_path / "in", tmp_path / "e1") == 0
    assert run("decrypt", "--key", tmp_path / "k1.pem", tmp_path / "e1", tmp_path / "o1") == 0
    assert (tmp_path / "o1").read_bytes() == PLAIN


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "encrypt" in capsys.readouterr().out
    assert main(["encrypt", "--help"]) == 0
    assert main([]) == 2
    assert main(["bogus"]) == 2


# The demo runs once per session, in tests/test_demo.py (with --serve).

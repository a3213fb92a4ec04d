"""The signing CLI: encrypt/record --sign-key, verify (exit codes 0/3/4/7), inspect --json,
decrypt --require-signature; the signing certificate made with the openssl CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from recstream.cli import main
from recstream.format import TRAILER_BYTES
from tests.conftest import Party
from tests.signing_helpers import RECORDING_USAGE, Ca, ed, p256, write_identity

PLAIN = os.urandom(2 * 16384 + 77)
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


def run(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture
def f(tmp_path: Path, alice: Party) -> dict[str, Path]:
    ca = Ca.make()
    cert, key = alice.write(tmp_path)
    (tmp_path / "in.wav").write_bytes(PLAIN)
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "pw").write_bytes(b"sign pw\n")
    k = p256()
    sk, sc = write_identity(tmp_path, "node", k, ca.issue("node-1", k), b"sign pw")
    e = ed()
    ek, ec_ = write_identity(tmp_path, "node-ed", e, ca.issue("node-ed", e))
    other = Ca.make("Other CA")
    k2 = p256()
    xk, xc = write_identity(tmp_path, "stranger", k2, other.issue("stranger", k2))
    k3 = p256()
    rk, rc = write_identity(tmp_path, "enc", k3, ca.issue("enc", k3, usage=RECORDING_USAGE))
    return {"dir": tmp_path, "cert": cert, "key": key, "in": tmp_path / "in.wav",
            "ca": tmp_path / "ca.pem", "pw": tmp_path / "pw", "sk": sk, "sc": sc,
            "ek": ek, "ec": ec_, "xk": xk, "xc": xc, "rk": rk, "rc": rc}  # fmt: skip


def encrypt(f: dict[str, Path], out: Path, key: str = "sk", cert: str = "sc") -> int:
    pw = ["--sign-key-password-file", f["pw"]] if key == "sk" else []
    return run("encrypt", "--cert", f["cert"], "--tenant", "acme", "--sign-key", f[key],
               "--sign-cert", f[cert], *pw, f["in"], out)  # fmt: skip


def test_encrypt_signed_verify_inspect_decrypt(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env, out = f["dir"] / "a.rsv", f["dir"] / "a.wav"
    assert encrypt(f, env) == 0
    assert "signed by CN=node-1" in capsys.readouterr().err
    assert run("verify", "--ca-file", f["ca"], env) == 0
    assert "valid: signed by CN=node-1" in capsys.readouterr().out
    assert run("verify", "--ca-file", f["ca"], "--json", env) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["files"][0]["status"] == "valid" and doc["files"][0]["algorithm"] == "ecdsa-p256-sha256"
    )
    assert run("inspect", "--json", env) == 0
    info = json.loads(capsys.readouterr().out)
    sig = info["signature"]
    assert info["version"] == 2 and sig["signer"] == "CN=node-1" and sig["trailer"] == "present"
    assert info["complete"] and info["plaintext_length"] == len(PLAIN)
    assert info["body_length"] == env.stat().st_size - info["header_length"] - TRAILER_BYTES
    args = ("decrypt", "--key", f["key"], "--require-signature", "--ca-file", f["ca"], env, out)
    assert run(*args) == 0
    assert out.read_bytes() == PLAIN


def test_verify_exit_codes(f: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d = f["dir"] / "recs"
    d.mkdir()
    assert encrypt(f, d / "good.rsv") == 0
    assert encrypt(f, d / "ed.rsv", "ek", "ec") == 0
    assert run("verify", "--ca-file", f["ca"], d) == 0
    bad = f["dir"] / "bad.rsv"
    data = bytearray((d / "good.rsv").read_bytes())
    data[-TRAILER_BYTES - 30] ^= 0x40  # a body byte
    bad.write_bytes(data)
    assert run("verify", "--ca-file", f["ca"], bad) == 3
    assert encrypt(f, f["dir"] / "x.rsv", "xk", "xc") == 0
    assert run("verify", "--ca-file", f["ca"], f["dir"] / "x.rsv") == 4
    assert run("verify", "--ca-file", f["ca"], d, bad) == 7
    assert run("verify", "--ca-file", f["ca"], bad, f["dir"] / "x.rsv") == 7
    capsys.readouterr()
    # unsigned: reported, passes unless required
    plain = f["dir"] / "u.rsv"
    assert run("encrypt", "--cert", f["cert"], "--tenant", "acme", f["in"], plain) == 0
    assert run("verify", "--ca-file", f["ca"], plain) == 0
    assert "unsigned" in capsys.readouterr().out
    assert run("verify", "--ca-file", f["ca"], "--require-signature", plain) == 3
    # not an envelope, a missing CA file, an unreadable CA file
    (f["dir"] / "junk.rsv").write_bytes(b"not an envelope at all")
    assert run("verify", "--ca-file", f["ca"], f["dir"] / "junk.rsv") == 3
    assert run("verify", "--ca-file", f["dir"] / "nope.pem", plain) == 2
    assert run("verify", "--ca-file", f["in"], plain) == 4
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_decrypt_require_signature_refuses_before_plaintext(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = f["dir"] / "o.wav"
    plain = f["dir"] / "u.rsv"
    assert run("encrypt", "--cert", f["cert"], "--tenant", "acme", f["in"], plain) == 0
    req = ("--require-signature", "--ca-file", f["ca"])
    assert run("decrypt", "--key", f["key"], *req, plain, out) == 3
    assert not out.exists()
    assert encrypt(f, f["dir"] / "x.rsv", "xk", "xc") == 0
    assert run("decrypt", "--key", f["key"], *req, f["dir"] / "x.rsv", out) == 4
    assert not out.exists()
    assert run("decrypt", "--key", f["key"], "--require-signature", plain, out) == 2
    assert run("decrypt", "--key", f["key"], "--ca-file", f["ca"], plain, out) == 2
    err = capsys.readouterr().err
    assert "unsigned" in err and "Traceback" not in err


def test_signing_option_errors(f: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = f["dir"] / "e.rsv"
    base = ("encrypt", "--cert", f["cert"], "--tenant", "acme")
    assert run(*base, "--sign-key", f["sk"], f["in"], out) == 2
    assert run(*base, "--sign-key", f["sk"], "--sign-cert", f["sc"], f["in"], out) == 4  # no pw
    assert "encrypted" in capsys.readouterr().err
    assert run(*base, "--sign-key", f["rk"], "--sign-cert", f["rc"], f["in"], out) == 4
    assert "digitalSignature" in capsys.readouterr().err
    assert run(*base, "--sign-key", f["ek"], "--sign-cert", f["sc"], f["in"], out) == 4
    assert "does not belong" in capsys.readouterr().err
    assert run(*base, "--sign-key", f["cert"], "--sign-cert", f["sc"], f["in"], out) == 4
    assert not out.exists()


def test_record_signs_and_interrupted_prefix_is_unsigned(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = f["dir"] / "live.rsv"
    env = {**os.environ, "RECSTREAM_SIGN_KEY_PASSWORD": "sign pw"}
    cmd = [sys.executable, "-m", "recstream", "record", "--cert", str(f["cert"]), "--tenant",
           "acme", "--sign-key", str(f["sk"]), "--sign-cert", str(f["sc"]), str(out)]  # fmt: skip
    done = subprocess.run(cmd, input=PLAIN, capture_output=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert run("verify", "--ca-file", f["ca"], out) == 0
    # a crash before the trailer: verify says invalid (no trailer), recover says unsigned
    cut = f["dir"] / "cut.rsv.incomplete"
    cut.write_bytes(out.read_bytes()[: -TRAILER_BYTES - 50])  # inside the final segment
    capsys.readouterr()
    assert run("recover", "--key", f["key"], cut, f["dir"] / "rec.wav") == 6
    assert "UNSIGNED" in capsys.readouterr().err
    assert (f["dir"] / "rec.wav").read_bytes() == PLAIN[: 2 * 16384]
    renamed = f["dir"] / "cut.rsv"
    cut.rename(renamed)
    assert run("verify", "--ca-file", f["ca"], renamed) == 3
    capsys.readouterr()
    assert run("inspect", "--json", renamed) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["signature"]["trailer"] == "missing" and info["signature"]["signer"] == "CN=node-1"


@needs_openssl
def test_openssl_made_signing_certificate_is_accepted(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = f["dir"]

    def ossl(*args: object) -> None:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)

    ossl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        d / "oca.key",
        "-out",
        d / "oca.pem",
        "-days",
        "30",
        "-subj",
        "/CN=OpenSSL CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=keyCertSign",
    )
    ossl("genpkey", "-algorithm", "ed25519", "-out", d / "osig.key")
    ossl(
        "req", "-new", "-key", d / "osig.key", "-subj", "/CN=openssl signer", "-out", d / "osig.csr"
    )
    (d / "ext").write_text("keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n")
    ossl("x509", "-req", "-in", d / "osig.csr", "-CA", d / "oca.pem", "-CAkey", d / "oca.key",
         "-CAcreateserial", "-days", "10", "-extfile", d / "ext",
         "-out", d / "osig.pem")  # fmt: skip
    env = d / "o.rsv"
    assert run("encrypt", "--cert", f["cert"], "--tenant", "acme", "--sign-key", d / "osig.key",
               "--sign-cert", d / "osig.pem", f["in"], env) == 0  # fmt: skip
    capsys.readouterr()
    assert run("verify", "--ca-file", d / "oca.pem", "--json", env) == 0
    doc = json.loads(capsys.readouterr().out)["files"][0]
    assert doc["signer"] == "CN=openssl signer" and doc["algorithm"] == "ed25519"
    # openssl checks the signer chain the same way
    ossl("verify", "-purpose", "any", "-CAfile", d / "oca.pem", d / "osig.pem")


def test_batch_audit_counts_unsigned_and_badly_signed(
    f: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = f["dir"] / "archive"
    d.mkdir()
    assert encrypt(f, d / "good.rsv") == 0
    assert encrypt(f, d / "stranger.rsv", "xk", "xc") == 0
    assert run("encrypt", "--cert", f["cert"], "--tenant", "acme", f["in"], d / "plain.rsv") == 0
    data = bytearray((d / "good.rsv").read_bytes())
    data[-TRAILER_BYTES - 3] ^= 1
    (d / "altered.rsv").write_bytes(data)
    (d / "cut.rsv").write_bytes(data[:-TRAILER_BYTES])
    keys = ("--key", f["key"], "--cert", f["cert"], "--state-dir", f["dir"] / "st")
    capsys.readouterr()
    assert run("batch", "audit", d, *keys, "--json") == 0  # signatures only counted
    doc = json.loads(capsys.readouterr().out)
    assert doc["signatures"] == {"signed": 3, "unsigned": 1, "invalid": 1}
    code = run("batch", "audit", d, *keys, "--ca-file", f["ca"], "--json")
    doc = json.loads(capsys.readouterr().out)
    assert code == 7
    assert doc["signatures"] == {"valid": 1, "unsigned": 1, "invalid": 2, "refused_signer": 1}
    bad = {o["path"] for o in doc["badly_signed"]}
    assert bad == {"altered.rsv", "cut.rsv", "stranger.rsv"}
    fresh = ("--key", f["key"], "--cert", f["cert"], "--state-dir", f["dir"] / "st2")
    assert run("batch", "audit", d, *fresh, "--ca-file", f["ca"]) == 7
    out = capsys.readouterr().out
    assert "signatures: 2 invalid, 1 refused signer, 1 unsigned, 1 valid" in out
    assert "BADLY_SIGNED" in out


def test_record_stopped_by_sigterm_is_signed(f: dict[str, Path]) -> None:
    """A real `record` process stopped by SIGTERM mid-stream completes and signs."""
    import signal
    import time

    from recstream.envelope import EnvelopeDecryptor
    from recstream.pki.certs import load_private_key
    from recstream.pki.recipients import Identity, IdentitySet

    out = f["dir"] / "stopped.rsv"
    env = {**os.environ, "RECSTREAM_SIGN_KEY_PASSWORD": "sign pw"}
    cmd = [sys.executable, "-m", "recstream", "record", "--cert", str(f["cert"]), "--tenant",
           "acme", "--flush-interval", "0.05", "--sign-key", str(f["sk"]), "--sign-cert",
           str(f["sc"]), str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None
    data = os.urandom(3 * 16384)
    proc.stdin.write(data)
    proc.stdin.flush()
    incomplete = out.with_name(out.name + ".incomplete")
    deadline = time.monotonic() + 120  # a hang guard, not a timing assumption
    while not (incomplete.exists() and incomplete.stat().st_size > 2 * 16400):
        assert proc.poll() is None and time.monotonic() < deadline, "record never wrote"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert run("verify", "--ca-file", f["ca"], out) == 0
    ring = IdentitySet([Identity.from_private_key(load_private_key(f["key"].read_bytes()))])
    dec = EnvelopeDecryptor(ring)
    got = dec.update(out.read_bytes()) + dec.finalize()
    assert len(got) >= 2 * 16384 and data.startswith(got)


def test_require_signature_refuses_a_file_changed_while_decrypted(
    f: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verified, then written to (in place) while being decrypted: OUT is not kept."""
    import recstream.cli.envelope as cli_envelope

    env, out = f["dir"] / "c.rsv", f["dir"] / "c.wav"
    assert encrypt(f, env) == 0
    real = cli_envelope.transform

    def transform_then_write(src, dst, codec):  # type: ignore[no-untyped-def]
        n = real(src, dst, codec)
        with env.open("r+b") as fh:  # another writer, in place: same bytes, new ctime
            fh.write(env.read_bytes()[:1])
        return n

    monkeypatch.setattr(cli_envelope, "transform", transform_then_write)
    code = run("decrypt", "--key", f["key"], "--require-signature", "--ca-file", f["ca"], env, out)
    assert code == 3
    assert not out.exists()
    assert "changed while it was decrypted" in capsys.readouterr().err


def test_batch_rewrap_keeps_signatures_valid(
    f: dict[str, Path], bob: Party, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst = f["dir"] / "src", f["dir"] / "dst"
    src.mkdir()
    assert encrypt(f, src / "a.rsv") == 0
    assert encrypt(f, src / "b.rsv", "ek", "ec") == 0
    bob_cert, bob_key = bob.write(f["dir"])
    code = run("batch", "rewrap", src, dst, "--key", f["key"], "--cert", f["cert"],
               "--to-cert", bob_cert, "--drop", _cert_id(f["cert"]),
               "--state-dir", f["dir"] / "st")  # fmt: skip
    assert code == 0, capsys.readouterr().err
    for name in ("a.rsv", "b.rsv"):
        assert (dst / name).read_bytes() != (src / name).read_bytes()  # new recipients
    assert run("verify", "--ca-file", f["ca"], dst) == 0
    out = f["dir"] / "bob.wav"
    assert run("decrypt", "--key", bob_key, "--require-signature", "--ca-file", f["ca"],
               dst / "a.rsv", out) == 0  # fmt: skip
    assert out.read_bytes() == PLAIN


def _cert_id(path: Path) -> str:
    from recstream.pki.certs import certificate_id, load_certificate

    return certificate_id(load_certificate(path.read_bytes()))


@needs_openssl
@pytest.mark.parametrize("kind", ["p256", "ed25519"])
def test_openssl_verifies_a_recstream_signature(f: dict[str, Path], kind: str) -> None:
    """The signed message rebuilt from FORMAT.md §10 with blake3 and struct (not
    recstream), and the signature checked by the openssl CLI with the header's
    certificate: the format is plain ECDSA (raw r || s) or Ed25519 over documented bytes."""
    import struct

    from blake3 import blake3
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    env = f["dir"] / f"{kind}.rsv"
    assert encrypt(f, env, *(("sk", "sc") if kind == "p256" else ("ek", "ec"))) == 0
    data = env.read_bytes()
    m = struct.unpack_from(">H", data, 10)[0]
    cert_len = struct.unpack_from(">H", data, 12 + m + 1)[0]
    ctx_end = 12 + m + 3 + cert_len
    cert_der = data[12 + m + 3 : ctx_end]
    pos = ctx_end + 1
    for _ in range(data[ctx_end]):  # recipient stanzas: type, cert_id, key_id, length, key
        pos += 67 + struct.unpack_from(">H", data, pos + 65)[0]
    body = data[pos + 32 : -112]
    signed_ms, root, sig, magic = struct.unpack(">Q32s64s8s", data[-112:])
    assert magic == b"\x89RSTSIG\n"
    digests = b"".join(
        blake3(body[56 + i : 56 + i + 16400]).digest() for i in range(0, len(body) - 56, 16400)
    )
    assert blake3(b"recstream/v2 segments\x00" + digests).digest() == root
    message = (b"recstream/v2 signature\x00" + struct.pack(">H", ctx_end) + data[:ctx_end]
               + body[:56] + struct.pack(">Q", len(digests) // 32) + root
               + struct.pack(">Q", signed_ms))  # fmt: skip
    d = f["dir"]
    (d / "cert.der").write_bytes(cert_der)
    (d / "msg").write_bytes(message)
    subprocess.run(["openssl", "x509", "-inform", "DER", "-in", d / "cert.der", "-pubkey",
                    "-noout", "-out", d / "pub.pem"], check=True, timeout=60)  # fmt: skip
    if kind == "p256":
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
        (d / "sig").write_bytes(encode_dss_signature(r, s))
        cmd = ["openssl", "dgst", "-sha256", "-verify", d / "pub.pem", "-signature", d / "sig",
               d / "msg"]  # fmt: skip
    else:
        (d / "sig").write_bytes(sig)
        cmd = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", d / "pub.pem", "-rawin",
               "-in", d / "msg", "-sigfile", d / "sig"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (d / "msg").write_bytes(message[:-1] + bytes([message[-1] ^ 1]))  # another signing time
    assert subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode != 0

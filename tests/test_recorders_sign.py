"""Recorders sign when configured (issue 16): the hook, the SIPREC server and the
media-streams server, as real processes, and what they write verifies.

A node's signing identity is made at test time (pki signing profile, under an RSA
CA); the servers get it through ``[signing]``: a keystore node identity, or a key
file and a certificate file.  Verification is ``recstream.signing.verify_file``
against the CA file: no decryption key.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from recstream.aio import RecordingHook
from recstream.envelope import Recipient
from recstream.errors import ConfigError
from recstream.format import MediaKind
from recstream.frontdoor.config import SigningConfig
from recstream.keysource import NodeSignerResolver, node_signer
from recstream.keystore import create, load, update
from recstream.pki.ca import CertificateAuthority
from recstream.pki.signing import build_signing_csr, generate_signing_key, sign_signing_certificate
from recstream.signing import SignatureStatus, Signer, verify_file
from recstream.siprec.config import load_config as load_srs_config
from tests.keystore_helpers import NOW, PASSWORD, TINY_KDF, ca_cert, recording_cert
from tests.pki_helpers import name
from tests.siprec import helpers as sh
from tests.streams import helpers as st
from tests.streams import wsclient as wc


@dataclass(frozen=True)
class NodeId:
    cert: x509.Certificate
    key: object
    ca_pem: bytes

    @property
    def cert_id(self) -> str:
        from recstream.pki.certs import certificate_id

        return certificate_id(self.cert)


def issue(cn: str, key_type: str = "p256", *, days: int = 30) -> NodeId:
    ca = ca_cert("signing-ca")
    authority = CertificateAuthority.from_objects(ca.cert, ca.key)
    key = generate_signing_key(key_type)
    csr = build_signing_csr(key, name(cn))
    cert = sign_signing_certificate(csr, authority, days=days, now=NOW - timedelta(hours=1))
    return NodeId(cert, key, ca.cert.public_bytes(serialization.Encoding.PEM))


def add_node(keystore: Path, node: str, ident: NodeId) -> None:
    with update(keystore, PASSWORD) as ks:
        ks.nodes.add(node, ident.cert, ident.key, now=NOW)  # type: ignore[arg-type]


def assert_signed_by(path: Path, ident: NodeId) -> None:
    report = verify_file(path, ident.ca_pem)
    assert report.status is SignatureStatus.VALID, report
    assert report.cert_id == ident.cert_id
    assert report.chain_valid_at_signing is True


# --- the hook (library) --------------------------------------------------------------


def test_hook_signs_with_a_node_identity_and_follows_rotation(tmp_path: Path) -> None:
    ks_path = tmp_path / "ks.rsk"
    create(ks_path, PASSWORD, kdf=TINY_KDF, now=NOW)
    rec = recording_cert("hook-sign")
    first, second = issue("hook-node"), issue("hook-node-2", "ed25519")
    add_node(ks_path, "n1", first)
    current = {"ks": load(ks_path, PASSWORD)}
    resolver = NodeSignerResolver(lambda: current["ks"], "n1")

    async def record(call: str) -> Path:
        async with RecordingHook(
            tmp_path, lambda t, k: [Recipient.from_certificate(rec.cert)], signer=resolver
        ) as hook:
            await hook.start(call, tenant="acme")
            hook.media(call, b"\x01" * 40_000)
            return (await hook.stop(call))[MediaKind.VOICE]

    assert_signed_by(asyncio.run(record("c1")), first)
    add_node(ks_path, "n1", second)  # the new identity replaces the old for new calls
    current["ks"] = load(ks_path, PASSWORD)
    assert_signed_by(asyncio.run(record("c2")), second)


def test_hook_records_unsigned_rather_than_losing_a_call(tmp_path: Path) -> None:
    ks_path = tmp_path / "ks.rsk"
    create(ks_path, PASSWORD, kdf=TINY_KDF, now=NOW)
    rec = recording_cert("hook-unsigned")
    ks = load(ks_path, PASSWORD)
    resolver = NodeSignerResolver(lambda: ks, "absent")
    with pytest.raises(Exception, match="node absent has no active signing identity"):
        node_signer(ks, "absent")

    async def record() -> tuple[Path, int]:
        async with RecordingHook(
            tmp_path, lambda t, k: [Recipient.from_certificate(rec.cert)], signer=resolver
        ) as hook:
            await hook.start("c", tenant="acme")
            hook.media("c", b"\x02" * 1000)
            return (await hook.stop("c"))[MediaKind.VOICE], hook.unsigned

    path, unsigned = asyncio.run(record())
    assert unsigned == 1
    assert verify_file(path, issue("x").ca_pem).status is SignatureStatus.UNSIGNED


# --- config --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "expect"),
    [
        ('node = "n1"\nkey_file = "k.pem"\ncert_file = "c.pem"', "not both"),
        ('key_file = "k.pem"', "key_file and cert_file go together"),
        ("", "give node (a keystore node identity) or key_file and cert_file"),
        ('node = "bad name"', "node must be 1-64 letters"),
        ('node = "n1"\nkey_password_file = "k.pem"', "key_password_file is for key_file"),
        ('cert_file = "c.pem"\nkey_file = "nowhere.pem"', "nowhere.pem"),
        ('node = "n1"\nsecret = "x"', "secret"),
    ],
)
def test_signing_section_problems_are_named(tmp_path: Path, section: str, expect: str) -> None:
    (tmp_path / "k.pem").write_text("k")
    (tmp_path / "c.pem").write_text("c")
    cfg = sh.write_config(tmp_path, f"[signing]\n{section}\n")
    with pytest.raises(ConfigError, match=re.escape(expect)):
        load_srs_config(cfg)


def test_signing_section_parsed(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert load_srs_config(sh.write_config(tmp_path / "a")).signing is None
    cfg = sh.write_config(tmp_path / "b", '[signing]\nnode = "srs-01"\n')
    assert load_srs_config(cfg).signing == SigningConfig(node="srs-01")


def test_srs_refuses_to_start_without_the_identity(tmp_path: Path) -> None:
    cfg = sh.write_config(tmp_path, '[signing]\nnode = "srs-01"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "recstream", "srs", "--config", str(cfg), "--check"],
        capture_output=True, text=True, timeout=sh.HANG_GUARD, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "node srs-01 has no active signing identity" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- the SIPREC server, a real process ----------------------------------------------------


@pytest.fixture(scope="module")
def srs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sh.Srs, NodeId]]:
    directory = tmp_path_factory.mktemp("srs-signed")
    ident = issue("srs-01")
    cfg = sh.write_config(directory, '[signing]\nnode = "srs-01"\n')
    add_node(directory / "keystore.rsk", "srs-01", ident)
    server = sh.Srs.start(cfg)
    yield server, ident
    assert server.stop() == 0


def test_srs_recording_is_signed_and_verifies(srs: tuple[sh.Srs, NodeId]) -> None:
    server, ident = srs
    client = sh.SipClient(server)
    call_id = uuid.uuid4().hex
    client.send(
        sh.request(
            "INVITE", client.srs, client.local, call_id, branch=f"z9hG4bK{uuid.uuid4().hex}",
            body=sh.siprec_body([("1", 40010)]), content_type=sh.SIPREC_TYPE,
            headers=sh.SIPREC_HEADERS,
        )
    )  # fmt: skip
    ok = client.expect(200, "INVITE")
    tag, port = sh.to_tag(ok), sh.answer_ports(ok)[0]
    client.send(sh.request("ACK", client.srs, client.local, call_id,
                           branch=f"z9hG4bK{uuid.uuid4().hex}", to_tag=tag))  # fmt: skip
    start = server.wait_for("call_start")
    audio = sh.payloads(30, seed=16)
    sender = sh.Sender()
    sender.send(port, [sh.rtp_packet(i, i * 160, 77, p, pt=0) for i, p in enumerate(audio)])
    sender.close()
    client.send(sh.request("BYE", client.srs, client.local, call_id,
                           branch=f"z9hG4bK{uuid.uuid4().hex}", cseq=2, to_tag=tag))  # fmt: skip
    client.expect(200, "BYE")
    client.close()
    server.wait_for("call_end", recording_id=start["recording_id"])
    path = next(p for p in server.recordings() if p.parent.name == start["recording_id"])
    assert_signed_by(path, ident)
    got = sh.decrypt_tracks(path, server.directory)  # and it still decrypts
    assert got.complete and bytes(got.tracks[1].audio) == b"".join(audio)


# --- the media-streams server, a real process ----------------------------------------------


def test_streams_recording_is_signed_with_key_files(tmp_path: Path) -> None:
    env = st.make_env(tmp_path / "env")
    ident = issue("streams-01", "ed25519")
    key_file, cert_file = env.root / "sign.key", env.root / "sign.pem"
    key_file.write_bytes(
        ident.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"signing key password"),
        )
    )
    cert_file.write_bytes(ident.cert.public_bytes(serialization.Encoding.PEM))
    (env.root / "sign.pass").write_text("signing key password\n")
    config = env.config()
    config.write_text(
        config.read_text()
        + f'[signing]\nkey_file = "{key_file}"\ncert_file = "{cert_file}"\n'
        + f'key_password_file = "{env.root / "sign.pass"}"\n'
    )
    for server in st.running(config, env.root / "server.log"):
        c = wc.Call(tracks=("inbound",))
        data = wc.audio(5, seed=9)
        msgs = [c.connected(), c.start(), *wc.media_messages(c, data), c.stop()]
        url = f"{server.url}?token={st.SECRETS['acme']}"
        code, _ = wc.run(lambda: wc.call(url, msgs, close=False))
        assert code == 1000
        entry = st.audit_entry(env, c.stream_sid)
        path = Path(entry["file"])
        assert_signed_by(path, ident)
        ex = st.decrypt_tracks(env, path)
        assert bytes(ex.tracks[1].audio) == data


def test_signer_objects_from_files_refuse_a_recording_key(tmp_path: Path) -> None:
    rec = recording_cert("not-a-signer")
    cert, key = rec.write(tmp_path)
    with pytest.raises(Exception, match="ECDSA P-256 or Ed25519"):
        Signer.from_files(key, cert)


# --- record --sign-node (the CLI, a real process reading stdin) ------------------------


def test_record_signs_as_a_keystore_node(tmp_path: Path) -> None:
    ks_path = tmp_path / "ks.rsk"
    create(ks_path, PASSWORD, kdf=TINY_KDF, now=NOW)
    rec = recording_cert("record-node")
    with update(ks_path, PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, rec.cert, rec.key, now=NOW)
    ident = issue("record-node")
    add_node(ks_path, "desk-7", ident)
    (tmp_path / "pw").write_bytes(PASSWORD + b"\n")
    base = [sys.executable, "-m", "recstream", "record", "--keystore", str(ks_path),
            "--password-file", str(tmp_path / "pw"), "--tenant", "acme"]  # fmt: skip
    out = tmp_path / "live.rsv"
    proc = subprocess.run([*base, "--sign-node", "desk-7", str(out)], input=b"\x05" * 50_000,
                          capture_output=True, timeout=sh.HANG_GUARD, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_signed_by(out, ident)
    for extra, code, expect in (
        (["--sign-node", "nobody"], 4, b"node nobody has no active signing identity"),
        (["--sign-node", "desk-7", "--sign-key", "k", "--sign-cert", "c"], 2, b"not both"),
        (["--sign-node", "bad node"], 2, b"--sign-node: node name"),
    ):
        bad = tmp_path / f"bad{code}.rsv"
        proc = subprocess.run([*base, *extra, str(bad)], input=b"x", capture_output=True,
                              timeout=sh.HANG_GUARD, check=False)  # fmt: skip
        assert proc.returncode == code, proc.stderr
        assert expect in proc.stderr and b"Traceback" not in proc.stderr
        assert not list(tmp_path.glob(f"bad{code}.rsv*"))


def test_srs_refuses_a_signing_key_it_cannot_open(tmp_path: Path) -> None:
    ident = issue("srs-files")
    key_file, cert_file = tmp_path / "sign.key", tmp_path / "sign.pem"
    key_file.write_bytes(
        ident.key.private_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"the right password"),
        )
    )
    cert_file.write_bytes(ident.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "wrong.pass").write_text("not the password\n")
    cfg = sh.write_config(
        tmp_path,
        '[signing]\nkey_file = "sign.key"\ncert_file = "sign.pem"\n'
        'key_password_file = "wrong.pass"\n',
    )
    proc = subprocess.run(
        [sys.executable, "-m", "recstream", "srs", "--config", str(cfg), "--check"],
        capture_output=True, text=True, timeout=sh.HANG_GUARD, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "wrong password" in proc.stderr and "Traceback" not in proc.stderr
    assert "the right password" not in proc.stderr + proc.stdout

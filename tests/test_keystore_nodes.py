"""Recording nodes' signing identities in the keystore (issue 16): library, file, CLI, locking."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from recstream.errors import (
    CertificateKeyMismatchError,
    CertificateNotInKeystoreError,
    KeyPolicyError,
    KeystoreEntryError,
    KeystoreFormatError,
    KeystoreTamperedError,
)
from recstream.format import MediaKind
from recstream.keystore import _container, backup, create, load, update
from recstream.keystore._container import FileKind
from recstream.keystore.check import check_keystore
from recstream.keystore.nodes import NodeState, check_node_name
from tests.keystore_helpers import NOW, PASSWORD, TINY_KDF, ca_cert, recording_cert, run_cli
from tests.pki_helpers import key_usage, make_cert, name

SigningKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def signing_cert(
    label: str, key: SigningKey | None = None, *, end_days: float = 365, ca: bool = False
) -> tuple[x509.Certificate, SigningKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    issuer = ca_cert("nodes")
    cert = make_cert(
        name(f"node {label}"),
        key,  # type: ignore[arg-type]
        issuer.cert,
        issuer.key,
        ku=key_usage(digital_signature=True, key_cert_sign=ca),
        ca=ca,
        not_before=NOW - timedelta(days=1),
        not_after=NOW + timedelta(days=end_days),
    )
    return cert, key


@pytest.fixture
def ks_path(tmp_path: Path) -> Path:
    path = tmp_path / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF, now=NOW)
    return path


def write_pair(d: Path, stem: str, cert: x509.Certificate, key: SigningKey) -> tuple[Path, Path]:
    c, k = d / f"{stem}.pem", d / f"{stem}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key file password"),
        )
    )
    (d / "keypw").write_text("key file password\n")
    (d / "kspw").write_bytes(PASSWORD + b"\n")
    return c, k


# --- library --------------------------------------------------------------------------


def test_add_rotate_keep_and_reload(ks_path: Path) -> None:
    first, k1 = signing_cert("one")
    second, k2 = signing_cert("two", ed25519.Ed25519PrivateKey.generate())
    with update(ks_path, PASSWORD) as ks:
        new, retired = ks.nodes.add("recorder-01", first, k1, now=NOW)
        assert retired is None and new.state is NodeState.ACTIVE
    with update(ks_path, PASSWORD) as ks:
        new, retired = ks.nodes.add("recorder-01", second, k2, now=NOW)
        assert retired is not None and retired.state is NodeState.RETIRED
        assert retired.certificate == first
    ks = load(ks_path, PASSWORD)
    ids = ks.nodes.for_node("recorder-01")
    assert [i.state for i in ids] == [NodeState.RETIRED, NodeState.ACTIVE]
    active = ks.nodes.active("recorder-01")
    assert active is not None and active.certificate == second
    assert active.key_type == "Ed25519" and ids[0].key_type == "ECDSA P-256"
    assert ids[0].retired is not None
    # keys come back out of the sealed store, and match
    assert ks.nodes.private_key(active).public_key() == k2.public_key()
    assert ks.nodes.private_key(ids[0]).public_key() == k1.public_key()
    assert all(ks.nodes.key_problem(i) is None for i in ids)
    assert check_keystore(ks, now=NOW) == []


def test_refusals(ks_path: Path) -> None:
    cert, key = signing_cert("r")
    other_cert, _ = signing_cert("other")
    rec = recording_cert("rec")
    with update(ks_path, PASSWORD) as ks:
        with pytest.raises(KeyPolicyError, match="signers use ECDSA P-256 or Ed25519"):
            ks.nodes.add("n1", rec.cert, rec.key, now=NOW)  # type: ignore[arg-type]
        with pytest.raises(CertificateKeyMismatchError, match="does not belong"):
            ks.nodes.add("n1", other_cert, key, now=NOW)
        with pytest.raises(ValueError, match="node name"):
            ks.nodes.add("../etc", cert, key, now=NOW)
        expired, ekey = signing_cert("old", end_days=-0.5)
        with pytest.raises(KeystoreEntryError, match="expired"):
            ks.nodes.add("n1", expired, ekey, now=NOW)
        ca, cakey = signing_cert("ca", ca=True)
        with pytest.raises(Exception, match="is a CA certificate"):
            ks.nodes.add("n1", ca, cakey, now=NOW)
        ks.nodes.add("n1", cert, key, now=NOW)
        with pytest.raises(KeystoreEntryError, match="already in the keystore"):
            ks.nodes.add("n2", cert, key, now=NOW)
        with pytest.raises(KeystoreEntryError, match="active identity"):
            ks.nodes.remove("n1", certificate_prefix(cert))
        with pytest.raises(CertificateNotInKeystoreError):
            ks.nodes.remove("n2", certificate_prefix(cert))
        with pytest.raises(KeystoreEntryError, match="not a hex certificate ID"):
            ks.nodes.remove("n1", "abc")
        assert ks.nodes.remove("n1", certificate_prefix(cert), active_too=True).certificate == cert
        assert len(ks.nodes) == 0


def certificate_prefix(cert: x509.Certificate) -> str:
    from recstream.pki.certs import certificate_id

    return certificate_id(cert)[:12]


@pytest.mark.parametrize("bad", ["", "-x", "a" * 65, "a b", "é"])
def test_node_names(bad: str) -> None:
    assert check_node_name("srs-1.site_a") == "srs-1.site_a"
    with pytest.raises(ValueError, match="node name"):
        check_node_name(bad)


def _content_of(path: Path) -> dict[str, object]:
    data = path.read_bytes()
    sealed = _container.parse(data, FileKind.KEYSTORE, "ks")
    unlocked = _container.unlock(sealed, PASSWORD, "ks", None)
    doc: dict[str, object] = json.loads(_container.open_payload(sealed, unlocked, "ks"))
    return doc


def test_content_version_2_only_with_nodes(ks_path: Path) -> None:
    """Old readers keep reading a keystore without nodes; one with nodes they refuse
    (content version 2) instead of dropping the identities on their next save."""
    with update(ks_path, PASSWORD) as ks:
        rec = recording_cert("v1")
        ks.add("acme", MediaKind.VOICE, rec.cert, rec.key, now=NOW)
    doc = _content_of(ks_path)
    assert doc["version"] == 1 and "nodes" not in doc
    cert, key = signing_cert("v2")
    with update(ks_path, PASSWORD) as ks:
        ks.nodes.add("n1", cert, key, now=NOW)
    doc = _content_of(ks_path)
    assert doc["version"] == 2
    assert isinstance(doc["nodes"], list) and len(doc["nodes"]) == 1
    assert set(doc["nodes"][0]) == {
        "node", "state", "added", "retired", "certificate", "key_nonce", "key",
    }  # fmt: skip
    # the recording entries are untouched and the keystore still decrypts them
    assert len(load(ks_path, PASSWORD).entries) == 1


def _reseal(path: Path, mutate: object) -> None:
    data = path.read_bytes()
    sealed = _container.parse(data, FileKind.KEYSTORE, "ks")
    unlocked = _container.unlock(sealed, PASSWORD, "ks", None)
    doc = json.loads(_container.open_payload(sealed, unlocked, "ks"))
    mutate(doc)  # type: ignore[operator]
    payload = json.dumps(doc).encode()
    path.write_bytes(_container.seal(FileKind.KEYSTORE, unlocked, payload))


def test_authenticated_but_invalid_content_refused(ks_path: Path) -> None:
    c1, k1 = signing_cert("a")
    c2, k2 = signing_cert("b")
    with update(ks_path, PASSWORD) as ks:
        ks.nodes.add("n1", c1, k1, now=NOW)
        ks.nodes.add("n2", c2, k2, now=NOW)

    def two_active(doc: dict[str, list[dict[str, str]]]) -> None:
        doc["nodes"][1]["node"] = "n1"

    original = ks_path.read_bytes()
    _reseal(ks_path, two_active)
    with pytest.raises(KeystoreFormatError, match="two active signing identities for node n1"):
        load(ks_path, PASSWORD)
    ks_path.write_bytes(original)

    def nodes_in_v1(doc: dict[str, object]) -> None:
        doc["version"] = 1

    _reseal(ks_path, nodes_in_v1)
    with pytest.raises(KeystoreFormatError, match="nodes is not allowed in content version 1"):
        load(ks_path, PASSWORD)
    ks_path.write_bytes(original)

    def swap_keys(doc: dict[str, list[dict[str, str]]]) -> None:
        a, b = doc["nodes"]
        a["key"], b["key"] = b["key"], a["key"]
        a["key_nonce"], b["key_nonce"] = b["key_nonce"], a["key_nonce"]

    _reseal(ks_path, swap_keys)
    ks = load(ks_path, PASSWORD)  # structure is fine; the keys are bound to their cert IDs
    with pytest.raises(KeystoreTamperedError, match="failed authentication"):
        ks.nodes.private_key(ks.nodes.identities[0])
    assert "node-key-mismatch" in [f.code for f in check_keystore(ks, now=NOW)]


def test_node_key_cannot_pose_as_recording_key(ks_path: Path) -> None:
    """Distinct associated data: a node's sealed key copied into a recording entry fails."""
    rec = recording_cert("pose")
    cert, key = signing_cert("pose")
    with update(ks_path, PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, rec.cert, rec.key, now=NOW)
        ks.nodes.add("n1", cert, key, now=NOW)

    def pose(doc: dict[str, list[dict[str, str]]]) -> None:
        node = doc["nodes"][0]
        # re-bind: the entry's key field gets the node's sealed blob; the AAD differs
        doc["entries"][0]["key"] = node["key"]
        doc["entries"][0]["key_nonce"] = node["key_nonce"]

    _reseal(ks_path, pose)
    ks = load(ks_path, PASSWORD)
    with pytest.raises(KeystoreTamperedError):
        ks.private_key(ks.entries[0])


def test_backup_and_restore_keep_identities(ks_path: Path, tmp_path: Path) -> None:
    c1, k1 = signing_cert("b1")
    c2, k2 = signing_cert("b2", ed25519.Ed25519PrivateKey.generate())
    with update(ks_path, PASSWORD) as ks:
        ks.nodes.add("n1", c1, k1, now=NOW)
        ks.nodes.add("n1", c2, k2, now=NOW)
    out = tmp_path / "ks.backup"
    backup.write_backup(load(ks_path, PASSWORD), PASSWORD, out, source="here", now=NOW)
    restored_path = tmp_path / "elsewhere" / "keystore.rsk"
    info = backup.restore(out, restored_path, PASSWORD, now=NOW)
    assert info.signing_identities == 2
    ks = load(restored_path, PASSWORD)
    assert [(i.node, i.state, i.certificate) for i in ks.nodes.identities] == [
        ("n1", NodeState.RETIRED, c1),
        ("n1", NodeState.ACTIVE, c2),
    ]
    assert ks.nodes.private_key(ks.nodes.identities[1]).public_key() == k2.public_key()
    # a backup whose node key was damaged is refused whole, before restore touches anything
    data = bytearray(out.read_bytes())
    sealed = _container.parse(bytes(data), FileKind.BACKUP, "b")
    unlocked = _container.unlock(sealed, PASSWORD, "b", None)
    doc = json.loads(_container.open_payload(sealed, unlocked, "b"))
    blob = bytearray(base64.b64decode(doc["nodes"][0]["key"]))
    blob[0] ^= 1
    doc["nodes"][0]["key"] = base64.b64encode(bytes(blob)).decode()
    bad = tmp_path / "bad.backup"
    bad.write_bytes(_container.seal(FileKind.BACKUP, unlocked, json.dumps(doc).encode()))
    with pytest.raises(Exception, match="signing key of node n1"):
        backup.restore(bad, tmp_path / "third" / "keystore.rsk", PASSWORD, now=NOW)
    assert not (tmp_path / "third" / "keystore.rsk").exists()


# --- CLI --------------------------------------------------------------------------------


def test_cli_add_list_show_remove(
    ks_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    c1, k1 = signing_cert("cli1")
    c2, k2 = signing_cert("cli2", ed25519.Ed25519PrivateKey.generate())
    p1 = write_pair(tmp_path, "one", c1, k1)
    p2 = write_pair(tmp_path, "two", c2, k2)
    ks = ["--keystore", ks_path, "--password-file", tmp_path / "kspw"]
    code, _, err = run_cli(capsys, "keystore", "node", "add", "recorder-01", *ks,
                           "--cert", p1[0], "--key", p1[1], "--key-password-file",
                           tmp_path / "keypw")  # fmt: skip
    assert code == 0, err
    assert "signs with it from now on" in err
    code, _, err = run_cli(capsys, "keystore", "node", "add", "recorder-01", *ks,
                           "--cert", p2[0], "--key", p2[1], "--key-password-file",
                           tmp_path / "keypw")  # fmt: skip
    assert code == 0 and "is retired (kept)" in err
    code, out, _ = run_cli(capsys, "keystore", "node", "list", *ks, "--json")
    listed = json.loads(out)
    assert [(i["node"], i["status"], i["key_type"]) for i in listed] == [
        ("recorder-01", "active", "Ed25519"),
        ("recorder-01", "retired", "ECDSA P-256"),
    ]
    code, out, _ = run_cli(capsys, "keystore", "node", "list", *ks)
    assert code == 0 and "recorder-01" in out and "Ed25519" in out
    code, out, _ = run_cli(capsys, "keystore", "node", "show", "recorder-01", *ks, "--pem")
    assert code == 0 and out.count("BEGIN CERTIFICATE") == 2
    retired_id = listed[1]["cert_id"]
    code, out, _ = run_cli(capsys, "keystore", "node", "show", "recorder-01", *ks,
                           "--cert-id", retired_id[:10])  # fmt: skip
    assert code == 0 and retired_id in out and "retired" in out
    code, _, err = run_cli(capsys, "keystore", "node", "remove", "recorder-01", *ks,
                           "--cert-id", listed[0]["cert_id"])  # fmt: skip
    assert code == 4 and "active identity" in err
    code, _, err = run_cli(capsys, "keystore", "node", "remove", "recorder-01", *ks,
                           "--cert-id", retired_id)  # fmt: skip
    assert code == 0 and "still verify" in err
    assert len(load(ks_path, PASSWORD).nodes) == 1
    # backup and verify-backup count the identities
    code, _, err = run_cli(capsys, "keystore", "backup", *ks, "--out", tmp_path / "b.rsk")
    assert code == 0 and "1 node signing identity" in err


@pytest.mark.parametrize(
    ("argv", "code", "expect"),
    [
        (["add", "bad name!"], 2, "node name 'bad name!' must be"),
        (["add", "n1", "--cert", "{rec_cert}", "--key", "{rec_key}"], 4, "P-256 or Ed25519"),
        (["add", "n1", "--cert", "{cert}", "--key", "{key}"], 2, "--key-password-file"),
        (["show", "nobody"], 2, "node nobody has no signing identity"),
        (["remove", "n1"], 2, "--cert-id"),
    ],
)
def test_cli_errors(
    ks_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    expect: str,
) -> None:
    cert, key = signing_cert("e")
    c, k = write_pair(tmp_path, "e", cert, key)
    rec_c, rec_k = recording_cert("e-rec").write(tmp_path)
    values = {"cert": c, "key": k, "rec_cert": rec_c, "rec_key": rec_k}
    argv = [a.format(**values) for a in argv]
    if argv[0] == "add" and "--cert" not in argv:
        argv += ["--cert", str(c), "--key", str(k)]
    ks = ["--keystore", str(ks_path), "--password-file", str(tmp_path / "kspw")]
    got, _, err = run_cli(capsys, "keystore", "node", *argv, *ks)
    assert got == code, err
    assert expect in err


def test_concurrent_adds_from_processes_all_land(ks_path: Path, tmp_path: Path) -> None:
    """Four processes add identities at once; the keystore lock serialises them: none lost."""
    (tmp_path / "kspw").write_bytes(PASSWORD + b"\n")
    procs = []
    for n in range(4):
        cert, key = signing_cert(f"p{n}")
        c, k = tmp_path / f"p{n}.pem", tmp_path / f"p{n}.key"
        c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        k.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        argv = [sys.executable, "-m", "recstream", "keystore", "node", "add", f"node-{n}",
                "--keystore", str(ks_path), "--password-file", str(tmp_path / "kspw"),
                "--cert", str(c), "--key", str(k)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        procs.append(subprocess.Popen(argv, stderr=subprocess.PIPE, env=env))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    ks = load(ks_path, PASSWORD)
    assert sorted(ks.nodes.names()) == [f"node-{n}" for n in range(4)]


def test_check_reports_an_expiring_node_identity(ks_path: Path) -> None:
    cert, key = signing_cert("soon", end_days=10)
    with update(ks_path, PASSWORD) as ks:
        ks.nodes.add("n-soon", cert, key, now=NOW)
    ks = load(ks_path, PASSWORD)
    found = [(f.code, f.kind) for f in check_keystore(ks, now=NOW)]
    assert found == [("node-expiring", "signing")]
    later = [f.code for f in check_keystore(ks, now=NOW + timedelta(days=11))]
    assert later == ["node-expired"]


def test_cli_add_validates_against_a_ca_file(
    ks_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = signing_cert("with-ca")
    c, k = write_pair(tmp_path, "with-ca", cert, key)
    issuer = ca_cert("nodes")
    (tmp_path / "ca.pem").write_bytes(issuer.cert.public_bytes(serialization.Encoding.PEM))
    stranger = ca_cert("stranger")
    (tmp_path / "other.pem").write_bytes(stranger.cert.public_bytes(serialization.Encoding.PEM))
    ks = ["--keystore", ks_path, "--password-file", tmp_path / "kspw"]
    common = ["--cert", c, "--key", k, "--key-password-file", tmp_path / "keypw"]
    code, _, err = run_cli(capsys, "keystore", "node", "add", "n1", *ks, *common,
                           "--ca-file", tmp_path / "other.pem")  # fmt: skip
    assert code == 4 and "refused by the CA file" in err
    assert len(load(ks_path, PASSWORD).nodes) == 0
    code, _, err = run_cli(capsys, "keystore", "node", "add", "n1", *ks, *common,
                           "--ca-file", tmp_path / "ca.pem")  # fmt: skip
    assert code == 0, err
    assert len(load(ks_path, PASSWORD).nodes) == 1

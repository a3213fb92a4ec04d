"""The one key source and password reader, and the CLI items of issue 14 that use them."""

from __future__ import annotations

import os
import pickle
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from recstream.errors import PasswordError
from recstream.format import MediaKind
from recstream.keysource import KeySource, read_password, read_password_file
from recstream.keystore import create, load, update
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    env_without_keystore,
    open_envelope,
    recording_cert,
    run_cli,
    seal,
)


@pytest.fixture(scope="module")
def cert() -> Cert:
    return recording_cert("KS")


@pytest.fixture
def ks_path(tmp_path: Path, cert: Cert) -> Path:
    path = tmp_path / "keystore.rsk"
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, cert.cert, cert.key, now=NOW)
    return path


def test_one_password_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECSTREAM_KEYSTORE_PASSWORD", raising=False)
    f = tmp_path / "pw"
    f.write_bytes(b"s3cret pass\r\nsecond line\n")
    assert read_password_file(f) == b"s3cret pass"
    assert read_password(f, prompt=lambda _: b"never asked") == b"s3cret pass"
    (tmp_path / "empty").write_bytes(b"\nsecond line\n")
    with pytest.raises(PasswordError, match="is empty"):
        read_password(tmp_path / "empty")  # empty is an error everywhere, never "none"
    with pytest.raises(OSError):
        read_password(tmp_path / "missing")
    with pytest.raises(PasswordError, match="is needed"):
        read_password()
    monkeypatch.setenv("RECSTREAM_KEYSTORE_PASSWORD", "from env")
    assert read_password() == b"from env"
    assert read_password(env=None, prompt=lambda what: what.encode()) == b"keystore password"
    with pytest.raises(PasswordError, match="is empty"):
        read_password(env=None, prompt=lambda _: b"")


def test_key_source_is_paths_only_and_opens_once(
    ks_path: Path, cert: Cert, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    source = KeySource(keystore=str(ks_path), password_file=str(pw))
    blob = pickle.dumps(source)
    assert PASSWORD not in blob  # safe in a Dask task graph
    opened = pickle.loads(blob).open()
    assert opened is source.open()  # cached per process: one KDF per worker
    assert cert.cert_id in opened.certs and opened.certs[cert.cert_id].has_key
    assert open_envelope(seal(b"hello", [cert.recipient]), opened.keyring) == b"hello"
    monkeypatch.setenv("RECSTREAM_KEYSTORE", str(ks_path))
    monkeypatch.setenv("RECSTREAM_KEYSTORE_PASSWORD", PASSWORD.decode())
    assert KeySource().keystore_file() == ks_path
    assert [e.cert_id for e in KeySource().open().keyring.entries] == [cert.cert_id]  # type: ignore[attr-defined]
    monkeypatch.setenv("RECSTREAM_KEYSTORE_PASSWORD", "wrong password!")
    with pytest.raises(Exception, match="password"):
        KeySource(keystore=str(ks_path), password_env="RECSTREAM_KEYSTORE_PASSWORD",
                  cert_files=("x",)).open()  # fmt: skip


def test_batch_honours_the_keystore_environment(
    ks_path: Path, cert: Cert, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    env_without_keystore(monkeypatch, tmp_path / "home")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.rsv").write_bytes(seal(b"played back", [cert.recipient]))
    code, _, err = run_cli(capsys, "batch", "decrypt", src, tmp_path / "out")
    assert code == 2 and "$RECSTREAM_KEYSTORE" in err  # nothing to open it with
    monkeypatch.setenv("RECSTREAM_KEYSTORE", str(ks_path))
    code, _, err = run_cli(capsys, "batch", "decrypt", src, tmp_path / "out")
    assert code == 2 and "RECSTREAM_KEYSTORE_PASSWORD" in err  # no password
    monkeypatch.setenv("RECSTREAM_KEYSTORE_PASSWORD", PASSWORD.decode())
    code, _, err = run_cli(capsys, "batch", "decrypt", src, tmp_path / "out")
    assert code == 0, err
    assert "running in this process" in err and "1 done" in err
    assert (tmp_path / "out" / "a.wav").read_bytes() == b"played back"


def test_backup_onto_the_keystore_itself_is_refused(
    ks_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    env_without_keystore(monkeypatch, tmp_path / "home")
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    before = ks_path.read_bytes()
    for out in (ks_path, tmp_path / "." / ks_path.name):
        code, _, err = run_cli(capsys, "keystore", "backup", "--keystore", ks_path,
                               "--password-file", pw, "--out", out, "--force")  # fmt: skip
        assert code == 2 and "is the keystore itself" in err
    assert ks_path.read_bytes() == before and len(load(ks_path, PASSWORD).entries) == 1
    code, _, _ = run_cli(capsys, "keystore", "backup", "--keystore", ks_path,
                         "--password-file", pw, "--out", tmp_path / "b.rsb")  # fmt: skip
    assert code == 0


def test_rewrap_drop_takes_a_unique_prefix(
    ks_path: Path, cert: Cert, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    env_without_keystore(monkeypatch, tmp_path / "home")
    pw = tmp_path / "pw"
    pw.write_bytes(PASSWORD + b"\n")
    gone = recording_cert("GONE")
    f = tmp_path / "call.rsv"
    f.write_bytes(seal(b"x" * 100, [gone.recipient, cert.recipient]))
    code, _, err = run_cli(capsys, "rewrap", "--keystore", ks_path, "--password-file", pw,
                           "--tenant", "acme", "--drop", gone.cert_id[:10], f)  # fmt: skip
    assert code == 0, err
    assert open_envelope(f.read_bytes(), load(ks_path, PASSWORD)) == b"x" * 100
    from recstream.format import Header, parse_header

    h = parse_header(f.read_bytes())
    assert isinstance(h, Header) and h.cert_ids == (cert.cert_id,)


def test_decrypt_with_an_encrypted_key_prompts_on_a_terminal(tmp_path: Path, cert: Cert) -> None:
    """``decrypt --key ENCRYPTED.pem`` on a terminal asks for the password (a real pty)."""
    key = tmp_path / "k.pem"
    key.write_bytes(cert.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key password 1"),
    ))  # fmt: skip
    env_file = tmp_path / "in.rsv"
    env_file.write_bytes(seal(b"secret media", [cert.recipient]))
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSTREAM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recstream", "decrypt", "--key", str(key), str(env_file),
         str(tmp_path / "out.wav")],
        stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    while b"assword" not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                seen += os.read(master, 1024)
            except OSError:
                break
    assert b"password of" in seen.lower(), seen
    os.write(master, b"key password 1\n")
    assert proc.wait(timeout=120) == 0
    os.close(master)
    assert (tmp_path / "out.wav").read_bytes() == b"secret media"


def test_the_environment_variable_names_agree_with_the_keystore() -> None:
    from recstream import keysource
    from recstream.keystore import store

    assert (keysource.ENV_PATH, keysource.ENV_PASSWORD) == (store.ENV_PATH, store.ENV_PASSWORD)

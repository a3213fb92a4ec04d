"""``recstream serve``: users, bad configs, first run, the keystore seam, a real process."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from recstream.cli import main
from recstream.envelope import EnvelopeDecryptor, EnvelopeEncryptor, new_metadata
from recstream.errors import KeystoreLockedError
from recstream.format import MediaKind
from recstream.keystore import create, update
from recstream.service.config import load_config
from recstream.service.errors import ServiceConfigError
from recstream.service.keys import open_keyring, read_keystore_password
from recstream.service.store import SettingsStore
from tests.keystore_helpers import PASSWORD, TINY_KDF, Cert, recording_cert
from tests.service.conftest import REPO, Archive, Keys, rcs_toml, request, seal, write_config


@pytest.fixture
def cfg(tmp_path: Path, archive: Archive) -> Path:
    return write_config(tmp_path, rcs_toml(tmp_path, archive.root))


def pwfile(tmp_path: Path, text: str = "s3cret-password") -> str:
    p = tmp_path / f"pw-{len(text)}"
    p.write_text(text + "\n")
    return str(p)


def test_add_list_remove_users(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "serve",
        "add-user",
        "--config",
        str(cfg),
        "--name",
        "ann",
        "--role",
        "player",
        "--tenant",
        "acme",
        "--tenant",
        "globex",
        "--password-file",
        pwfile(tmp_path),
    ]
    assert main(args) == 0
    assert main(args) == 2  # exists
    assert "--replace" in capsys.readouterr().err
    assert main([*args, "--replace"]) == 0
    # --config before the action works too.
    assert (
        main(
            [
                "serve",
                "--config",
                str(cfg),
                "add-user",
                "--name",
                "op",
                "--role",
                "ops",
                "--password-file",
                pwfile(tmp_path),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["serve", "list-users", "--config", str(cfg), "--json"]) == 0
    users = json.loads(capsys.readouterr().out)
    assert users == [
        {"name": "ann", "role": "player", "tenants": ["acme", "globex"]},
        {"name": "op", "role": "ops", "tenants": []},
    ]
    stored = SettingsStore.open(load_config(cfg).settings_db)
    found = stored.user_with_hash("ann")
    stored.close()
    assert found is not None and found[1].startswith("$argon2id$v=19$m=65536,t=2,p=1$")
    assert "s3cret" not in found[1]
    assert main(["serve", "remove-user", "--config", str(cfg), "--name", "ann"]) == 0
    assert main(["serve", "remove-user", "--config", str(cfg), "--name", "ann"]) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--role", "player"], "at least one --tenant"),
        (["--role", "admin"], "invalid choice"),
        (["--role", "ops", "--name", "bad name"], "user name"),
        (["--role", "ops", "--short"], "at least 8 bytes"),
    ],
)
def test_add_user_refusals(
    cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    pw = pwfile(tmp_path, "short") if "--short" in extra else pwfile(tmp_path)
    extra = [e for e in extra if e != "--short"]
    args = ["serve", "add-user", "--config", str(cfg), "--name", "x", "--password-file", pw, *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_first_run_without_users_says_how_to_add_one(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "no default credentials" in err
    assert f"recstream serve add-user --config {cfg}" in err


def test_bad_config_refuses_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, '[server]\nlisten = "10.1.2.3:443"\n')
    assert main(["serve", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "will not start" in err and "tls_cert" in err and "[settings] db is required" in err
    assert main(["serve"]) == 2
    assert "--config" in capsys.readouterr().err


# --- the keystore seam ----------------------------------------------------------------


def make_keystore(path: Path) -> Cert:
    """A real keystore (issue 5's) with acme's voice certificate and key."""
    voice = recording_cert("rcs-voice")
    create(path, PASSWORD, kdf=TINY_KDF)
    with update(path, PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, voice.cert, voice.key, now=dt.datetime.now(dt.UTC))
    return voice


def sealed_for(cert: Cert, data: bytes) -> bytes:
    meta = new_metadata(
        recording_id="k", tenant="acme", media_kind=MediaKind.VOICE, media_type="audio/wav"
    )
    enc = EnvelopeEncryptor([cert.recipient], meta)
    return enc.update(data) + enc.finalize()


def test_open_keyring_opens_the_real_keystore(tmp_path: Path, archive: Archive) -> None:
    ks_path = tmp_path / "keystore.rsk"
    voice = make_keystore(ks_path)
    (tmp_path / "keystore.pass").write_bytes(PASSWORD + b"\n")
    cfg = load_config(write_config(tmp_path, rcs_toml(tmp_path, archive.root)))
    (tmp_path / "keystore.pass").write_bytes(PASSWORD + b"\n")  # rcs_toml wrote a dummy one
    assert cfg.keystore is not None
    ring = open_keyring(cfg.keystore)
    dec = EnvelopeDecryptor(ring)
    assert dec.update(sealed_for(voice, b"hello keystore")) + dec.finalize() == b"hello keystore"
    # A certificate imported while the server runs is used without a restart.
    later = recording_cert("rcs-voice-2")
    with update(ks_path, PASSWORD) as ks:
        ks.add("acme", MediaKind.VOICE, later.cert, later.key, now=dt.datetime.now(dt.UTC))
    dec = EnvelopeDecryptor(ring)
    assert dec.update(sealed_for(later, b"after import")) + dec.finalize() == b"after import"


def test_keystore_password_sources_and_errors(
    tmp_path: Path, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_keystore(tmp_path / "keystore.rsk")
    text = rcs_toml(tmp_path, archive.root).replace(
        'password_file = "keystore.pass"', 'password_env = "RS_TEST_KS_PW"'
    )
    cfg = load_config(write_config(tmp_path, text))
    assert cfg.keystore is not None
    with pytest.raises(ServiceConfigError, match="RS_TEST_KS_PW is not set"):
        read_keystore_password(cfg.keystore)
    monkeypatch.setenv("RS_TEST_KS_PW", "wrong password!")
    with pytest.raises(KeystoreLockedError):
        open_keyring(cfg.keystore)
    monkeypatch.setenv("RS_TEST_KS_PW", PASSWORD.decode())
    assert open_keyring(cfg.keystore).describe()


def test_serve_with_a_wrong_keystore_password_exits_4(
    tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    make_keystore(tmp_path / "keystore.rsk")
    cfg = write_config(tmp_path, rcs_toml(tmp_path, archive.root))  # password file: a wrong one
    assert (
        main(
            [
                "serve",
                "add-user",
                "--config",
                str(cfg),
                "--name",
                "op",
                "--role",
                "ops",
                "--password-file",
                pwfile(tmp_path),
            ]
        )
        == 0
    )
    assert main(["serve", "--config", str(cfg)]) == 4
    assert "password" in capsys.readouterr().err.lower()


def test_serve_runs_as_a_process_and_stops_on_sigterm(
    tmp_path: Path, archive: Archive, keys: Keys
) -> None:
    voice = make_keystore(tmp_path / "keystore.rsk")
    text = rcs_toml(tmp_path, archive.root).replace('"127.0.0.1:0"', f'"127.0.0.1:{_free_port()}"')
    cfg = write_config(tmp_path, text)
    (tmp_path / "keystore.pass").write_bytes(PASSWORD + b"\n")
    assert (
        main(
            [
                "serve",
                "add-user",
                "--config",
                str(cfg),
                "--name",
                "ann",
                "--role",
                "player",
                "--tenant",
                "acme",
                "--password-file",
                pwfile(tmp_path),
            ]
        )
        == 0
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recstream", "serve", "--config", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert "RCS listening on http://127.0.0.1:" in line, line
        url = line.split("listening on ")[1].split()[0]
        r = request(url, "GET", "/healthz", user=None)
        assert r.status == 200 and r.json() == {"status": "ok", "mode": "rcs"}
        auth = {"Authorization": "Basic " + base64.b64encode(b"ann:s3cret-password").decode()}
        r = request(url, "POST", "/rcs/decrypt", sealed_for(voice, b"x" * 40000), headers=auth)
        assert r.status == 200 and r.body == b"x" * 40000
        # The session's acme party is not in this keystore: no match, a clean 422.
        other = seal(
            keys.acme, b"y", rid="p", tenant="acme", kind=MediaKind.VOICE, mtype="audio/wav"
        )
        r = request(url, "POST", "/rcs/decrypt", other, headers=auth)
        assert r.status == 422 and r.json()["error"] == "no_matching_key"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert proc.stderr is not None and "stopping" in proc.stderr.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

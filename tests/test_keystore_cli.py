"""``recstream keystore ...`` and encrypt/decrypt/record with the keystore: every
command, and each refusal with its exit code and message (never a traceback)."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from recstream.format import MediaKind
from recstream.keystore import DEFAULT_KDF, Keystore, create, load, update
from recstream.keystore import store as store_mod
from recstream.keystore.model import EntryState
from tests.keystore_helpers import (
    NOW,
    PASSWORD,
    TINY_KDF,
    Cert,
    ca_cert,
    env_without_keystore,
    no_partials,
    open_envelope,
    recording_cert,
    run_cli,
    seal,
)

PLAIN = os.urandom(2 * 16384 + 777)


@pytest.fixture(scope="module")
def certs() -> dict[str, Cert]:
    ca = ca_cert("cli")
    return {
        "CA": ca,
        "A": recording_cert("A", start_days=-400, end_days=-20),
        "B": recording_cert("B", start_days=-30, end_days=335, issuer=ca),
        "C": recording_cert("C", start_days=-1, end_days=365),
        "S": recording_cert("S", start_days=-1, end_days=365),
        "SOON": recording_cert("SOON", start_days=-1, end_days=10),
    }


class Site:
    """A working directory: certificate files, a password file, a tiny-KDF keystore."""

    def __init__(self, root: Path, certs: dict[str, Cert]) -> None:
        self.root = root
        self.certs = certs
        self.ks = root / "keystore.rsk"
        self.pw = root / "pw"
        self.pw.write_bytes(PASSWORD + b"\n")
        self.files = {name: c.write(root) for name, c in certs.items()}
        (root / "ca.pem").write_bytes(certs["CA"].cert.public_bytes(serialization.Encoding.PEM))
        self.input = root / "call.wav"
        self.input.write_bytes(PLAIN)

    def create(self) -> None:
        create(self.ks, PASSWORD, kdf=TINY_KDF)

    def cert(self, name: str) -> Path:
        return self.files[name][0]

    def key(self, name: str) -> Path:
        return self.files[name][1]

    def ks_args(self) -> list[object]:
        return ["--keystore", self.ks, "--password-file", self.pw]

    def import_(
        self,
        capsys: pytest.CaptureFixture[str],
        name: str,
        tenant: str = "acme",
        kind: str = "voice",
    ) -> tuple[int, str, str]:
        return run_cli(
            capsys, "keystore", "import", *self.ks_args(), "--tenant", tenant, "--kind", kind,
            "--cert", self.cert(name), "--key", self.key(name),
        )  # fmt: skip


@pytest.fixture
def site(tmp_path: Path, certs: dict[str, Cert], monkeypatch: pytest.MonkeyPatch) -> Site:
    env_without_keystore(monkeypatch, tmp_path / "home")
    s = Site(tmp_path, certs)
    s.create()
    return s


# --- init and the password sources -----------------------------------------------------------


def test_init_with_default_kdf_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env_without_keystore(monkeypatch, tmp_path / "home")
    (tmp_path / "pw").write_bytes(PASSWORD + b"\n")
    ks = tmp_path / "home" / "data" / "recstream" / "keystore.rsk"
    code, _, err = run_cli(capsys, "keystore", "init", "--password-file", tmp_path / "pw")
    assert code == 0, err
    assert str(ks) in err and "Argon2id, 256 MiB, 3 passes" in err
    assert load(ks, PASSWORD).unlocked.kdf == DEFAULT_KDF
    before = ks.read_bytes()
    code, _, err = run_cli(capsys, "keystore", "init", "--password-file", tmp_path / "pw")
    assert code == 2 and "already exists" in err
    assert ks.read_bytes() == before
    (tmp_path / "short").write_text("short\n")
    code, _, err = run_cli(
        capsys, "keystore", "init", "--keystore", tmp_path / "x.rsk", "--password-file",
        tmp_path / "short",
    )  # fmt: skip
    assert code == 2 and "at least 8 bytes" in err and not (tmp_path / "x.rsk").exists()


def test_password_from_environment_and_path_from_environment(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSTREAM_KEYSTORE", str(site.ks))
    monkeypatch.setenv("RECSTREAM_KEYSTORE_PASSWORD", PASSWORD.decode())
    code, out, err = run_cli(capsys, "keystore", "list", "--json")
    assert code == 0, err
    assert json.loads(out) == []
    monkeypatch.setenv("RECSTREAM_KEYSTORE_PASSWORD", "other password 123")
    code, _, err = run_cli(capsys, "keystore", "list")
    assert code == 4 and "wrong password" in err


def test_no_password_source_is_a_usage_error(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "keystore", "list", "--keystore", site.ks)
    assert code == 2
    assert "--password-file" in err and "RECSTREAM_KEYSTORE_PASSWORD" in err


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_prompt_only_on_a_terminal(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    answers = iter([PASSWORD.decode(), "first answer", "second answer"])

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    monkeypatch.setattr(sys, "stdin", _Terminal())
    code, out, _ = run_cli(capsys, "keystore", "list", "--keystore", site.ks)
    assert code == 0 and "no certificates yet" in out
    assert prompts == ["Keystore password: "]
    code, _, err = run_cli(capsys, "keystore", "init", "--keystore", site.root / "k2.rsk")
    assert code == 2 and "differ" in err and not (site.root / "k2.rsk").exists()
    assert prompts[1:] == ["Keystore password: ", "Repeat the keystore password: "]


# --- import, list, rotate -------------------------------------------------------------------


def test_import_list_rotate(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = site.import_(capsys, "A")
    assert code == 0 and "expired on" in err and "history" in err
    code, _, err = site.import_(capsys, "B")
    assert code == 0 and "is the active voice certificate" in err
    code, _, err = site.import_(capsys, "C")
    assert code == 0 and "keystore rotate" in err and site.certs["C"].cert_id[:16] in err
    code, out, _ = run_cli(capsys, "keystore", "list", *site.ks_args(), "--json")
    rows = {r["cert_id"]: r for r in json.loads(out)}
    assert rows[site.certs["A"].cert_id]["status"] == "expired"
    assert rows[site.certs["A"].cert_id]["days_left"] < 0
    assert rows[site.certs["B"].cert_id]["status"] == "active"
    assert rows[site.certs["C"].cert_id]["status"] == "inactive"
    assert {r["tenant"] for r in rows.values()} == {"acme"}
    assert "recording B" in rows[site.certs["B"].cert_id]["subject"]
    code, _, err = run_cli(
        capsys, "keystore", "rotate", *site.ks_args(), "--tenant", "acme", "--kind", "voice",
        "--cert-id", site.certs["C"].cert_id[:10],
    )  # fmt: skip
    assert code == 0 and "active certificate is now" in err and "retired" in err
    code, out, _ = run_cli(capsys, "keystore", "list", *site.ks_args())
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["TENANT", "KIND", "STATUS", "DAYS"]
    by_id = {line.split()[4]: line.split()[2] for line in lines[1:]}
    assert by_id[site.certs["B"].cert_id[:16]] == "retired"
    assert by_id[site.certs["C"].cert_id[:16]] == "active"
    assert by_id[site.certs["A"].cert_id[:16]] == "expired"


def test_import_pkcs12_and_export_pkcs12(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    c = site.certs["C"]
    (site.root / "p12pw").write_text("p12-export-secret\n")
    p12 = site.root / "in.p12"
    p12.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"c", c.key, c.cert, None, serialization.BestAvailableEncryption(b"p12-export-secret")
        )
    )
    code, _, err = run_cli(
        capsys, "keystore", "import", *site.ks_args(), "--tenant", "acme", "--kind", "screen",
        "--pkcs12", p12, "--key-password-file", site.root / "p12pw",
    )  # fmt: skip
    assert code == 0, err
    out = site.root / "out.p12"
    code, _, err = run_cli(
        capsys, "keystore", "export", *site.ks_args(), "--cert-id", c.cert_id, "--out", out,
        "--export-password-file", site.root / "p12pw", "--chain", site.root / "ca.pem",
    )  # fmt: skip
    assert code == 0, err
    key, cert, extra = pkcs12.load_key_and_certificates(out.read_bytes(), b"p12-export-secret")
    assert cert == c.cert and extra == [site.certs["CA"].cert]
    assert key is not None and key.private_numbers() == c.key.private_numbers()  # type: ignore[union-attr]
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    code, _, err = run_cli(
        capsys, "keystore", "export", *site.ks_args(), "--cert-id", c.cert_id, "--out", out,
        "--export-password-file", site.root / "p12pw",
    )  # fmt: skip
    assert code == 2 and "exists" in err
    code, _, err = run_cli(
        capsys, "keystore", "export", *site.ks_args(), "--cert-id", c.cert_id, "--out",
        site.root / "o2.p12",
    )  # fmt: skip
    assert code == 2 and "--export-password-file" in err
    if shutil.which("openssl"):
        proc = subprocess.run(
            ["openssl", "pkcs12", "-in", str(out), "-passin", "pass:p12-export-secret",
             "-nodes", "-noout"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--cert", "{C_cert}", "--key", "{B_key}"], 4, "does not belong"),
        (["--cert", "{C_cert}"], 2, "--key"),
        (["--pkcs12", "{C_cert}", "--cert", "{C_cert}"], 2, "not both"),
        (["--pkcs12", "{C_cert}"], 4, "PKCS#12"),
        (["--cert", "{CA_cert}", "--key", "{CA_key}"], 4, "CA certificate"),
        (["--cert", "{C_cert}", "--key", "{C_key}", "--ca-file", "{ca}"], 4, "CA file"),
        (["--cert", "{root}/none.pem", "--key", "{C_key}"], 2, "not found"),
    ],
)
def test_import_refusals(
    site: Site, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    values = {
        f"{n}_{w}": str(p) for n, (c, k) in site.files.items() for w, p in (("cert", c), ("key", k))
    }
    values |= {"ca": str(site.root / "ca.pem"), "root": str(site.root)}
    argv = [a.format(**values) if "{" in a else a for a in args]
    before = site.ks.read_bytes()
    got, _, err = run_cli(
        capsys, "keystore", "import", *site.ks_args(), "--tenant", "acme", "--kind", "voice", *argv
    )
    assert (got, message in err) == (code, True), err
    assert site.ks.read_bytes() == before


def test_import_encrypted_key_and_ca_validation(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    b = site.certs["B"]
    enc = site.root / "b.enc.pem"
    enc.write_bytes(
        b.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"other password 123"),
        )
    )
    (site.root / "kpw").write_text("other password 123\n")
    base = ["keystore", "import", *site.ks_args(), "--tenant", "acme", "--kind", "voice"]
    code, _, err = run_cli(capsys, *base, "--cert", site.cert("B"), "--key", enc)
    assert code == 2 and "--key-password-file" in err
    code, _, err = run_cli(
        capsys, *base, "--cert", site.cert("B"), "--key", enc, "--key-password-file",
        site.root / "kpw", "--ca-file", site.root / "ca.pem",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, *base, "--cert", site.cert("B"), "--key", site.key("B"))
    assert code == 4 and "already in the keystore" in err


def test_rotate_refusals(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.import_(capsys, "A")
    site.import_(capsys, "B")
    base = ["keystore", "rotate", *site.ks_args(), "--tenant", "acme", "--kind", "voice"]
    code, _, err = run_cli(capsys, *base, "--cert-id", site.certs["A"].cert_id)
    assert code == 4 and "never made active" in err
    code, _, err = run_cli(capsys, *base, "--cert-id", site.certs["B"].cert_id)
    assert code == 4 and "already the active" in err
    code, _, err = run_cli(capsys, *base, "--cert-id", site.certs["C"].cert_id)
    assert code == 4 and "no certificate with ID" in err
    code, _, err = run_cli(capsys, *base, "--cert-id", "abc")
    assert code == 4 and "at least 8" in err
    code, _, err = run_cli(capsys, "keystore", "rotate", *site.ks_args(), "--tenant", "acme",
                           "--kind", "fax", "--cert-id", "abcdabcd")  # fmt: skip
    assert code == 2 and "voice or screen" in err


def test_keystore_missing_wrong_password_damaged(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(
        capsys, "keystore", "list", "--keystore", site.root / "nope.rsk", "--password-file", site.pw
    )
    # a missing input is a usage error (exit 2) for every command
    assert code == 2 and "no keystore at" in err and "keystore init" in err
    (site.root / "bad").write_text("other password 123\n")
    code, _, err = run_cli(
        capsys, "keystore", "list", "--keystore", site.ks, "--password-file", site.root / "bad"
    )
    assert code == 4 and "wrong password" in err
    data = bytearray(site.ks.read_bytes())
    data[100] ^= 4
    site.ks.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "keystore", "list", *site.ks_args())
    assert code == 4 and "damaged" in err and "backup" in err


# --- check ------------------------------------------------------------------------------------


def test_check_reports_what_needs_attention(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "keystore", "check", *site.ks_args())
    assert code == 0 and "OK" in out
    site.import_(capsys, "SOON")
    site.import_(capsys, "C", tenant="beta")
    site.import_(capsys, "S", tenant="beta", kind="screen")
    site.import_(capsys, "A", tenant="gamma", kind="screen")
    code, out, _ = run_cli(capsys, "keystore", "check", *site.ks_args(), "--json")
    assert code == 4
    found = {(f["code"], f["tenant"]) for f in json.loads(out)}
    assert found == {
        ("screen-missing", "acme"),
        ("active-expiring", "acme"),
        ("no-active", "gamma"),
    }
    code, out, _ = run_cli(capsys, "keystore", "check", *site.ks_args(), "--ca-file",
                           site.root / "ca.pem")  # fmt: skip
    assert code == 4 and "active-refused" in out  # SOON and C are self-signed, not from the CA
    assert "tenant acme encrypts voice recordings but has no screen" in out
    assert "expires in 9 days" in out or "expires in 10 days" in out


def test_check_finds_a_key_that_does_not_match(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """A keystore written by a buggy or older tool with a mismatched key is reported."""
    site.import_(capsys, "C")
    ks = load(site.ks, PASSWORD)
    entry = ks.entries[0]
    nonce, blob = ks._seal_key(site.certs["S"].key, entry.cert_id)
    broken = Keystore(ks.unlocked, [replace(entry, key_nonce=nonce, key_blob=blob)], created=NOW)
    store_mod.save(broken, site.ks)
    code, out, _ = run_cli(capsys, "keystore", "check", *site.ks_args())
    assert code == 4 and "key-mismatch" in out and "does not match the certificate" in out


# --- backup, restore, verify-backup -----------------------------------------------------------


def test_backup_verify_restore(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    site.import_(capsys, "B")
    site.import_(capsys, "S", kind="screen")
    out = site.root / "ks.backup"
    code, _, err = run_cli(capsys, "keystore", "backup", *site.ks_args(), "--out", out)
    assert code == 0 and "2 certificate(s)" in err
    code, _, err = run_cli(capsys, "keystore", "backup", *site.ks_args(), "--out", out)
    assert code == 2 and "exists" in err
    code, stdout, _ = run_cli(capsys, "keystore", "verify-backup", "--password-file", site.pw, out)
    assert code == 0 and "OK" in stdout and "every private key matches" in stdout
    code, _, err = run_cli(capsys, "keystore", "verify-backup", "--password-file", site.pw, site.ks)
    assert code == 4 and "is a keystore, not a backup" in err
    code, _, err = run_cli(capsys, "keystore", "restore", *site.ks_args(), out)
    assert code == 2 and "--force" in err
    fresh = tmp_path / "fresh" / "k.rsk"
    code, _, err = run_cli(
        capsys, "keystore", "restore", "--keystore", fresh, "--password-file", site.pw, out
    )
    assert code == 0 and "restored 2 certificate(s)" in err
    assert sorted(e.cert_id for e in load(fresh, PASSWORD).entries) == sorted(
        e.cert_id for e in load(site.ks, PASSWORD).entries
    )
    code, _, err = run_cli(capsys, "keystore", "restore", *site.ks_args(), "--force", out)
    assert code == 0 and "kept as" in err


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "empty"])
def test_damaged_backup_cli(
    site: Site, capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str
) -> None:
    site.import_(capsys, "B")
    out = site.root / "ks.backup"
    assert run_cli(capsys, "keystore", "backup", *site.ks_args(), "--out", out)[0] == 0
    data = out.read_bytes()
    out.write_bytes(
        {"truncate": data[:-100], "corrupt": data[:300] + b"X" + data[301:], "empty": b""}[damage]
    )
    code, _, err = run_cli(capsys, "keystore", "verify-backup", "--password-file", site.pw, out)
    assert code == 4
    assert {"truncate": "truncated", "corrupt": "damaged", "empty": "not a recstream"}[
        damage
    ] in err
    fresh = tmp_path / "fresh" / "k.rsk"
    code, _, err = run_cli(
        capsys, "keystore", "restore", "--keystore", fresh, "--password-file", site.pw, out
    )
    assert code == 4 and not fresh.exists() and no_partials(tmp_path) == []


# --- encrypt, record and decrypt with the keystore -------------------------------------------


def test_encrypt_and_decrypt_with_the_keystore(
    site: Site, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site.import_(capsys, "B")
    site.import_(capsys, "S", kind="screen")
    env, out = site.root / "call.rsv", site.root / "call.out"
    code, _, err = run_cli(capsys, "encrypt", *site.ks_args(), "--tenant", "acme", site.input, env)
    assert code == 0 and site.certs["B"].cert_id in err
    code, _, err = run_cli(capsys, "decrypt", *site.ks_args(), env, out)
    assert code == 0, err
    assert out.read_bytes() == PLAIN
    scr = site.root / "screen.rsv"
    code, _, err = run_cli(
        capsys, "encrypt", *site.ks_args(), "--tenant", "acme", "--media-kind", "screen",
        "--cert", site.cert("C"), site.input, scr,
    )  # fmt: skip
    assert code == 0 and site.certs["S"].cert_id in err and site.certs["C"].cert_id in err
    assert open_envelope(scr.read_bytes(), load(site.ks, PASSWORD)) == PLAIN
    # --tenant without --keystore uses $RECSTREAM_KEYSTORE (or the default location).
    monkeypatch.setenv("RECSTREAM_KEYSTORE", str(site.ks))
    code, _, err = run_cli(
        capsys, "encrypt", "--password-file", site.pw, "--tenant", "acme", site.input,
        site.root / "env.rsv",
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(
        capsys, "decrypt", "--password-file", site.pw, site.root / "env.rsv", site.root / "e.out"
    )
    assert code == 0, err


def test_encrypt_fails_closed(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.import_(capsys, "C")  # voice only
    out = site.root / "o.rsv"
    enc = ["encrypt", *site.ks_args(), "--tenant", "acme"]
    code, _, err = run_cli(capsys, *enc, "--media-kind", "screen", site.input, out)
    assert code == 4 and "no screen recording certificate" in err
    assert "recstream keystore import --tenant acme --media-kind screen" in err
    code, _, err = run_cli(capsys, *enc, "--ca-file", site.root / "ca.pem", site.input, out)
    assert code == 4 and "CA file refuses the active" in err
    code, _, err = run_cli(capsys, "encrypt", *site.ks_args(), "--tenant", "zeta", site.input, out)
    assert code == 4 and "tenant zeta has no voice recording certificate" in err
    code, _, err = run_cli(capsys, "encrypt", *site.ks_args(), site.input, out)
    assert code == 2 and "--tenant" in err
    code, _, err = run_cli(capsys, "encrypt", site.input, out)
    assert code == 2 and "required" in err
    assert not out.exists() and no_partials(site.root) == []
    # An active certificate that has since expired is refused, not replaced by another.
    with update(site.ks, PASSWORD) as ks:
        ks.add("old", MediaKind.VOICE, site.certs["B"].cert, site.certs["B"].key, now=NOW)
    a = site.certs["A"]
    with update(site.ks, PASSWORD) as ks:
        ks.add("old", MediaKind.VOICE, a.cert, a.key, now=NOW)
        ks.rotate("old", MediaKind.VOICE, a.cert_id, now=NOW - timedelta(days=100))
    code, _, err = run_cli(capsys, "encrypt", *site.ks_args(), "--tenant", "old", site.input, out)
    assert code == 4 and "expired on" in err and "keystore rotate" in err
    assert not out.exists()


def test_decrypt_refusals(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    site.import_(capsys, "C")
    env = site.root / "e.rsv"
    env.write_bytes(seal(PLAIN, [site.certs["B"].recipient]))
    code, _, err = run_cli(capsys, "decrypt", *site.ks_args(), env, site.root / "o")
    assert code == 4 and site.certs["B"].cert_id in err
    code, _, err = run_cli(
        capsys, "decrypt", *site.ks_args(), "--key", site.key("B"), env, site.root / "o"
    )
    assert code == 2 and "not both" in err
    code, _, err = run_cli(capsys, "decrypt", *site.ks_args(), env)
    assert code == 2 and "IN OUT" in err
    code, _, err = run_cli(capsys, "decrypt", env, site.root / "o")
    assert code == 2 and "--key KEY.pem, or a keystore" in err
    code, _, err = run_cli(capsys, "decrypt", "--key", site.key("B"), env, site.root / "o")
    assert code == 0 and (site.root / "o").read_bytes() == PLAIN


def test_record_from_stdin_with_the_keystore(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    site.import_(capsys, "C")
    out = site.root / "live.rsv"
    proc = subprocess.run(
        [sys.executable, "-m", "recstream", "record", *map(str, site.ks_args()), "--tenant",
         "acme", "--flush-interval", "0.05", str(out)],
        input=PLAIN, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stderr + proc.stdout
    assert open_envelope(out.read_bytes(), load(site.ks, PASSWORD)) == PLAIN
    proc = subprocess.run(
        [sys.executable, "-m", "recstream", "record", *map(str, site.ks_args()), "--tenant",
         "acme", "--media-kind", "screen", str(site.root / "screen.rsv")],
        input=PLAIN, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 4 and b"no screen recording certificate" in proc.stderr
    assert not list(site.root.glob("screen.rsv*"))


def test_renewal_through_the_cli(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """A (made while A was valid, now expired), then B, then C, all from one keystore."""
    a = site.certs["A"]
    (site.root / "a.rsv").write_bytes(seal(b"A" * 5000, [a.recipient]))
    site.import_(capsys, "A")
    site.import_(capsys, "B")
    run_cli(capsys, "encrypt", *site.ks_args(), "--tenant", "acme", site.input, site.root / "b.rsv")
    site.import_(capsys, "C")
    code, _, _ = run_cli(
        capsys, "keystore", "rotate", *site.ks_args(), "--tenant", "acme", "--kind", "voice",
        "--cert-id", site.certs["C"].cert_id,
    )  # fmt: skip
    assert code == 0
    run_cli(capsys, "encrypt", *site.ks_args(), "--tenant", "acme", site.input, site.root / "c.rsv")
    for name, expected in (("a", b"A" * 5000), ("b", PLAIN), ("c", PLAIN)):
        out = site.root / f"{name}.out"
        code, _, err = run_cli(capsys, "decrypt", *site.ks_args(), site.root / f"{name}.rsv", out)
        assert code == 0, err
        assert out.read_bytes() == expected
    states = {e.cert_id: e.state for e in load(site.ks, PASSWORD).entries}
    assert states[site.certs["B"].cert_id] is EntryState.RETIRED

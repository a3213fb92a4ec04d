"""The command line's contract (issue: a CLI a new user can trust): one exit-code table,
'-' as stdin/stdout or refused, checked recipients, clean messages, consistent flags.

Each behaviour is shown working and shown refusing bad input.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from recstream.cli import build_parser, main
from recstream.envelope import EnvelopeDecryptor
from recstream.format import MAX_RECIPIENTS, parse_header
from tests.conftest import Party
from tests.pki_helpers import rsa_key

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "recstream" / "samples"
PLAIN = b"a short call\n" * 1000


def cert_file(
    directory: Path,
    name: str,
    *,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = None,
    start_days: float = -1,
    end_days: float = 365,
    ca: bool = False,
) -> Path:
    key = key or rsa_key("contract")
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=start_days))
        .not_valid_after(now + dt.timedelta(days=end_days))
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    path = directory / f"{name}.pem"
    path.write_bytes(builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    return path


def run(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def cli(
    *args: object, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "recstream", *map(str, args)],
        input=stdin, capture_output=True, timeout=120, check=False, cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def files(tmp_path: Path, alice: Party) -> dict[str, Path]:
    cert, key = alice.write(tmp_path)
    (tmp_path / "in").write_bytes(PLAIN)
    return {"cert": cert, "key": key, "in": tmp_path / "in", "dir": tmp_path}


# --- 1. no tracebacks: repeated and too many recipients, any created_ms, Ctrl-C ----------


def test_a_repeated_certificate_is_used_once(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["dir"] / "e.rsv"
    code, _, err = run(capsys, "encrypt", "--cert", files["cert"], "--cert", files["cert"],
                       files["in"], out)  # fmt: skip
    assert code == 0 and "named twice" in err and "Traceback" not in err
    header = parse_header(out.read_bytes())
    assert len(header.recipients) == 1  # type: ignore[union-attr]


def test_seventeen_recipients_is_a_usage_error_and_the_limit_is_documented(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    certs = []
    for i in range(MAX_RECIPIENTS + 1):
        certs += ["--cert", cert_file(files["dir"], f"r{i}", key=rsa_key(f"contract-{i}"))]
    code, _, err = run(capsys, "encrypt", *certs, files["in"], files["dir"] / "e.rsv")
    assert code == 2 and "1 to 16" in err and not (files["dir"] / "e.rsv").exists()
    code, _, err = run(capsys, "encrypt", *certs[:32], files["in"], files["dir"] / "e.rsv")
    assert code == 0, err
    for command in ("encrypt", "record", "mux"):
        assert main([command, "--help"]) == 0
        assert "1 to 16" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("created", ["\u00b2", "9" * 5000, "2026-11-27T10:15:00"])
def test_a_bad_created_time_is_a_usage_error(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], created: str
) -> None:
    out = files["dir"] / "c.rsv"
    code, _, err = run(
        capsys, "encrypt", "--cert", files["cert"], "--created", created, files["in"], out
    )
    assert code == 2 and "Traceback" not in err and not out.exists()


def test_inspect_prints_any_created_ms(capsys: pytest.CaptureFixture[str]) -> None:
    vectors = Path(__file__).parent / "vectors"
    code, out, err = run(capsys, "inspect", vectors / "success_created_ms_max.rsv.body")
    assert code == 2  # (a missing input: see below for the vector itself)
    envelope = (vectors / "success_created_ms_max.rsv").read_bytes().partition(b"\n\n")[2]
    path = Path(os.environ.get("PYTEST_TMPDIR", "/tmp")) / f"cms-{os.getpid()}.rsv"
    path.write_bytes(envelope)
    try:
        code, out, err = run(capsys, "inspect", path)
        assert code == 0 and str(2**64 - 1) in out and "Traceback" not in err
        code, out, _ = run(capsys, "inspect", "--json", path)
        doc = json.loads(out)
        assert code == 0 and doc["created"] is None and doc["created_ms"] == 2**64 - 1
    finally:
        path.unlink()


def _has_output_open(pid: int, directory: Path) -> bool:
    if list(directory.glob(".out.*.partial")):
        return True
    fds = Path(f"/proc/{pid}/fd")
    prefix = str(directory.resolve()) + "/"
    for fd in fds.iterdir() if fds.is_dir() else ():
        try:
            if os.readlink(fd).startswith(prefix):
                return True
        except OSError:
            continue
    return False


def test_ctrl_c_exits_130_quietly_and_leaves_nothing(files: dict[str, Path]) -> None:
    d = files["dir"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "recstream", "decrypt", "--key", str(files["key"]), "-",
         str(d / "out")],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=d,
    )  # fmt: skip
    # Readiness: the temporary output beside OUT is open once decryption is running
    # (a named .partial, or an unnamed O_TMPFILE inode in that directory).
    deadline = time.monotonic() + 120
    while not _has_output_open(proc.pid, d):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err
    assert not (d / "out").exists() and not list(d.glob(".out.*"))


def test_ctrl_c_while_modules_load_is_never_a_traceback(files: dict[str, Path]) -> None:
    """SIGINT just after the recstream package is imported, while the CLI's modules
    load (before main): -X importtime says when, a readiness wait on a real signal."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "recstream", "inspect", "-"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, cwd=files["dir"],
    )  # fmt: skip
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        if line.rstrip().endswith(b"| recstream"):  # the package is imported
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


# --- 2. '-' is stdin/stdout or refused -------------------------------------------------


def test_recover_to_stdout(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    env = files["dir"] / "e.rsv"
    assert main(["encrypt", "--cert", str(files["cert"]), str(files["in"]), str(env)]) == 0
    r = cli("recover", "--key", files["key"], env, "-", cwd=files["dir"])
    assert r.returncode == 0 and r.stdout == PLAIN
    assert not (files["dir"] / "-").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["record", "--cert", "{cert}", "-"],
        ["recover", "--key", "{key}", "-", "{dir}/o"],
        ["mux", "--voice", "{call}", "--screen", "{screen}", "-"],
        ["mux", "--voice", "-", "--screen", "{screen}", "{dir}/o.webm"],
        ["rewrap", "--to-cert", "{cert}", "-"],
        ["keystore", "backup", "--out", "-"],
        ["keystore", "export", "--cert-id", "abcdabcd", "--out", "-"],
        ["keystore", "list", "--keystore", "-"],
        ["keystore", "verify-backup", "-"],
        ["pki", "csr", "--cn", "x", "--no-encrypt", "--out-key", "-", "--out-csr", "{dir}/r"],
        ["pki", "ca", "--cn", "x", "--no-encrypt", "--out-key", "{dir}/k", "--out-cert", "-"],
        ["decrypt", "--key", "{key}", "--out-dir", "-", "{dir}/e.rsv"],
        ["batch", "audit", "-", "--key", "{key}"],
        ["serve", "list-users", "--config", "-"],
        ["demo", "--workdir", "-"],
    ],
)
def test_dash_is_refused_where_a_file_is_needed(
    argv: list[str],
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(files["dir"])
    fill = {"cert": files["cert"], "key": files["key"], "dir": files["dir"],
            "call": SAMPLES / "call.wav", "screen": SAMPLES / "screen.webm"}  # fmt: skip
    code, _, err = run(capsys, *[a.format(**fill) for a in argv])
    assert code == 2 and "'-'" in err, err
    assert not (files["dir"] / "-").exists()


def test_pki_sign_and_bundle_to_stdout_and_show_from_stdin(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert main(["pki", "ca", "--cn", "Root", "--out-cert", str(tmp_path / "ca.pem"),
                 "--out-key", str(tmp_path / "ca.key"), "--out-key-password-file", str(pw),
                 "--key-size", "2048"]) == 0  # fmt: skip
    dn = ["--cn", "Rec", "--org", "Org", "--ou", "Unit", "--locality", "Town",
          "--state", "California", "--country", "US"]  # fmt: skip
    assert main(["pki", "csr", *dn, "--key-size", "2048", "--out-key", str(tmp_path / "r.key"),
                 "--out-csr", str(tmp_path / "r.req"), "--no-encrypt"]) == 0  # fmt: skip
    r = cli("pki", "sign", "--ca-cert", "ca.pem", "--ca-key", "ca.key", "--ca-password-file",
            "pw", "--csr", "r.req", "--days", "30", "--out", "-", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"-----BEGIN CERTIFICATE-----") and b"wrote" in r.stderr
    shown = cli("pki", "show", "--json", "-", stdin=r.stdout, cwd=tmp_path)
    assert shown.returncode == 0 and b'"subject"' in shown.stdout
    bundle = cli("pki", "bundle", "--out", "-", "ca.pem", cwd=tmp_path)
    assert bundle.returncode == 0 and bundle.stdout.count(b"BEGIN CERTIFICATE") == 1
    assert not (tmp_path / "-").exists()


def test_stdin_is_taken_once(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(files["cert"].read_bytes())))
    code, _, err = run(capsys, "encrypt", "--cert", "-", "-", files["dir"] / "o.rsv")
    assert code == 2 and "both" in err


# --- 4. recipient certificates are checked by default --------------------------------


@pytest.mark.parametrize(
    ("label", "kwargs", "said"),
    [
        ("expired", {"start_days": -30, "end_days": -1}, "expired"),
        ("not yet valid", {"start_days": 2, "end_days": 30}, "not valid until"),
        ("a CA", {"ca": True}, "CA certificate"),
    ],
)
def test_unfit_recipients_are_refused_unless_allowed(
    label: str,
    kwargs: dict[str, object],
    said: str,
    files: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = cert_file(files["dir"], "bad", **kwargs)  # type: ignore[arg-type]
    out = files["dir"] / "e.rsv"
    code, _, err = run(capsys, "encrypt", "--cert", bad, files["in"], out)
    assert code == 4 and said in err and "--allow-invalid-cert" in err and not out.exists()
    code, _, err = run(capsys, "encrypt", "--cert", bad, "--allow-invalid-cert", files["in"], out)
    assert code == 0 and "warning" in err and said in err
    # record and mux apply the same check
    monkeypatch.setattr(sys, "stdin", open(files["in"]))  # noqa: SIM115
    code, _, err = run(capsys, "record", "--cert", bad, files["dir"] / "live.rsv")
    assert code == 4 and not list(files["dir"].glob("live.rsv*"))
    code, _, err = run(capsys, "mux", "--voice", SAMPLES / "call.wav", "--screen",
                       SAMPLES / "screen.webm", "--cert", bad, files["dir"] / "m.rsv")  # fmt: skip
    assert code == 4 and said in err and not (files["dir"] / "m.rsv").exists()


def test_record_takes_a_repeated_certificate_once(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", open(files["in"]))  # noqa: SIM115
    out = files["dir"] / "live.rsv"
    code, _, err = run(capsys, "record", "--cert", files["cert"], "--cert", files["cert"], out)
    assert code == 0 and "named twice" in err
    assert len(parse_header(out.read_bytes()).recipients) == 1  # type: ignore[union-attr]


# --- 5. mux and encrypt --created ----------------------------------------------------


def test_mux_of_plain_inputs_with_a_cert_is_encrypted(
    files: dict[str, Path], alice: Party, capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["dir"] / "m.rsv"
    code, _, err = run(capsys, "mux", "--voice", SAMPLES / "call.wav", "--screen",
                       SAMPLES / "screen.webm", "--cert", files["cert"], "--tenant", "acme",
                       out)  # fmt: skip
    assert code == 0 and "encrypted for" in err, err
    data = out.read_bytes()
    dec = EnvelopeDecryptor(alice.keys)
    plain = dec.update(data) + dec.finalize()
    assert plain[:4] == b"\x1a\x45\xdf\xa3"  # a WebM inside
    assert dec.header is not None and dec.header.metadata.tenant == "acme"


def test_mux_with_the_keystore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from recstream.format import MediaKind
    from recstream.keystore import create, update
    from tests.keystore_helpers import TINY_KDF, recording_cert, seal

    ks, pw = tmp_path / "ks.rsk", tmp_path / "pw"
    pw.write_text("keystore password\n")
    create(ks, b"keystore password", kdf=TINY_KDF)
    voice, screen = recording_cert("mux-voice"), recording_cert("mux-screen")
    with update(ks, b"keystore password") as store:
        now = dt.datetime.now(dt.UTC)
        store.add("acme", MediaKind.VOICE, voice.cert, voice.key, now=now)
        store.add("acme", MediaKind.SCREEN, screen.cert, screen.key, now=now)
    for src, kind, who in (("call.wav", MediaKind.VOICE, voice),
                           ("screen.webm", MediaKind.SCREEN, screen)):  # fmt: skip
        data = seal((SAMPLES / src).read_bytes(), [who.recipient], tenant="acme", kind=kind,
                    rid="call-9")  # fmt: skip
        (tmp_path / f"{src}.rsv").write_bytes(data)
    out = tmp_path / "m.rsv"
    code, _, err = run(capsys, "mux", "--voice", tmp_path / "call.wav.rsv", "--screen",
                       tmp_path / "screen.webm.rsv", "--keystore", ks, "--password-file", pw,
                       out)  # fmt: skip
    assert code == 0, err
    header = parse_header(out.read_bytes())
    assert header.cert_ids == (screen.cert_id,)  # type: ignore[union-attr]


def test_encrypt_created_sets_the_start_time(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = files["dir"] / "e.rsv"
    code, _, _ = run(capsys, "encrypt", "--cert", files["cert"], "--created",
                     "2026-11-27T10:15:00.250+01:00", files["in"], out)  # fmt: skip
    assert code == 0
    code, text, _ = run(capsys, "inspect", "--json", out)
    assert json.loads(text)["created"] == "2026-11-27T09:15:00.250Z"
    out.unlink()
    assert run(capsys, "encrypt", "--cert", files["cert"], "--start", "1700000000000",
               files["in"], out)[0] == 0  # fmt: skip
    assert json.loads(run(capsys, "inspect", "--json", out)[1])["created_ms"] == 1700000000000
    for bad in ("2026-11-27T10:15:00", "yesterday", "99999999999999999"):
        code, _, err = run(capsys, "encrypt", "--cert", files["cert"], "--created", bad,
                           files["in"], files["dir"] / "x.rsv")  # fmt: skip
        assert code == 2 and "--created" in err and not (files["dir"] / "x.rsv").exists()


# --- 6. one exit-code table ----------------------------------------------------------


def test_a_missing_input_is_2_everywhere(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, missing = files["dir"], files["dir"] / "missing"
    for argv in (
        ["encrypt", "--cert", files["cert"], missing, d / "o"],
        ["decrypt", "--key", files["key"], missing, d / "o"],
        ["inspect", missing],
        ["recover", "--key", files["key"], missing, d / "o"],
        ["mux", "--voice", missing, "--screen", missing, d / "o"],
        ["rewrap", "--keystore", missing, "--to-cert", files["cert"], missing],
        ["pki", "show", missing],
        ["pki", "verify", "--ca-file", missing, files["cert"]],
        ["keystore", "list", "--keystore", missing, "--password-file", files["key"]],
        ["encrypt", "--cert", missing, files["in"], d / "o"],
        ["decrypt", "--key", missing, files["in"], d / "o"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, code, err)


def test_a_missing_output_directory_is_2_everywhere(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = files["dir"] / "e.rsv"
    assert main(["encrypt", "--cert", str(files["cert"]), str(files["in"]), str(env)]) == 0
    nowhere = files["dir"] / "no" / "such" / "out"
    monkeypatch.setattr(sys, "stdin", open(files["in"]))  # noqa: SIM115
    for argv in (
        ["encrypt", "--cert", files["cert"], files["in"], nowhere],
        ["decrypt", "--key", files["key"], env, nowhere],
        ["recover", "--key", files["key"], env, nowhere],
        ["record", "--cert", files["cert"], nowhere],
        ["mux", "--voice", SAMPLES / "call.wav", "--screen", SAMPLES / "screen.webm", nowhere],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, (argv, code, err)
    assert not (files["dir"] / "no").exists()


def test_the_help_documents_the_table() -> None:
    text = build_parser().format_help()
    for fact in ("130 interrupted", "2 usage", "5 I/O", "7 some batch"):
        assert fact in " ".join(text.split())


# --- 7, 8. flags and messages ----------------------------------------------------------


def leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    out: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(p: argparse.ArgumentParser, name: str) -> None:
        out.append((name, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub, sp in a.choices.items():
                    walk(sp, f"{name} {sub}")

    walk(build_parser(), "recstream")
    return out


def test_help_text_has_no_internal_references() -> None:
    for name, p in leaf_parsers():
        text = " ".join(p.format_help().split())
        for internal in ("issue 2", "issue 4", "issue 5", "issue 8", "vendor document",
                         "file file"):  # fmt: skip
            assert internal not in text, (name, internal)


def test_required_dn_fields_show_as_required() -> None:
    usage = {name: p.format_usage() for name, p in leaf_parsers()}
    assert "[--cn" not in usage["recstream pki ca"] and "--cn NAME" in usage["recstream pki ca"]
    for field in ("--cn NAME", "--org NAME", "--ou NAME", "--country CC"):
        assert field in usage["recstream pki csr"] and f"[{field}" not in usage["recstream pki csr"]


def test_old_spellings_parse_but_are_not_shown() -> None:
    helps = {name: p.format_help() for name, p in leaf_parsers()}
    assert "--media-kind" in helps["recstream keystore import"]
    assert "--kind" not in helps["recstream keystore import"].replace("--media-kind", "")
    assert "--out-key-password-file" in helps["recstream pki csr"]
    assert "--password-file" not in helps["recstream pki csr"].replace("-key-password-file", "")
    args = build_parser("keystore").parse_args(
        ["keystore", "rotate", "--tenant", "t", "--kind", "voice", "--cert-id", "abcdabcd"]
    )
    assert args.kind == "voice"


def test_messages_name_things_without_internals(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = files["dir"]
    code, _, err = run(capsys, "pki", "verify", "--ca-file", d / "nope.pem", files["cert"])
    assert code == 2 and "CA file not found" in err and "file file" not in err
    ec_cert = cert_file(d, "ec", key=ec.generate_private_key(ec.SECP256R1()))
    code, _, err = run(capsys, "encrypt", "--cert", ec_cert, files["in"], d / "o")
    assert code == 4 and "an EC key" in err
    (d / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    code, _, err = run(capsys, "encrypt", "--cert", d / "bad.pem", files["in"], d / "o")
    assert code == 4 and "ParseError" not in err and "malformed" in err
    (d / "empty").write_bytes(b"")
    code, _, err = run(capsys, "decrypt", "--key", files["key"], d / "empty", d / "o")
    assert code == 3 and "empty" in err and "segment" not in err
    code, _, err = run(capsys, "encrypt", "--tenant", "", "--cert", files["cert"], files["in"],
                       d / "o")  # fmt: skip
    assert code == 2 and "tenant cannot be empty" in err
    assert not (d / "o").exists()


def test_decrypt_of_an_incomplete_file_suggests_recover(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    env = files["dir"] / "e.rsv"
    assert main(["encrypt", "--cert", str(files["cert"]), str(files["in"]), str(env)]) == 0
    cut = files["dir"] / "call.rsv.incomplete"
    cut.write_bytes(env.read_bytes()[:-100])
    code, _, err = run(capsys, "decrypt", "--key", files["key"], cut, files["dir"] / "o")
    assert code == 3 and "recstream recover" in err and "interrupted live recording" in err


@pytest.fixture
def tiny_fs(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True,
        check=False,
    ).returncode != 0:  # fmt: skip
        pytest.skip("cannot mount a small tmpfs here")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def test_disk_full_names_the_output(
    files: dict[str, Path], tiny_fs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = files["dir"] / "big"
    big.write_bytes(os.urandom(300_000))
    out = tiny_fs / "call.rsv"
    code, _, err = run(capsys, "encrypt", "--cert", files["cert"], big, out)
    assert code == 5
    assert f"{out}: No space left on device" in err and ".partial" not in err
    assert list(tiny_fs.iterdir()) == []


def test_unreadable_media_is_described_without_errno_numbers(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d = files["dir"]
    (d / "call.wav").write_bytes(b"RIFF....WAVE but not really" * 20)
    code, _, err = run(capsys, "mux", "--voice", d / "call.wav", "--screen", d / "call.wav",
                       d / "m.webm")  # fmt: skip
    assert code == 2 and "cannot read the media" in err
    assert "[Errno" not in err and "Traceback" not in err and not (d / "m.webm").exists()


def test_the_collector_is_paused_only_while_the_command_loads(files: dict[str, Path]) -> None:
    """Run as the command, recstream loads with the cyclic GC off (start-up cost) and
    turns it back on before the command runs: `serve` and `record` run for days."""
    env = files["dir"] / "e.rsv"
    assert main(["encrypt", "--cert", str(files["cert"]), str(files["in"]), str(env)]) == 0
    code = (
        "import sys; sys.argv = ['recstream']; import gc, recstream; "
        "assert not gc.isenabled(); from recstream.cli import main; "
        f"assert main(['inspect', {str(env)!r}]) == 0; assert gc.isenabled(); print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120, check=False)
    assert r.returncode == 0 and r.stdout.endswith(b"ok\n"), r.stderr
    assert gc_enabled_in_this_process()


def gc_enabled_in_this_process() -> bool:
    import gc

    return gc.isenabled()  # importing recstream as a library never pauses it

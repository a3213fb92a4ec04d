"""Credentials (shared secrets, X-Twilio-Signature, the tenant parameter) and streams.toml,
including how the command refuses a wrong config or keystore without a traceback."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from recstream.cli import main
from recstream.errors import ConfigError
from recstream.streams.auth import (
    AuthRefused,
    Credentials,
    TenantCredentials,
    authenticate,
    choose_tenant,
    twilio_signature,
)
from recstream.streams.config import load_config
from tests.streams.helpers import SECRETS, make_env

TOKEN = b"12345"
URL = "wss://mycompany.com/streams"
TENANTS = (
    TenantCredentials("acme", secret=b"acme-secret-0123456789"),
    TenantCredentials("both", secret=b"both-secret-0123456789", twilio_auth_token=TOKEN),
    TenantCredentials("tw1", twilio_auth_token=TOKEN),
    TenantCredentials("tw2", twilio_auth_token=TOKEN),
)


def test_twilio_signature_is_base64_hmac_sha1_of_the_url() -> None:
    expected = base64.b64encode(hmac.new(TOKEN, URL.encode(), hashlib.sha1).digest()).decode()
    assert twilio_signature(TOKEN, URL) == expected == "OmXMplZ1x+abU+50g8+Smn6gOYU="


def test_signature_with_or_without_the_default_port() -> None:
    sig = twilio_signature(TOKEN, "wss://mycompany.com:443/streams")
    assert authenticate(TENANTS, Credentials(URL, signature=sig)) == ("tw1", "tw2")
    sig = twilio_signature(TOKEN, URL)
    assert authenticate(TENANTS, Credentials("wss://mycompany.com:443/streams", signature=sig))
    with pytest.raises(AuthRefused):  # another port is another URL
        authenticate(TENANTS, Credentials("wss://mycompany.com:8443/streams", signature=sig))


def test_every_configured_credential_is_needed() -> None:
    sig = twilio_signature(TOKEN, URL)
    both = Credentials(URL, token="both-secret-0123456789", signature=sig)
    assert authenticate(TENANTS, both) == ("both", "tw1", "tw2")
    assert authenticate(TENANTS, both, only="both") == ("both",)
    with pytest.raises(AuthRefused, match="bad secret"):  # the signature is missing
        authenticate(TENANTS, Credentials(URL, token="both-secret-0123456789"), only="both")
    with pytest.raises(AuthRefused, match="bad secret or signature"):
        authenticate(TENANTS, Credentials(URL, token="both-secret-0123456780", signature=sig),
                     only="both")  # fmt: skip
    assert authenticate(TENANTS, Credentials(URL, token="acme-secret-0123456789")) == ("acme",)
    for token in ("acme-secret-012345678", "acme-secret-01234567890", "", "ACME-secret-0123456789"):
        with pytest.raises(AuthRefused, match="bad secret"):
            authenticate(TENANTS, Credentials(URL, token=token))
    with pytest.raises(AuthRefused, match="no credentials"):
        authenticate(TENANTS, Credentials(URL))
    with pytest.raises(AuthRefused, match="unknown tenant"):
        authenticate(TENANTS, Credentials(URL, token="acme-secret-0123456789"), only="nosuch")


def test_choose_tenant() -> None:
    assert choose_tenant(("acme",), None) == "acme"
    assert choose_tenant(("tw1", "tw2"), "tw2") == "tw2"
    with pytest.raises(AuthRefused, match="several tenants"):
        choose_tenant(("tw1", "tw2"), None)
    with pytest.raises(AuthRefused, match="not allowed"):
        choose_tenant(("acme",), "tw1")


def test_secrets_never_in_reprs() -> None:
    text = repr(TENANTS) + repr(Credentials(URL + "?token=s3cr3t", token="s3cr3t", signature="x"))
    assert "secret-0123" not in text and "s3cr3t" not in text


# --- streams.toml ------------------------------------------------------------------------


def test_config_loads(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    cfg = load_config(env.config(max_streams=50, public_url="wss://rec.example.com/"))
    assert (cfg.server.host, cfg.server.port, cfg.server.path) == ("127.0.0.1", 0, "/streams")
    assert cfg.server.max_streams == 50 and cfg.server.public_url == "wss://rec.example.com"
    assert cfg.recordings.contact_center == "0a1b2c" and cfg.recordings.flush_interval == 0.2
    acme = next(t for t in cfg.tenants if t.tenant == "acme")
    assert acme.secret == SECRETS["acme"].encode() and acme.twilio_auth_token is None


def test_config_lists_every_problem(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    (tmp_path / "short.secret").write_text("tooshort\n")
    bad = tmp_path / "bad.toml"
    bad.write_text(
        f"""
[server]
listen = "0.0.0.0:8765"
max_stream = 5
idle_timeout = -1
max_call_seconds = 90000
path = "streams"
public_url = "https://rec.example.com/x"
[recordings]
root = "nowhere"
[keystore]
path = "{env.keystore}"
[audit]
log = "audit.jsonl"
[tenants.acme]
secret_file = "short.secret"
[tenants.empty]
[tenants."bad name!"]
secret_file = "missing.secret"
"""
    )
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    text = str(info.value)
    for expected in (
        "is not a loopback address and there is no TLS",
        "unknown key [server] max_stream (did you mean 'max_streams'?)",
        "[server] idle_timeout must be positive",
        "[server] max_call_seconds must be at most 86400 (24 hours)",
        "[server] path must look like /streams",
        "[server] public_url must be ws[s]://host[:port]",
        "[recordings] root:",
        "[recordings] contact_center is required",
        "[keystore] give exactly one of password_file and password_env",
        "the secret is shorter than 16",
        "[tenants.empty] needs secret_file, twilio_auth_token_file or both",
        "a tenant name is 1-64 letters",
        "missing.secret is not a file",
    ):
        assert expected in text, expected
    assert "tooshort" not in text


def test_cli_refuses_bad_config_and_bad_keystore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env(tmp_path)
    assert main(["streams", "--config", str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "Traceback" not in err
    (tmp_path / "keystore.pass").write_text("not-the-keystore-pw\n")
    assert main(["streams", "--config", str(env.config())]) == 4
    err = capsys.readouterr().err
    assert "keystore" in err and "Traceback" not in err and "not-the-keystore-pw" not in err


def test_readme_example_config_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Media streams over WebSocket") :]
    block = section[section.index("```toml\n") + 8 : section.index("```\n", 8)]
    make_env(tmp_path)  # keystore.rsk, keystore.pass, acme.secret, twilio.token, recordings/
    (tmp_path / "streams.toml").write_text(block)
    cfg = load_config(tmp_path / "streams.toml")
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 8765)
    assert [t.tenant for t in cfg.tenants] == ["acme", "globex"]
    assert cfg.tenants[1].twilio_auth_token is not None and cfg.tenants[1].secret is None


def test_signed_url_is_the_public_one(tmp_path: Path) -> None:
    # Behind a TLS proxy the platform signed wss://public-host/...; the server must check that.
    import ssl

    from recstream.streams.config import ServerConfig
    from recstream.streams.handshake import parse_request
    from recstream.streams.server import StreamsServer

    def creds(public_url: str | None, tls: bool) -> Credentials:
        cfg = ServerConfig("127.0.0.1", 0, public_url=public_url)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) if tls else None
        server = StreamsServer(cfg, TENANTS, hook=None, audit=None, tls_context=ctx)  # type: ignore[arg-type]
        head = b"GET /streams/tw1?a=1&b=%2F HTTP/1.1\r\nHost: 127.0.0.1:8765\r\n"
        req = parse_request(head + b"X-Twilio-Signature: sig\r\n\r\n")
        return server._credentials(req, {"tenant": "tw1"})

    got = creds("wss://rec.example.com", tls=False)
    assert got.url == "wss://rec.example.com/streams/tw1?a=1&b=%2F" and got.signature == "sig"
    assert creds(None, tls=False).url == "ws://127.0.0.1:8765/streams/tw1?a=1&b=%2F"
    assert creds(None, tls=True).url == "wss://127.0.0.1:8765/streams/tw1?a=1&b=%2F"
    sig = twilio_signature(TOKEN, "wss://rec.example.com/streams/tw1?a=1&b=%2F")
    assert authenticate(TENANTS, Credentials(got.url, signature=sig), only="tw1") == ("tw1",)

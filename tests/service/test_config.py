"""The configuration file: accepted, and refused with a clear message naming each problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from recstream.service.config import load_config, parse_listen
from recstream.service.errors import ServiceConfigError


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "recordings").mkdir()
    (tmp_path / "keystore.rsk").write_bytes(b"")
    (tmp_path / "keystore.pass").write_text("pw\n")
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    return tmp_path


GOOD = """
[server]
listen = "127.0.0.1:8443"
[keystore]
path = "keystore.rsk"
password_file = "keystore.pass"
[recordings]
root = "recordings"
[audit]
log = "audit.jsonl"
[settings]
db = "settings.sqlite"
"""


def write(d: Path, text: str) -> Path:
    p = d / "rcs.toml"
    p.write_text(text)
    return p


def refused(d: Path, text: str) -> str:
    with pytest.raises(ServiceConfigError) as info:
        load_config(write(d, text))
    return str(info.value)


def test_minimal_rcs_config_with_paths_relative_to_the_file(base: Path) -> None:
    cfg = load_config(write(base, GOOD))
    assert (cfg.server.host, cfg.server.port, cfg.server.tls) == ("127.0.0.1", 8443, False)
    assert cfg.recordings_root == base / "recordings"
    assert cfg.keystore is not None and cfg.keystore.password_file == base / "keystore.pass"
    assert cfg.audit_log == base / "audit.jsonl" and cfg.proxy is None
    assert cfg.auth.max_failures == 10 and cfg.server.max_body_bytes == 8 << 30


def test_full_rcs_config(base: Path) -> None:
    text = (
        GOOD.replace(
            'listen = "127.0.0.1:8443"',
            'listen = "0.0.0.0:8443"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
            'max_body_bytes = 1000\nread_timeout = 2.5\ntrusted_proxies = ["10.0.0.0/8"]',
        )
        + "[auth]\ntoken_ttl = 60\nmax_failures = 4\nfailure_window = 30\n"
    )
    cfg = load_config(write(base, text))
    assert cfg.server.tls and cfg.server.max_body_bytes == 1000 and cfg.server.read_timeout == 2.5
    assert str(cfg.server.trusted_proxies[0]) == "10.0.0.0/8"
    assert (cfg.auth.token_ttl, cfg.auth.max_failures, cfg.auth.failure_window) == (60, 4, 30)


def test_proxy_config(base: Path) -> None:
    text = """
[server]
listen = "[::1]:9000"
[audit]
log = "audit.jsonl"
[settings]
db = "settings.sqlite"
[proxy]
node_path = "/US/AK"
contact_center = "0A1B2C"
upstreams = ["HTTPS://RCS-US.example:8443/rcs", "http://127.0.0.1:9/rcs"]
identity = "proxy-ak"
identity_key_file = "proxy.key"
"""
    (base / "proxy.key").write_text("x" * 44 + "\n")
    cfg = load_config(write(base, text))
    assert cfg.server.host == "::1" and cfg.proxy is not None
    assert (cfg.proxy.node_path, cfg.proxy.contact_center) == ("/US/AK", "0a1b2c")
    assert cfg.proxy.upstreams == ("https://rcs-us.example:8443/rcs", "http://127.0.0.1:9/rcs")
    assert cfg.proxy.identity == "proxy-ak" and cfg.proxy.identity_key == b"x" * 44
    assert cfg.keystore is None and cfg.recordings_root is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('[recordings]\nroot = "recordings"', ""), "[recordings] root is required"),
        (('listen = "127.0.0.1:8443"', 'listen = "8443"'), "must be host:port"),
        (('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:99999"'), "must be host:port"),
        (('listen = "127.0.0.1:8443"', 'listen = "0.0.0.0:8443"'), "set tls_cert and tls_key"),
        (('listen = "127.0.0.1:8443"', 'lisen = "127.0.0.1:8443"'), "did you mean 'listen'"),
        (("[audit]", "[audti]"), "unknown section [audti]"),
        (('root = "recordings"', 'root = "missing"'), "is not a directory"),
        (('root = "recordings"', "root = 5"), "root must be a string"),
        (('password_file = "keystore.pass"', ""), "exactly one of password_file and password_env"),
        (
            (
                'password_file = "keystore.pass"',
                'password_file = "keystore.pass"\npassword_env = "X"',
            ),
            "exactly one",
        ),
        (('path = "keystore.rsk"', 'path = "nowhere.rsk"'), "does not exist"),
        (('log = "audit.jsonl"', 'log = "no/such/dir/audit.jsonl"'), "does not exist"),
        (
            ('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\ntls_cert = "cert.pem"'),
            "go together",
        ),
        (
            ('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\nread_timeout = -1'),
            "must be positive",
        ),
        (
            ('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\nmax_body_bytes = true'),
            "must be an integer",
        ),
        (
            ('listen = "127.0.0.1:8443"', 'listen = "127.0.0.1:8443"\ntrusted_proxies = ["nope"]'),
            "not an IP address",
        ),
    ],
)
def test_refused_configs(base: Path, edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in GOOD
    assert message in refused(base, GOOD.replace(old, new))


def test_all_problems_are_listed_at_once(base: Path) -> None:
    text = GOOD.replace('root = "recordings"', 'root = "missing"').replace("[audit]", "[audti]")
    msg = refused(base, text)
    assert "will not start" in msg
    assert (
        "missing is not a directory" in msg
        and "[audti]" in msg
        and "[audit] log is required" in msg
    )


def test_proxy_must_not_hold_keys(base: Path) -> None:
    msg = refused(base, GOOD + '[proxy]\nnode_path = "/US"\ncontact_center = "0a"\n')
    assert "[keystore] is not allowed with [proxy]" in msg and "holds no" in msg


def test_proxy_values_are_validated(base: Path) -> None:
    text = """
[server]
listen = "127.0.0.1:1"
[audit]
log = "a.jsonl"
[settings]
db = "s.sqlite"
[proxy]
node_path = "US/AK"
contact_center = "not-hex"
"""
    msg = refused(base, text)
    assert "[proxy] node_path" in msg and "[proxy] contact_center" in msg


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ServiceConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    assert "not valid TOML" in refused(tmp_path, "[server\nlisten=")


def test_parse_listen() -> None:
    assert parse_listen("[::1]:0") == ("::1", 0)
    assert parse_listen("localhost:80") == ("localhost", 80)
    for bad in (":80", "host:", "[::1:80", "a:b"):
        with pytest.raises(ValueError):
            parse_listen(bad)
    # Only ASCII digits, and few: not int()'s own message for "²" or 5,000 digits.
    for bad in ("h:\u00b2", "h:\uff18\uff10", "h:" + "9" * 5000, "h:000080"):
        with pytest.raises(ValueError, match="must be host:port"):
            parse_listen(bad)

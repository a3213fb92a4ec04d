"""Issue 13, finding 1: the proxy forwards only to its configured upstreams, and no password.

A capture listener stands in for a hostile "RCS": it records what it is sent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recstream.service.config import load_config
from recstream.service.errors import ServiceConfigError
from recstream.service.store import SettingsStore
from tests.service.conftest import (
    PASSWORDS,
    Archive,
    ServerThread,
    basic,
    connect,
    request,
    wait_for_audit,
)

CC = "0a1b2c"
BASE = f"/api/v2/ops/contact-centers/{CC}/settings/screen-recording"


class Capture:
    """A TCP listener on loopback that records each request head and answers 404."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/collect/rcs"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data)
                conn.sendall(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def capture() -> Iterator[Capture]:
    c = Capture()
    yield c
    c.close()


def token(st: ServerThread, user: str) -> str:
    return str(request(st.url, "POST", "/rcs/tokens", user=user).json()["access_token"])


def set_entry(st: ServerThread, location: str, value: str) -> Any:
    headers = {"Authorization": f"Bearer {token(st, 'olga')}", "Content-Type": "application/json"}
    body = json.dumps({"location": location, "value": value}).encode()
    return request(st.url, "POST", BASE, body, headers=headers, user=None)


def test_ops_cannot_point_the_proxy_at_a_listener(
    start_rcs: Any, start_proxy: Any, capture: Capture, archive: Archive
) -> None:
    rcs = start_rcs()
    proxy = start_proxy("/US/AK", CC, upstreams=[rcs.url + "/rcs"])
    for value in (
        capture.uri,
        "http://169.254.169.254/rcs",
        "http://10.0.0.5:8080/rcs",
        "https://attacker.example/rcs",
    ):
        r = set_entry(proxy, "/US", value)
        assert r.status == 400, value  # was 201
        assert "upstreams" in r.json()["message"] or "loopback" in r.json()["message"]
    assert set_entry(proxy, "/US", rcs.url + "/rcs").status == 201
    r = request(proxy.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
    assert r.status == 200 and r.body == archive.plain["acme/call-1.rsv"]
    assert capture.heads == []


def test_an_entry_outside_the_allowlist_is_never_contacted(
    start_rcs: Any, start_proxy: Any, capture: Capture
) -> None:
    rcs = start_rcs()
    proxy = start_proxy("/US/AK", CC, upstreams=[rcs.url + "/rcs"])
    store = SettingsStore.open(proxy.config.settings_db)
    store.add_location(CC, "/US", capture.uri)  # written behind the API's back
    store.close()
    r = request(proxy.url, "GET", "/rcs/recordings")
    assert r.status == 502 and "not one of this proxy's [proxy] upstreams" in r.json()["message"]
    assert capture.heads == []


def test_an_upstream_receives_a_delegation_not_the_password(
    start_rcs: Any, start_proxy: Any, capture: Capture
) -> None:
    rcs = start_rcs()
    # Even an RCS in the allowlist never sees the player's password or token.
    proxy = start_proxy("/US/AK", CC, {"/": capture.uri})
    bearer = token(proxy, "alice")
    request(proxy.url, "GET", "/rcs/recordings")
    request(
        proxy.url,
        "GET",
        "/rcs/recordings/acme/call-1.rsv",
        headers={"Authorization": f"Bearer {bearer}"},
    )
    assert len(capture.heads) == 2
    secrets = [PASSWORDS["alice"].encode(), basic("alice").encode(), bearer.encode()]
    for head in capture.heads:
        assert not any(s in head for s in secrets)
        assert b"Authorization: Basic" not in head
        assert b"Authorization: RecstreamProxy " in head
    # What the listener got is useless elsewhere: replayed to a real RCS, refused.
    line = next(h for h in capture.heads[1].split(b"\r\n") if h.startswith(b"Authorization"))
    stolen = line.split(b": ", 1)[1].decode()
    for path in ("/collect/rcs/recordings/acme/call-1.rsv", "/rcs/recordings/acme/call-1.rsv"):
        r = request(rcs.url, "GET", path, headers={"Authorization": stolen}, user=None)
        assert r.status in (401, 404) and r.status != 200
    r = request(
        rcs.url,
        "GET",
        "/rcs/recordings/acme/call-1.rsv",
        headers={"Authorization": stolen},
        user=None,
    )
    assert r.status == 401
    rec = wait_for_audit(rcs, lambda a: a["event"] == "auth_failed")
    assert rec["reason"] == "bad_delegation" and "another server" in rec["detail"]


def test_a_delegation_is_accepted_once(start_rcs: Any, start_proxy: Any) -> None:
    from recstream.service import delegation

    rcs = start_rcs()
    host = rcs.url.split("://")[1]
    path = "/rcs/recordings"
    proxy_key = (rcs.config.source.parent / "proxy.key").read_bytes().strip()
    claims = delegation.new_claims(
        "proxy-test", "alice", host, method="GET", path=path, now=time.time()
    )
    value = delegation.sign(proxy_key, claims)
    assert request(rcs.url, "GET", path, headers={"Authorization": value}, user=None).status == 200
    r = request(rcs.url, "GET", path, headers={"Authorization": value}, user=None)
    assert r.status == 401  # replayed
    forged = delegation.sign(
        b"x" * 32,
        delegation.new_claims(
            "proxy-test", "alice", host, method="GET", path=path, now=time.time()
        ),
    )
    assert request(rcs.url, "GET", path, headers={"Authorization": forged}, user=None).status == 401
    old = delegation.sign(
        proxy_key,
        delegation.new_claims(
            "proxy-test", "alice", host, method="GET", path=path, now=time.time() - 600
        ),
    )
    assert request(rcs.url, "GET", path, headers={"Authorization": old}, user=None).status == 401


def test_the_proxy_normalises_names_and_audits_the_user(start_rcs: Any, start_proxy: Any) -> None:
    rcs = start_rcs()
    proxy = start_proxy("/US/AK", CC, {"/": rcs.url + "/rcs"})
    for raw in (
        "/rcs/recordings/acme%2f..%2f..%2fetc%2fpasswd.rsv",
        "/rcs/recordings/acme%2fcall-1.rsv",
        "/rcs/recordings/acme/%2e%2e/globex/call-9.rsv",
    ):
        conn = connect(proxy.url)
        conn.request("GET", raw, headers={"Authorization": basic("alice")})
        assert conn.getresponse().status == 404, raw
        conn.close()
    fwd = wait_for_audit(proxy, lambda a: a["event"] == "refused" or a["event"] == "forward")
    assert fwd["user"] == "alice"  # was null
    assert [a for a in rcs.audit() if a["event"] == "playback"] == []  # nothing reached it
    r = request(proxy.url, "GET", "/rcs/recordings/acme/call-1.rsv", headers={"Range": "bytes=0-3"})
    assert r.status == 206


# --- the configuration ------------------------------------------------------------------


def proxy_config(tmp_path: Path, upstreams: str, key: bytes = b"k" * 44) -> str:
    (tmp_path / "proxy.key").write_bytes(key + b"\n")
    (tmp_path / "rcs.toml").write_text(
        '[server]\nlisten = "127.0.0.1:0"\n[audit]\nlog = "a.jsonl"\n[settings]\ndb = "s.db"\n'
        f'[proxy]\nnode_path = "/US"\ncontact_center = "0a"\nupstreams = {upstreams}\n'
        'identity = "p1"\nidentity_key_file = "proxy.key"\n'
    )
    try:
        load_config(tmp_path / "rcs.toml")
    except ServiceConfigError as exc:
        return str(exc)
    return ""


def test_upstreams_config_is_checked(tmp_path: Path) -> None:
    assert (
        proxy_config(tmp_path, '["https://rcs.example:8443/rcs", "http://127.0.0.1:9/rcs"]') == ""
    )
    assert "loopback" in proxy_config(tmp_path, '["http://10.1.2.3/rcs"]')
    assert "loopback" in proxy_config(tmp_path, '["http://169.254.169.254/rcs"]')
    assert "loopback" in proxy_config(tmp_path, '["http://localhost:9/rcs"]')
    assert "empty" in proxy_config(tmp_path, "[]")
    assert "/rcs" in proxy_config(tmp_path, '["https://a.example/api"]')
    assert "at least 32" in proxy_config(tmp_path, '["https://a.example/rcs"]', key=b"short")

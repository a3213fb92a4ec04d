"""Two RCS instances and one decryption proxy on loopback: location routing and forwarding.

The ``/US`` RCS holds only acme's key and the ``/EU`` RCS only globex's, so a request
routed to the wrong one cannot succeed by accident.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from typing import Any

import pytest

from recstream.envelope import IdentitySet
from tests.service.conftest import (
    Archive,
    Keys,
    ServerThread,
    TlsFiles,
    basic,
    connect,
    request,
    wait_for_audit,
)

CC = "0a1b2c"


@dataclass
class Topology:
    us: ServerThread
    eu: ServerThread
    proxy: ServerThread


@pytest.fixture
def topo(start_rcs: Any, start_proxy: Any, keys: Keys) -> Topology:
    us = start_rcs(keyring=IdentitySet([keys.acme.identity]))
    eu = start_rcs(keyring=IdentitySet([keys.globex.identity]))
    entries = {"/US": us.url + "/rcs", "/EU": eu.url + "/rcs", "/": eu.url + "/rcs"}
    return Topology(us, eu, start_proxy("/US/AK", CC, entries))


def decrypts(st: ServerThread) -> list[dict[str, Any]]:
    return [a for a in st.audit() if a["event"] == "decrypt"]


def test_us_ak_recording_goes_to_the_us_rcs(topo: Topology, archive: Archive, keys: Keys) -> None:
    r = request(topo.proxy.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
    assert r.status == 200 and r.body == archive.plain["acme/call-1.rsv"]
    assert r.headers["Content-Type"] == "audio/wav"
    rec = wait_for_audit(topo.us, lambda a: a["event"] == "decrypt")
    assert rec["user"] == "alice" and rec["cert_id"] == keys.acme.cert_id
    assert (rec["auth"], rec["via"]) == ("proxy", "proxy-test")  # a delegation, not a password
    assert decrypts(topo.eu) == []
    fwd = wait_for_audit(topo.proxy, lambda a: a["event"] == "forward")
    assert (fwd["node"], fwd["location"], fwd["result"]) == ("/US/AK", "/US", "ok")
    assert (fwd["user"], fwd["auth"]) == ("alice", "basic")  # the proxy authenticated her


def test_eu_recording_goes_to_the_other_rcs(topo: Topology, archive: Archive, keys: Keys) -> None:
    r = request(
        topo.proxy.url,
        "POST",
        "/rcs/decrypt?nodePath=/EU/FR",
        archive.sealed["globex/call-9.rsv"],
        user="bob",
    )
    assert r.status == 200 and r.body == archive.plain["globex/call-9.rsv"]
    assert (
        wait_for_audit(topo.eu, lambda a: a["event"] == "decrypt")["cert_id"] == keys.globex.cert_id
    )
    assert decrypts(topo.us) == []
    # Routed to the wrong RCS, the same request cannot succeed: it has no key there.
    r = request(
        topo.proxy.url,
        "POST",
        "/rcs/decrypt?nodePath=/US/HI",
        archive.sealed["globex/call-9.rsv"],
        user="bob",
    )
    assert r.status == 422 and r.json()["error"] == "no_matching_key"


def test_unknown_location_falls_back_to_root(topo: Topology, archive: Archive) -> None:
    r = request(
        topo.proxy.url,
        "POST",
        "/rcs/decrypt?nodePath=/APAC/JP",
        archive.sealed["globex/call-9.rsv"],
        user="bob",
    )
    assert r.status == 200
    fwd = wait_for_audit(topo.proxy, lambda a: a["event"] == "forward")
    assert (fwd["node"], fwd["location"]) == ("/APAC/JP", "/")
    assert len(decrypts(topo.eu)) == 1


def test_the_proxy_authenticates_and_the_rcs_authorises(topo: Topology, archive: Archive) -> None:
    r = request(
        topo.proxy.url,
        "POST",
        "/rcs/decrypt",
        archive.sealed["acme/call-1.rsv"],
        headers={"Authorization": basic("alice", "wrong-pw")},
    )
    assert r.status == 401 and "Basic" in r.headers["WWW-Authenticate"]
    r = request(
        topo.proxy.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"], user=None
    )
    assert r.status == 401
    r = request(
        topo.proxy.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"], user="bob"
    )
    assert r.status == 403  # bob's tenants on the RCS do not include acme
    # The proxy vouches for who olga is; the RCS's record of her (no tenant) decides.
    assert request(topo.proxy.url, "GET", "/rcs/recordings", user="olga").json()["recordings"] == []


def test_playback_and_listing_through_the_proxy(topo: Topology, archive: Archive) -> None:
    names = [
        r["id"] for r in request(topo.proxy.url, "GET", "/rcs/recordings").json()["recordings"]
    ]
    assert "acme/call-1.rsv" in names and "globex/call-9.rsv" not in names
    r = request(
        topo.proxy.url,
        "GET",
        "/rcs/recordings/acme/big.rsv",
        headers={"Range": "bytes=20000-70000"},
    )
    assert r.status == 206
    assert r.body == archive.plain["acme/big.rsv"][20000:70001]
    assert r.headers["Content-Range"] == f"bytes 20000-70000/{len(archive.plain['acme/big.rsv'])}"
    assert r.headers["Content-Type"] == "audio/basic"
    r = request(
        topo.proxy.url,
        "GET",
        "/rcs/recordings/acme/big.rsv",
        headers={"Range": f"bytes={len(archive.plain['acme/big.rsv'])}-"},
    )
    assert r.status == 416 and "Content-Range" in r.headers


def test_large_streams_both_ways(topo: Topology, archive: Archive) -> None:
    env = archive.sealed["acme/big.rsv"]
    conn = connect(topo.proxy.url)
    conn.putrequest("POST", "/rcs/decrypt")
    conn.putheader("Authorization", basic("alice"))
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for i in range(0, len(env), 100_000):
        part = env[i : i + 100_000]
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == archive.plain["acme/big.rsv"]


def test_tamper_behind_the_proxy_aborts_the_callers_response(
    topo: Topology, archive: Archive
) -> None:
    env = bytearray(archive.sealed["acme/big.rsv"])
    env[len(env) // 2] ^= 1
    conn = connect(topo.proxy.url)
    conn.request("POST", "/rcs/decrypt", body=bytes(env), headers={"Authorization": basic("alice")})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == archive.plain["acme/big.rsv"][: len(info.value.partial)]
    fwd = wait_for_audit(topo.proxy, lambda a: a["event"] == "forward" and a["result"] != "ok")
    assert fwd["result"] == "upstream_aborted"


def test_tokens_of_the_proxy(topo: Topology, archive: Archive) -> None:
    token = request(topo.proxy.url, "POST", "/rcs/tokens").json()["access_token"]
    r = request(
        topo.proxy.url,
        "POST",
        "/rcs/decrypt",
        archive.sealed["acme/call-1.rsv"],
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status == 200
    # Issued by the proxy, for the proxy: good for every RCS behind it, and for none directly.
    r = request(
        topo.proxy.url,
        "GET",
        "/rcs/recordings?nodePath=/EU",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status == 200
    r = request(topo.us.url, "GET", "/rcs/recordings", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 401


def test_unreachable_rcs_is_a_clear_502(start_proxy: Any, archive: Archive) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()  # nothing listens there now
    proxy = start_proxy("/US/AK", CC, {"/US": f"http://127.0.0.1:{dead}/rcs"})
    r = request(proxy.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
    assert r.status == 502
    body = r.json()
    assert body["error"] == "bad_gateway"
    assert f"127.0.0.1:{dead}" in body["message"] and "unreachable" in body["message"]
    assert "/US/AK" in body["message"]
    assert 'recstream_proxy_requests_total{result="upstream_unreachable"} 1' in proxy.metrics()


def test_no_entry_for_the_node_is_a_502(start_proxy: Any, topo: Topology) -> None:
    proxy = start_proxy("/US/AK", CC, {"/EU": topo.eu.url + "/rcs"})
    r = request(proxy.url, "GET", "/rcs/recordings")
    assert r.status == 502 and "no RCS is configured for node /US/AK" in r.json()["message"]
    r = request(proxy.url, "GET", "/rcs/recordings?nodePath=bad")
    assert r.status == 400


def test_settings_changed_through_the_proxys_api_take_effect(
    topo: Topology, archive: Archive
) -> None:
    base = f"/api/v2/ops/contact-centers/{CC}/settings/screen-recording"
    body = b'{"location": "/US/AK", "value": "%s/rcs"}' % topo.eu.url.encode()
    token = request(topo.proxy.url, "POST", "/rcs/tokens", user="olga").json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert request(topo.proxy.url, "POST", base, body, headers=headers).status == 201
    r = request(
        topo.proxy.url, "POST", "/rcs/decrypt", archive.sealed["globex/call-9.rsv"], user="bob"
    )
    assert r.status == 200  # /US/AK now has its own entry: the EU RCS
    assert len(decrypts(topo.eu)) == 1


def test_tls_between_proxy_and_rcs(
    tmp_path_factory: Any, start_proxy: Any, tls_files: TlsFiles, archive: Archive, keys: Keys
) -> None:
    from tests.service.conftest import add_users, rcs_toml, write_config

    d = tmp_path_factory.mktemp("tls-rcs")
    tls = f'tls_cert = "{tls_files.cert}"\ntls_key = "{tls_files.key}"'
    cfg = write_config(d, rcs_toml(d, archive.root, server_extra=tls))
    add_users(d / "settings.sqlite")
    rcs = ServerThread(cfg, keys.ring())
    try:
        good = start_proxy(
            "/US", CC, {"/": rcs.url + "/rcs"}, extra=f'ca_file = "{tls_files.ca_pem}"'
        )
        r = request(good.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
        assert r.status == 200 and r.body == archive.plain["acme/call-1.rsv"]
        # Without the CA the RCS's certificate is refused: no credentials go to it.
        bad = start_proxy("/US", CC, {"/": rcs.url + "/rcs"})
        r = request(bad.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
        assert r.status == 502 and "unreachable" in r.json()["message"]
        assert decrypts(rcs) and len(decrypts(rcs)) == 1
    finally:
        rcs.stop()

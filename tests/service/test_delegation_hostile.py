"""Hostile RecstreamProxy assertions: the MAC is checked before any JSON is parsed, and
every malformed one is a refused authentication (401, audited, counted), never a 500."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import Any

import pytest

from recstream.service import delegation
from tests.service.conftest import PROXY_NAME, request, wait_for_audit


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _assertion(payload: bytes, key: bytes) -> str:
    mac = hmac.digest(key, b"recstream-delegation-v1\x00" + payload, hashlib.sha256)
    return f"{delegation.SCHEME} {_b64(payload)}.{_b64(mac)}"


def _failures(st: Any) -> int:
    found = re.search(r'auth_failures_total\{reason="bad_delegation"\} (\d+)', st.metrics())
    return int(found.group(1)) if found else 0


DEEP = b"[" * 3000  # deeper than the interpreter's recursion limit, under 4,096 characters
FIELDS = b'"v":1,"proxy":"a","user":"u","aud":"h:1","method":"GET","path":"/","nonce":"n"'
HUGE_EXP = b"{" + FIELDS + b',"exp":' + b"9" * 400 + b"}"  # float() overflows


@pytest.mark.parametrize("signed", [False, True], ids=["forged", "signed-by-the-proxy"])
def test_deeply_nested_json_is_a_refused_delegation(start_rcs: Any, signed: bool) -> None:
    st = start_rcs()
    key = (st.config.source.parent / "proxy.key").read_bytes().strip() if signed else b"x" * 32
    value = _assertion(DEEP, key)
    before = _failures(st)
    r = request(st.url, "GET", "/rcs/recordings", headers={"Authorization": value}, user=None)
    assert r.status == 401 and r.json()["error"] == "unauthorized"
    rec = wait_for_audit(st, lambda a: a["event"] == "auth_failed")
    assert rec["reason"] == "bad_delegation"
    assert rec["detail"] == ("malformed assertion" if signed else "unknown proxy or bad MAC")
    assert _failures(st) == before + 1


def test_unauthenticated_bytes_never_reach_the_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def parser(*_: object, **__: object) -> object:
        raise AssertionError("json.loads ran on an assertion whose MAC was not checked")

    monkeypatch.setattr(delegation.json, "loads", parser)
    keys = {PROXY_NAME: b"k" * 32}
    claims = delegation.new_claims(
        PROXY_NAME, "alice", "h:1", method="GET", path="/", now=time.time()
    )
    forged = delegation.sign(b"x" * 32, claims).split(" ", 1)[1]
    with pytest.raises(delegation.DelegationError, match="bad MAC"):
        delegation.verify(forged, keys, aud="h:1", method="GET", path="/", now=time.time())


def test_a_proxy_cannot_sign_for_another() -> None:
    keys = {"a": b"a" * 32, "b": b"b" * 32}
    now = time.time()
    as_b = delegation.sign(
        keys["a"], delegation.new_claims("b", "alice", "h:1", method="GET", path="/", now=now)
    )
    with pytest.raises(delegation.DelegationError, match="another proxy"):
        delegation.verify(as_b.split(" ", 1)[1], keys, aud="h:1", method="GET", path="/", now=now)
    as_a = delegation.sign(
        keys["a"], delegation.new_claims("a", "alice", "h:1", method="GET", path="/", now=now)
    )
    got = delegation.verify(as_a.split(" ", 1)[1], keys, aud="h:1", method="GET", path="/", now=now)
    assert (got.proxy, got.user) == ("a", "alice")


@pytest.mark.parametrize(
    "body",
    [DEEP, b"\xff\xfe", b"[1]", HUGE_EXP, b'{"v":1,"proxy":"a"}'],
    ids=["deep", "not-utf8", "not-object", "huge-exp", "missing-claims"],
)
def test_every_malformed_signed_body_is_a_delegation_error(body: bytes) -> None:
    value = _assertion(body, b"a" * 32).split(" ", 1)[1]
    with pytest.raises(delegation.DelegationError):
        delegation.verify(value, {"a": b"a" * 32}, aud="h:1", method="GET", path="/", now=0.0)

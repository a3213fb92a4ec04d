"""The ops settings API: CRUD, validation, roles, malformed and oversized bodies, persistence."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.service.conftest import ServerThread, connect, request, wait_for_audit

CC = "0a1b2c"
BASE = f"/api/v2/ops/contact-centers/{CC}/settings/screen-recording"
JSON = {"Content-Type": "application/json"}
# The proxy's [proxy] upstreams: the only values the settings API accepts.
UPSTREAMS = [
    "https://rcs-us.example:8443/rcs",
    "http://127.0.0.1:9/rcs",
    "https://other.example/rcs",
    "https://rcs-us2.example/x/rcs",
    "https://eu.example/rcs",
    "https://us.example/rcs",
    "https://hi.example/rcs",
    "https://root.example/rcs",
    "https://a.example/rcs",
]


@pytest.fixture
def start_ops(start_proxy: Any) -> Any:
    """A decryption proxy whose settings API the tests drive."""

    def start(server_extra: str = "") -> ServerThread:
        st: ServerThread = start_proxy("/US", CC, upstreams=UPSTREAMS, server_extra=server_extra)
        return st

    return start


def bearer(st: ServerThread, user: str) -> str:
    """A token for ``user``: settings are changed with tokens, not cached Basic credentials."""
    r = request(st.url, "POST", "/rcs/tokens", user=user)
    assert r.status == 201
    return f"Bearer {r.json()['access_token']}"


def ops(
    st: ServerThread,
    method: str,
    body: Any = None,
    path: str = BASE,
    user: str | None = "olga",
    raw: bytes | None = None,
) -> Any:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = dict(JSON)
    if user is not None:
        headers["Authorization"] = bearer(st, user)
    return request(st.url, method, path, data, headers=headers, user=None)


def test_crud_and_audit(start_ops: Any) -> None:
    st = start_ops()
    assert ops(st, "GET").json() == {"settings": []}
    r = ops(st, "POST", {"location": "/US", "value": "https://rcs-us.example:8443/rcs"})
    assert r.status == 201
    assert r.json() == {"location": "/US", "value": "https://rcs-us.example:8443/rcs"}
    assert ops(st, "POST", {"location": "/", "value": "http://127.0.0.1:9/rcs"}).status == 201
    r = ops(st, "POST", {"location": "/US", "value": "https://other.example/rcs"})
    assert r.status == 409 and r.json()["error"] == "conflict"
    r = ops(st, "PUT", {"location": "/US", "value": "https://rcs-us2.example/x/rcs"})
    assert r.status == 200
    assert ops(st, "GET").json()["settings"] == [
        {"location": "/", "value": "http://127.0.0.1:9/rcs"},
        {"location": "/US", "value": "https://rcs-us2.example/x/rcs"},
    ]
    assert ops(st, "PUT", {"location": "/EU", "value": "https://eu.example/rcs"}).status == 404
    assert ops(st, "DELETE", path=BASE + "?location=/US").status == 204
    assert ops(st, "DELETE", {"location": "/"}).status == 204
    assert ops(st, "DELETE", {"location": "/"}).status == 404
    assert ops(st, "GET").json() == {"settings": []}
    rec = wait_for_audit(st, lambda a: a["event"] == "setting_deleted" and a["location"] == "/")
    assert rec["user"] == "olga" and rec["contact_center"] == CC
    events = [a["event"] for a in st.audit()]
    assert events.count("setting_created") == 2 and "setting_updated" in events


def test_resolution_follows_the_hierarchy(start_ops: Any) -> None:
    st = start_ops()
    for loc, val in (
        ("/US", "https://us.example/rcs"),
        ("/US/HI", "https://hi.example/rcs"),
        ("/", "https://root.example/rcs"),
    ):
        assert ops(st, "POST", {"location": loc, "value": val}).status == 201

    def resolved(node: str) -> Any:
        return ops(st, "GET", path=f"{BASE}/resolve?nodePath={node}").json()

    assert resolved("/US/AK") == {
        "nodePath": "/US/AK",
        "location": "/US",
        "value": "https://us.example/rcs",
    }
    assert resolved("/US/HI")["location"] == "/US/HI"
    assert resolved("/US/HI/Maui")["location"] == "/US/HI"
    assert resolved("/EU/FR")["location"] == "/"
    assert resolved("/")["location"] == "/"
    ops(st, "DELETE", {"location": "/"})
    r = ops(st, "GET", path=f"{BASE}/resolve?nodePath=/EU/FR")
    assert r.status == 404
    assert ops(st, "GET", path=f"{BASE}/resolve").status == 400
    assert ops(st, "GET", path=f"{BASE}/resolve?nodePath=US").status == 400


def test_contact_centers_are_separate_and_hex(start_ops: Any) -> None:
    st = start_ops()
    ops(st, "POST", {"location": "/", "value": "https://a.example/rcs"})
    other = "/api/v2/ops/contact-centers/FFEE01/settings/screen-recording"
    assert ops(st, "GET", path=other).json() == {"settings": []}
    r = ops(st, "GET", path="/api/v2/ops/contact-centers/not-hex/settings/screen-recording")
    assert r.status == 400 and "hex" in r.json()["message"]
    # Hex IDs are case-insensitive.
    upper = BASE.replace(CC, CC.upper())
    assert ops(st, "GET", path=upper).json()["settings"][0]["location"] == "/"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"location": "US", "value": "https://a/rcs"}, "absolute path"),
        ({"location": "/US/", "value": "https://a/rcs"}, "trailing"),
        ({"location": "/US//AK", "value": "https://a/rcs"}, "segment"),
        ({"location": "/US/../EU", "value": "https://a/rcs"}, "segment"),
        ({"location": "/US/A K", "value": "https://a/rcs"}, "segment"),
        ({"location": 5, "value": "https://a/rcs"}, "location"),
        ({"location": "/US", "value": "https://a/api"}, "/rcs"),
        ({"location": "/US", "value": "ftp://a/rcs"}, "http"),
        ({"location": "/US", "value": "https:///rcs"}, "host"),
        ({"location": "/US", "value": "https://u:p@a/rcs"}, "credentials"),
        ({"location": "/US", "value": "https://a/rcs?x=1"}, "query"),
        ({"location": "/US", "value": "https://a:99999/rcs"}, "URI"),
        ({"location": "/US", "value": "https://a/r cs"}, "whitespace"),
        ({"location": "/US"}, "'value' is required"),
        ({"value": "https://a/rcs"}, "'location' is required"),
        ({"location": "/US", "value": "https://a/rcs", "extra": 1}, "unknown field"),
        (["/US", "https://a/rcs"], "JSON object"),
    ],
)
def test_validation(start_ops: Any, body: Any, fragment: str) -> None:
    st = start_ops()
    r = ops(st, "POST", body)
    assert r.status == 400, r.body
    assert r.json()["error"] == "bad_request"
    assert fragment in r.json()["message"]


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"location": "/US",}', b"\xff\xfe{}", b"", b"null", b'"text"'],
)
def test_malformed_json(start_ops: Any, raw: bytes) -> None:
    st = start_ops()
    r = ops(st, "POST", raw=raw)
    assert r.status == 400
    assert r.json()["error"] == "bad_request"


def test_oversized_json_body(start_ops: Any) -> None:
    st = start_ops(server_extra="max_json_bytes = 1024")
    big = {"location": "/US", "value": "https://a.example/" + "x" * 2000 + "/rcs"}
    r = ops(st, "POST", big)
    assert r.status == 413 and r.json()["error"] == "payload_too_large"
    # Chunked (no Content-Length): counted while reading.
    conn = connect(st.url)
    conn.putrequest("POST", BASE)
    conn.putheader("Authorization", bearer(st, "olga"))
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    payload = json.dumps(big).encode()
    conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
    assert conn.getresponse().status == 413


def test_only_ops_may_call_it(start_ops: Any) -> None:
    st = start_ops()
    body = {"location": "/US", "value": "https://a.example/rcs"}
    for method in ("GET", "POST", "PUT", "DELETE"):
        r = ops(st, method, body, user="alice")
        assert r.status == 403, method
        assert "ops role" in r.json()["message"]
        assert ops(st, method, body, user=None).status == 401
    assert ops(st, "GET", path=f"{BASE}/resolve?nodePath=/US", user="alice").status == 403
    assert ops(st, "GET").json() == {"settings": []}  # nothing was created


def test_entries_persist_across_restarts(start_ops: Any) -> None:
    st = start_ops()
    ops(st, "POST", {"location": "/EU", "value": "https://eu.example/rcs"})
    st.stop()
    again = ServerThread(st.config.source, None)
    try:
        assert ops(again, "GET").json()["settings"] == [
            {"location": "/EU", "value": "https://eu.example/rcs"}
        ]
    finally:
        again.stop()


# --- issue 13: request forgery and hostile JSON --------------------------------------------


def test_changes_need_json_a_token_and_this_origin(start_ops: Any) -> None:
    st = start_ops()
    body = json.dumps({"location": "/US", "value": "https://us.example/rcs"}).encode()
    tok = bearer(st, "olga")
    # Cached Basic credentials never suffice for a change (a browser sends them anywhere).
    r = request(st.url, "POST", BASE, body, headers=JSON, user="olga")
    assert r.status == 403 and "bearer token" in r.json()["message"]
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        r = request(
            st.url, "POST", BASE, body, headers={"Authorization": tok, "Content-Type": ctype}
        )
        assert r.status == 415, ctype
    for hdrs in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        r = request(st.url, "PUT", BASE, body, headers={"Authorization": tok, **JSON, **hdrs})
        assert r.status == 403 and r.json()["error"] == "forbidden_origin", hdrs
    same = {"Origin": st.url, "Sec-Fetch-Site": "same-origin"}
    r = request(st.url, "POST", BASE, body, headers={"Authorization": tok, **JSON, **same})
    assert r.status == 201
    assert ops(st, "GET").json()["settings"] == [
        {"location": "/US", "value": "https://us.example/rcs"}
    ]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 20_000 + b"]" * 20_000,
        b'{"location": "/US", "value": ' + b"9" * 5000 + b"}",
    ],
)
def test_hostile_json_is_a_400_not_a_500(start_ops: Any, raw: bytes) -> None:
    st = start_ops(server_extra="max_json_bytes = 65536")
    r = ops(st, "POST", raw=raw)
    assert r.status == 400 and r.json()["error"] == "bad_request"  # was 500 with a traceback


def test_metrics_need_the_ops_role_unless_public(start_rcs: Any) -> None:
    st = start_rcs()
    assert request(st.url, "GET", "/metrics", user=None).status == 401  # was 200
    assert request(st.url, "GET", "/metrics", user="alice").status == 403
    r = request(st.url, "GET", "/metrics", user="olga")
    assert r.status == 200 and "recstream_auth_failures_total" in r.body.decode()
    public = start_rcs(server_extra='metrics = "public"')
    assert request(public.url, "GET", "/metrics", user=None).status == 200

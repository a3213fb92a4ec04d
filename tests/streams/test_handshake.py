"""The opening handshake (recstream.streams.handshake), sans I/O: a strict HTTP/1.1
request head in, the 101 or a refusal out; each malformed head refused with its status."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recstream.errors import UpgradeRequestError
from recstream.streams.handshake import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    MAX_LINE_BYTES,
    accept_response,
    head_length,
    parse_request,
    refusal,
    websocket_key,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example


def head(*lines: str, first: str = "GET /streams/acme?token=a%2Fb HTTP/1.1") -> bytes:
    return "\r\n".join([first, *lines]).encode("latin-1") + b"\r\n\r\n"


GOOD = (
    "Host: 127.0.0.1:8080",
    "Upgrade: websocket",
    "Connection: keep-alive, Upgrade",
    f"Sec-WebSocket-Key: {KEY}",
    "Sec-WebSocket-Version: 13",
)


def test_a_browser_style_upgrade() -> None:
    req = parse_request(head(*GOOD, "X-Twilio-Signature:  sig= ", "Accept: a", "accept: b"))
    assert req.method == "GET" and req.target == "/streams/acme?token=a%2Fb"
    assert req.path == "/streams/acme" and req.query == "token=a%2Fb"
    assert req.headers["x-twilio-signature"] == "sig="  # optional whitespace trimmed
    assert req.headers["accept"] == "a, b"  # a repeated list header is one list
    assert websocket_key(req) == KEY


def test_accept_key_is_rfc_6455s_example() -> None:
    # RFC 6455 §1.3: this key gives s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
    response = accept_response(KEY)
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    assert response.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[:-2], 400, "empty line"),
        (head(*GOOD, first="GET /s HTTP/1.0"), 400, "HTTP/1.1"),
        (head(*GOOD, first="GET http://x/s HTTP/1.1"), 400, "request line"),
        (head(*GOOD, first="GET  /s HTTP/1.1"), 400, "request line"),
        (head(*GOOD, first="G(T /s HTTP/1.1"), 400, "request line"),
        (head(*GOOD, first="GET /s\x7f HTTP/1.1"), 400, "request line"),
        (head(*GOOD, first="GET /" + "a" * MAX_LINE_BYTES + " HTTP/1.1"), 414, "request line"),
        (head(*GOOD, " folded"), 400, "header line"),
        (head(*GOOD, "Name : v"), 400, "header line"),
        (head(*GOOD, "No colon"), 400, "header line"),
        (head(*GOOD, "X: a\x00b"), 400, "control character"),
        (head(*GOOD, "X: a\rb"), 400, "control character"),
        (head(*GOOD, "Host: other"), 400, "host sent twice"),
        (head(*GOOD, "Authorization: Bearer a", "Authorization: Bearer b"), 400, "twice"),
        (head(*GOOD, "Content-Length: 5"), 400, "no body"),
        (head(*GOOD, "Transfer-Encoding: chunked"), 400, "no body"),
        (head(*GOOD, *[f"X-{i}: v" for i in range(MAX_HEADERS)]), 431, "header lines"),
        (head(*GOOD, "X: " + "v" * MAX_LINE_BYTES), 431, "header line longer"),
    ],
)
def test_malformed_heads_are_refused(data: bytes, status: int, words: str) -> None:
    with pytest.raises(UpgradeRequestError) as info:
        parse_request(data)
    assert info.value.status == status and words in str(info.value)
    assert "a%2Fb" not in str(info.value)  # never the target (it may hold the secret)


def test_bare_lf_lines_are_one_malformed_line() -> None:
    with pytest.raises(UpgradeRequestError) as info:
        parse_request(b"GET /s HTTP/1.1\nHost: x\r\n\r\n")
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("drop", "extra", "first", "status"),
    [
        ("Upgrade: websocket", (), None, 426),
        ("Connection: keep-alive, Upgrade", ("Connection: keep-alive",), None, 426),
        ("Sec-WebSocket-Version: 13", ("Sec-WebSocket-Version: 8",), None, 426),
        ("Host: 127.0.0.1:8080", (), None, 400),
        (f"Sec-WebSocket-Key: {KEY}", ("Sec-WebSocket-Key: c2hvcnQ=",), None, 400),
        (f"Sec-WebSocket-Key: {KEY}", ("Sec-WebSocket-Key: !!!!",), None, 400),
        (f"Sec-WebSocket-Key: {KEY}", (), None, 400),
        ("", (), "POST /streams HTTP/1.1", 405),
    ],
)
def test_not_an_upgrade(drop: str, extra: tuple[str, ...], first: str | None, status: int) -> None:
    lines = [ln for ln in GOOD if ln != drop] + list(extra)
    req = parse_request(head(*lines, first=first or "GET /streams HTTP/1.1"))
    with pytest.raises(UpgradeRequestError) as info:
        websocket_key(req)
    assert info.value.status == status


def test_head_length_waits_then_limits() -> None:
    assert head_length(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    data = head(*GOOD)
    assert head_length(data + b"\x81\x80rest") == len(data)
    with pytest.raises(UpgradeRequestError) as info:
        head_length(b"GET /" + b"a" * MAX_HEAD_BYTES)
    assert info.value.status == 431


def test_refusal_is_a_whole_response_that_closes() -> None:
    out = refusal(503, "too many streams\n", {"Retry-After": "5"})
    top, body = out.split(b"\r\n\r\n", 1)
    assert top.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nConnection: close" in top and b"\r\nRetry-After: 5" in top
    assert b"Content-Length: 17" in top and body == b"too many streams\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 400))
def test_any_bytes_parse_or_are_refused(noise: bytes, at: int) -> None:
    data = bytearray(head(*GOOD))
    data[at % len(data) : at % len(data)] = noise
    try:
        req = parse_request(bytes(data))
        websocket_key(req)
    except UpgradeRequestError as exc:
        assert exc.status in (400, 405, 414, 426, 431)

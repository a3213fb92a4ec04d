"""Issue 13, finding 6 and Lows: connection caps, quiet 400s, and slow uploads cut off."""

from __future__ import annotations

import logging
import resource
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.service.conftest import (
    Archive,
    ServerThread,
    TlsFiles,
    basic,
    request,
    wait_for_audit,
)


def open_socket(st: ServerThread, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", st.port), timeout=10, source_address=(source, 0))


def wait_open(st: ServerThread, n: int) -> None:
    limiter = st.server.limiter
    assert limiter is not None
    deadline = time.monotonic() + 20  # a hang guard
    while limiter.statistics()["open"] < n:
        assert time.monotonic() < deadline, limiter.statistics()
        time.sleep(0.01)


def refused(sock: socket.socket) -> bytes:
    """What the server sent before closing (b'' if it said nothing)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        s.close()


def test_one_client_cannot_take_every_connection(
    start_rcs: Any, sockets: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    st = start_rcs(server_extra="max_connections_per_address = 8")
    caplog.set_level(logging.WARNING, logger="recstream.service")
    for _ in range(8):
        sockets.append(open_socket(st))
    wait_open(st, 8)
    extra = open_socket(st)
    answer = refused(extra)  # was: accepted, then held like the others
    extra.close()
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in answer
    # An HTTP client sees a proper answer; another client is served meanwhile.
    r = request(st.url, "GET", "/healthz", user=None)
    assert r.status == 503 and r.json()["error"] == "too_many_connections"
    conn = open_socket(st, "127.0.0.2")
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert refused(conn).startswith(b"HTTP/1.1 200 ")
    conn.close()
    assert any("refusing connections from 127.0.0.1" in m for m in caplog.messages)
    rec = wait_for_audit(st, lambda a: a["event"] == "connection_refused")
    assert (rec["client"], rec["reason"]) == ("127.0.0.1", "per_address")
    sockets.pop().close()  # one closes: room again
    deadline = time.monotonic() + 20
    while request(st.url, "GET", "/healthz", user=None).status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_total_cap_keeps_a_reserve_of_descriptors(
    start_rcs: Any, sockets: list[socket.socket]
) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    st = start_rcs(server_extra=f"connection_reserve = {soft - 4}")  # room for 4 connections
    assert st.server.limiter is not None and st.server.limiter.total == 4
    for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"):
        sockets.append(open_socket(st, source))
    wait_open(st, 4)
    late = open_socket(st, "127.0.0.4")
    assert refused(late).startswith(b"HTTP/1.1 503 ")
    late.close()
    rec = wait_for_audit(st, lambda a: a["event"] == "connection_refused")
    assert (rec["client"], rec["reason"]) == ("127.0.0.4", "total")


def test_over_tls_connections_count_from_the_accept(
    start_rcs: Any, sockets: list[socket.socket], tls_files: TlsFiles
) -> None:
    """Over TLS a connection is admitted at its accept, before the handshake (which a
    client may hold open for the whole idle timeout): connections that never send a
    ClientHello fill the budget like any other, the next is closed at once and audited,
    and a handshake that fails gives its slot back (round-4 review)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    st = start_rcs(
        server_extra=f'connection_reserve = {soft - 4}\ntls_cert = "{tls_files.cert}"\n'
        f'tls_key = "{tls_files.key}"'
    )
    limiter = st.server.limiter
    assert limiter is not None and limiter.total == 4 and st.url.startswith("https://")
    for source in ("127.0.0.2", "127.0.0.2", "127.0.0.3"):
        sockets.append(open_socket(st, source))  # TCP only: no handshake, ever
    wait_open(st, 3)  # counted while their handshakes are pending (were not, before)
    bad = open_socket(st, "127.0.0.5")
    bad.sendall(b"not a TLS ClientHello\r\n\r\n")  # a handshake that fails
    assert refused(bad) == b""  # closed by the TLS layer
    bad.close()
    deadline = time.monotonic() + 20  # a hang guard: its slot comes back
    while limiter.statistics()["open"] != 3:
        assert time.monotonic() < deadline, limiter.statistics()
        time.sleep(0.01)
    sockets.append(open_socket(st, "127.0.0.3"))
    wait_open(st, 4)
    late = open_socket(st, "127.0.0.4")
    assert refused(late) == b""  # no TLS yet to answer in: closed at once
    late.close()
    rec = wait_for_audit(st, lambda a: a["event"] == "connection_refused")
    assert (rec["client"], rec["reason"]) == ("127.0.0.4", "total")
    for held in sockets:
        held.close()
    sockets.clear()
    deadline = time.monotonic() + 20
    while limiter.statistics()["open"]:  # each pending handshake ends and is released
        assert time.monotonic() < deadline, limiter.statistics()
        time.sleep(0.01)
    r = request(st.url, "GET", "/healthz", user=None, tls=tls_files.client_context())
    assert r.status == 200


def test_connection_limiter_bookkeeping() -> None:
    from recstream.service.listener import ConnectionLimiter, descriptor_budget

    seen: list[tuple[str, str, int]] = []
    lim = ConnectionLimiter(2, 3, lambda *a: seen.append(a))
    assert lim.admit("a") and lim.admit("a") and not lim.admit("a")
    assert lim.admit("b") and not lim.admit("c")
    lim.release("a")
    assert lim.admit("c")
    assert seen == [("a", "per_address", 2), ("c", "total", 0)]
    assert lim.statistics() == {"open": 3, "addresses": 3, "refused": 2}
    proxied = ConnectionLimiter(1, 10, exempt=lambda addr: addr == "proxy")
    assert all(proxied.admit("proxy") for _ in range(5)) and proxied.admit("x")
    assert not proxied.admit("x")
    assert descriptor_budget(10**9) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE <script>alert(1)</script> HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\x00: <b>\r\n\r\n",
        b"POST /rcs/decrypt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz<i>\r\n",
    ],
)
def test_malformed_requests_get_a_quiet_json_400(
    rcs: ServerThread, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    s = open_socket(rcs)
    s.sendall(raw)
    answer = refused(s)
    s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400 ", b"HTTP/1.0 400 "))
    headers = head.decode().lower()
    assert (
        "content-type: application/json" in headers and "server: recstream\r\n" in headers + "\r\n"
    )
    assert "aiohttp" not in headers and "python" not in headers  # no version banner
    assert "x-content-type-options: nosniff" in headers and "content-security-policy" in headers
    assert b"<" not in body and b"alert" not in body  # nothing of the request echoed
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []  # no traceback


def test_a_trickled_upload_is_cut_off(start_rcs: Any, archive: Archive) -> None:
    st = start_rcs(server_extra="read_timeout = 2\nmin_body_rate = 1000")
    env = archive.sealed["acme/big.rsv"]
    s = open_socket(st)
    s.sendall(
        b"POST /rcs/decrypt HTTP/1.1\r\nHost: x\r\nAuthorization: %s\r\nContent-Length: %d\r\n\r\n"
        % (basic("alice").encode(), len(env))
    )
    answer = b""
    for i in range(60):  # one byte every 0.3 s: under the 2 s pause limit, forever
        s.sendall(env[i : i + 1])
        if select.select([s], [], [], 0.3)[0]:
            answer = s.recv(4096)
            break
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]  # was: never answered
    rec = wait_for_audit(st, lambda a: a["event"] == "decrypt")
    assert rec["result"] == "request_timeout"

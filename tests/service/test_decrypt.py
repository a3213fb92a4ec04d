"""POST /rcs/decrypt: streaming, tamper and truncation signalling, tenants, limits, disconnects."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
from typing import Any

import pytest

from recstream.format import Header, MediaKind, parse_header
from tests.conftest import Party
from tests.service.conftest import (
    Archive,
    Keys,
    ServerThread,
    TlsFiles,
    basic,
    connect,
    request,
    seal,
    wait_for_audit,
)


def chunked_request(
    server: ServerThread, body: bytes, user: str = "alice"
) -> http.client.HTTPResponse:
    """POST ``body`` with chunked transfer encoding (no Content-Length)."""
    conn = connect(server.url)
    conn.putrequest("POST", "/rcs/decrypt")
    conn.putheader("Authorization", basic(user))
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for i in range(0, len(body), 50_000):
        part = body[i : i + 50_000]
        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
    conn.send(b"0\r\n\r\n")
    return conn.getresponse()


def test_decrypts_with_content_length_and_type(rcs: ServerThread, archive: Archive) -> None:
    r = request(rcs.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
    assert r.status == 200
    assert r.body == archive.plain["acme/call-1.rsv"]
    assert r.headers["Content-Type"] == "audio/wav"
    assert int(r.headers["Content-Length"]) == len(archive.plain["acme/call-1.rsv"])
    assert r.headers["Cache-Control"] == "no-store"


def test_decrypts_large_chunked_body(rcs: ServerThread, archive: Archive) -> None:
    resp = chunked_request(rcs, archive.sealed["acme/big.rsv"])
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"  # length unknown up front
    assert resp.read() == archive.plain["acme/big.rsv"]


def test_audit_record_names_user_recording_cert_and_bytes(
    rcs: ServerThread, archive: Archive, keys: Keys
) -> None:
    request(rcs.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1-screen.rsv"], user="mo")
    rec = wait_for_audit(rcs, lambda r: r["event"] == "decrypt" and r["user"] == "mo")
    assert rec["auth"] == "basic" and rec["client"] == "127.0.0.1"
    assert rec["recording"] == "call-1" and rec["tenant"] == "acme"
    assert rec["cert_id"] == keys.acme.cert_id
    assert rec["bytes"] == len(archive.plain["acme/call-1-screen.rsv"])
    assert rec["result"] == "ok"
    line = rcs.config.audit_log.read_text()
    assert archive.plain["acme/call-1-screen.rsv"][:16].hex() not in line


def test_other_tenant_is_refused_before_any_byte(rcs: ServerThread, archive: Archive) -> None:
    r = request(rcs.url, "POST", "/rcs/decrypt", archive.sealed["globex/call-9.rsv"], user="alice")
    assert r.status == 403
    assert r.json()["error"] == "forbidden"
    assert "globex" in r.json()["message"]
    rec = wait_for_audit(
        rcs, lambda r: r["event"] == "decrypt" and r["tenant"] == "globex" and r["user"] == "alice"
    )
    assert rec["result"] == "forbidden" and rec["bytes"] == 0 and "cert_id" not in rec
    # A user granted both tenants decrypts it.
    r = request(rcs.url, "POST", "/rcs/decrypt", archive.sealed["globex/call-9.rsv"], user="mo")
    assert r.status == 200 and r.body == archive.plain["globex/call-9.rsv"]


def test_tamper_after_streaming_started_aborts_the_response(
    rcs: ServerThread, archive: Archive
) -> None:
    env = bytearray(archive.sealed["acme/big.rsv"])
    env[len(env) // 2] ^= 1  # a segment in the middle
    conn = connect(rcs.url)
    conn.request("POST", "/rcs/decrypt", body=bytes(env), headers={"Authorization": basic("alice")})
    resp = conn.getresponse()
    assert resp.status == 200  # plaintext had started: the status was sent
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    got = info.value.partial
    plain = archive.plain["acme/big.rsv"]
    assert 0 < len(got) < len(plain)
    assert got == plain[: len(got)]  # everything released had authenticated
    rec = wait_for_audit(
        rcs, lambda r: r["event"] == "decrypt" and r.get("result") == "integrity_failure"
    )
    assert rec["bytes"] >= len(got)


def test_tamper_in_first_segment_is_a_4xx_before_any_byte(
    rcs: ServerThread, archive: Archive
) -> None:
    env = bytearray(archive.sealed["acme/call-1-screen.rsv"])  # one segment only
    env[-100] ^= 1
    r = request(rcs.url, "POST", "/rcs/decrypt", bytes(env))
    assert r.status == 422
    assert r.json()["error"] == "integrity_failure"
    assert "segment 0" in r.json()["message"]


def test_header_tamper_is_refused(rcs: ServerThread, archive: Archive) -> None:
    env = bytearray(archive.sealed["acme/call-1.rsv"])
    env[40] ^= 1  # inside the metadata: the header MAC fails (or the metadata no longer parses)
    r = request(rcs.url, "POST", "/rcs/decrypt", bytes(env))
    assert r.status in (403, 422)
    env = bytearray(archive.sealed["acme/call-1.rsv"])
    env[400] ^= 1  # inside the wrapped key
    r = request(rcs.url, "POST", "/rcs/decrypt", bytes(env))
    assert r.status == 422 and r.json()["error"] in ("key_failure", "integrity_failure")


def test_truncation_known_from_content_length_is_a_4xx(rcs: ServerThread, archive: Archive) -> None:
    env = archive.sealed["acme/big.rsv"]
    header = parse_header(env)
    assert isinstance(header, Header)
    cut = env[: header.length + 56 + 7 * 16400 + 5]  # 7 segments and 5 bytes: never complete
    r = request(rcs.url, "POST", "/rcs/decrypt", cut)
    assert r.status == 422 and r.json()["error"] == "truncated"
    assert "7 complete segment" in r.json()["message"]


def test_truncation_seen_only_at_the_end_aborts(rcs: ServerThread, archive: Archive) -> None:
    env = archive.sealed["acme/big.rsv"]
    resp = chunked_request(rcs, env[: len(env) - 5000])  # no Content-Length: found at the end
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead):
        resp.read()


def test_header_cut_short_is_truncated(rcs: ServerThread, archive: Archive) -> None:
    r = request(rcs.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"][:100])
    assert r.status == 422 and r.json()["error"] == "truncated"


def test_not_an_envelope(rcs: ServerThread) -> None:
    r = request(rcs.url, "POST", "/rcs/decrypt", b"RIFF....WAVEfmt " * 100)
    assert r.status == 422 and r.json()["error"] == "not_an_envelope"


def test_no_key_for_the_recording(rcs: ServerThread) -> None:
    stranger = Party("stranger")
    env = seal(
        stranger, b"x" * 100, rid="r", tenant="acme", kind=MediaKind.VOICE, mtype="audio/wav"
    )
    r = request(rcs.url, "POST", "/rcs/decrypt", env)
    assert r.status == 422
    body = r.json()
    assert body["error"] == "no_matching_key"
    assert stranger.cert_id in body["message"]
    assert "offered" not in body["message"]  # the server's own key IDs are not disclosed


def test_declared_oversized_body_is_413(start_rcs: Any, archive: Archive) -> None:
    st = start_rcs(server_extra="max_body_bytes = 100000")
    r = request(st.url, "POST", "/rcs/decrypt", archive.sealed["acme/call-1.rsv"])
    assert r.status == 413 and r.json()["error"] == "payload_too_large"
    # Chunked, so the size is known only while reading: refused once over the limit.
    resp = chunked_request(st, archive.sealed["acme/big.rsv"])
    if resp.status == 413:
        assert resp.getheader("Connection") == "close"  # its body was not read
        assert json.loads(resp.read())["error"] == "payload_too_large"
    else:  # plaintext had started before the limit was crossed: aborted
        with pytest.raises(http.client.IncompleteRead):
            resp.read()
    rec = wait_for_audit(st, lambda r: r.get("result") == "payload_too_large")
    assert rec["user"] == "alice"


def test_a_refused_body_is_not_read_and_its_connection_is_closed(
    start_rcs: Any, archive: Archive
) -> None:
    """A body declared over the limit is refused at once (413, ``Connection: close``)
    and the server closes the connection instead of reading it: the client sees the
    response and its end (FIN) while still sending, and its sending fails well before
    128 MiB (the server drains at most a few MiB that were in flight, then closes).
    Before, aiohttp kept the connection and read the refused body for up to 10 s,
    and a server shutting down meanwhile waited out its grace period."""
    st = start_rcs(server_extra="max_body_bytes = 100000")
    s = socket.create_connection(("127.0.0.1", st.port), timeout=60)  # hang guard only
    s.sendall(
        f"POST /rcs/decrypt HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('alice')}\r\n"
        f"Content-Length: {10**12}\r\n\r\n".encode()
    )
    total, block = 128 << 20, b"\0" * (1 << 20)
    sent = [0]
    failed: list[OSError] = []

    def upload() -> None:  # like a client that sends its whole body before reading
        try:
            while sent[0] < total:
                s.sendall(block)
                sent[0] += len(block)
        except OSError as exc:
            failed.append(exc)

    sender = threading.Thread(target=upload)
    sender.start()
    reply = b""
    try:
        while chunk := s.recv(65536):  # until the server's FIN
            reply += chunk
    except ConnectionResetError:
        pass  # the close that follows the drain may already have reset it
    sender.join(60)
    s.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"\r\nConnection: close" in head
    assert json.loads(body)["error"] == "payload_too_large"
    assert not sender.is_alive()
    assert failed and sent[0] < total, f"the server read {sent[0]} bytes of a refused body"
    rec = wait_for_audit(st, lambda r: r.get("result") == "payload_too_large")
    assert rec["user"] == "alice"
    assert request(st.url, "GET", "/healthz", user=None).status == 200


def test_a_refused_body_over_tls_still_gets_its_413(
    start_rcs: Any, archive: Archive, tls_files: TlsFiles
) -> None:
    """Over TLS too (no half-close there): a client that sends its whole body before
    reading, as http.client does, gets the 413 with ``Connection: close``, not a reset."""
    tls = f'tls_cert = "{tls_files.cert}"\ntls_key = "{tls_files.key}"'
    st = start_rcs(server_extra=f"max_body_bytes = 100000\n{tls}")
    envelope = archive.sealed["acme/big.rsv"]  # 3 MiB declared, over the limit
    r = request(st.url, "POST", "/rcs/decrypt", envelope, tls=tls_files.client_context())
    assert r.status == 413 and r.json()["error"] == "payload_too_large"
    assert r.headers["Connection"] == "close"


def test_client_disconnecting_mid_stream(start_rcs: Any, huge: Archive) -> None:
    st = start_rcs()
    env = huge.sealed["acme/huge.rsv"]
    s = socket.create_connection(("127.0.0.1", st.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = (
        f"POST /rcs/decrypt HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('alice')}\r\n"
        f"Content-Length: {len(env)}\r\n\r\n"
    ).encode()

    def upload() -> None:
        with contextlib.suppress(OSError):
            s.sendall(head + env)

    sender = threading.Thread(target=upload)
    sender.start()
    assert s.recv(1024).startswith(b"HTTP/1.1 200")  # streaming has started
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.shutdown(socket.SHUT_RDWR)
    s.close()  # gone, with a reset
    sender.join(10)
    rec = wait_for_audit(st, lambda r: r["event"] == "decrypt", timeout=10)
    assert rec["result"] == "client_disconnected"
    assert 0 < rec["bytes"] < len(huge.plain["acme/huge.rsv"])
    assert request(st.url, "GET", "/healthz", user=None).status == 200
    metrics = st.metrics()
    assert "recstream_decryptions_in_flight 0" in metrics
    assert 'result="client_disconnected"' in metrics


def test_slow_body_sender_times_out(start_rcs: Any, archive: Archive) -> None:
    st = start_rcs(server_extra="read_timeout = 0.3")
    env = archive.sealed["acme/call-1.rsv"]
    s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    s.sendall(
        (
            f"POST /rcs/decrypt HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('alice')}\r\n"
            f"Content-Length: {len(env)}\r\n\r\n"
        ).encode()
        + env[:500]
    )
    data = s.recv(4096)
    s.close()
    assert data.startswith(b"HTTP/1.1 408")
    assert b"request_timeout" in data


def test_slow_header_sender_is_disconnected(start_rcs: Any) -> None:
    st = start_rcs(server_extra="idle_timeout = 0.3")
    s = socket.create_connection(("127.0.0.1", st.port), timeout=5)
    s.sendall(b"POST /rcs/decrypt HTTP/1.1\r\nHost: x\r\n")
    t = time.monotonic()
    assert s.recv(1024) == b""  # closed by the server
    assert time.monotonic() - t < 3
    s.close()


def test_stalled_reader_times_out(start_rcs: Any, huge: Archive) -> None:
    st = start_rcs(server_extra="write_timeout = 0.3", root=huge.root)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", st.port))
    s.sendall(
        b"GET /rcs/recordings/acme/huge.rsv HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: {basic('alice')}\r\n\r\n".encode()
    )
    rec = wait_for_audit(st, lambda r: r["event"] == "playback", timeout=10)
    s.close()
    assert rec["result"] == "client_timeout"
    assert rec["bytes"] < len(huge.plain["acme/huge.rsv"])


def test_request_header_limits(rcs: ServerThread) -> None:
    r = request(rcs.url, "GET", "/healthz", headers={"X-Big": "a" * 9000}, user=None)
    assert r.status in (400, 431)
    many = {f"X-H{i}": "v" for i in range(100)}
    r = request(rcs.url, "GET", "/healthz", headers=many, user=None)
    assert r.status in (400, 431)


def test_error_bodies_carry_no_plaintext_or_key_material(
    rcs: ServerThread, archive: Archive
) -> None:
    env = bytearray(archive.sealed["acme/call-1-screen.rsv"])
    env[-100] ^= 1
    r = request(rcs.url, "POST", "/rcs/decrypt", bytes(env))
    plain = archive.plain["acme/call-1-screen.rsv"]
    assert plain[:32] not in r.body and plain[:32].hex().encode() not in r.body
    assert b"PRIVATE" not in r.body


def test_health_metrics_and_security_headers(rcs: ServerThread, archive: Archive) -> None:
    r = request(rcs.url, "GET", "/healthz", user=None)
    assert r.status == 200 and r.json() == {"status": "ok", "mode": "rcs"}
    request(rcs.url, "GET", "/rcs/recordings/acme/call-1.rsv", headers={"Range": "bytes=0-9"})
    r = request(rcs.url, "GET", "/metrics", user="olga")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = r.body.decode()
    for name in (
        "recstream_decryptions_total",
        "recstream_decrypted_bytes_total",
        "recstream_auth_failures_total",
        "recstream_decrypt_duration_seconds_bucket",
    ):
        assert name in text
    assert 'recstream_decryptions_total{endpoint="playback",result="ok"}' in text
    # Streamed responses carry the security headers too, and no framework banner.
    r = request(rcs.url, "GET", "/rcs/recordings/acme/call-1.rsv", headers={"Range": "bytes=0-9"})
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Server"] == "recstream"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]

"""Security review fixes of the SRS: TCP admission and idle timeout (H1), errors that
must not escape (M1), a reused Call-ID (M2), ``[sip] allow`` (M6), random RTP ports
(L3) and ASCII-only numbers (L1).  Real servers on loopback; readiness, not sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from recstream.errors import ConfigError
from recstream.frontdoor.config import parse_listen
from recstream.siprec import offer, sdp
from recstream.siprec.config import load_config
from recstream.siprec.metadata import MetadataError, parse_metadata
from recstream.siprec.metrics import exposition
from recstream.siprec.server import PortPool, SrsServer
from tests.rlimits import open_file_limits, with_nofile
from tests.siprec.helpers import (
    HANG_GUARD,
    METADATA,
    SIPREC_HEADERS,
    SIPREC_TYPE,
    SipClient,
    Srs,
    decrypt_tracks,
    free_rtp_range,
    payloads,
    request,
    rtp_packet,
    siprec_body,
    to_tag,
    write_config,
)

BOGUS = siprec_body([("1", 4000)]).replace('encoding="UTF-8"', 'encoding="x-bogus"')


def _id() -> str:
    return uuid.uuid4().hex


def _invite(local: tuple[str, int], srs: Srs, call_id: str, branch: str, **kw: str) -> bytes:
    return request(
        "INVITE",
        srs.sip,
        local,
        call_id,
        branch=branch,
        body=kw.pop("body", siprec_body([("1", 4000)])),
        content_type=SIPREC_TYPE,
        headers=SIPREC_HEADERS,
        **kw,
    )


def _final(client: SipClient) -> bytes:
    while True:
        r = client.next()
        if b" 100 " not in r.split(b"\r\n", 1)[0]:
            return r


def _status(r: bytes) -> int:
    return int(r.split(b" ", 2)[1])


def _tcp(srs: Srs, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(HANG_GUARD)
    s.bind((source, 0))
    s.connect(srs.sip)
    return s


_PENDING: dict[int, bytes] = {}  # bytes read past the last message, per socket


def _read_responses(s: socket.socket, n: int) -> list[bytes]:
    """``n`` SIP messages' heads (bodies skipped by Content-Length) from a TCP stream."""
    buf, out = _PENDING.pop(id(s), b""), []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65535)
            assert chunk, f"connection closed after {out}"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(buf) < length:
            buf += s.recv(65535)
        buf = buf[length:]
        out.append(head)
    _PENDING[id(s)] = buf
    return out


def _options_ok(s: socket.socket, srs: Srs) -> bool:
    """True if the connection is served (OPTIONS 200), False if the server closed it."""
    try:
        s.sendall(
            request(
                "OPTIONS",
                srs.sip,
                s.getsockname(),
                _id(),
                branch=f"z9hG4bK{_id()}",
                transport="TCP",
            )
        )
        return _read_responses(s, 1)[0].startswith(b"SIP/2.0 200 ")
    except (AssertionError, ConnectionResetError, BrokenPipeError):  # not a timeout: a hang
        return False


def _closed_by_server(s: socket.socket) -> bool:
    """Wait (hang guard only) for the server's side: EOF or reset."""
    try:
        return s.recv(65535) == b""
    except ConnectionResetError:
        return True


def _wait_stderr(srs: Srs, text: str) -> str:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        joined = "".join(srs.stderr)
        if text in joined:
            return joined
        time.sleep(0.02)  # polling a log for readiness, not a timing assumption
    raise AssertionError(f"{text!r} never logged: {''.join(srs.stderr)[-2000:]}")


@contextlib.contextmanager
def _server(tmp_path: Path, sip: str = "", rtp: str = "") -> Iterator[Srs]:
    srs = Srs.start(write_config(tmp_path, sip=sip, rtp=rtp))
    try:
        yield srs
    finally:
        srs.stop()


# --- H1: connection cap, descriptor reserve, idle timeout ----------------------------


def test_tcp_connections_are_capped_per_address_and_refusals_logged(tmp_path: Path) -> None:
    with _server(tmp_path, sip="max_connections_per_address = 3") as srs:
        held = [_tcp(srs) for _ in range(3)]
        assert all(_options_ok(s, srs) for s in held)  # each is admitted: it is answered
        extra = _tcp(srs)
        assert _closed_by_server(extra)
        log = _wait_stderr(srs, "refusing connections from 127.0.0.1")
        assert "per-address limit" in log and "Traceback" not in log
        # UDP from the same address still records, and a freed slot is reusable.
        client = SipClient(srs)
        client.send(_invite(client.local, srs, _id(), "z9hG4bKudp"))
        assert _status(_final(client)) == 200
        held.pop().close()
        while True:  # the release is seen once the server reads the close: retry till then
            again = _tcp(srs)
            if _options_ok(again, srs):
                break
            again.close()
        for s in [*held, extra, again]:
            s.close()


def test_descriptor_reserve_keeps_recordings_possible(tmp_path: Path) -> None:
    """The review's repro, smaller: a 160-descriptor limit and 150 idle connections."""
    srs = Srs.start(write_config(tmp_path))  # the defaults: 32 per address, reserve 64
    try:
        _, hard = resource.prlimit(srs.proc.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(srs.proc.pid, resource.RLIMIT_NOFILE, (160, hard))  # the SRS only
        socks = [_tcp(srs, f"127.0.0.{1 + i % 5}") for i in range(150)]  # 30 per address
        admitted = sum(_options_ok(s, srs) for s in socks)
        assert 0 < admitted < 150
        _wait_stderr(srs, "descriptor reserve reached")
        client = SipClient(srs)
        client.send(_invite(client.local, srs, _id(), "z9hG4bKlegit"))
        assert _status(_final(client)) == 200  # before: 500 (cannot record)
        for s in socks:
            s.close()
    finally:
        srs.stop()


def test_idle_tcp_connections_are_closed_but_not_those_with_a_call(tmp_path: Path) -> None:
    with _server(tmp_path, sip="tcp_idle_timeout = 1") as srs:
        # A call over TCP, then silence on that connection.
        caller = _tcp(srs)
        local = caller.getsockname()
        call_id = _id()
        caller.sendall(_invite(local, srs, call_id, "z9hG4bKc1", transport="TCP"))
        ok = _read_responses(caller, 1)[0]
        if b" 100 " in ok.split(b"\r\n")[0]:  # 100 Trying when the answer takes 200 ms
            ok = _read_responses(caller, 1)[0]
        assert ok.startswith(b"SIP/2.0 200 ")
        tag = to_tag(ok)
        caller.sendall(
            request("ACK", srs.sip, local, call_id, branch="z9hG4bKa1", to_tag=tag, transport="TCP")
        )
        # Opened after the call's last message: once these are closed, the caller has been
        # silent for longer than the timeout too.
        silent = _tcp(srs)
        trickle = _tcp(srs)
        trickle.sendall(b"OPTIONS sip:srs SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1")  # never ends
        assert _closed_by_server(silent)
        assert _closed_by_server(trickle)
        caller.sendall(
            request(
                "BYE",
                srs.sip,
                local,
                call_id,
                branch="z9hG4bKb1",
                cseq=2,
                to_tag=tag,
                transport="TCP",
            )
        )
        assert _read_responses(caller, 1)[0].startswith(b"SIP/2.0 200 ")
        assert srs.wait_for("call_end")["reason"] == "bye"
        caller.close()


# --- M1: an exception while handling a message ---------------------------------------


def test_unknown_xml_encoding_is_bad_metadata() -> None:
    body = METADATA.replace('encoding="UTF-8"', 'encoding="x-bogus"').encode()
    with pytest.raises(MetadataError, match="not acceptable XML"):
        parse_metadata(body)


def test_unknown_xml_encoding_gets_400_and_the_connection_goes_on(tmp_path: Path) -> None:
    with _server(tmp_path) as srs:
        client = SipClient(srs)
        client.send(_invite(client.local, srs, _id(), "z9hG4bKbu", body=BOGUS))
        assert _status(_final(client)) == 400
        t = _tcp(srs)
        local = t.getsockname()
        t.sendall(
            _invite(local, srs, _id(), "z9hG4bKbt", body=BOGUS, transport="TCP")
            + request("OPTIONS", srs.sip, local, _id(), branch="z9hG4bKot", transport="TCP")
        )
        first, second = _read_responses(t, 2)
        assert first.startswith(b"SIP/2.0 400 ") and second.startswith(b"SIP/2.0 200 ")
        t.close()
    assert "Traceback" not in "".join(srs.stderr)


def test_an_unexpected_exception_is_answered_500_counted_and_survived(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the user agent is simulated (it cannot be reached from outside otherwise)."""
    from recstream.frontdoor.recorder import open_hook

    config = load_config(write_config(tmp_path))

    async def main() -> None:
        hook = await open_hook(config.recordings, config.keystore)
        server = SrsServer(config, hook)
        host, port = await server.start()
        assert server.ua is not None
        real = server.ua.handle

        def buggy(parsed, dest, now):  # type: ignore[no-untyped-def]
            if parsed.call_id.startswith("boom"):
                raise RuntimeError("simulated bug")
            return real(parsed, dest, now)

        server.ua.handle = buggy  # type: ignore[method-assign]
        try:
            reader, writer = await asyncio.open_connection(host, port)
            local = writer.get_extra_info("sockname")[:2]
            writer.write(
                request("OPTIONS", (host, port), local, "boom-1", branch="zK1", transport="TCP")
                + request("OPTIONS", (host, port), local, "fine", branch="zK2", transport="TCP")
            )
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
            second = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
            assert first.startswith(b"SIP/2.0 500 ") and b"boom-1" in first
            assert second.startswith(b"SIP/2.0 200 ") and b"fine" in second
            loop = asyncio.get_running_loop()
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            udp.setblocking(False)
            udp.sendto(
                request("OPTIONS", (host, port), udp.getsockname(), "boom-2", branch="z9hG4bK3"),
                (host, port),
            )
            data = await asyncio.wait_for(loop.sock_recv(udp, 65535), HANG_GUARD)
            assert data.startswith(b"SIP/2.0 500 ")
            assert server.totals.internal_errors == 2
            text = exposition(server)[1].decode()
            assert "recstream_srs_internal_errors_total 2.0" in text
            # The RTP path: a failing packet is counted, the next one is recorded.
            udp.sendto(_invite(udp.getsockname(), _At(host, port), "rtp-call", "zK4"), (host, port))
            ok = b""
            while not ok.startswith(b"SIP/2.0 200 "):
                ok = await asyncio.wait_for(loop.sock_recv(udp, 65535), HANG_GUARD)
            rtp_port = int(ok.split(b"m=audio ", 1)[1].split(b" ", 1)[0])
            media = server._media

            def broken(live: object, out: bytes) -> None:
                raise RuntimeError("simulated bug")

            server._media = broken  # type: ignore[assignment,method-assign]
            audio = payloads(2, seed=5)
            udp.sendto(rtp_packet(0, 0, 9, audio[0], pt=0), (host, rtp_port))
            while server.totals.internal_errors < 3:
                await asyncio.sleep(0.01)
            server._media = media  # type: ignore[method-assign]
            udp.sendto(rtp_packet(1, 160, 9, audio[1], pt=0), (host, rtp_port))
            while not any(live.bytes_in for live in server.live.values()):
                await asyncio.sleep(0.01)
            udp.close()
            writer.close()
        finally:
            await server.aclose()

    with caplog.at_level(logging.ERROR, logger="recstream.siprec"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert len(lines) == 1 and "RuntimeError" in lines[0]  # one line a minute, no message text
    assert "simulated bug" not in caplog.text


class _At:
    """What :func:`_invite` needs of an :class:`Srs`: its SIP address."""

    def __init__(self, host: str, port: int) -> None:
        self.sip = (host, port)


# --- M2: a reused Call-ID ------------------------------------------------------------


def test_a_reused_dialog_id_neither_replaces_the_call_nor_passes_max_calls(
    tmp_path: Path,
) -> None:
    with _server(tmp_path, sip="max_calls = 2\nrtp_timeout = 30") as srs:
        client = SipClient(srs)
        first = _invite(client.local, srs, "same", "z9hG4bK0")
        client.send(first)
        ok = _final(client)
        assert _status(ok) == 200
        client.send(first)  # a retransmission: the same 200
        assert _final(client) == ok
        for i in range(1, 6):  # the same dialog ID on new branches: merged requests
            client.send(_invite(client.local, srs, "same", f"z9hG4bK{i}"))
            assert _status(_final(client)) == 482
        client.send(_invite(client.local, srs, "second", "z9hG4bKs"))
        assert _status(_final(client)) == 200
        client.send(_invite(client.local, srs, "third", "z9hG4bKt"))
        assert _status(_final(client)) == 503  # two calls open, whatever their Call-IDs
        for call_id, r in (("same", ok),):
            client.send(
                request(
                    "BYE",
                    srs.sip,
                    client.local,
                    call_id,
                    branch="z9hG4bKbye",
                    cseq=2,
                    to_tag=to_tag(r),
                )
            )
            client.expect(200, "BYE")
        assert srs.wait_for("call_end")["reason"] == "bye"


# --- M6: [sip] allow -----------------------------------------------------------------


def test_sip_from_outside_allow_is_refused(tmp_path: Path) -> None:
    with _server(tmp_path, sip='allow = ["127.0.0.2/32"]') as srs:
        outsider = SipClient(srs)  # 127.0.0.1
        outsider.send(_invite(outsider.local, srs, _id(), "z9hG4bKout"))
        insider = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        insider.bind(("127.0.0.2", 0))
        insider.settimeout(HANG_GUARD)
        insider.sendto(
            request("OPTIONS", srs.sip, insider.getsockname(), _id(), branch="z9hG4bKin"), srs.sip
        )
        assert insider.recv(65535).startswith(b"SIP/2.0 200 ")
        outsider.sock.setblocking(False)  # sent earlier, so any answer would be here by now
        with pytest.raises(BlockingIOError):
            outsider.sock.recv(65535)
        t = _tcp(srs)
        t.sendall(_invite(t.getsockname(), srs, _id(), "z9hG4bKtcp", transport="TCP"))
        assert _read_responses(t, 1)[0].startswith(b"SIP/2.0 403 ")
        t.close()
        insider.close()
        assert srs.wait_for("call_rejected", status=403)
        with urllib.request.urlopen(
            f"http://{srs.ready['metrics']}/metrics", timeout=HANG_GUARD
        ) as resp:
            text = resp.read().decode()
        assert 'recstream_srs_refused_total{what="sip_source"} 2.0' in text  # UDP + TCP


def test_rtp_from_outside_allow_is_dropped(tmp_path: Path) -> None:
    with _server(tmp_path, sip='allow = ["127.0.0.1/32"]') as srs:
        client = SipClient(srs)
        call_id = _id()
        client.send(_invite(client.local, srs, call_id, "z9hG4bKr"))
        ok = _final(client)
        assert _status(ok) == 200
        port = int(
            next(ln for ln in ok.decode().splitlines() if ln.startswith("m=audio")).split()[1]
        )
        start = srs.wait_for("call_start")
        foreign, legit = payloads(5, seed=1), payloads(10, seed=2)
        for source, audio, ssrc in (("127.0.0.3", foreign, 7), ("127.0.0.1", legit, 8)):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((source, 0))
            for i, p in enumerate(audio):
                s.sendto(rtp_packet(i, i * 160, ssrc, p, pt=0), ("127.0.0.1", port))
            s.close()
        client.send(
            request(
                "BYE", srs.sip, client.local, call_id, branch="z9hG4bKrb", cseq=2, to_tag=to_tag(ok)
            )
        )
        client.expect(200, "BYE")
        srs.wait_for("call_end", recording_id=start["recording_id"])
        path = next(p for p in srs.recordings() if p.parent.name == start["recording_id"])
        got = decrypt_tracks(path, srs.directory)
        assert bytes(got.tracks[1].audio) == b"".join(legit)  # before: the injected audio


def test_allow_is_required_off_loopback_and_checked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    text = cfg.read_text()
    cfg.write_text(text.replace('listen = "127.0.0.1:0"', 'listen = "0.0.0.0:5060"', 1))
    with pytest.raises(ConfigError, match=r"\[sip\] allow is required"):
        load_config(cfg)
    cfg.write_text(text.replace("[sip]\n", '[sip]\nallow = ["10.0.0.0/33", "::1/128"]\n', 1))
    with pytest.raises(ConfigError, match=r"10\.0\.0\.0/33"):
        load_config(cfg)
    cfg.write_text(text.replace("[sip]\n", '[sip]\nallow = ["192.0.2.0/24"]\n', 1))
    conf = load_config(cfg)
    assert conf.allows("192.0.2.7") and not conf.allows("127.0.0.1")
    cfg.write_text(text)  # loopback listen, no allow: loopback only
    conf = load_config(cfg)
    assert conf.allows("127.0.0.1") and conf.allows("::1") and not conf.allows("192.0.2.7")


# --- L3: random RTP ports --------------------------------------------------------------


def test_rtp_ports_are_not_handed_out_in_sequence() -> None:
    low, high = free_rtp_range(2000)
    pool = PortPool("127.0.0.1", low, high)
    got = [pool.allocate() for _ in range(20)]
    try:
        assert all(p is not None and low <= p <= high and p % 2 == 0 for p in got)
        assert len(set(got)) == 20
        steps = [b - a for a, b in itertools.pairwise(got) if a and b]
        assert steps.count(2) < 5  # in sequence before: every step was 2
    finally:
        for p in got:
            if p is not None:
                pool.release(p)


# --- L1: ASCII digits with a bound -----------------------------------------------------


def test_payload_types_are_ascii_digits_with_a_bound() -> None:
    assert sdp.payload_type("0") == 0 and sdp.payload_type("101") == 101
    for bad in ("\u00b2", "1\u00b2", "\u0661", "0" * 4000, "128", "", "-1", " 8"):
        assert sdp.payload_type(bad) == -1, bad
    m = sdp.MediaDescription("audio", 4000, "RTP/AVP", ("\u00b2", "8"), None, "1", None)
    assert m.codec() == (8, "PCMA", 8000)  # before: ValueError from int("\u00b2")
    assert m.telephone_event() is None
    assert offer._first_pt(m) == 0


def test_listen_ports_are_ascii_digits_with_a_bound() -> None:
    assert parse_listen("127.0.0.1:5060") == ("127.0.0.1", 5060)
    for bad in (
        "127.0.0.1:\u00b2",
        "127.0.0.1:50\u00b2",
        "127.0.0.1:" + "0" * 5000 + "1",
        "127.0.0.1:000005060",
    ):
        with pytest.raises(ValueError, match="must be host:port"):
            parse_listen(bad)


# --- open files: the limit raised for max_calls, or max_calls lowered to it ----------


def test_the_open_file_limit_is_raised_for_max_calls(tmp_path: Path) -> None:
    srs = Srs.start(write_config(tmp_path, sip="max_calls = 500"), nofile=(200, 8192))
    try:
        # 3 a call (two RTP sockets and the recording) + connection_reserve 64 + 64.
        assert open_file_limits(srs.proc.pid) == (3 * 500 + 64 + 64, 8192)
        assert not [d for d in srs.seen if d["event"] == "warning"]
    finally:
        srs.stop()


def test_a_low_hard_limit_lowers_max_calls_and_says_so(tmp_path: Path) -> None:
    srs = Srs.start(write_config(tmp_path, sip="rtp_timeout = 30"), nofile=(140, 140))
    try:
        (warning,) = [d for d in srs.seen if d["event"] == "warning"]
        held = (140 - 128) // 3  # 4 calls
        assert f"holds {held} calls per process, not the 1000 of max_calls" in warning["message"]
        assert "ulimit -n 3128" in warning["message"]
        client = SipClient(srs)
        for i in range(held):
            client.send(_invite(client.local, srs, f"call-{i}", f"z9hG4bK{i}"))
            assert _status(_final(client)) == 200
        client.send(_invite(client.local, srs, "one-too-many", "z9hG4bKx"))
        assert _status(_final(client)) == 503  # refused, not a recording that cannot open
        client.close()
    finally:
        srs.stop()


def test_a_limit_that_holds_no_call_stops_the_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = write_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "recstream", "srs", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        cwd=config.parent,
        preexec_fn=with_nofile((100, 100)),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "the open-file limit (100) leaves no room for a call" in done.stderr
    assert "Traceback" not in done.stderr

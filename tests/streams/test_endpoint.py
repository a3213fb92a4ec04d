"""What a simulator cannot do, against the real ``recstream streams`` process: wrong
credentials, signatures, tenant parameters, malformed messages, a cut connection, the
concurrency cap, an oversized message, the idle timeout and SIGTERM.

Each broken stream must end with its recording finalised and decoding as incomplete,
holding exactly what was sent before the break, and the server must go on recording.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from recstream import tracks
from recstream.streams.auth import twilio_signature
from tests.streams import wsclient as wc
from tests.streams.helpers import (
    PHONE,
    SECRETS,
    TWILIO_TOKEN,
    Env,
    Server,
    audit_entry,
    decrypt_tracks,
    make_env,
    running,
)
from tests.tls_helpers import make_tls_files

ACME = SECRETS["acme"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return make_env(tmp_path_factory.mktemp("endpoint"))


@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[Server]:
    yield from running(env.config(idle_timeout=60), env.root / "server.log")


def refusals(env: Env) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, env.audit_lines()) if e["event"] == "stream_refused"]


def recorded(env: Env, c: wc.Call) -> tuple[dict[str, Any], Any]:
    entry = audit_entry(env, c.stream_sid)
    assert entry["file"], entry
    return entry, decrypt_tracks(env, Path(entry["file"]))


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "headers", "reason"),
    [
        ("", None, "no credentials"),
        ("?token=acme-shared-secret-0123456780", None, "bad secret"),
        ("?token=" + SECRETS["globex"], None, None),  # globex's secret on acme's path
        ("/nosuch?token=" + ACME, None, "unknown tenant in path"),
        ("?token=" + ACME, {"Authorization": "Bearer " + ACME}, "a secret in more than one place"),
        ("", {"X-Twilio-Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}, "bad secret or signature"),
    ],
    ids=["none", "wrong", "other-tenant", "unknown-tenant", "two-places", "bad-signature"],
)
def test_wrong_credentials_are_refused_and_audited(
    env: Env, server: Server, suffix: str, headers: dict[str, str] | None, reason: str | None
) -> None:
    on_acme_path = suffix.startswith("?token=" + SECRETS["globex"])
    url = server.url + ("/acme" + suffix if on_acme_path else suffix)
    before = len(refusals(env))
    status, _ = wc.run(lambda: wc.refused(url, headers))
    assert status == 401
    entry = refusals(env)[before]
    assert entry["status"] == 401 and entry["remote"] == "127.0.0.1"
    if reason is not None:
        assert entry["reason"] == reason
    text = env.audit.read_text()
    assert all(secret not in text for secret in SECRETS.values())  # never the secret


def test_plain_http_gets_426(env: Env, server: Server) -> None:
    async def get() -> tuple[int, str | None]:
        url = server.url.replace("ws://", "http://", 1) + f"?token={ACME}"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            return r.status, r.headers.get("Upgrade")

    before = len(refusals(env))
    assert wc.run(get) == (426, "websocket")
    assert refusals(env)[before]["reason"] == "not a WebSocket upgrade"


@pytest.mark.parametrize("where", ["query", "path", "bearer"])
def test_shared_secret_in_the_url_or_a_header(env: Env, server: Server, where: str) -> None:
    c = wc.Call(tracks=("inbound",))
    data = wc.audio(5, seed=3)
    url = {
        "query": f"{server.url}?token={ACME}",
        "path": f"{server.url}/acme/{ACME}",
        "bearer": server.url + "/acme",
    }[where]
    headers = {"Authorization": f"Bearer {ACME}"} if where == "bearer" else None
    msgs = [c.connected(), c.start(), *wc.media_messages(c, data), c.stop()]
    code, _ = wc.run(lambda: wc.call(url, msgs, headers=headers, close=False))
    assert code == 1000
    entry, ex = recorded(env, c)
    assert entry["tenant"] == "acme" and entry["complete"] is True
    assert ex.complete and bytes(ex.tracks[1].audio) == data
    assert list(ex.tracks) == [1]  # only the announced track


def test_twilio_signature_and_tenant_parameter(env: Env, server: Server) -> None:
    # initech and umbrella share one Twilio account: the signature proves Twilio, the
    # `tenant` custom parameter picks the tenant among those the signature is good for.
    url = server.url
    sig = twilio_signature(TWILIO_TOKEN.encode(), url)
    for tenant in ("initech", "umbrella"):
        c = wc.Call()
        msgs = [c.start({"tenant": tenant}), *wc.media_messages(c, wc.audio(2, 4)), c.stop()]
        code, _ = wc.run(lambda: wc.call(url, msgs, headers=wc.signed_headers(sig), close=False))
        assert code == 1000
        entry, ex = recorded(env, c)
        assert entry["tenant"] == tenant and f"/{tenant}/" in entry["file"]
        assert ex.session.info["tenant"] == tenant
    # The signature covers the URL: the same header on another URL is refused.
    status, _ = wc.run(lambda: wc.refused(url + "/initech", wc.signed_headers(sig)))
    assert status == 401
    # Without the parameter the credentials fit two tenants: the stream is refused (1008).
    c = wc.Call()
    code, _ = wc.run(lambda: wc.call(url, [c.start()], headers=wc.signed_headers(sig), close=False))
    assert code == 1008
    entry = audit_entry(env, c.stream_sid)
    assert entry["file"] is None and "several tenants" in entry["reason"]


def test_tenant_parameter_must_fit_the_credentials(env: Env, server: Server) -> None:
    c = wc.Call()
    msgs = [c.start({"tenant": "globex", "From": PHONE}), *wc.media_messages(c, wc.audio(2, 5))]
    code, _ = wc.run(lambda: wc.call(f"{server.url}?token={ACME}", msgs, close=False))
    assert code == 1008
    entry = audit_entry(env, c.stream_sid)
    assert entry["file"] is None and entry["tenant"] is None
    assert entry["reason"] == "tenant parameter not allowed for these credentials"
    assert not list(env.recordings.rglob(f"{c.call_sid}*"))
    assert PHONE not in env.audit.read_text()


def test_tenant_without_certificate_is_not_recorded(env: Env, server: Server) -> None:
    c = wc.Call()
    msgs = [c.start(), *wc.media_messages(c, wc.audio(2, 13))]
    code, _ = wc.run(lambda: wc.call(f"{server.url}?token={SECRETS['nocert']}", msgs, close=False))
    assert code == 1011
    entry = audit_entry(env, c.stream_sid)
    assert entry["file"] is None and entry["tenant"] == "nocert" and not entry["complete"]
    assert "recording failed" in entry["reason"] and "certificate" in entry["reason"]
    assert not list(env.recordings.rglob(f"{c.call_sid}*"))


# --- broken streams ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ('{"event": "media", "media": {', 1007),  # not JSON
        ("BASE64", 1007),  # a payload that is not base64
        ("BINARY", 1003),  # a binary frame
        ('{"event": "start", "start": {}}', 1008),  # a second start
        ("TOO-EARLY", 1008),  # a timestamp past the call length limit
    ],
    ids=["json", "base64", "binary", "second-start", "timestamp"],
)
def test_malformed_message_closes_that_stream_only(
    env: Env, server: Server, bad: str, code: int
) -> None:
    c = wc.Call()
    before = wc.audio(6, seed=6)
    agent = wc.audio(3, seed=7)
    msgs = [c.connected(), c.start({"From": PHONE}), *wc.media_messages(c, before)]
    msgs += wc.media_messages(c, agent, "outbound")
    if bad == "BASE64":
        bad = c.media("inbound", 120, b"x").replace('"eA=="', '"e$A=="')
    elif bad == "TOO-EARLY":
        bad = c.media("inbound", 10**12, b"\x00" * 160)

    async def go() -> tuple[int | None, str]:
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{server.url}?token={ACME}") as ws:
            for m in msgs:
                await ws.send_str(m)
            if bad == "BINARY":
                await ws.send_bytes(b"\x00\x01")
            else:
                await ws.send_str(bad)
            return await wc.wait_closed(ws)

    got, _ = wc.run(go)
    assert got == code
    entry, ex = recorded(env, c)
    assert entry["complete"] is False and entry["close_code"] == code
    assert not ex.complete  # finalised, and marked incomplete: no END record
    assert ex.close is not None and ex.close.complete is False
    assert ex.close.reason == entry["reason"][:200]  # and says why, inside the envelope
    assert bytes(ex.tracks[1].audio) == before and bytes(ex.tracks[2].audio) == agent
    assert ex.tracks[1].stats is not None and ex.tracks[1].stats.counts["received"] == 6
    assert PHONE not in env.audit.read_text()
    # The server goes on: the next call is recorded whole.
    ok = wc.Call(tracks=("inbound",))
    msgs = [ok.start(), *wc.media_messages(ok, before), ok.stop()]
    assert wc.run(lambda: wc.call(f"{server.url}?token={ACME}", msgs, close=False))[0] == 1000
    assert recorded(env, ok)[1].complete


def test_disconnect_mid_call_keeps_what_arrived(env: Env, server: Server) -> None:
    c = wc.Call()
    data = wc.audio(7, seed=8)

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(f"{server.url}?token={ACME}")
            for m in [c.start(), *wc.media_messages(c, data)]:
                await ws.send_str(m)
            # Cut the TCP connection: no stop, no close frame.
            assert ws._response.connection is not None
            ws._response.connection.transport.abort()  # type: ignore[union-attr]

    wc.run(go)
    entry, ex = recorded(env, c)
    assert entry["complete"] is False and "closed without a stop" in entry["reason"]
    assert not ex.complete and bytes(ex.tracks[1].audio) == data
    assert 2 in ex.tracks and not ex.tracks[2].audio


def test_gaps_duplicates_and_late_chunks_are_counted(env: Env, server: Server) -> None:
    c = wc.Call(tracks=("inbound",))
    f = wc.frames(wc.audio(6, seed=9))
    msgs = [
        c.start(),
        c.media("inbound", 0, f[0]),
        c.media("inbound", 20, f[1]),
        c.media("inbound", 20, f[1], chunk=2),  # a duplicate (chunk number seen)
        c.media("inbound", 100, f[2]),  # 60 ms lost: 3 packets
        c.media("inbound", 40, f[3]),  # late: its place was given up
        c.media("inbound", 121, f[4]),  # 1 ms early/late is rounding, not a gap
        c.media("inbound", 3 * 3600 * 1000, f[5]),  # hours ahead of the call: dropped
        c.dtmf("5"),
        c.stop(),
    ]
    assert wc.run(lambda: wc.call(f"{server.url}?token={ACME}", msgs, close=False))[0] == 1000
    entry, ex = recorded(env, c)
    t = ex.tracks[1]
    assert bytes(t.audio) == f[0] + f[1] + b"\xff" * 480 + f[2] + f[4]
    assert t.stats is not None
    counts = {k: t.stats.counts[k] for k in ("received", "lost", "late", "duplicate")}
    assert counts == {"received": 4, "lost": 3, "late": 1, "duplicate": 1}
    assert entry["tracks"]["inbound"] == counts and entry["gap_ms"] == {"inbound": 60}
    assert entry["ahead_dropped"] == {"inbound": 1}
    assert [(e.digit, e.position) for e in t.events] == [("5", len(t.audio))]


# --- limits and shutdown ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(env: Env) -> Iterator[Server]:
    config = env.config("small.toml", max_streams=2, max_message_bytes=4096, idle_timeout=60)
    yield from running(config, env.root / "small.log")


def test_concurrency_cap_refuses_the_upgrade_with_503(env: Env, small: Server) -> None:
    url = f"{small.url}?token={ACME}"
    first = wc.Call(tracks=("inbound",))

    async def go() -> None:
        async with aiohttp.ClientSession() as s:
            a = await s.ws_connect(url)
            b = await s.ws_connect(url)
            await a.send_str(first.start())
            before = len(refusals(env))
            status, headers = await wc.refused(url)
            assert status == 503 and headers.get("Retry-After")
            assert refusals(env)[before]["status"] == 503
            await a.send_str(first.stop())
            assert (await wc.wait_closed(a))[0] == 1000
            # The slot comes back once that recording is finalised.
            audit_entry(env, first.stream_sid)
            c = await s.ws_connect(url)
            await c.close()
            await b.close()

    wc.run(go)


def test_message_over_the_limit_closes_1009(env: Env, small: Server) -> None:
    c = wc.Call(tracks=("inbound",))
    data = wc.audio(3, seed=10)
    big = c.media("inbound", 60, b"\x01" * 4000)  # > 4096 bytes as base64 JSON
    msgs = [c.start(), *wc.media_messages(c, data), big]
    code, _ = wc.run(lambda: wc.call(f"{small.url}?token={ACME}", msgs, close=False))
    assert code == 1009
    entry, ex = recorded(env, c)
    assert entry["complete"] is False and bytes(ex.tracks[1].audio) == data


def test_idle_timeout_and_sigterm_finalise_incomplete(env: Env) -> None:
    config = env.config("idle.toml", idle_timeout=1)
    server = Server(config, env.root / "idle.log")
    try:
        idle = wc.Call(tracks=("inbound",))
        data = wc.audio(4, seed=11)
        code, _ = wc.run(
            lambda: wc.call(
                f"{server.url}?token={ACME}",
                [idle.start(), *wc.media_messages(idle, data)],
                close=False,
            )
        )
        assert code == 1001
        entry, ex = recorded(env, idle)
        assert entry["reason"] == "idle for 1 s" and not ex.complete
        assert ex.close == tracks.Close("idle for 1 s", complete=False)
        assert bytes(ex.tracks[1].audio) == data

        # SIGTERM with a stream open: finalised (incomplete), and the process exits 0.
        held = wc.Call(tracks=("inbound",))

        async def hold() -> int | None:
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"{server.url}?token={ACME}")
                await ws.send_str(held.start())
                await ws.send_str(held.media("inbound", 0, data[:160]))
                # Wait until the recording exists, then stop the server under it. Messages
                # of an unknown type keep the stream from idling out however slow this is.
                deadline = time.monotonic() + 60
                while not list(env.recordings.rglob(f"{held.call_sid}/*.incomplete")):
                    assert time.monotonic() < deadline
                    await ws.send_str('{"event": "keepalive"}')
                    await asyncio.sleep(0.02)
                server.proc.send_signal(signal.SIGTERM)
                return (await wc.wait_closed(ws))[0]

        assert wc.run(hold) == 1001
        assert server.proc.wait(timeout=60) == 0
        entry, ex = recorded(env, held)
        assert entry["reason"] == "server shutting down" and not ex.complete
        assert bytes(ex.tracks[1].audio) == data[:160]
    finally:
        log = server.stop()
    assert "Traceback" not in log


def _calls_spread_over_both_workers(
    env: Env, server: Server, tls: ssl.SSLContext | None = None
) -> None:
    """24 one-track calls at once: each recorded whole, and the kernel spread the
    connections over both processes (24 calls all on one: 2 in 16.7 million)."""
    calls = [wc.Call(tracks=("inbound",)) for _ in range(24)]
    data = wc.audio(2, seed=12)

    async def one(c: wc.Call) -> int | None:
        msgs = [c.start(), *wc.media_messages(c, data), c.stop()]
        return (await wc.call(f"{server.url}?token={ACME}", msgs, close=False, tls=tls))[0]

    async def all_calls() -> list[int | None]:
        return list(await asyncio.gather(*(one(c) for c in calls)))

    assert wc.run(all_calls) == [1000] * len(calls)
    workers = set()
    for c in calls:
        entry, ex = recorded(env, c)
        assert ex.complete and bytes(ex.tracks[1].audio) == data
        workers.add(entry["worker"])
    assert workers == {0, 1}


def test_processes_share_the_port(env: Env) -> None:
    server = Server(env.config("procs.toml", processes=2), env.root / "procs.log")
    try:
        _calls_spread_over_both_workers(env, server)
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in log


def test_tls_endpoint(env: Env, tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path)
    config = env.config("tls.toml", tls_cert=str(tls.cert), tls_key=str(tls.key))
    server = Server(config, env.root / "tls.log")
    try:
        assert server.url.startswith("wss://")
        c = wc.Call(tracks=("inbound",))
        data = wc.audio(3, seed=14)
        msgs = [c.start(), *wc.media_messages(c, data), c.stop()]
        url = f"{server.url}?token={ACME}"
        assert wc.run(lambda: wc.call(url, msgs, close=False, tls=tls.client_context()))[0] == 1000
        assert recorded(env, c)[1].tracks[1].audio == data
    finally:
        server.stop()


def test_tls_endpoint_with_two_processes(env: Env, tmp_path: Path) -> None:
    """TLS and SO_REUSEPORT together: each process accepts, admits and handshakes its
    own share of the connections."""
    tls = make_tls_files(tmp_path)
    config = env.config("tls2.toml", tls_cert=str(tls.cert), tls_key=str(tls.key), processes=2)
    server = Server(config, env.root / "tls2.log")
    try:
        _calls_spread_over_both_workers(env, server, tls.client_context())
    finally:
        log = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in log

"""Playback tickets: a media element plays (and seeks) with a bearer token kept in memory.

Against a real RCS on loopback: a ticket plays its one recording with Range, and
nothing else; a forged, altered, expired or signed-out ticket is a 403 without a
Basic challenge; tickets never reach the audit log.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from recstream.service.errors import TicketError
from recstream.service.tickets import Ticket, TicketSigner
from tests.service.conftest import Archive, ServerThread, request, wait_for_audit


def token(st: ServerThread, user: str = "alice") -> str:
    r = request(st.url, "POST", "/rcs/tokens", user=user)
    assert r.status == 201, r.body
    t: str = r.json()["access_token"]
    return t


def bearer(t: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}", **extra}


def issue(st: ServerThread, t: str, body: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return request(
        st.url,
        "POST",
        "/rcs/playback-tickets",
        raw,
        bearer(t, **{"Content-Type": "application/json"}),
    )


def ticket_url(st: ServerThread, t: str, name: str) -> str:
    r = issue(st, t, {"id": name})
    assert r.status == 201, r.body
    assert r.headers["Cache-Control"] == "no-store"
    body = r.json()
    assert 0 < body["expires_in"] <= 600
    url: str = body["url"]
    assert url.startswith("/rcs/play/")
    return url


def test_a_ticket_plays_its_recording_with_range(rcs: ServerThread, archive: Archive) -> None:
    t = token(rcs)
    url = ticket_url(rcs, t, "acme/call-1.rsv")
    whole = request(rcs.url, "GET", url, user=None)
    assert whole.status == 200 and whole.body == archive.plain["acme/call-1.rsv"]
    assert whole.headers["Cache-Control"] == "no-store"
    part = request(rcs.url, "GET", url, headers={"Range": "bytes=1000-1999"}, user=None)
    assert part.status == 206 and part.body == archive.plain["acme/call-1.rsv"][1000:2000]
    assert part.headers["Content-Range"].endswith(f"/{len(archive.plain['acme/call-1.rsv'])}")
    audit = rcs.audit()
    plays = [a for a in audit if a["event"] == "playback" and a.get("auth") == "ticket"]
    assert plays and all(a["user"] == "alice" and a["file"] == "acme/call-1.rsv" for a in plays)
    assert any(a["event"] == "ticket_issued" and a["file"] == "acme/call-1.rsv" for a in audit)
    assert url.rpartition("/")[2] not in rcs.config.audit_log.read_text()


def test_raw_g711_plays_as_wav_with_range(rcs: ServerThread, archive: Archive) -> None:
    plain = archive.plain["acme/big.rsv"]  # audio/basic: raw mu-law, which no browser plays
    url = ticket_url(rcs, token(rcs), "acme/big.rsv")
    whole = request(rcs.url, "GET", url, user=None)
    assert whole.status == 200 and whole.headers["Content-Type"] == "audio/wav"
    head, body = whole.body[:58], whole.body[58:]
    assert body == plain
    assert head[:4] == b"RIFF" and head[8:16] == b"WAVEfmt "
    assert struct.unpack("<I", head[4:8])[0] == len(whole.body) - 8
    tag, channels, rate, per_second, align, bits = struct.unpack("<HHIIHH", head[20:36])
    assert (tag, channels, rate, per_second, align, bits) == (7, 1, 8000, 8000, 1, 8)
    assert head[50:54] == b"data" and struct.unpack("<I", head[54:58])[0] == len(plain)
    across = request(rcs.url, "GET", url, headers={"Range": "bytes=50-69"}, user=None)
    assert across.status == 206 and across.body == head[50:] + plain[:12]
    assert across.headers["Content-Range"] == f"bytes 50-69/{len(plain) + 58}"
    later = request(rcs.url, "GET", url, headers={"Range": "bytes=1000-"}, user=None)
    assert later.body == plain[942:]
    tail = request(rcs.url, "GET", url, headers={"Range": "bytes=-10"}, user=None)
    assert tail.body == plain[-10:]
    # the recording URL itself still serves the recording's own bytes and type
    direct = request(rcs.url, "GET", "/rcs/recordings/acme/big.rsv", headers={"Range": "bytes=0-9"})
    assert direct.body == plain[:10] and direct.headers["Content-Type"] == "audio/basic"
    # a WAV recording is not wrapped again
    wav = request(rcs.url, "GET", ticket_url(rcs, token(rcs), "acme/call-1.rsv"), user=None)
    assert wav.body == archive.plain["acme/call-1.rsv"]


def test_tickets_are_for_bearer_tokens_and_listed_recordings(rcs: ServerThread) -> None:
    r = request(
        rcs.url,
        "POST",
        "/rcs/playback-tickets",
        b'{"id": "acme/call-1.rsv"}',
        {"Content-Type": "application/json"},
    )
    assert r.status == 403  # Basic: play /rcs/recordings/... directly
    r = request(rcs.url, "POST", "/rcs/playback-tickets", b"{}", user=None)
    assert r.status == 401
    t = token(rcs)
    assert issue(rcs, t, {"id": "globex/call-9.rsv"}).status == 404  # another tenant's
    assert issue(rcs, t, {"id": "acme/nothing.rsv"}).status == 404
    assert issue(rcs, t, {"id": "../etc/passwd"}).status == 404
    for bad in ({}, {"id": 5}, {"id": "acme/call-1.rsv", "x": 1}, ["acme/call-1.rsv"]):
        r = issue(rcs, t, bad)
        assert r.status == 400, bad
    assert issue(rcs, t, b"not json").status == 400


def refused(st: ServerThread, url: str) -> None:
    r = request(st.url, "GET", url, user=None)
    assert r.status == 403, r.body
    assert r.json()["error"] == "invalid_ticket"
    assert "WWW-Authenticate" not in r.headers  # a media request must not prompt for a password


def test_forged_altered_and_foreign_tickets_are_refused(rcs: ServerThread) -> None:
    t = token(rcs)
    url = ticket_url(rcs, t, "acme/call-1.rsv")
    claims, _, mac = url.removeprefix("/rcs/play/").partition(".")
    refused(rcs, f"/rcs/play/{claims}.{mac[:-2]}AA")
    refused(rcs, f"/rcs/play/{claims[:-3]}xyz.{mac}")
    refused(rcs, "/rcs/play/garbage")
    refused(rcs, "/rcs/play/" + "A" * 5000 + ".B")
    # a ticket from another server (another secret) for the same user
    other = TicketSigner().issue(Ticket("acme/call-1.rsv", "alice", "x", b"y" * 32, 1e12))
    refused(rcs, "/rcs/play/" + other)
    refusals = [a for a in rcs.audit() if a["event"] == "refused" and a["reason"] == "TicketError"]
    assert refusals and all(a["path"] == "/rcs/play/…" for a in refusals)
    assert claims not in rcs.config.audit_log.read_text()


def test_signing_out_ends_the_tickets(rcs: ServerThread) -> None:
    t = token(rcs)
    url = ticket_url(rcs, t, "acme/call-1-screen.rsv")
    assert request(rcs.url, "GET", url, headers={"Range": "bytes=0-9"}, user=None).status == 206
    r = request(rcs.url, "DELETE", "/rcs/tokens", headers=bearer(t), user=None)
    assert r.status == 204
    refused(rcs, url)


def test_a_password_change_ends_the_tickets(start_rcs: Any) -> None:
    from recstream.service.passwords import hash_password
    from recstream.service.store import Role, SettingsStore, User
    from tests.service.conftest import TEST_HASH

    st = start_rcs()
    t = token(st)
    url = ticket_url(st, t, "acme/call-1.rsv")
    store = SettingsStore.open(st.config.settings_db)
    try:
        user = User("alice", Role.PLAYER, frozenset({"acme"}))
        store.put_user(user, hash_password(b"alice-pw-1", TEST_HASH), replace=True)
    finally:
        store.close()
    refused(st, url)


def test_the_signer_checks_mac_and_expiry() -> None:
    now = [100.0]
    signer = TicketSigner(b"k" * 32, clock=lambda: now[0])
    text = signer.issue(Ticket("a/b.rsv", "alice", "v1", b"d" * 32, signer.expiry(600)))
    got = signer.verify(text)
    assert (got.name, got.user, got.credential, got.token_digest) == (
        "a/b.rsv",
        "alice",
        "v1",
        b"d" * 32,
    )
    now[0] = 699.0
    signer.verify(text)
    now[0] = 700.0
    with pytest.raises(TicketError, match="expired"):
        signer.verify(text)
    with pytest.raises(TicketError, match="not issued"):
        TicketSigner(b"j" * 32, clock=lambda: 0.0).verify(text)
    with pytest.raises(TicketError, match="malformed"):
        signer.verify("no-dot")
    with pytest.raises(TicketError, match="malformed"):
        signer.verify("!!!.###")


# --- through a decryption proxy ---------------------------------------------------------


def test_the_page_works_through_a_decryption_proxy(
    start_rcs: Any, start_proxy: Any, archive: Archive
) -> None:
    """Interactions are forwarded (checked at the proxy first); the proxy issues its own
    tickets and plays them at the RCS as the ticket's user (a delegation, as=wav)."""
    rcs = start_rcs()
    proxy = start_proxy("/US/AK", "0a1b2c", {"/": rcs.url + "/rcs"})
    t = token(proxy)
    r = request(
        proxy.url, "GET", "/rcs/interactions?q=call-1&limit=5", headers=bearer(t), user=None
    )
    assert r.status == 200, r.body
    (one,) = r.json()["interactions"]
    assert {x["id"] for x in one["recordings"]} == {"acme/call-1.rsv", "acme/call-1-screen.rsv"}
    bad = request(proxy.url, "GET", "/rcs/interactions?limit=0", headers=bearer(t), user=None)
    assert bad.status == 400
    assert not [a for a in proxy.audit() if a["event"] == "forward" and "limit=0" in str(a)]
    url = ticket_url(proxy, t, "acme/big.rsv")
    part = request(proxy.url, "GET", url, headers={"Range": "bytes=50-69"}, user=None)
    assert part.status == 206 and part.headers["Content-Type"] == "audio/wav"
    assert part.body[8:] == archive.plain["acme/big.rsv"][:12]
    play = wait_for_audit(rcs, lambda a: a["event"] == "playback")
    assert (play["user"], play["auth"], play["file"]) == ("alice", "proxy", "acme/big.rsv")
    fwd = wait_for_audit(proxy, lambda a: a["event"] == "forward" and "/play/" in a["path"])
    assert fwd["path"] == "/rcs/play/…" and url.rpartition("/")[2] not in str(proxy.audit())
    # another tenant's recording: the proxy issues the ticket, the RCS refuses to play it
    other = ticket_url(proxy, t, "globex/call-9.rsv")
    assert request(proxy.url, "GET", other, user=None).status == 404
    # signing out at the proxy ends its tickets
    assert request(proxy.url, "DELETE", "/rcs/tokens", headers=bearer(t), user=None).status == 204
    refused(proxy, url)


def test_as_wav_on_the_recording_url(rcs: ServerThread, archive: Archive) -> None:
    r = request(
        rcs.url, "GET", "/rcs/recordings/acme/big.rsv?as=wav", headers={"Range": "bytes=58-67"}
    )
    assert r.status == 206 and r.body == archive.plain["acme/big.rsv"][:10]
    assert r.headers["Content-Type"] == "audio/wav"
    assert request(rcs.url, "GET", "/rcs/recordings/acme/big.rsv?as=mp3").status == 400


def test_wav_prefix_for_each_g711_type() -> None:
    from recstream.service.wavwrap import wav_prefix

    assert struct.unpack("<H", (wav_prefix("audio/x-alaw", 10) or b"")[20:22]) == (6,)
    assert struct.unpack("<H", (wav_prefix("Audio/PCMU", 10) or b"")[20:22]) == (7,)
    assert wav_prefix("video/webm", 10) is None and wav_prefix("audio/wav", 10) is None
    huge = wav_prefix("audio/basic", 1 << 33) or b""  # past RIFF's 32 bits: sizes saturate
    assert struct.unpack("<I", huge[54:58])[0] == 0xFFFFFFFF - 58
    assert struct.unpack("<I", huge[4:8])[0] == 0xFFFFFFFF - 8

"""``GET /rcs/interactions``: grouping, filters, paging over thousands, tenant isolation, 400s.

A real RCS on loopback serves an archive of a few thousand real envelopes
(made here: acme 1,200 calls each with a screen recording, one in ten with a
muxed file too; globex 400 calls), and the tests page through it over HTTP.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from recstream.format import MediaKind
from recstream.service.errors import RequestError
from recstream.service.index import Entry
from recstream.service.interactions import MAX_LIMIT, group, parse_query
from recstream.service.mediatime import duration_ms
from tests.service.conftest import (
    Keys,
    ServerThread,
    basic,
    request,
    seal_to,
    shared_rcs,
)

ACME_CALLS = 1200
GLOBEX_CALLS = 400
DAY0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
DAY_MS = 86_400_000


def _created(i: int) -> int:
    # one call every 30 minutes, from 1 November 2026 (UTC): 48 a day, 25 days for acme
    return int(DAY0.timestamp() * 1000) + i * 1_800_000


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    root = tmp_path_factory.mktemp("many")
    voice, screen = MediaKind.VOICE, MediaKind.SCREEN
    for i in range(ACME_CALLS):
        rid, t = f"CALL-{i:05}", _created(i)
        d = f"acme/d{i // 500}"
        common = {"recording_id": rid, "tenant": "acme", "created_ms": t}
        # 8,000 bytes of mu-law a second: a call of (i % 60) + 1 seconds
        seal_to(root, f"{d}/{rid}-voice.rsv", keys.acme, b"\xff" * 8000 * (i % 60 + 1),
               media_kind=voice, media_type="audio/basic", **common)  # fmt: skip
        later = {**common, "created_ms": t + 400}
        seal_to(root, f"{d}/{rid}-screen.rsv", keys.acme, b"s" * 100,
               media_kind=screen, media_type="video/webm", **later)  # fmt: skip
        if i % 10 == 0:
            seal_to(root, f"{d}/{rid}-mux.rsv", keys.acme, b"m" * 100,
                   media_kind=screen, media_type="video/webm", **common)  # fmt: skip
    for i in range(GLOBEX_CALLS):
        rid = f"gx-{i:04}"
        seal_to(root, f"globex/{rid}.rsv", keys.globex, b"\xd5" * 800, recording_id=rid,
               tenant="globex", media_kind=voice, media_type="audio/x-alaw",
               created_ms=_created(i) + 60_000)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, many: Path
) -> Iterator[ServerThread]:
    yield from shared_rcs(tmp_path_factory, keys, many, "rcs-many")


def get(st: ServerThread, query: str = "", user: str = "alice", **params: Any) -> Any:
    qs = urllib.parse.urlencode(params) if params else query
    return request(st.url, "GET", "/rcs/interactions" + (f"?{qs}" if qs else ""), user=user)


def ok(st: ServerThread, user: str = "alice", **params: Any) -> dict[str, Any]:
    r = get(st, user=user, **params)
    assert r.status == 200, r.body
    assert r.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


def walk(st: ServerThread, user: str = "alice", **params: Any) -> list[dict[str, Any]]:
    """Every interaction, page by page."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        body = ok(st, user, **params, **({"cursor": cursor} if cursor else {}))
        assert len(body["interactions"]) <= params.get("limit", 25)
        out += body["interactions"]
        cursor = body["next"]
        if cursor is None:
            return out
        assert len(body["interactions"]) == params.get("limit", 25)  # only the last is short


# --- grouping -------------------------------------------------------------------------


def test_a_call_its_screen_recording_and_mux_are_one_interaction(server: ServerThread) -> None:
    body = ok(server, q="CALL-00010")
    (one,) = body["interactions"]
    assert one["tenant"] == "acme" and one["recording_id"] == "CALL-00010"
    names = [r["id"] for r in one["recordings"]]
    assert sorted(names) == [
        "acme/d0/CALL-00010-mux.rsv",
        "acme/d0/CALL-00010-screen.rsv",
        "acme/d0/CALL-00010-voice.rsv",
    ]
    assert one["kinds"] == ["screen", "voice"]
    assert one["start_ms"] == _created(10)
    voice = next(r for r in one["recordings"] if r["media_kind"] == "voice")
    assert voice["duration_ms"] == 11_000 and voice["size"] == 88_000  # (10 % 60 + 1) s
    assert one["duration_ms"] == 11_000 and one["end_ms"] == _created(10) + 11_000
    screen = next(r for r in one["recordings"] if r["id"].endswith("-screen.rsv"))
    assert screen["duration_ms"] is None  # WebM: not known without decrypting
    assert one["size"] == 88_000 + 100 + 100
    assert body["tenants"] == ["acme"]


def test_the_listing_has_the_duration_too(server: ServerThread) -> None:
    r = request(server.url, "GET", "/rcs/recordings?limit=1000")
    assert r.status == 200
    voices = [x for x in r.json()["recordings"] if x["media_kind"] == "voice"]
    assert voices and all(x["duration_ms"] == x["size"] // 8 for x in voices)


def test_the_shared_archive_groups_call_1_with_its_screen(rcs: ServerThread) -> None:
    body = ok(rcs, q="call-1")
    (one,) = body["interactions"]
    assert {r["id"] for r in one["recordings"]} == {"acme/call-1.rsv", "acme/call-1-screen.rsv"}
    assert one["recordings"][0]["duration_ms"] is None  # WAV: the page reads it on opening


# --- paging over thousands --------------------------------------------------------------


def test_pages_cover_every_interaction_once_newest_first(server: ServerThread) -> None:
    seen = walk(server, limit=MAX_LIMIT)
    assert len(seen) == ACME_CALLS
    ids = [i["recording_id"] for i in seen]
    assert len(set(ids)) == ACME_CALLS
    starts = [i["start_ms"] for i in seen]
    assert starts == sorted(starts, reverse=True)
    assert ids[0] == f"CALL-{ACME_CALLS - 1:05}"


def test_only_a_page_is_returned(server: ServerThread) -> None:
    r = get(server, limit=7)
    body = r.json()
    assert len(body["interactions"]) == 7 and body["next"]
    assert len(r.body) < 20_000  # seven interactions, not thousands of recordings
    default = ok(server)
    assert len(default["interactions"]) == 25


def test_two_tenants_merge_in_time_order(server: ServerThread) -> None:
    seen = walk(server, user="mo", limit=150)
    assert len(seen) == ACME_CALLS + GLOBEX_CALLS
    keys = [(-i["start_ms"], i["tenant"], i["recording_id"]) for i in seen]
    assert keys == sorted(keys)
    assert ok(server, user="mo")["tenants"] == ["acme", "globex"]


# --- filters ------------------------------------------------------------------------------


def test_search_is_a_case_insensitive_substring_of_the_recording_id(server: ServerThread) -> None:
    prefix = walk(server, q="call-0001", limit=50)
    assert sorted(i["recording_id"] for i in prefix) == [f"CALL-{n:05}" for n in range(10, 20)]
    inner = walk(server, q="-0119", limit=50)
    assert [i["recording_id"] for i in inner] == [f"CALL-{n:05}" for n in range(1199, 1189, -1)]
    assert {i["recording_id"] for i in inner} == {f"CALL-{n:05}" for n in range(1190, 1200)}
    assert ok(server, q="no-such-call")["interactions"] == []


def test_tenant_filter_and_isolation(server: ServerThread) -> None:
    bob = walk(server, user="bob", limit=MAX_LIMIT)
    assert len(bob) == GLOBEX_CALLS and {i["tenant"] for i in bob} == {"globex"}
    assert all(r["media_type"] == "audio/x-alaw" for i in bob for r in i["recordings"])
    assert bob[0]["recordings"][0]["duration_ms"] == 100  # 800 A-law bytes
    only = walk(server, user="mo", tenant="globex", limit=MAX_LIMIT)
    assert len(only) == GLOBEX_CALLS
    # alice's search for globex's IDs finds nothing; naming globex is refused outright
    assert ok(server, q="gx-")["interactions"] == []
    r = get(server, user="bob", tenant="acme")
    assert r.status == 403 and r.json()["error"] == "forbidden"
    r = get(server, user="olga")  # ops: no tenant
    assert r.status == 200 and r.json() == {"interactions": [], "next": None, "tenants": []}


def test_date_range_on_the_start_time(server: ServerThread) -> None:
    # 48 calls a UTC day: 3 November is calls 96-143
    day = walk(server, **{"from": "2026-11-03", "to": "2026-11-03"}, limit=100)
    assert sorted(i["recording_id"] for i in day) == [f"CALL-{n:05}" for n in range(96, 144)]
    # a local day with its offset: 3 November in UTC+01:00 is 2 Nov 23:00 - 3 Nov 23:00 UTC
    local = walk(
        server,
        **{"from": "2026-11-03T00:00:00+01:00", "to": "2026-11-04T00:00:00+01:00"},
        limit=100,
    )
    assert sorted(i["recording_id"] for i in local) == [f"CALL-{n:05}" for n in range(94, 142)]
    since = walk(server, **{"from": "2026-11-25"}, limit=MAX_LIMIT)
    assert len(since) == ACME_CALLS - 24 * 48


def test_kind_filter(server: ServerThread) -> None:
    assert len(walk(server, user="mo", kind="screen", limit=MAX_LIMIT)) == ACME_CALLS
    assert len(walk(server, user="mo", kind="voice", limit=MAX_LIMIT)) == ACME_CALLS + GLOBEX_CALLS


def test_filters_combine_and_page(server: ServerThread) -> None:
    got = walk(server, user="mo", q="1", kind="voice", tenant="acme", limit=9,
               **{"from": "2026-11-02", "to": "2026-11-05"})  # fmt: skip
    want = {f"CALL-{n:05}" for n in range(48, 240) if "1" in f"CALL-{n:05}"}  # 2-5 Nov
    assert {i["recording_id"] for i in got} == want


# --- bad requests -----------------------------------------------------------------------

BAD = [
    "limit=0",
    "limit=201",
    "limit=abc",
    "limit=%C2%B2",
    "cursor=not-a-cursor",
    "cursor=" + "A" * 3000,
    "from=2026-13-01",
    "from=yesterday",
    "to=2026-11-03T10:00:00",  # no offset: whose local time?
    "from=2026-11-05&to=2026-11-04",
    "kind=audio",
    "q=" + "x" * 300,
    "q=%00",
    "tenants=acme",  # a typo is an error, not a silently ignored filter
    "q=a&q=b",
]


@pytest.mark.parametrize("query", BAD)
def test_bad_parameters_are_400(server: ServerThread, query: str) -> None:
    r = get(server, query)
    assert r.status == 400, (query, r.body)
    body = r.json()
    assert body["error"] == "bad_request" and body["message"]


def test_a_cursor_from_another_endpoint_is_refused(server: ServerThread) -> None:
    listing = request(server.url, "GET", "/rcs/recordings?limit=1").json()
    r = get(server, cursor=listing["next"])
    assert r.status == 400


def test_unauthenticated_is_401(server: ServerThread) -> None:
    r = request(server.url, "GET", "/rcs/interactions", user=None)
    assert r.status == 401
    wrong = {"Authorization": basic("alice", "x")}
    r = request(server.url, "GET", "/rcs/interactions", headers=wrong)
    assert r.status == 401


# --- pure parts ---------------------------------------------------------------------------


def _entry(name: str, rid: str, created: int, kind: str = "voice") -> Entry:
    return Entry(name, rid, "t", kind, "audio/basic", created, 8000, (), (0, 0, 0, 0))


def test_group_orders_members_and_interactions() -> None:
    out = group(
        [
            _entry("b.rsv", "B", 5),
            _entry("a2.rsv", "A", 9, "screen"),
            _entry("a1.rsv", "A", 7),
            _entry("c.rsv", "C", 9),
        ]
    )
    assert [(i.recording_id, i.start_ms) for i in out] == [("C", 9), ("A", 7), ("B", 5)]
    a = out[1]
    assert [e.name for e in a.recordings] == ["a1.rsv", "a2.rsv"]
    doc = json.loads(a.to_json())
    assert doc["end_ms"] == 9 + 1000 and doc["duration_ms"] == 1002


def test_parse_query_defaults_and_errors() -> None:
    q = parse_query({}, [])
    assert (q.limit, q.q, q.tenant, q.kind, q.after) == (25, "", None, None, None)
    with pytest.raises(RequestError):
        parse_query({"from": "2026-11-03T00:00:00Z", "to": "2026-11-03T00:00:00Z"}, ["from", "to"])


def test_duration_from_the_media_type() -> None:
    assert duration_ms("audio/basic", 16_000) == 2000
    assert duration_ms("Audio/X-MULAW", 4) == 0
    assert duration_ms("audio/wav", 16_000) is None
    assert duration_ms("audio/basic", None) is None


# --- incremental regrouping ---------------------------------------------------------


def _all_pages(view: Any, tenants: frozenset[str]) -> list[tuple[str, str, bytes]]:
    from recstream.service.interactions import InteractionQuery, decode_cursor

    out: list[tuple[str, str, bytes]] = []
    after = None
    while True:
        page = view.page(tenants, InteractionQuery(limit=7, after=after))
        out += [(i.tenant, i.recording_id, b) for i, b in zip(page.interactions, page.bodies)]
        if page.next is None:
            return out
        after = decode_cursor(page.next)


def test_incremental_regrouping_matches_a_full_regroup(tmp_path: Path, keys: Keys) -> None:
    """Files added (new interactions and new members of old ones), removed, and rewritten
    under another recording ID: after each refresh the view that applied the changes one
    interaction at a time pages exactly as a view grouped from scratch."""
    import random

    from recstream.service.archive import Archive as ArchiveDir
    from recstream.service.index import HeaderIndex
    from recstream.service.interactions import InteractionView

    root = tmp_path / "archive"
    party = {"acme": keys.acme, "globex": keys.globex}
    rng = random.Random(17)
    live: list[str] = []

    def add(tenant: str, rid: str, kind: MediaKind, n: int) -> None:
        name = f"{tenant}/f{n:05}.rsv"
        mtype = "audio/basic" if kind is MediaKind.VOICE else "video/webm"
        seal_to(root, name, party[tenant], b"\xff" * rng.randrange(1, 9000), recording_id=rid,
               tenant=tenant, media_kind=kind, media_type=mtype,
               created_ms=1_795_000_000_000 + rng.randrange(0, 10**8))  # fmt: skip
        live.append(name)

    n = 0
    for i in range(60):
        for tenant in ("acme", "globex"):
            add(tenant, f"r-{i}", MediaKind.VOICE, n := n + 1)
            if i % 3:
                add(tenant, f"r-{i}", MediaKind.SCREEN, n := n + 1)
    index = HeaderIndex(ArchiveDir(root))
    index.refresh(full=True)
    view = InteractionView(index)
    both = frozenset({"acme", "globex"})
    assert _all_pages(view, both) == _all_pages(InteractionView(index), both)
    for _step in range(6):
        before = index.version
        for _ in range(4):  # new members of old interactions, and new interactions
            tenant = rng.choice(["acme", "globex"])
            add(tenant, f"r-{rng.randrange(80)}", rng.choice(list(MediaKind)), n := n + 1)
        for _ in range(3):
            gone = live.pop(rng.randrange(len(live)))
            (root / gone).unlink()
        victim = rng.choice(live)  # rewritten in place: another recording ID now
        tenant = victim.split("/")[0]
        seal_to(root, victim, party[tenant], b"\xff" * 10, recording_id=f"moved-{_step}",
               tenant=tenant, media_kind=MediaKind.VOICE, media_type="audio/basic",
               created_ms=1_795_000_000_000)  # fmt: skip
        index.refresh(full=True)
        assert index.interaction_delta("acme", before)[1] is not None  # itemised, not regrouped
        a, b = _all_pages(view, both), _all_pages(InteractionView(index), both)
        assert a == b
        for tenant, rid, body in a:  # both tenants use the same IDs: no mix-up
            doc = json.loads(body)
            assert (doc["tenant"], doc["recording_id"]) == (tenant, rid)
            assert all(r["id"].startswith(tenant + "/") for r in doc["recordings"])
        assert _all_pages(view, frozenset({"globex"})) == _all_pages(
            InteractionView(index), frozenset({"globex"})
        )
    # a change log that no longer reaches back means a full regroup, with the same result
    assert index.interaction_delta("acme", -5)[1] is None


def test_two_tenants_with_the_same_recording_id_stay_apart(
    tmp_path: Path, keys: Keys, start_rcs: Any
) -> None:
    root = tmp_path / "same"
    for tenant, party in (("acme", keys.acme), ("globex", keys.globex)):
        seal_to(root, f"{tenant}/same.rsv", party, b"\xff" * 800, recording_id="same-1",
               tenant=tenant, media_kind=MediaKind.VOICE, media_type="audio/basic")  # fmt: skip
    st = start_rcs(root=root)
    for _ in range(2):  # the second answer comes from the cached JSON
        body = ok(st, user="mo", q="same")
        got = {(i["tenant"], r["id"]) for i in body["interactions"] for r in i["recordings"]}
        assert got == {("acme", "acme/same.rsv"), ("globex", "globex/same.rsv")}
    alice = ok(st, user="alice", q="same")["interactions"]
    assert [r["id"] for i in alice for r in i["recordings"]] == ["acme/same.rsv"]

"""Issue 13, finding 7: listings come from a header index, paginated, filtered by tenant."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from recstream.format import MediaKind
from recstream.service.archive import Archive as ServedArchive
from tests.service.conftest import Archive, Keys, ServerThread, request

N_ACME, N_GLOBEX = 45, 12


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Archive:
    a = Archive(tmp_path_factory.mktemp("many"))
    for i in range(N_ACME):
        a.add(
            f"acme/d{i % 4}/c{i:03}.rsv",
            keys.acme,
            b"a" * (i + 1),
            rid=f"a{i}",
            tenant="acme",
            kind=MediaKind.VOICE,
            mtype="audio/basic",
        )
    for i in range(N_GLOBEX):
        a.add(
            f"globex/g{i:03}.rsv",
            keys.globex,
            b"g" * 10,
            rid=f"g{i}",
            tenant="globex",
            kind=MediaKind.SCREEN,
            mtype="video/webm",
        )
    (a.root / "acme" / "notes.txt").write_text("not a recording")
    (a.root / "acme" / "broken.rsv").write_bytes(b"not an envelope")
    return a


def listing(st: ServerThread, user: str, query: str = "") -> Any:
    r = request(st.url, "GET", "/rcs/recordings" + query, user=user)
    assert r.status == 200, r.body
    return r.json()


def walk(st: ServerThread, user: str, limit: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    body = listing(st, user, f"?limit={limit}")
    while True:
        assert len(body["recordings"]) <= limit
        rows += body["recordings"]
        if body["next"] is None:
            return rows
        body = listing(st, user, f"?limit={limit}&after={body['next']}")


def test_pages_cover_each_users_tenants_once_newest_first(start_rcs: Any, many: Archive) -> None:
    st = start_rcs(root=many.root)
    rows = walk(st, "alice", 7)
    assert sorted(r["id"] for r in rows) == sorted(n for n in many.sealed if n.startswith("acme/"))
    assert [(-r["created_ms"], r["id"]) for r in rows] == sorted(
        (-r["created_ms"], r["id"]) for r in rows
    )
    assert all(r["tenant"] == "acme" and len(r["cert_ids"]) == 1 for r in rows)
    assert {r["size"] for r in rows} == set(range(1, N_ACME + 1))
    both = walk(st, "mo", 10)  # two tenants, merged in one order
    assert len(both) == N_ACME + N_GLOBEX and len({r["id"] for r in both}) == len(both)
    assert [r["id"] for r in walk(st, "bob", 100)] == [r["id"] for r in walk(st, "bob", 1)]
    assert listing(st, "olga") == {"recordings": [], "next": None}


@pytest.mark.parametrize(
    "query",
    [
        *("?limit=0", "?limit=1001", "?limit=x", "?limit=-1", "?after=%%%", "?after=bm9wZQ"),
        "?limit=%C2%B2",  # a superscript two: str.isdigit() says yes, int() says no
        "?limit=%EF%BC%95",  # a fullwidth five: int() would take it
        "?limit=" + "9" * 5000,  # over int()'s 4,300-digit limit
        "?limit=0000000005",  # ten digits: over the length bound, whatever the value
    ],
)
def test_bad_page_parameters_are_400(rcs: ServerThread, query: str) -> None:
    r = request(rcs.url, "GET", "/rcs/recordings" + query)
    assert r.status == 400 and r.json()["error"] == "bad_request"


def test_a_listing_reads_no_file(start_rcs: Any, tmp_path: Path, keys: Keys) -> None:
    a = Archive(tmp_path)
    meta = {"tenant": "acme", "kind": MediaKind.VOICE, "mtype": "audio/basic"}
    a.add("acme/one.rsv", keys.acme, b"1" * 100, rid="one", **meta)
    st = start_rcs(root=tmp_path, recordings_extra="rescan_interval = 3600")
    assert [r["id"] for r in listing(st, "alice")["recordings"]] == ["acme/one.rsv"]
    # Gone from disk, still listed until the next rescan: the listing touched no file
    # (before the fix every call opened every file: 20,000 files took 7-12 s).
    (tmp_path / "acme" / "one.rsv").unlink()
    for _ in range(3):
        assert [r["id"] for r in listing(st, "alice")["recordings"]] == ["acme/one.rsv"]


def test_new_and_removed_recordings_are_listed_incrementally(
    start_rcs: Any, tmp_path: Path, keys: Keys
) -> None:
    a = Archive(tmp_path)
    meta = {"tenant": "acme", "kind": MediaKind.VOICE, "mtype": "audio/basic"}
    a.add("acme/one.rsv", keys.acme, b"1" * 100, rid="one", **meta)
    st = start_rcs(root=tmp_path, recordings_extra="rescan_interval = 0.1")
    assert [r["id"] for r in listing(st, "alice")["recordings"]] == ["acme/one.rsv"]
    a.add("acme/two.rsv", keys.acme, b"2" * 100, rid="two", **meta)
    deadline = time.monotonic() + 30  # a hang guard, not a bound on the interval
    while "acme/two.rsv" not in [r["id"] for r in listing(st, "alice")["recordings"]]:
        assert time.monotonic() < deadline, "a new recording was never listed"
        time.sleep(0.05)
    (tmp_path / "acme" / "one.rsv").unlink()
    while "acme/one.rsv" in [r["id"] for r in listing(st, "alice")["recordings"]]:
        assert time.monotonic() < deadline, "a removed recording stayed listed"
        time.sleep(0.05)


def test_refresh_reads_only_what_changed(tmp_path: Path, keys: Keys) -> None:
    from recstream.service.index import HeaderIndex

    a = Archive(tmp_path)
    meta = {"tenant": "acme", "kind": MediaKind.VOICE, "mtype": "audio/basic"}
    for i in range(20):
        a.add(f"acme/d{i % 3}/r{i}.rsv", keys.acme, b"x", rid=f"r{i}", **meta)
    index = HeaderIndex(ServedArchive(tmp_path))
    assert index.refresh(now=0.0) == 20
    assert index.refresh(now=1.0) == 0  # nothing changed: no file opened
    a.add("acme/d1/new.rsv", keys.acme, b"y", rid="new", **meta)
    assert index.refresh(now=2.0) == 1
    (tmp_path / "acme" / "d2" / "r2.rsv").rename(tmp_path / "acme" / "d2" / "moved.rsv")
    assert index.refresh(now=3.0) == 1
    assert index.get("acme/d2/r2.rsv") is None and index.get("acme/d2/moved.rsv") is not None
    assert len(index) == 21
    page = index.page(frozenset({"acme"}), 5, None)
    assert len(page.entries) == 5 and page.next is not None
    assert index.page(frozenset({"nobody"}), 5, None).entries == []

"""Issue 17: ``GET /rcs/interactions`` against the listing it groups, over a large archive.

Usage (from the repository root)::

    .venv/bin/python bench/interactions_page.py [--entries 20000] [--rounds 300]
                                                [--dir DIR] [--json FILE]

Writes an archive of real envelopes: ``--entries`` of tenant acme (half calls,
half their screen recordings: ``entries / 2`` interactions of two recordings)
plus a tenth as many of another tenant, starts a real RCS (the code ``recstream
serve`` runs) on loopback in this process, waits until its header index holds
them all, and then times, round by round with the order rotating
(:func:`recstream.bench.stats.interleave`), one request of each subject on a
kept-alive connection:

* ``listing``: ``GET /rcs/recordings?limit=50`` (the first page: the reference);
* ``listing deep``: the listing's page in the middle (``after=``);
* ``interactions``: ``GET /rcs/interactions?limit=25``: 25 interactions, the same
  50 recordings;
* ``interactions deep``: its page in the middle (``cursor=``);
* ``interactions search``: ``q=`` a substring only one interaction has (the
  worst case: every interaction is looked at);
* ``interactions one day``: ``from``/``to`` one day in the middle.

Reported: per request wall-clock p50/p99 (ms) and process CPU time (client and
server together, ms), and each subject's per-round ratio to ``listing``.  Also
the one-off cost of regrouping after the index changed (in process, no HTTP).
The machine description (CPU, cores, load) is printed and saved with the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import functools
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvloop

from recstream.bench.fixtures import make_identity
from recstream.bench.machine import describe_machine
from recstream.bench.stats import interleave, paired_ratio, summarize
from recstream.envelope import EnvelopeEncryptor, Identity, IdentitySet, Recipient, new_metadata
from recstream.format import MediaKind
from recstream.service import load_config, start_server
from recstream.service.passwords import HashParams, hash_password
from recstream.service.store import Role, SettingsStore, User

DAY0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
STEP_MS = 600_000  # a call every 10 minutes: 144 a day
PER_DIRECTORY = 1000
# The fewest entries that give every subject a page in the middle: more than one
# listing page of 50 recordings and more than one page of 25 interactions (two
# recordings each), the first of them full.
MIN_ENTRIES = 52


def _party(work: Path) -> tuple[Recipient, Identity]:
    ident = make_identity(work, bits=2048)
    return ident.recipient, Identity.from_private_key(ident.key, ident.cert)


def write_archive(root: Path, recipient: Recipient, entries: int) -> int:
    written = 0
    plan = [("acme", entries // 2, True), ("other", entries // 20, False)]
    for tenant, calls, with_screen in plan:
        for i in range(calls):
            d = root / tenant / f"d{i // PER_DIRECTORY:04}"
            if i % PER_DIRECTORY == 0:
                d.mkdir(parents=True, exist_ok=True)
            t = int(DAY0.timestamp() * 1000) + i * STEP_MS
            kinds = [(MediaKind.VOICE, "audio/basic", "v")]
            if with_screen:
                kinds.append((MediaKind.SCREEN, "video/webm", "s"))
            for kind, mtype, tag in kinds:
                meta = new_metadata(
                    recording_id=f"call-{i:06}",
                    tenant=tenant,
                    media_kind=kind,
                    media_type=mtype,
                    created_ms=t,
                )
                enc = EnvelopeEncryptor([recipient], meta)
                (d / f"c{i:06}{tag}.rsv").write_bytes(enc.update(b"\xff" * 800) + enc.finalize())
                written += 1
    return written


CONFIG = """
[server]
listen = "127.0.0.1:0"
[keystore]
path = "keystore.rsk"
password_file = "keystore.pass"
[recordings]
root = "{root}"
[audit]
log = "audit.jsonl"
[settings]
db = "settings.sqlite"
[auth]
max_failures = 100000
"""


class Server:
    def __init__(self, work: Path, root: Path, identity: Identity) -> None:
        (work / "keystore.rsk").touch()
        (work / "keystore.pass").write_text("unused\n")
        (work / "rcs.toml").write_text(CONFIG.format(root=root))
        store = SettingsStore.open(work / "settings.sqlite")
        cheap = HashParams(memory_kib=1024, iterations=1, lanes=1)
        store.put_user(
            User("bench", Role.PLAYER, frozenset({"acme"})),
            hash_password(b"bench-pw", cheap),
            replace=True,
        )
        store.close()
        self.config = load_config(work / "rcs.toml")
        self.loop = uvloop.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.running = self.call(start_server(self.config, IdentitySet([identity])))

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(600)

    def stop(self) -> None:
        self.call(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)


def _get(conn: http.client.HTTPConnection, path: str, token: str) -> Any:
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        msg = f"{path}: HTTP {r.status} {body[:200]!r}"
        raise SystemExit(msg)
    return json.loads(body)


def _walk_to_middle(conn: http.client.HTTPConnection, token: str, path: str, key: str) -> str:
    """The cursor of a page in the middle of ``path``'s listing."""
    sep = "after" if key == "recordings" else "cursor"
    page = 50 if key == "recordings" else 25  # the size the subjects ask for
    big = 1000 if key == "recordings" else 200  # the largest each route serves

    def fetch(limit: int, cursor: str | None) -> str | None:
        q = f"?limit={limit}" + (f"&{sep}={cursor}" if cursor else "")
        next_cursor: str | None = _get(conn, path + q, token)["next"]
        return next_cursor

    return middle_cursor(fetch, (big, page))


def middle_cursor(
    fetch: Callable[[int, str | None], str | None], page_sizes: tuple[int, ...]
) -> str:
    """The cursor that opens the page in the middle of a paged listing.

    ``fetch(limit, cursor)`` gets one page and returns its ``next`` cursor (None on
    the last page).  The listing is walked with the first (largest) page size that
    leaves it on more than one page, so a large archive takes few requests and a
    small one still has a middle: walking only in large pages found no cursor at all
    when everything fitted on one page, and indexed an empty list (the IndexError
    of ``--entries`` below ~2,000).

    Raises:
        ValueError: the whole listing fits on one page of the smallest size.
    """
    for limit in page_sizes:
        cursors: list[str] = []
        cursor = fetch(limit, None)
        while cursor is not None:
            cursors.append(cursor)
            cursor = fetch(limit, cursor)
        if cursors:  # cursors[k - 1] opens page k (from 0) of len(cursors) + 1 pages
            return cursors[(len(cursors) + 1) // 2 - 1]
    msg = f"the listing fits on one page of {page_sizes[-1]}: it has no page in the middle"
    raise ValueError(msg)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument(
        "--entries",
        type=int,
        default=20_000,
        help=f"recordings of tenant acme (at least {MIN_ENTRIES}: a listing of more than "
        "one page of each subject; default: %(default)s)",
    )
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--dir", type=Path, default=None, help="where to write the archive")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.entries < MIN_ENTRIES:
        p.error(f"--entries must be at least {MIN_ENTRIES}, not {args.entries}")
    machine = describe_machine()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        root = work / "archive"
        recipient, identity = _party(work)
        args.recipient = recipient
        t0 = time.perf_counter()
        n = write_archive(root, recipient, args.entries)
        print(f"wrote {n} envelopes in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        srv = Server(work, root, identity)
        try:
            result = _measure(srv, args)
        finally:
            srv.stop()
    result["machine"] = machine
    result["entries_written"] = n
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _measure(srv: Server, args: argparse.Namespace) -> dict[str, Any]:
    host, port = srv.running.host, srv.running.port
    conn = http.client.HTTPConnection(host, port, timeout=600)
    basic = "Basic " + base64.b64encode(b"bench:bench-pw").decode()
    conn.request("POST", "/rcs/tokens", headers={"Authorization": basic})
    token = json.loads(conn.getresponse().read())["access_token"]
    t0 = time.perf_counter()
    _get(conn, "/rcs/recordings?limit=1", token)  # answers once the index is complete
    print(f"index ready after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    mid_listing = _walk_to_middle(conn, token, "/rcs/recordings", "recordings")
    mid_inter = _walk_to_middle(conn, token, "/rcs/interactions", "interactions")
    rare = f"call-{args.entries // 4:06}"  # one interaction has it; every one is looked at
    day = DAY0 + dt.timedelta(days=(args.entries // 2) * STEP_MS // 86_400_000 // 2)
    one_day = urllib.parse.urlencode(
        {"from": day.date().isoformat(), "to": day.date().isoformat(), "limit": 25}
    )
    paths = {
        "listing": "/rcs/recordings?limit=50",
        "listing deep": f"/rcs/recordings?limit=50&after={mid_listing}",
        "interactions": "/rcs/interactions?limit=25",
        "interactions deep": f"/rcs/interactions?limit=25&cursor={mid_inter}",
        "interactions search": f"/rcs/interactions?limit=25&q={rare}",
        "interactions one day": f"/rcs/interactions?{one_day}",
    }
    got = {k: _get(conn, v, token) for k, v in paths.items()}
    assert len(got["interactions search"]["interactions"]) == 1
    assert sum(len(i["recordings"]) for i in got["interactions"]["interactions"]) == 50

    def subject(path: str) -> Callable[[], tuple[float, float]]:
        return lambda: wall_and_cpu(lambda: _get(conn, path, token))

    runs = interleave({k: subject(v) for k, v in paths.items()}, args.rounds, warmup=5)
    table: dict[str, Any] = {}
    base_wall = [w for w, _ in runs["listing"]]
    for name, samples in runs.items():
        wall = sorted(w for w, _ in samples)
        cpu = [c for _, c in samples]
        table[name] = {
            "p50_ms": 1000 * statistics.median(wall),
            "p99_ms": 1000 * wall[min(len(wall) - 1, int(len(wall) * 0.99))],
            "cpu_ms_mean": 1000 * statistics.fmean(cpu),
            "ratio_to_listing": paired_ratio([w for w, _ in samples], base_wall).to_json(),
        }
    table["regroup a tenant from scratch (in process)"] = _regroup(srv)
    table["one new recording: refresh applied, then a page"] = _incremental(srv, args.recipient)
    return {"rounds": args.rounds, "subjects": table}


def _regroup(srv: Server) -> dict[str, float]:
    from recstream.service.context import CONTEXT
    from recstream.service.interactions import VIEW, InteractionQuery

    app = srv.running.runner.app
    index, view = app[CONTEXT].index, app[VIEW]
    assert index is not None

    def full_regroup() -> None:
        index.version += 1  # a version the change log does not know: a full regroup

    first_page = functools.partial(view.page, frozenset({"acme"}), InteractionQuery(limit=25))
    return _page_timings(first_page, 10, full_regroup)


def _incremental(srv: Server, recipient: Recipient) -> dict[str, float]:
    """A recording arrives: the next page applies it to the grouping (no regroup)."""
    from recstream.service.context import CONTEXT
    from recstream.service.interactions import VIEW, InteractionQuery

    app = srv.running.runner.app
    index, view = app[CONTEXT].index, app[VIEW]
    assert index is not None
    view.page(frozenset({"acme"}), InteractionQuery(limit=25))  # grouped, current
    root = srv.config.recordings_root
    assert root is not None
    (root / "acme" / "new").mkdir(exist_ok=True)
    added = iter(range(20))

    def one_more() -> None:
        i = next(added)
        meta = new_metadata(
            recording_id=f"call-{i:06}",  # joins an existing interaction
            tenant="acme",
            media_kind=MediaKind.VOICE,
            media_type="audio/basic",
            created_ms=int(DAY0.timestamp() * 1000) + i * STEP_MS,
        )
        enc = EnvelopeEncryptor([recipient], meta)
        (root / "acme" / "new" / f"n{i}.rsv").write_bytes(enc.update(b"\xff" * 80) + enc.finalize())
        index.refresh()

    first_page = functools.partial(view.page, frozenset({"acme"}), InteractionQuery(limit=25))
    return _page_timings(first_page, 20, one_more)


def _page_timings(
    page: Callable[[], object], rounds: int, before: Callable[[], None]
) -> dict[str, float]:
    """``page()`` timed ``rounds`` times, each after an untimed ``before()``: wall, CPU."""
    times, cpu = [], []
    for _ in range(rounds):
        before()
        wall, used = wall_and_cpu(page)
        times.append(wall)
        cpu.append(used)
    return {
        "p50_ms": 1000 * summarize(times).median,
        "max_ms": 1000 * max(times),
        "cpu_ms": 1000 * summarize(cpu).median,
    }


def wall_and_cpu(func: Callable[[], object]) -> tuple[float, float]:
    """Wall time and this process's CPU time (s) of one call of ``func``."""
    c0, w0 = time.process_time(), time.perf_counter()
    func()
    return time.perf_counter() - w0, time.process_time() - c0


def _print(result: dict[str, Any]) -> None:
    m = result["machine"]
    print(
        f"machine: {m['cpu']}, {m['usable_cores']} usable cores, load at start "
        f"{m['load_average_at_start']}; {result['entries_written']} envelopes; "
        f"{result['rounds']} rounds"
    )
    print(f"{'subject':44} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8} {'x listing':>10}")
    for name, row in result["subjects"].items():
        if "ratio_to_listing" not in row:
            print(
                f"{name:44} {row['p50_ms']:8.2f} {'':>8} {row['cpu_ms']:8.2f}"
                f"   (wall max {row['max_ms']:.1f} ms)"
            )
            continue
        ratio = row["ratio_to_listing"]["median"]
        print(
            f"{name:44} {row['p50_ms']:8.2f} {row['p99_ms']:8.2f} "
            f"{row['cpu_ms_mean']:8.2f} {ratio:10.2f}"
        )


if __name__ == "__main__":
    sys.exit(main())

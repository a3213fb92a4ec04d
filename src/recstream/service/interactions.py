"""Recordings grouped by interaction: ``GET /rcs/interactions``, over the header index.

An **interaction** is one call as a supervisor thinks of it: every recording of
one tenant with one recording ID.  The recording hook gives a call's voice and
screen recordings the call's ID (told apart by media kind) and the muxer gives
its output the voice's ID, so the call, its screen recording and the muxed file
are one entry.  An interaction starts at its earliest recording's ``created_ms``
and ends at the latest known end (a recording's start plus its duration, where
:mod:`recstream.service.mediatime` can tell).

**Isolation** is the listing's: only the groups of the caller's tenants are
read (:meth:`HeaderIndex.tenant_entries`), and asking for a tenant that is not
the caller's is refused (403) without looking.  **Cost**: each tenant's
interactions are grouped and sorted once, then kept up to date: when the index
has changed, the interactions it touched (:meth:`HeaderIndex.interaction_delta`)
are rebuilt and moved in the sorted list, and only when its change log does not
reach back is the tenant regrouped.  A page bisects to the cursor, filters
lazily and stops after ``limit + 1`` matches, so only a page is built and sent.

Parameters (anything else is a 400, so a typo is not silently ignored):
``q`` (case-insensitive substring of the recording ID, prefixes included),
``tenant``, ``from`` / ``to`` (``YYYY-MM-DD``, a UTC day, ``to`` inclusive; or
an ISO 8601 date-time with its offset, ``to`` exclusive; on the start time),
``kind`` (``voice`` or ``screen``: interactions with such a recording),
``limit`` (1-:data:`MAX_LIMIT`, default :data:`DEFAULT_LIMIT`) and ``cursor``
(the ``next`` of the previous page).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import datetime as dt
import heapq
import itertools
import json
import operator
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from recstream.service.context import CONTEXT
from recstream.service.errors import NotFoundError, PermissionDeniedError, RequestError
from recstream.service.index import Entry, HeaderIndex

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Interaction",
    "InteractionPage",
    "InteractionQuery",
    "InteractionView",
    "add_routes",
    "group",
    "page_body",
    "parse_query",
]

DEFAULT_LIMIT: Final = 25
MAX_LIMIT: Final = 200
MAX_Q_CHARS: Final = 256
MAX_CURSOR_CHARS: Final = 2048
KINDS: Final = frozenset({"voice", "screen"})
PARAMETERS: Final = frozenset({"q", "tenant", "from", "to", "kind", "cursor", "limit"})

_Key = tuple[int, str, str]  # (-start_ms, tenant, recording_id): newest first


@dataclass(frozen=True, slots=True)
class Interaction:
    """The recordings of one tenant with one recording ID, oldest first."""

    tenant: str
    recording_id: str
    recordings: tuple[Entry, ...]
    # Worked out once, when grouped: every page compares and filters on them.
    folded: str  # recording_id.casefold(), for search
    start_ms: int
    key: _Key
    kinds: frozenset[str]

    @classmethod
    def of(cls, members: list[Entry]) -> Interaction:
        """The interaction of ``members`` (one tenant, one recording ID, any order)."""
        if len(members) > 1:
            members.sort(key=lambda e: (e.created_ms, e.media_kind, e.name))
        first = members[0]
        rid, start = first.recording_id, first.created_ms
        kinds = frozenset(e.media_kind for e in members)
        return cls(
            first.tenant,
            rid,
            tuple(members),
            rid.casefold(),
            start,
            (-start, first.tenant, rid),
            kinds,
        )

    @property
    def end_ms(self) -> int | None:
        ends = [e.created_ms + d for e in self.recordings if (d := e.duration_ms) is not None]
        return max(ends) if ends else None

    def to_json(self) -> bytes:
        end = self.end_ms
        head = {
            "tenant": self.tenant,
            "recording_id": self.recording_id,
            "start_ms": self.start_ms,
            "end_ms": end,
            "duration_ms": None if end is None else end - self.start_ms,
            "kinds": sorted(self.kinds),
            "size": sum(e.size or 0 for e in self.recordings),
        }
        # Each recording exactly as GET /rcs/recordings gives it (the index's bytes).
        items = b",".join(e.json or json.dumps(e.to_json()).encode() for e in self.recordings)
        text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
        return text[:-1].encode() + b',"recordings":[' + items + b"]}"


def group(entries: Iterable[Entry]) -> list[Interaction]:
    """Group one tenant's entries by recording ID; newest interaction first."""
    by_id: dict[str, list[Entry]] = {}
    for e in entries:
        by_id.setdefault(e.recording_id, []).append(e)
    out = [Interaction.of(members) for members in by_id.values()]
    out.sort(key=_key_of)
    return out


_key_of = operator.attrgetter("key")


@dataclass(frozen=True, slots=True)
class InteractionQuery:
    """A checked query: which tenants, which interactions, where to start."""

    tenant: str | None = None
    q: str = ""
    from_ms: int | None = None
    to_ms: int | None = None
    kind: str | None = None
    limit: int = DEFAULT_LIMIT
    after: _Key | None = None

    def matches(self, i: Interaction) -> bool:
        if self.q and self.q not in i.folded:
            return False
        if self.from_ms is not None and i.start_ms < self.from_ms:
            return False
        if self.to_ms is not None and i.start_ms >= self.to_ms:
            return False
        return self.kind is None or self.kind in i.kinds


@dataclass(frozen=True, slots=True)
class InteractionPage:
    interactions: list[Interaction]
    next: str | None
    tenants: list[str]  # the caller's tenants, for the page's tenant filter
    bodies: list[bytes]  # each interaction's JSON


class InteractionView:
    """Interactions per tenant, regrouped when the index changes.  Thread-safe.

    An interaction's JSON is made the first time a page shows it and kept until
    the index changes: paging back and forth serialises nothing twice.
    """

    def __init__(self, index: HeaderIndex) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._cache: dict[str, _Grouped] = {}

    def _tenant(self, tenant: str) -> _Grouped:
        with self._lock:  # unchanged index: no copy of its entries, no regrouping
            hit = self._cache.get(tenant)
            if hit is not None and hit.version == self.index.version:
                return hit
        fresh = None
        if hit is not None:  # apply what changed since, interaction by interaction
            version, delta = self.index.interaction_delta(tenant, hit.version)
            if delta is not None:
                fresh = hit.updated(version, delta)
        if fresh is None:
            version, entries = self.index.tenant_entries(tenant)
            fresh = _Grouped.of(version, group(entries))
        with self._lock:
            current = self._cache.get(tenant)
            if current is None or current.version <= fresh.version:
                self._cache[tenant] = fresh
        return fresh

    def page(self, tenants: frozenset[str], query: InteractionQuery) -> InteractionPage:
        """One page of the interactions of ``tenants`` (the caller's) matching ``query``.

        Raises:
            PermissionDeniedError: ``query.tenant`` is not one of ``tenants``.
        """
        if query.tenant is not None and query.tenant not in tenants:
            msg = f"you may not see recordings of tenant {query.tenant[:100]!r}"
            raise PermissionDeniedError(msg)
        wanted = sorted(tenants if query.tenant is None else {query.tenant})
        streams = []
        for tenant in wanted:
            g = self._tenant(tenant)
            start = bisect.bisect_right(g.keys, query.after) if query.after is not None else 0
            streams.append(_matching(g, start, query))
        merged = heapq.merge(*streams, key=operator.itemgetter(0))
        found = [(i, g) for _, i, g in itertools.islice(merged, query.limit + 1)]
        more = len(found) > query.limit
        page = found[: query.limit]
        bodies = [g.json.get(i.recording_id) or g.remember(i) for i, g in page]
        return InteractionPage(
            [i for i, _ in page],
            encode_cursor(page[-1][0].key) if more else None,
            sorted(tenants),
            bodies,
        )


def _matching(
    g: _Grouped, start: int, query: InteractionQuery
) -> Iterator[tuple[_Key, Interaction, _Grouped]]:
    # A function, not a generator expression in page()'s loop: there ``g`` would be
    # looked up when the merge runs, i.e. the *last* tenant's grouping, and another
    # tenant's cached JSON served for an interaction with the same recording ID.
    return (
        (i.key, i, g) for i in itertools.islice(g.interactions, start, None) if query.matches(i)
    )


@dataclass(slots=True)
class _Grouped:
    """One tenant's interactions at one index version, and the JSON made of them so far.

    Never changed once built (pages read it from other threads): an update makes a
    new one (copying the lists is a memcpy; regrouping 20,000 entries is ~0.1 s).
    """

    version: int
    interactions: list[Interaction]
    keys: list[_Key]
    json: dict[str, bytes]  # recording ID -> Interaction.to_json(), filled as pages show them
    by_rid: dict[str, Interaction]

    @classmethod
    def of(cls, version: int, grouped: list[Interaction]) -> _Grouped:
        by_rid = {i.recording_id: i for i in grouped}
        return cls(version, grouped, [i.key for i in grouped], {}, by_rid)

    def updated(self, version: int, delta: dict[str, list[Entry]]) -> _Grouped:
        """This grouping with ``delta`` (recording ID -> its entries now) applied."""
        interactions, keys = list(self.interactions), list(self.keys)
        json_, by_rid = dict(self.json), dict(self.by_rid)
        for rid, members in delta.items():
            json_.pop(rid, None)
            old = by_rid.pop(rid, None)
            if old is not None:
                i = bisect.bisect_left(keys, old.key)
                del keys[i], interactions[i]
            if members:
                new = by_rid[rid] = Interaction.of(list(members))
                i = bisect.bisect_left(keys, new.key)
                keys.insert(i, new.key)
                interactions.insert(i, new)
        return _Grouped(version, interactions, keys, json_, by_rid)

    def remember(self, i: Interaction) -> bytes:
        body = self.json[i.recording_id] = i.to_json()  # a race only makes it twice
        return body


def page_body(page: InteractionPage) -> bytes:
    """``{"interactions": [...], "next": CURSOR or null, "tenants": [...]}``."""
    items = b",".join(page.bodies)
    tail = json.dumps({"next": page.next, "tenants": page.tenants}, separators=(",", ":"))
    return b'{"interactions":[' + items + b"]," + tail[1:].encode() + b"\n"


def encode_cursor(key: _Key) -> str:
    raw = json.dumps([-key[0], key[1], key[2]], ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> _Key:
    """Raises RequestError: not a cursor this endpoint made."""
    try:
        if len(text) > MAX_CURSOR_CHARS:
            raise ValueError
        raw = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
        start, tenant, rid = raw
        if type(start) is not int or not isinstance(tenant, str) or not isinstance(rid, str):
            raise ValueError
        return (-start, tenant, rid)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        msg = "'cursor' must be the 'next' value of a previous page"
        raise RequestError(msg) from None


def parse_query(params: Mapping[str, str], keys: Iterable[str]) -> InteractionQuery:
    """Check the request's query parameters (``keys``: every name sent, repeats included).

    Raises:
        RequestError: an unknown or repeated parameter, or a bad value (HTTP 400).
    """
    names = list(keys)
    unknown = sorted(set(names) - PARAMETERS)
    if unknown:
        msg = f"unknown parameter(s) {', '.join(map(repr, unknown))}; known: {sorted(PARAMETERS)}"
        raise RequestError(msg)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        msg = f"parameter(s) given more than once: {', '.join(map(repr, repeated))}"
        raise RequestError(msg)
    q = params.get("q", "").strip()
    if len(q) > MAX_Q_CHARS or not q.isprintable():
        msg = f"'q' must be printable text of at most {MAX_Q_CHARS} characters"
        raise RequestError(msg)
    kind = params.get("kind") or None
    if kind is not None and kind not in KINDS:
        msg = f"'kind' must be one of {sorted(KINDS)}, not {kind[:40]!r}"
        raise RequestError(msg)
    from_ms = _time_ms("from", params.get("from"), end=False)
    to_ms = _time_ms("to", params.get("to"), end=True)
    if from_ms is not None and to_ms is not None and from_ms >= to_ms:
        msg = "'from' must be before 'to'"
        raise RequestError(msg)
    cursor = params.get("cursor") or None
    return InteractionQuery(
        tenant=params.get("tenant") or None,
        q=q.casefold(),
        from_ms=from_ms,
        to_ms=to_ms,
        kind=kind,
        limit=_limit(params.get("limit")),
        after=decode_cursor(cursor) if cursor else None,
    )


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit() and len(text) <= 9) or not (
        1 <= int(text) <= MAX_LIMIT
    ):
        msg = f"'limit' must be an integer from 1 to {MAX_LIMIT}"
        raise RequestError(msg)
    return int(text)


def _time_ms(name: str, text: str | None, *, end: bool) -> int | None:
    """Milliseconds since the epoch; a bare date is a UTC day (``to``: the day after)."""
    if not text:
        return None
    msg = (
        f"'{name}' must be a date (YYYY-MM-DD) or an ISO 8601 date-time with its offset"
        f" (2026-11-28T09:00:00+01:00), not {text[:40]!r}"
    )
    if len(text) > 40 or not text.isascii():
        raise RequestError(msg)
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            when = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(days=int(end))
        else:
            when = dt.datetime.fromisoformat(text)
            if when.tzinfo is None:  # whose local time? the caller's zone must be explicit
                raise ValueError
    except (ValueError, OverflowError):
        raise RequestError(msg) from None
    return int(when.timestamp() * 1000)


VIEW = web.AppKey("recstream_interactions", InteractionView)


def add_routes(app: web.Application) -> None:
    """``GET /rcs/interactions`` (an RCS with an archive)."""
    index = app[CONTEXT].index
    if index is not None:
        app[VIEW] = InteractionView(index)
    app.router.add_get("/rcs/interactions", handle_interactions)


async def handle_interactions(request: web.Request) -> web.StreamResponse:
    """One page of the caller's interactions (see the module docstring)."""
    ctx = request.app[CONTEXT]
    who = await ctx.authenticate(request)
    query = parse_query(request.query, [k for k, _ in request.query.items()])
    view = request.app.get(VIEW)
    if view is None:
        msg = "this server has no recordings archive ([recordings] root)"
        raise NotFoundError(msg)
    await ctx.index_ready.wait()
    page = await asyncio.to_thread(view.page, who.user.tenants, query)
    ctx.audit.write_limited(
        "list_interactions",
        f"user:{who.name}",
        **ctx.audit_base(request, who),
        count=len(page.interactions),
        cursor=query.after is not None,
    )
    return web.Response(
        body=page_body(page),
        content_type="application/json",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )

"""The SRS's SIP user agent server, sans-I/O: requests in, actions out.

:class:`UserAgent` holds every call (dialog) and its transactions.  The
adapter (:mod:`recstream.siprec.server`) feeds it parsed messages with where
they came from and the time (``now``, seconds), and carries out the actions it
returns: :class:`Send` bytes, :class:`StartCall` (open the recording, then call
:meth:`UserAgent.started`), :class:`CallMedia` (recording bytes),
:class:`MediaChanged` (open or close RTP endpoints), :class:`EndCall`.  Time
passes through :meth:`UserAgent.tick`.  Randomness (tags, branches, keys) and
RTP ports come through the ``random`` and ``ports`` seams.

SIP rules kept here (RFC 3261 section numbers):

* INVITE: 100 Trying at once (§17.2.1), the final response retransmitted on
  UDP from T1 doubling to T2 until the ACK, for at most 64*T1 (§13.3.1.4,
  §17.2.1); a retransmitted INVITE gets the last response again.
* CANCEL before the final response: 200 to the CANCEL, 487 to the INVITE
  (§9.2); after it, 200 to the CANCEL alone.  Unknown transaction: 481.
* BYE: 200 and the call ends; in no dialog: 481 (§15.1.2).  The SRS also
  ends calls itself (RTP timeout, shutdown) with a BYE it retransmits on UDP
  (§17.1.2.2, timer E) until answered.
* re-INVITE: the recording goes on; streams are matched by label, so an
  existing stream keeps its port and track; a new label gets a new track; a
  stream set to port 0 or dropped is closed (§14, RFC 3264 §8).
* OPTIONS: 200 (§11.2).  Any other method: 501 (§8.2.1).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sipmessage import Request, Response

from recstream.siprec import offer as O
from recstream.siprec.config import SrsConfig
from recstream.siprec.metadata import RecordingMetadata
from recstream.siprec.rtp import StreamReceiver
from recstream.siprec.sipwire import Parsed, make_response
from recstream.siprec.srtp import SrtpReceiver
from recstream.tracks import TracksEncoder

__all__ = [
    "Call",
    "CallMedia",
    "Dest",
    "EndCall",
    "MediaChanged",
    "Send",
    "StartCall",
    "UserAgent",
]

T1 = 0.5  # RFC 3261 §17.1.1.1: RTT estimate
T2 = 4.0
TRANSACTION_TIMEOUT = 64 * T1  # timers B/F/H: give up after 32 s
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS"
TICK = 0.05  # seconds between ticks the adapter should keep
TRYING_AFTER = 0.2  # RFC 3261 §17.2.1: a 100 if the final response takes longer
MAX_REMEMBERED_BYES = 8192  # answered BYEs kept for their retransmissions (timer J: 64*T1)


@dataclass(frozen=True, slots=True)
class Dest:
    """Where a message came from and where its answers go."""

    transport: str  # "udp" or "tcp"
    addr: tuple[str, int]
    conn: Any = None  # the adapter's connection object for TCP


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes
    dest: Dest


@dataclass(frozen=True, slots=True)
class StartCall:
    call: Call


@dataclass(frozen=True, slots=True)
class CallMedia:
    call: Call
    data: bytes


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """Streams whose RTP endpoints must be opened (``opened``) or closed (``closed`` ports)."""

    call: Call
    opened: tuple[Stream, ...]
    closed: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EndCall:
    call: Call
    reason: str


Action = Send | StartCall | CallMedia | MediaChanged | EndCall


class PortPool(Protocol):
    def allocate(self) -> int | None: ...
    def release(self, port: int) -> None: ...


@dataclass
class Stream:
    label: str
    port: int
    receiver: StreamReceiver
    plan: O.StreamPlan


@dataclass
class _Retransmit:
    data: bytes
    dest: Dest
    due: float
    interval: float
    deadline: float


@dataclass(eq=False)  # identity: calls are kept in sets
class Call:
    """One recorded call: its dialog, its streams, and its recording's encoder."""

    call_id: str
    from_tag: str
    local_tag: str
    recording_id: str
    tenant: str
    dest: Dest
    invite: Request
    created: float
    started_ms: int
    metadata: RecordingMetadata | None
    encoder: TracksEncoder = field(default_factory=TracksEncoder)
    state: str = "starting"  # starting, answered, confirmed, ended
    streams: dict[str, Stream] = field(default_factory=dict)
    invite_branch: str = ""
    invite_cseq: int = 0
    last_response: bytes = b""
    retransmit: _Retransmit | None = None
    bye: _Retransmit | None = None
    local_cseq: int = 0
    sdp_version: int = 0
    session_id: int = 0
    last_media: float = 0.0
    next_track: int = 1
    plans: list[O.StreamPlan] = field(default_factory=list)
    closed_stats: list[dict[str, Any]] = field(default_factory=list)
    end_reason: str = ""
    branches: list[str] = field(default_factory=list)  # INVITE transactions of the dialog
    offer_host: str | None = None  # the session-level c= address of the latest offer

    @property
    def key(self) -> tuple[str, str]:
        return (self.call_id, self.from_tag)

    def stream_stats(self) -> list[dict[str, Any]]:
        live = [
            {"track": s.receiver.track, **s.receiver.counters.as_stats()}
            for s in self.streams.values()
        ]
        return self.closed_stats + live


def _tag(random: Callable[[int], bytes]) -> str:
    return random(8).hex()


class UserAgent:
    """The SIP side of the SRS (see the module docstring)."""

    def __init__(
        self,
        config: SrsConfig,
        local: tuple[str, int],
        ports: PortPool,
        *,
        random: Callable[[int], bytes],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.local = local
        self.ports = ports
        self.random = random
        self.wall_clock = wall_clock
        self.calls: dict[tuple[str, str], Call] = {}
        self._by_branch: dict[tuple[str, str], Call] = {}  # (Call-ID, INVITE branch)
        self.draining = False
        self.counts: dict[str, int] = {}  # outcome -> calls, for metrics
        self.rejected: list[tuple[int, str]] = []  # (status, reason) since last taken
        self._byes: dict[tuple[str, str], bytes] = {}  # answered BYEs, oldest first

    # --- input -------------------------------------------------------------------

    def handle(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        """Take one message; return what to do."""
        msg = parsed.message
        if isinstance(msg, Response):
            return self._response(parsed)
        handler = {
            "INVITE": self._invite,
            "ACK": self._ack,
            "BYE": self._bye,
            "CANCEL": self._cancel,
            "OPTIONS": self._options,
        }.get(msg.method)
        if handler is None:
            return [self._reply(msg, dest, 501, "Not Implemented", extra={"Allow": ALLOW})]
        return handler(parsed, dest, now)

    def bad_request(self, request: Request, dest: Dest) -> list[Action]:
        """The answer to a request that failed to parse but can still be answered."""
        return [self._reply(request, dest, 400, "Bad Request")]

    def forbidden(self, request: Request, dest: Dest) -> list[Action]:
        """The answer to a request from a source outside ``[sip] allow``."""
        self.rejected.append((403, "source not allowed"))
        self._count("rejected_403")
        return [self._reply(request, dest, 403, "Forbidden")]

    def error_response(self, request: Request, dest: Dest) -> Send:
        """The answer to a request whose handling failed unexpectedly (a bug)."""
        return self._reply(request, dest, 500, "Server Internal Error")

    def _reply(
        self,
        req: Request,
        dest: Dest,
        code: int,
        phrase: str,
        *,
        tag: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> Send:
        return Send(
            make_response(req, code, phrase, to_tag=tag or _tag(self.random), extra=extra), dest
        )

    def _options(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        req = parsed.message
        assert isinstance(req, Request)
        extra = {
            "Allow": ALLOW,
            "Accept": "application/sdp, multipart/mixed",
            "Supported": "siprec",
        }
        return [self._reply(req, dest, 200, "OK", extra=extra)]

    def _find(self, parsed: Parsed) -> Call | None:
        msg = parsed.message
        tag = msg.from_address.parameters.get("tag") or ""
        if isinstance(msg, Response):  # our BYE's response: From is us
            tag = msg.to_address.parameters.get("tag") or ""
        return self.calls.get((parsed.call_id, tag))

    # INVITE ------------------------------------------------------------------

    def _invite(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        req = parsed.message
        assert isinstance(req, Request)
        branch = parsed.via[0].parameters.get("branch") or ""
        known = self._by_branch.get((parsed.call_id, branch))
        if known is not None:  # a retransmission: the last response again
            return [Send(known.last_response, dest)] if known.last_response else []
        if req.to_address.parameters.get("tag"):
            return self._reinvite(parsed, dest, now)
        live = self._find(parsed)
        if live is not None:
            # An initial INVITE (no To-tag) whose dialog is live, on a new branch: a merged
            # request (RFC 3261 §8.2.2.2). It must not replace the call it collides with
            # (that would orphan the recording and its ports outside max_calls).
            self.rejected.append((482, "dialog already exists"))
            self._count("rejected_482")
            return [self._reply(req, dest, 482, "Loop Detected")]
        try:
            return self._new_call(parsed, dest, now)
        except O.Refusal as r:
            self.rejected.append((r.status, r.phrase))
            self._count(f"rejected_{r.status}")
            return [self._reply(req, dest, r.status, r.phrase, extra=r.headers)]

    def _new_call(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        req = parsed.message
        assert isinstance(req, Request)
        if self.draining:
            raise O.Refusal(503, "Service Unavailable (shutting down)", {"Retry-After": "30"})
        if self.active_count() >= self.config.max_calls:
            raise O.Refusal(503, "Service Unavailable (recorder full)", {"Retry-After": "5"})
        O.check_require(req)
        if not O.is_recording_session(req):
            # RFC 7866 §6.1.1: only an INVITE with '+sip.src' and 'siprec' is a recording
            # session; a recorder is not a phone.
            raise O.Refusal(403, "Forbidden (not a SIPREC recording session)")
        offer = O.read_offer(req)
        plans = O.plan_streams(offer.sdp)
        if not any(p.accepted for p in plans):
            raise O.Refusal(488, "Not Acceptable Here (no PCMU/PCMA audio stream)")
        tenant = O.resolve_tenant(self.config, req, offer.metadata)
        call = Call(
            call_id=parsed.call_id,
            from_tag=req.from_address.parameters.get("tag") or "",
            local_tag=_tag(self.random),
            recording_id=str(uuid.UUID(bytes=self.random(16), version=4)),
            tenant=tenant,
            dest=dest,
            invite=req,
            created=now,
            started_ms=round(self.wall_clock() * 1000),
            metadata=offer.metadata,
            invite_branch=parsed.via[0].parameters.get("branch") or "",
            invite_cseq=parsed.cseq.sequence,
            session_id=int.from_bytes(self.random(4), "big"),
            last_media=now,
        )
        call.plans = plans
        call.offer_host = offer.sdp.connection
        self.calls[call.key] = call
        self._by_branch[(call.call_id, call.invite_branch)] = call
        call.branches.append(call.invite_branch)
        # No 100 Trying yet: the answer normally follows within milliseconds; tick() sends
        # one if it takes TRYING_AFTER (RFC 3261 §17.2.1: 200 ms).
        return [StartCall(call)]

    def started(self, call: Call, ok: bool, now: float) -> list[Action]:
        """The recording of ``call`` opened (``ok``) or could not; answer the INVITE."""
        if call.state != "starting":  # cancelled meanwhile
            return []
        if not ok:
            self._count("rejected_500")
            self.rejected.append((500, "recording could not start"))
            return self._fail_call(call, 500, "Server Internal Error (cannot record)", now)
        info = self._session_info(call)
        head = call.encoder.start("siprec", call.started_ms, info)
        opened = self._apply_plans(call, call.plans)
        if not call.streams:
            return [
                CallMedia(call, head),
                *self._fail_call(call, 503, "Service Unavailable (no RTP ports)", now),
            ]
        answer = O.answer_sdp(
            self.config.rtp_host,
            call.session_id,
            call.sdp_version,
            call.plans,
            {k: s.port for k, s in call.streams.items()},
            self.random,
        )
        call.state = "answered"
        self._count("answered")
        out: list[Action] = [CallMedia(call, head), MediaChanged(call, tuple(opened), ())]
        return out + self._final(call, call.invite, 200, "OK", now, answer)

    def _session_info(self, call: Call) -> dict[str, Any]:
        md = call.metadata
        return {
            "call_id": call.call_id,
            "recording_id": call.recording_id,
            "tenant": call.tenant,
            "session_id": md.session_ids[0] if md and md.session_ids else None,
            "sip_session_id": md.sip_session_ids[0] if md and md.sip_session_ids else None,
            "transport": call.dest.transport,
            "metadata": md.to_json() if md else None,
        }

    def _final(  # noqa: PLR0917
        self,
        call: Call,
        req: Request,
        code: int,
        phrase: str,
        now: float,
        body: bytes = b"",
    ) -> list[Action]:
        extra = {"Contact": f"<sip:srs@{_hostport(self.local)}>", "Allow": ALLOW}
        if code == 200:
            extra["Require"] = "siprec"
        data = make_response(
            req,
            code,
            phrase,
            to_tag=call.local_tag,
            body=body,
            content_type="application/sdp" if body else None,
            extra=extra,
        )
        call.last_response = data
        if call.dest.transport == "udp":
            call.retransmit = _Retransmit(data, call.dest, now + T1, T1, now + TRANSACTION_TIMEOUT)
        return [Send(data, call.dest)]

    def _fail_call(self, call: Call, code: int, phrase: str, now: float) -> list[Action]:
        out = self._final(call, call.invite, code, phrase, now)
        return out + self._end(call, "rejected" if code != 487 else "cancelled")

    def _apply_plans(self, call: Call, plans: list[O.StreamPlan]) -> list[Stream]:
        """Open a stream for each accepted plan whose label is new (or whose codec changed)."""
        opened = []
        for p in plans:
            if not p.accepted:
                continue
            old = call.streams.get(p.label)
            if old is not None and (old.plan.payload_type, old.plan.srtp_key) == (
                p.payload_type,
                p.srtp_key,
            ):
                old.plan = p
                continue
            port = old.port if old is not None else self.ports.allocate()
            if old is not None:
                self._close_stream(call, old, release=False)
            if port is None:
                continue
            participant = call.metadata.sender_of(p.label) if call.metadata else None
            receiver = StreamReceiver(
                call.encoder,
                call.next_track,
                p.payload_type or 0,
                p.codec,
                p.telephone_event,
                p.label,
                participant,
                SrtpReceiver(p.srtp_key) if p.srtp_key else None,
                window=self.config.reorder_window,
                latch_hosts=frozenset(
                    h for h in (p.media.connection, call.offer_host, call.dest.addr[0]) if h
                ),
            )
            call.next_track += 1
            stream = call.streams[p.label] = Stream(p.label, port, receiver, p)
            opened.append(stream)
        return opened

    def _close_stream(self, call: Call, stream: Stream, *, release: bool = True) -> bytes:
        data = stream.receiver.close()
        call.closed_stats.append(
            {"track": stream.receiver.track, **stream.receiver.counters.as_stats()}
        )
        del call.streams[stream.label]
        if release:
            self.ports.release(stream.port)
        return data

    def _reinvite(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        req = parsed.message
        assert isinstance(req, Request)
        call = self._find(parsed)
        if call is None or call.state == "ended":
            return [self._reply(req, dest, 481, "Call/Transaction Does Not Exist")]
        if call.retransmit is not None:  # RFC 3261 §14.2: one INVITE at a time
            return [
                self._reply(
                    req,
                    dest,
                    500,
                    "Server Internal Error",
                    tag=call.local_tag,
                    extra={"Retry-After": "1"},
                )
            ]
        try:
            offer = O.read_offer(req)
        except O.Refusal as r:
            return [self._reply(req, dest, r.status, r.phrase, tag=call.local_tag, extra=r.headers)]
        plans = O.plan_streams(offer.sdp)
        call.offer_host = offer.sdp.connection
        media = b""
        if offer.metadata is not None:  # recorded, never only kept in memory
            call.metadata = offer.metadata
            media += call.encoder.update(
                {"metadata": offer.metadata.to_json(), "at_ms": round(self.wall_clock() * 1000)}
            )
        wanted = {p.label for p in plans if p.accepted}
        closed = []
        for label in list(call.streams):
            if label not in wanted:
                closed.append(call.streams[label].port)
                media += self._close_stream(call, call.streams[label])
        opened = self._apply_plans(call, plans)
        call.plans = plans
        call.sdp_version += 1
        call.invite = req
        call.invite_branch = parsed.via[0].parameters.get("branch") or ""
        call.dest = dest
        self._by_branch[(call.call_id, call.invite_branch)] = call
        call.branches.append(call.invite_branch)
        answer = O.answer_sdp(
            self.config.rtp_host,
            call.session_id,
            call.sdp_version,
            plans,
            {k: s.port for k, s in call.streams.items()},
            self.random,
        )
        call.state = "answered"
        out: list[Action] = []
        if media:
            out.append(CallMedia(call, media))
        if opened or closed:
            out.append(MediaChanged(call, tuple(opened), tuple(closed)))
        return out + self._final(call, req, 200, "OK", now, answer)

    # ACK, BYE, CANCEL, responses ------------------------------------------------

    def _ack(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        call = self._find(parsed) or self._by_branch.get(
            (parsed.call_id, parsed.via[0].parameters.get("branch") or "")
        )
        if call is None:  # the ACK of a non-2xx from a client that changed the branch
            call = next(
                (
                    c
                    for (cid, _), c in self._by_branch.items()
                    if cid == parsed.call_id and c.state == "ended"
                ),
                None,
            )
        if call is not None and parsed.cseq.sequence == call.invite.cseq.sequence:
            call.retransmit = None
            if call.state == "answered":
                call.state = "confirmed"
            elif call.state == "ended":  # the ACK of a 487/5xx: the transaction is over
                self._forget(call)
        return []

    def _bye(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        req = parsed.message
        assert isinstance(req, Request)
        branch = parsed.via[0].parameters.get("branch") or ""
        done = self._byes.get((parsed.call_id, branch))
        if done is not None:  # a retransmitted BYE (RFC 3261 §17.2.2): the same 200 again
            return [Send(done, dest)]
        call = self._find(parsed)
        if call is None or call.state == "ended":
            return [self._reply(req, dest, 481, "Call/Transaction Does Not Exist")]
        ok = make_response(req, 200, "OK", to_tag=call.local_tag)
        self._byes[(parsed.call_id, branch)] = ok
        if len(self._byes) > MAX_REMEMBERED_BYES:
            del self._byes[next(iter(self._byes))]
        return [Send(ok, dest), *self._end(call, "bye")]

    def _cancel(self, parsed: Parsed, dest: Dest, now: float) -> list[Action]:
        req = parsed.message
        assert isinstance(req, Request)
        branch = parsed.via[0].parameters.get("branch") or ""
        call = self._by_branch.get((parsed.call_id, branch))
        if call is None:
            return [self._reply(req, dest, 481, "Call/Transaction Does Not Exist")]
        ok = Send(make_response(req, 200, "OK", to_tag=call.local_tag), dest)
        if call.state != "starting":
            return [ok]  # RFC 3261 §9.2: the INVITE already has its final response
        self._count("cancelled")
        return [ok, *self._fail_call(call, 487, "Request Terminated", now)]

    def _response(self, parsed: Parsed) -> list[Action]:
        call = self._find(parsed)
        if call is not None and parsed.cseq.method == "BYE" and call.bye is not None:
            msg = parsed.message
            assert isinstance(msg, Response)
            if msg.code >= 200:
                call.bye = None
                self._forget(call)
        return []

    # endings -------------------------------------------------------------------

    def _end(self, call: Call, reason: str) -> list[Action]:
        """Close every stream, finish the container, and hand the call to the adapter."""
        if call.state == "ended":
            return []
        was_starting = call.state == "starting"
        call.state = "ended"
        call.end_reason = reason
        media = b""
        ports = tuple(s.port for s in call.streams.values())
        for stream in list(call.streams.values()):
            media += self._close_stream(call, stream)
        if was_starting:  # never answered: the recording says so, and holds no media
            info = {**self._session_info(call), "unanswered": reason}
            media = call.encoder.start("siprec", call.started_ms, info)
        media += call.encoder.close(reason) + call.encoder.end()
        self._count(f"ended_{reason}")
        if call.bye is None:
            self._forget(call, keep_branch=call.retransmit is not None)
        out: list[Action] = []
        if media:
            out.append(CallMedia(call, media))
        if ports:
            out.append(MediaChanged(call, (), ports))
        return [*out, EndCall(call, reason)]

    def _forget(self, call: Call, *, keep_branch: bool = False) -> None:
        self.calls.pop(call.key, None)
        if not keep_branch:  # keep it while a final response awaits its ACK
            for branch in call.branches:
                self._by_branch.pop((call.call_id, branch), None)

    def hang_up(self, call: Call, reason: str, now: float) -> list[Action]:
        """End ``call`` from the SRS side: a BYE to the SRC (RFC 3261 §15.1.1)."""
        if call.state not in ("answered", "confirmed"):
            return self._end(call, reason)
        call.local_cseq = call.local_cseq or 1
        bye = self._bye_request(call)
        if call.dest.transport == "udp":
            call.bye = _Retransmit(bye, call.dest, now + T1, T1, now + TRANSACTION_TIMEOUT)
        return [Send(bye, call.dest), *self._end(call, reason)]

    def _bye_request(self, call: Call) -> bytes:
        inv = call.invite
        host = _hostport(self.local)
        transport = "TCP" if call.dest.transport == "tcp" else "UDP"
        contact = inv.contact[0].uri if inv.contact else inv.from_address.uri
        lines = [
            f"BYE {contact} SIP/2.0",
            f"Via: SIP/2.0/{transport} {host};branch=z9hG4bK{self.random(8).hex()};rport",
            "Max-Forwards: 70",
            f"From: {inv.headers['To']};tag={call.local_tag}"
            if ";tag=" not in inv.headers["To"]
            else f"From: {inv.headers['To']}",
            f"To: {inv.headers['From']}",
            f"Call-ID: {call.call_id}",
            f"CSeq: {call.local_cseq} BYE",
            # RFC 3261 §12.1.1: a UAS's route set is the Record-Route in order.
            *[f"Route: {r}" for r in inv.headers.getlist("Record-Route")],
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def drain(self, now: float) -> list[Action]:
        """Shutdown: refuse new calls and end every call (BYE to the answered ones)."""
        self.draining = True
        out: list[Action] = []
        for call in list(self.calls.values()):
            if call.state != "ended":
                out += self.hang_up(call, "shutdown", now)
        return out

    # time ----------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Retransmissions, transaction timeouts, RTP timeouts, reorder windows."""
        out: list[Action] = []
        for call in list(self.calls.values()) + self._lingering():
            out += self._timers(call, now)
            if call.state == "ended":
                continue
            if (
                call.state == "starting"
                and not call.last_response
                and (now - call.created >= TRYING_AFTER)
            ):
                call.last_response = make_response(call.invite, 100, "Trying")
                out.append(Send(call.last_response, call.dest))
            media = b"".join(
                s.receiver.tick(now) for s in call.streams.values() if s.receiver._held
            )
            if media:
                out.append(CallMedia(call, media))
            last = max(
                [call.last_media] + [s.receiver._last_arrival for s in call.streams.values()]
            )
            if call.state != "starting" and now - last > self.config.rtp_timeout:
                out += self.hang_up(call, "rtp_timeout", now)
        return out

    def _lingering(self) -> list[Call]:
        live = set(self.calls.values())
        return [c for c in set(self._by_branch.values()) if c not in live]

    def _timers(self, call: Call, now: float) -> list[Action]:
        out: list[Action] = []
        for name in ("retransmit", "bye"):
            r: _Retransmit | None = getattr(call, name)
            if r is None:
                continue
            if now >= r.deadline:
                setattr(call, name, None)
                if name == "retransmit":
                    self._by_branch.pop((call.call_id, call.invite_branch), None)
                    if call.state == "answered":  # no ACK: RFC 3261 §13.3.1.4, BYE it
                        out += self.hang_up(call, "no_ack", now)
                else:
                    self._forget(call)
                continue
            if now < r.due:
                continue
            out.append(Send(r.data, r.dest))
            r.interval = min(r.interval * 2, T2)
            r.due = now + r.interval
        return out

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def active(self) -> Iterator[Call]:
        return (c for c in self.calls.values() if c.state != "ended")

    def active_count(self) -> int:
        return sum(1 for c in self.calls.values() if c.state != "ended")


def _hostport(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

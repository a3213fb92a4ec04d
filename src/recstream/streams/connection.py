"""One accepted WebSocket, pumped into one encrypted recording.

The asyncio side of :class:`~recstream.streams.session.StreamSession` (the
aioquic ``protocol.py`` role): bytes from the socket go through the
:class:`~recstream.streams.frames.FrameReader`, each text message through
:func:`~recstream.streams.protocol.parse_message` and the session, and the
container bytes to the :class:`~recstream.aio.RecordingHook` -- synchronously,
in the transport's ``data_received``: no task, future or timer per message.
Only ``start`` waits (the hook opens the file): messages are held until it is done.

It owns the policy for how a stream ends:

* ``stop`` -- STATS and END written, the recording finalised **complete**;
* the peer closes or disconnects without ``stop``, the idle timeout passes, a
  message is malformed (bad JSON or base64: close 1007), breaks a rule or a
  limit (1002 for the WebSocket framing, 1008, 1009), or the recording fails
  (1011) -- the recording so far is finalised **incomplete** (STATS, no END),
  and only this socket is closed.

A close the peer starts is answered at once; one the server starts is sent once
the recording is finalised, and the socket is closed when the peer answers or
after :data:`CLOSE_TIMEOUT`.  Every end is one audit line (stream and call SIDs,
tenant, counters, why); custom parameters -- phone numbers -- only ever go into
the envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from recstream import tracks
from recstream.aio import RecordingHook
from recstream.errors import PipelineError, RecstreamError, StreamProtocolError
from recstream.format import SEGMENT_SIZE, MediaKind
from recstream.service.audit import AuditLog
from recstream.streams.auth import AuthRefused, choose_tenant
from recstream.streams.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_ERROR,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    close_frame,
    encode_frame,
    unmask,
)
from recstream.streams.protocol import Media, Start, media_fields, parse_message
from recstream.streams.session import State, StreamSession

__all__ = ["CLOSE_TIMEOUT", "StreamConnection"]

log = logging.getLogger("recstream.streams")

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # idle timeout, server shutting down
CLOSE_UNSUPPORTED: Final = 1003  # a binary message
CLOSE_NO_STATUS: Final = 1005  # the peer's close frame had no code (never sent, RFC 6455 §7.4.1)
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL: Final = 1011  # the recording failed
CLOSE_TIMEOUT: Final = 10.0  # seconds the peer has to answer our close frame
MAX_PENDING_WRITE: Final = 64 * 1024  # pongs are dropped past this (a peer that pings, never reads)
MAX_BACKLOG: Final = 1000  # messages held while the file opens (10 s of a stream); then pause
_VOICE: Final = MediaKind.VOICE
_HEAD: Final = struct.Struct("!HH")  # a frame's first two bytes and its 16-bit length
_NOT_STOPPED: Final = "closed without a stop message"
# What ends one stream (never the server): a protocol error, a refusal, a recording failure.
_ENDS_STREAM: Final = (StreamProtocolError, AuthRefused, PipelineError, RecstreamError, OSError)


class StreamConnection:
    """One upgraded connection's stream: feed it the socket's bytes; :attr:`done` when over.

    Args:
        transport: the connection's transport, after the 101 response was written.
        allowed: the tenants the connection's credentials are good for.
        max_message: the longest WebSocket message accepted (1009 past it).
        on_finalised: called once the recording is finalised (before the close handshake).
        on_sealed: bench instrumentation, called as each 16 KiB segment of the
            recording is sealed with (seconds since the segment's first chunk
            arrived, how late the sealing chunk arrived against its timestamp).
    """

    fast_media = True  # the media fast path (tests turn it off to compare with the full path)

    def __init__(
        self,
        transport: asyncio.Transport,
        hook: RecordingHook,
        audit: AuditLog,
        *,
        allowed: tuple[str, ...],
        remote: str,
        idle_timeout: float,
        max_call_seconds: float,
        tenant_parameter: str,
        max_message: int,
        on_sealed: Callable[[float, float], None] | None = None,
        on_finalised: Callable[[], None] | None = None,
        worker: int = 0,
    ) -> None:
        self.transport = transport
        self.hook = hook
        self.audit = audit
        self.allowed = allowed
        self.remote = remote
        self.idle_timeout = idle_timeout
        self.tenant_parameter = tenant_parameter
        self.session = StreamSession(max_call_seconds=max_call_seconds)
        self.reader = FrameReader(max_message)
        self.key: str | None = None  # the hook's call ID (the stream SID) once recording
        self._sid: str | None = None  # the stream SID once recording: the media fast path
        self.tenant: str | None = None
        self.path: Path | None = None
        self.close_code: int | None = None  # what the server sent in its close frame
        self._written = 0
        self._segment_started = self._origin = 0.0
        self._on_sealed = on_sealed
        self.worker = worker
        self._on_finalised = on_finalised
        self._going_away: str | None = None  # why the server closed the socket itself
        self._starting = False  # the hook is opening the recording: messages wait
        self._start_task: asyncio.Task[None] | None = None
        self._backlog: list[tuple[int, object]] = []
        self._ending = False  # the end has begun (the recording is closed once start is done)
        self._halted = False  # a stop, an error or a close frame: no further message counts
        self._finalising = False  # the recording is being closed: nothing more is recorded
        self._paused = False  # reading paused: too much arrived while the file was opening
        self._lost = False
        self._write_paused = False
        self._peer_answered = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_seen = time.monotonic()  # the server's idle watchdog reads this

    # --- the transport's side ----------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._finalising or self._halted:  # nothing more can be recorded
            self._await_close(data)
            return
        if self._sid is not None and self.fast_media and not self._starting and self.reader.idle:
            used = self._media_run(data)
            if used:
                if used == len(data) or self._halted:
                    return
                data = data[used:]
        events = self.reader.feed(data)
        if self._starting:
            # Reading goes on while the hook opens the file (as it did under aiohttp), so
            # what the platform sent before a shutdown is recorded; a flood pauses it.
            self._backlog += events
            if len(self._backlog) > MAX_BACKLOG and not self._paused:
                self._paused = True
                self.transport.pause_reading()
        else:
            self._dispatch(events)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        if not self._peer_answered.done():
            self._peer_answered.set_result(None)
        self._finish(_NOT_STOPPED, CLOSE_NORMAL)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False

    # --- messages ----------------------------------------------------------------

    def _media_run(self, data: bytes) -> int:
        """Record the whole media frames at the front of ``data``; return the bytes used.

        The fast path, for what platforms send all call long: a run of unfragmented
        masked text frames (16-bit length), each a media message in Twilio's canonical
        form (:func:`~recstream.streams.protocol.media_fields`) for this stream, in
        order on its track (:meth:`StreamSession.media_in_order`).  No message or
        frame object is made; the run's records go to the hook in one append.  It
        stops, having changed nothing for that frame, at the first frame that is
        anything else, and :meth:`data_received` hands the rest to the frame reader
        and the full parser -- where every rule and every error is, as before.
        """
        in_order, sid, limit = self.session.media_in_order, self._sid, self.reader.max_message
        head, fields_of, xor = _HEAD.unpack_from, media_fields, unmask  # locals: per frame
        pos, n = 0, len(data)
        records: list[bytes] = []
        timestamp = 0
        while n - pos >= 8:
            # FIN + text, then MASK + the 16-bit length form (126..65535 bytes).
            first, length = head(data, pos)
            end = pos + 8 + length
            if first != 0x81FE or end > n or length < 126 or length > limit:
                break
            fields = fields_of(xor(data[pos + 8 : end], data[pos + 4 : pos + 8]))
            if fields is None:
                break
            stream_sid, track, chunk, timestamp_ms, payload, _ = fields
            if stream_sid != sid:
                break
            record = in_order(track, chunk, timestamp_ms, payload)
            if record is None:
                break
            records.append(record)
            timestamp = timestamp_ms
            pos = end
        if pos:
            # The idle clock counts messages: pings alone do not keep a stream open.
            self.last_seen = time.monotonic()
            try:
                self._write(b"".join(records), timestamp)
            except (PipelineError, RecstreamError, OSError) as exc:
                self._halt(f"recording failed: {_describe(exc)}", CLOSE_INTERNAL)
        return pos

    def _dispatch(self, events: list[tuple[int, object]]) -> None:
        session = self.session
        for i, (opcode, payload) in enumerate(events):
            if self._halted:
                return
            try:
                if opcode == OP_TEXT:
                    assert isinstance(payload, str)
                    # The idle clock counts messages: pings alone do not keep a stream open.
                    self.last_seen = time.monotonic()
                    message = parse_message(payload)
                    data = session.receive(message)
                    if type(message) is Media:
                        self._write(data, message.timestamp_ms)
                    elif type(message) is Start:
                        self._starting = True
                        self._backlog = events[i + 1 :]
                        self._start_task = self._spawn(self._begin_then_resume(message))
                        return
                    elif data:
                        self._write(data)
                    if session.state is State.STOPPED:
                        self._halt("stopped", CLOSE_NORMAL)
                        return
                elif opcode == OP_ERROR:
                    assert isinstance(payload, StreamProtocolError)
                    raise payload
                else:
                    self._control(opcode, payload)
            except _ENDS_STREAM as exc:
                self._halt_for(exc)

    def _halt_for(self, exc: Exception) -> None:
        """End the stream for what its messages or its start raised: the close code says which."""
        if isinstance(exc, StreamProtocolError):
            self._halt(str(exc), exc.close_code)
        elif isinstance(exc, AuthRefused):
            self._halt(exc.reason, CLOSE_POLICY)
        else:
            self._halt(f"recording failed: {_describe(exc)}", CLOSE_INTERNAL)

    def _halt(self, reason: str, code: int) -> None:
        """This stream's own messages ended it (stop, an error): nothing after is read."""
        self._halted = True
        self._finish(reason, code)

    def _control(self, opcode: int, payload: object) -> None:
        if opcode == OP_PING:
            assert isinstance(payload, bytes)
            pending = self.transport.get_write_buffer_size()
            if not self._write_paused and pending < MAX_PENDING_WRITE:
                self.transport.write(encode_frame(OP_PONG, payload))
        elif opcode == OP_CLOSE:
            assert isinstance(payload, tuple)
            self._halted = True  # nothing may follow a close frame
            if not self._peer_answered.done():
                self._peer_answered.set_result(None)
            if self._ending:  # the server is closing too: its own close frame answers this
                return
            code = payload[0]
            # Echo the peer's code (RFC 6455 §5.5.1); 1005 means none, answered with 1000.
            self.transport.write(close_frame(CLOSE_NORMAL if code == CLOSE_NO_STATUS else code))
            self._finish(_NOT_STOPPED, CLOSE_NORMAL, peer_closed=True)
        elif opcode == OP_BINARY:
            msg = "binary message: media streams send JSON text"
            raise StreamProtocolError(msg, CLOSE_UNSUPPORTED)
        # OP_PONG: unsolicited, ignored (RFC 6455 §5.5.3)

    async def _begin_then_resume(self, start: Start) -> None:
        try:
            await self._begin(start)
        except _ENDS_STREAM as exc:
            self._halt_for(exc)
        self._starting = False
        backlog, self._backlog = self._backlog, []
        # What arrived while the file was opening is recorded even if the server decided
        # meanwhile to end the stream (shutdown, idle) or the peer left: _end waits for it.
        self._dispatch(backlog)
        if self._paused and not self._starting and not self._lost:
            self._paused = False
            self.transport.resume_reading()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the end -----------------------------------------------------------------

    def _finish(self, reason: str, code: int, *, peer_closed: bool = False) -> None:
        """End the stream (once): finalise the recording, then close the socket."""
        if self._ending:
            return
        self._ending = True
        self._spawn(self._end(reason, code, peer_closed))

    async def go_away(self, reason: str = "server shutting down") -> None:
        """Close the socket (1001) once the recording is finalised, incomplete."""
        if self._going_away is None and not self._ending:
            self._going_away = reason
            self._finish(reason, CLOSE_GOING_AWAY)
        await asyncio.shield(self.done)

    @property
    def going_away(self) -> bool:
        """The server is closing this socket itself (shutdown or idle)."""
        return self._going_away is not None

    @property
    def idle_reason(self) -> str:
        return f"idle for {self.idle_timeout:g} s"

    def _await_close(self, data: bytes) -> None:
        """After our close frame: read until the peer's (anything else is dropped)."""
        if self._peer_answered.done() or self.reader.closed:
            return
        try:
            events = self.reader.feed(data)
        except RecstreamError:  # the reader failed before: a broken peer, no need to wait
            events = [(OP_ERROR, None)]
        if any(op in (OP_CLOSE, OP_ERROR) for op, _ in events):
            self._peer_answered.set_result(None)

    async def _begin(self, start: Start) -> None:
        requested = start.custom_parameters.get(self.tenant_parameter)
        self.tenant = choose_tenant(self.allowed, requested)
        key = start.stream_sid
        # One recording per call: the call SID is the recording ID (the interaction).
        # A second stream of the same call gets its own, suffixed with its stream SID.
        for rid in (start.call_sid, f"{start.call_sid}.{start.stream_sid}"):
            try:
                await self.hook.start(
                    key,
                    tenant=self.tenant,
                    kinds=(_VOICE,),
                    media_types={_VOICE: tracks.MEDIA_TYPE},
                    recording_ids={_VOICE: rid},
                )
            except ValueError:  # the hook is recording this stream SID already
                msg = "a stream with this streamSid is already recording"
                raise StreamProtocolError(msg) from None
            err = self.hook.errors.pop((key, _VOICE), None)
            if err is None:
                break
            await self.hook.stop(key)
            if not isinstance(err, FileExistsError):
                raise PipelineError(_describe(err)) from err
        else:
            msg = "a recording of this call and stream already exists"
            raise PipelineError(msg)
        self.key = key
        self._sid = start.stream_sid  # the media fast path is open
        self._write(self.session.open(tenant=self.tenant, now_ms=int(time.time() * 1000)))
        self.audit.write(
            "stream_started",
            remote=self.remote,
            tenant=self.tenant,
            stream_sid=start.stream_sid,
            call_sid=start.call_sid,
            tracks=[t.value for t in start.tracks],
            worker=self.worker,
        )

    def _write(self, data: bytes, timestamp_ms: int | None = None) -> None:
        assert self.key is not None
        if data:
            self.hook.media(self.key, data)
        if self._on_sealed is not None:  # the bench's instrumentation: a clock read per segment
            before, self._written = self._written, self._written + len(data)
            if timestamp_ms is not None and self._origin == 0.0:
                # The first chunk fixes the stream's clock (its timestamps count from it).
                now = time.monotonic()
                self._origin = now - timestamp_ms / 1000
                self._segment_started = now
            if before // SEGMENT_SIZE != self._written // SEGMENT_SIZE:
                now = time.monotonic()
                late = 0.0 if timestamp_ms is None else now - self._origin - timestamp_ms / 1000
                self._on_sealed(now - self._segment_started, late)
                self._segment_started = now

    async def _end(self, reason: str, code: int, peer_closed: bool) -> None:
        try:
            if self._start_task is not None:  # the hook may still be opening the file
                await asyncio.wait([self._start_task])
            self._finalising = True  # from here on, nothing more is recorded
            complete, reason = await self._finalise(reason)
            if self._on_finalised is not None:
                self._on_finalised()  # the server's slot is free: the recording is on disk
            self._audit_end(reason, complete, code)
            if not peer_closed and not self._lost:
                # The reason is ours, never the peer's data; 123 bytes is the frame's limit.
                self.close_code = code
                self.transport.write(close_frame(code, reason))
                if self._paused:  # a flood paused reading: the answer must be read
                    self._paused = False
                    self.transport.resume_reading()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._peer_answered), CLOSE_TIMEOUT)
            self.transport.close()
        finally:
            if not self.done.done():
                self.done.set_result(None)

    async def _finalise(self, reason: str) -> tuple[bool, str]:
        """Close the recording (incomplete unless it stopped): (complete, the reason said)."""
        if self.key is None:
            self.session.finish(reason)
            return False, reason
        try:
            tail = self.session.finish(reason)
            if tail:
                self.hook.media(self.key, tail)
        except (PipelineError, KeyError) as exc:
            reason = f"{reason}; recording failed: {_describe(exc)}"
        try:
            done = await self.hook.stop(self.key)
        except KeyError:  # the hook was closed under us (shutdown): it finished the call
            done = {}
        self.path = done.get(_VOICE)
        self.hook.finished.pop((self.key, _VOICE), None)  # a long-running server
        err = self.hook.errors.pop((self.key, _VOICE), None)
        if err is not None:
            reason = f"{reason}; recording failed: {_describe(err)}"
        return self.session.complete and self.path is not None and err is None, reason

    def _audit_end(self, reason: str, complete: bool, code: int) -> None:
        start = self.session.start
        stats = self.session.statistics()
        fields: dict[str, Any] = {
            "remote": self.remote,
            "tenant": self.tenant,
            "stream_sid": start.stream_sid if start else None,
            "call_sid": start.call_sid if start else None,
            "complete": complete,
            "reason": reason,
            "close_code": code,
            "file": str(self.path) if self.path else None,
            "tracks": stats.tracks,
            "gap_ms": stats.gap_ms,
            "ahead_dropped": stats.ahead,
            "dtmf": stats.dtmf,
            "marks": stats.marks,
            "ignored_messages": stats.ignored,
            "worker": self.worker,
        }
        self.audit.write("stream_ended", **fields)
        if not complete:
            log.info("stream %s ended incomplete: %s", fields["stream_sid"], reason)


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

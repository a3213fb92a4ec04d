"""One accepted WebSocket, pumped into one encrypted recording.

The asyncio side of :class:`~recstream.streams.session.StreamSession` (the
aioquic ``protocol.py`` role): read a message, parse it, hand it to the
session, pass the container bytes to the :class:`~recstream.aio.RecordingHook`.
It owns the policy for how a stream ends:

* ``stop`` -- STATS and END written, the recording finalised **complete**;
* the peer closes or disconnects without ``stop``, the idle timeout passes, a
  message is malformed (bad JSON or base64: close 1007), breaks a rule or a
  limit (1008, 1009), or the recording fails (1011) -- the recording so far is
  finalised **incomplete** (STATS, no END), and only this socket is closed.

Every end is one audit line (stream and call SIDs, tenant, counters, why);
custom parameters -- phone numbers -- only ever go into the envelope.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import WSMsgType, web

from recstream import tracks
from recstream.aio import RecordingHook
from recstream.errors import PipelineError, RecstreamError, StreamProtocolError
from recstream.format import SEGMENT_SIZE, MediaKind
from recstream.service.audit import AuditLog
from recstream.streams.auth import AuthRefused, choose_tenant
from recstream.streams.protocol import Media, Start, parse_message
from recstream.streams.session import State, StreamSession

__all__ = ["StreamConnection"]

log = logging.getLogger("recstream.streams")

CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001  # idle timeout, server shutting down
CLOSE_UNSUPPORTED: Final = 1003  # a binary message
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL: Final = 1011  # the recording failed
_VOICE: Final = MediaKind.VOICE


class StreamConnection:
    """Pump one accepted WebSocket into the hook; :meth:`run` returns when it is over.

    Args:
        allowed: the tenants the connection's credentials are good for.
        on_finalised: called once the recording is finalised (before the close handshake).
        on_sealed: bench instrumentation, called as each 16 KiB segment of the
            recording is sealed with (seconds since the segment's first chunk
            arrived, how late the sealing chunk arrived against its timestamp).
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        hook: RecordingHook,
        audit: AuditLog,
        *,
        allowed: tuple[str, ...],
        remote: str,
        idle_timeout: float,
        max_call_seconds: float,
        tenant_parameter: str,
        on_sealed: Callable[[float, float], None] | None = None,
        on_finalised: Callable[[], None] | None = None,
        worker: int = 0,
    ) -> None:
        self.ws = ws
        self.hook = hook
        self.audit = audit
        self.allowed = allowed
        self.remote = remote
        self.idle_timeout = idle_timeout
        self.tenant_parameter = tenant_parameter
        self.session = StreamSession(max_call_seconds=max_call_seconds)
        self.key: str | None = None  # the hook's call ID (the stream SID) once recording
        self.tenant: str | None = None
        self.path: Path | None = None
        self._written = 0
        self._segment_started = self._origin = 0.0
        self._on_sealed = on_sealed
        self.worker = worker
        self._on_finalised = on_finalised
        self._going_away: str | None = None  # why the server closed the socket itself
        self.last_seen = time.monotonic()  # the server's idle watchdog reads this

    async def run(self) -> None:
        """Read until the stream ends; finalise the recording; close the socket; audit."""
        reason, code = "stopped", CLOSE_NORMAL
        try:
            reason, code = await self._pump()
        except StreamProtocolError as exc:
            reason, code = str(exc), exc.close_code
        except AuthRefused as exc:
            reason, code = exc.reason, CLOSE_POLICY
        except (PipelineError, RecstreamError, OSError) as exc:
            reason, code = f"recording failed: {_describe(exc)}", CLOSE_INTERNAL
        except asyncio.CancelledError:
            reason, code = "server shutting down", CLOSE_GOING_AWAY
            await self._end(reason, code)
            raise
        await self._end(reason, code)

    async def _pump(self) -> tuple[str, int]:
        ws, session = self.ws, self.session
        while True:
            # No per-message timeout: a timer per message cost a fifth of the server's
            # CPU; the server's watchdog closes idle sockets instead (go_away).
            msg = await ws.receive()
            self.last_seen = time.monotonic()
            if msg.type is WSMsgType.TEXT:
                message = parse_message(msg.data)
                data = session.receive(message)
                if isinstance(message, Start):
                    await self._begin(message)
                elif isinstance(message, Media):
                    self._write(data, message.timestamp_ms)
                elif data:
                    self._write(data)
                if session.state is State.STOPPED:
                    return "stopped", CLOSE_NORMAL
            elif msg.type is WSMsgType.BINARY:
                msg_text = "binary message: media streams send JSON text"
                raise StreamProtocolError(msg_text, CLOSE_UNSUPPORTED)
            elif msg.type is WSMsgType.ERROR:
                # aiohttp has closed the socket (1009 for a message over max_msg_size).
                return f"WebSocket error: {_describe(ws.exception())}", ws.close_code or 1002
            elif self._going_away is not None:
                return self._going_away, CLOSE_GOING_AWAY
            else:  # CLOSE, CLOSING, CLOSED: the peer left
                return "closed without a stop message", CLOSE_NORMAL

    async def go_away(self, reason: str = "server shutting down") -> None:
        """Close the socket (1001); :meth:`run` then finalises the recording, incomplete."""
        self._going_away = reason
        if not self.ws.closed:
            await self.ws.close(code=CLOSE_GOING_AWAY, message=reason.encode("ascii", "replace"))

    @property
    def going_away(self) -> bool:
        """The server has closed this socket itself (shutdown or idle)."""
        return self._going_away is not None

    @property
    def idle_reason(self) -> str:
        return f"idle for {self.idle_timeout:g} s"

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
        if self._on_sealed is not None:
            now = time.monotonic()
            if timestamp_ms is not None and self._origin == 0.0:
                # The first chunk fixes the stream's clock (its timestamps count from it).
                self._origin = now - timestamp_ms / 1000
                self._segment_started = now
            before, self._written = self._written, self._written + len(data)
            if before // SEGMENT_SIZE != self._written // SEGMENT_SIZE:
                late = 0.0 if timestamp_ms is None else now - self._origin - timestamp_ms / 1000
                self._on_sealed(now - self._segment_started, late)
                self._segment_started = now

    async def _end(self, reason: str, code: int) -> None:
        complete = False
        if self.key is not None:
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
            complete = self.session.complete and self.path is not None and err is None
        else:
            self.session.finish(reason)
        if self._on_finalised is not None:
            self._on_finalised()  # the server's slot is free: the recording is on disk
        self._audit_end(reason, complete, code)
        if not self.ws.closed:
            # The reason is ours, never the peer's data; 123 bytes is the close frame's limit.
            await self.ws.close(code=code, message=reason.encode("ascii", "replace")[:120])

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

"""RFC 6455 framing, server side, sans I/O: client bytes in, whole messages out.

:class:`FrameReader` takes the bytes of one WebSocket connection after its
upgrade and returns its messages, each an ``(opcode, payload)`` pair:
``OP_TEXT`` with a ``str`` (checked UTF-8), ``OP_BINARY``, ``OP_PING`` and
``OP_PONG`` with ``bytes``, ``OP_CLOSE`` with a ``(code, reason)`` pair, and
last, after the messages before it, ``OP_ERROR`` when the peer broke a rule.
Fragmented messages are joined; control frames may come between fragments.

Strict, because every byte is the peer's (RFC 6455 §5): a client frame must
be masked (§5.1); no RSV bit without a negotiated extension (§5.2); known
opcodes only; control frames at most 125 bytes and never fragmented (§5.5);
a continuation only inside a fragmented message, a new data frame never
inside one (§5.4); lengths in their minimal encoding, the 64-bit one with its
top bit clear (§5.2); a close frame's code one a peer may send and its reason
UTF-8 (§7.4); nothing after a close.  A message longer than ``max_message``
is refused from its length field, before its bytes are buffered.  Each
violation is a :class:`~recstream.errors.StreamProtocolError` with the close
code to send (1002 protocol, 1007 bad UTF-8, 1009 too big), handed back as the
last item, and the reader is then failed: one bad byte ends only its own connection.

The per-message path is one pass over the buffer with the common case (a
whole, unfragmented, masked text frame) first; unmasking is one C call
(``websockets.speedups``, a maintained C implementation of exactly this XOR)
or, where that is not built, a whole-payload integer XOR.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import Final

from recstream.errors import StreamProtocolError, StreamStateError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_ERROR",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameReader",
    "close_frame",
    "encode_frame",
    "unmask",
    "unmask_reference",
]

OP_CONT: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA
OP_ERROR: Final = -1  # not an opcode: the peer broke the protocol (the last item fed)
_DATA: Final = frozenset((OP_TEXT, OP_BINARY))
_CONTROL: Final = frozenset((OP_CLOSE, OP_PING, OP_PONG))
MAX_CONTROL: Final = 125  # RFC 6455 §5.5

PROTOCOL_ERROR: Final = 1002
INVALID_DATA: Final = 1007
TOO_BIG: Final = 1009
# RFC 6455 §7.4.1-2 and the IANA registry: codes a peer may put in a close frame.
# 1004-1006 and 1015 are reserved (never sent), 1012-1014 are registered since.
_PEER_CODES: Final = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                1013, 1014))  # fmt: skip
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")


def unmask_reference(data: bytes, key: bytes) -> bytes:
    """XOR ``data`` with the repeated 4-byte ``key`` (RFC 6455 §5.3), as integers."""
    n = len(data)
    mask = int.from_bytes((key * (n // 4 + 1))[:n], sys.byteorder)
    return (int.from_bytes(data, sys.byteorder) ^ mask).to_bytes(n, sys.byteorder)


def _fast_unmask() -> Callable[[bytes, bytes], bytes]:
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # pragma: no cover - websockets without its C extension
        return unmask_reference
    return apply_mask


unmask: Final = _fast_unmask()  # masking is the same XOR (a client, a test)


def _fail(problem: str, code: int = PROTOCOL_ERROR) -> StreamProtocolError:
    return StreamProtocolError(f"WebSocket: {problem}", code)


class FrameReader:
    """One connection's client-to-server frames, as whole messages.

    Args:
        max_message: the longest message (a data frame, or a fragmented
            message's frames together), in bytes.
    """

    def __init__(self, max_message: int) -> None:
        if max_message < MAX_CONTROL:
            msg = f"max_message must be at least {MAX_CONTROL} bytes"
            raise ValueError(msg)
        self.max_message = max_message
        self._buf = b""
        self._parts: list[bytes] = []  # a fragmented message's frames so far
        self._size = 0
        self._opcode = 0  # the fragmented message's opcode; 0: none in progress
        self._failed = False
        self.closed = False  # a close frame has been read: nothing may follow

    def feed(self, data: bytes) -> list[tuple[int, object]]:
        """Take the next bytes received; return the messages they complete, in order.

        When the peer broke RFC 6455, the last item is ``(OP_ERROR, exc)``, a
        :class:`~recstream.errors.StreamProtocolError` whose ``close_code`` says
        how (the messages before it were whole and are kept), and the reader is failed.

        Raises:
            StreamStateError: fed after a failure.
        """
        if self._failed:
            msg = "frame reader used after a protocol error"
            raise StreamStateError(msg)
        if self._buf:
            data = self._buf + data
        out: list[tuple[int, object]] = []
        try:
            used = self._frames(data, out)
        except StreamProtocolError as exc:
            # The messages before the violation were sent and are kept; then the error.
            self._failed = True
            self._buf = b""
            out.append((OP_ERROR, exc))
            return out
        self._buf = data[used:] if used < len(data) else b""
        return out

    @property
    def idle(self) -> bool:
        """Between messages: nothing buffered, no fragmented message open, not closed or failed.

        Only then may a caller read whole frames off the front of a chunk itself (the
        media fast path) and feed the reader the rest: the reader is where it would be.
        """
        return not (self._buf or self._opcode or self.closed or self._failed)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame."""
        return len(self._buf)

    def _frames(self, data: bytes, out: list[tuple[int, object]]) -> int:
        pos, n, limit = 0, len(data), self.max_message
        while n - pos >= 2:
            if self.closed:
                raise _fail("data after a close frame")
            b0, b1 = data[pos], data[pos + 1]
            if not b1 & 0x80:
                raise _fail("client frame not masked")  # §5.1
            if b0 & 0x70:
                raise _fail("RSV bit set without an extension")  # §5.2
            length, head = b1 & 0x7F, pos + 2
            if length == 126:
                if n - head < 2:
                    break
                length = _U16.unpack_from(data, head)[0]
                head += 2
                if length < 126:
                    raise _fail("length not in its minimal encoding")
            elif length == 127:
                if n - head < 8:
                    break
                length = _U64.unpack_from(data, head)[0]
                head += 8
                if length >> 63 or length < 0x10000:
                    raise _fail("length not in its minimal encoding")
            if length > limit or (not b0 & 0x0F and self._size + length > limit):
                msg = f"message over the limit of {limit} bytes"
                raise _fail(msg, TOO_BIG)
            end = head + 4 + length
            if end > n:
                break
            payload = unmask(data[head + 4 : end], data[head : head + 4])
            pos = end
            opcode = b0 & 0x0F
            if b0 & 0x80 and opcode == OP_TEXT and not self._opcode:  # the common case
                try:
                    out.append((OP_TEXT, payload.decode("utf-8")))
                except UnicodeDecodeError:
                    raise _fail("text message is not UTF-8", INVALID_DATA) from None
            else:
                message = self._frame(b0 & 0x80, opcode, payload)
                if message is not None:
                    out.append(message)
        return pos

    def _frame(self, fin: int, opcode: int, payload: bytes) -> tuple[int, object] | None:
        if opcode in _CONTROL:
            if not fin or len(payload) > MAX_CONTROL:
                raise _fail("control frame fragmented or over 125 bytes")  # §5.5
            if opcode == OP_CLOSE:
                self.closed = True
                return OP_CLOSE, _close_payload(payload)
            return opcode, payload
        if opcode in _DATA:
            if self._opcode:
                raise _fail("new data frame inside a fragmented message")  # §5.4
            if fin:
                return _message(opcode, payload)
            self._opcode, self._parts, self._size = opcode, [payload], len(payload)
            return None
        if opcode != OP_CONT:
            msg = f"unknown opcode {opcode:#x}"
            raise _fail(msg)
        if not self._opcode:
            raise _fail("continuation frame outside a fragmented message")
        self._parts.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        whole = b"".join(self._parts)
        opcode, self._opcode, self._parts, self._size = self._opcode, 0, [], 0
        return _message(opcode, whole)


def _message(opcode: int, payload: bytes) -> tuple[int, object]:
    if opcode == OP_BINARY:
        return OP_BINARY, payload
    try:
        return OP_TEXT, payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("text message is not UTF-8", INVALID_DATA) from None


def _close_payload(payload: bytes) -> tuple[int, str]:
    """A close frame's (code, reason); 1005 (RFC 6455 §7.1.5) when it has none."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise _fail("close frame with a 1-byte body")
    code = _U16.unpack_from(payload)[0]
    if code not in _PEER_CODES and not 3000 <= code <= 4999:
        msg = f"close code {code} is not one a peer may send"
        raise _fail(msg)
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise _fail("close reason is not UTF-8", INVALID_DATA) from None


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unfragmented server frame (servers never mask, RFC 6455 §5.1)."""
    n = len(payload)
    if opcode in _CONTROL and n > MAX_CONTROL:
        msg = "control frame payload over 125 bytes"
        raise ValueError(msg)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 0x10000:
        return bytes((0x80 | opcode, 126)) + _U16.pack(n) + payload
    return bytes((0x80 | opcode, 127)) + _U64.pack(n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame: ``code`` and as much of ``reason`` as fits its 123 bytes, whole characters."""
    body = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, _U16.pack(code) + body)

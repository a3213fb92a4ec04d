"""SIP messages on the wire: framing (RFC 3261 §18.3, §7.5) and parsing, pure, no I/O.

Parsing a message and its headers is sipmessage's job (typed, BSD, by the
aiortc authors); this module adds what a server must do around it: find where a
message ends on a TCP stream (Content-Length is mandatory there), cut a UDP
datagram's body at its Content-Length, refuse oversize input before buffering
it, and check the headers every request needs (RFC 3261 §8.1.1) so the code
above never meets a request it cannot answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sipmessage import CSeq, Message, Request, Response, Via

__all__ = [
    "MAX_MESSAGE_BYTES",
    "SipParseError",
    "StreamFramer",
    "make_response",
    "parse_datagram",
    "parse_message",
]

MAX_MESSAGE_BYTES = 64 * 1024  # a SIPREC INVITE with metadata is a few KiB
MAX_HEADER_BYTES = 16 * 1024
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d{1,9})[ \t]*\r?$", re.I | re.M)
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]{1,32}")


class SipParseError(ValueError):
    """Not a SIP message we can read; ``request`` is set when a 400 can still be sent."""

    def __init__(self, message: str, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


@dataclass(frozen=True, slots=True)
class Parsed:
    message: Request | Response
    via: list[Via]
    cseq: CSeq
    call_id: str


def parse_message(data: bytes) -> Parsed:
    """Parse one whole message and check its mandatory headers.

    Raises:
        SipParseError: malformed; ``.request`` holds the request when the error is
            in a header a 400 response can still be built without.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        msg = f"SIP message over {MAX_MESSAGE_BYTES} bytes"
        raise SipParseError(msg)
    try:
        message = Message.parse(bytes(data))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        msg = f"malformed SIP message ({type(exc).__name__})"
        raise SipParseError(msg) from None
    request = message if isinstance(message, Request) else None
    try:
        via = message.via
        cseq = message.cseq
        call_id = message.call_id
        message.from_address  # noqa: B018 - parsed for its ValueError
        message.to_address  # noqa: B018
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        msg = f"malformed or missing mandatory header ({type(exc).__name__})"
        raise SipParseError(msg, request if _can_answer(message) else None) from None
    if not via or not call_id or len(call_id) > 256:
        msg = "missing Via or Call-ID"
        raise SipParseError(msg, request if _can_answer(message) else None)
    if request is not None and (
        not _TOKEN.fullmatch(request.method) or cseq.method != request.method
    ):
        msg = "bad method or CSeq"
        raise SipParseError(msg, request if request.method != "ACK" else None)
    return Parsed(message, via, cseq, call_id)


def _can_answer(message: Message) -> bool:
    """A response needs Via, From, To, Call-ID and CSeq copied back (RFC 3261 §8.2.6.2)."""
    if not isinstance(message, Request) or message.method == "ACK":
        return False
    h = message.headers
    return all(h.get(k) for k in ("Via", "From", "To", "Call-ID", "CSeq"))


def parse_datagram(data: bytes) -> Parsed | None:
    """A UDP datagram as a message (body cut at Content-Length); None for keep-alives.

    Raises:
        SipParseError: malformed.
    """
    if not data.strip():  # RFC 5626 §4.4.1 CRLF keep-alive
        return None
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        msg = "SIP datagram without an end of headers"
        raise SipParseError(msg)
    m = _CONTENT_LENGTH.search(data, 0, head_end + 2)
    if m is not None:
        length = int(m[1])
        body = data[head_end + 4 :]
        if length > len(body):  # RFC 3261 §18.3: a short UDP body is an error
            msg = "Content-Length larger than the datagram"
            raise SipParseError(msg)
        data = data[: head_end + 4 + length]
    return parse_message(data)


class StreamFramer:
    """Messages out of a TCP byte stream (RFC 3261 §18.3: Content-Length frames them).

    ``feed(data)`` returns the whole messages it completes, in order.

    Raises:
        SipParseError: headers or a body over the limits, or no Content-Length (the
            stream cannot be resynchronised: close the connection).
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            # RFC 3261 §7.5: CRLFs before a start line are ignored (keep-alives).
            while self._buf[:2] == b"\r\n":
                del self._buf[:2]
            head_end = self._buf.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
            if head_end < 0:
                if len(self._buf) > MAX_HEADER_BYTES:
                    msg = f"SIP headers over {MAX_HEADER_BYTES} bytes"
                    raise SipParseError(msg)
                return out
            m = _CONTENT_LENGTH.search(self._buf, 0, head_end + 2)
            if m is None:
                msg = "SIP message on a stream without Content-Length"
                raise SipParseError(msg)
            total = head_end + 4 + int(m[1])
            if total > MAX_MESSAGE_BYTES:
                msg = f"SIP message over {MAX_MESSAGE_BYTES} bytes"
                raise SipParseError(msg)
            if len(self._buf) < total:
                return out
            out.append(bytes(self._buf[:total]))
            del self._buf[:total]


def make_response(
    request: Request,
    code: int,
    phrase: str,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    extra: dict[str, str] | None = None,
) -> bytes:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, To, Call-ID, CSeq copied."""
    resp = Response(code, phrase, body)
    for name in ("Via", "Record-Route"):
        for value in request.headers.getlist(name):
            resp.headers.add(name, value)
    resp.headers.add("From", request.headers["From"])
    to = request.headers["To"]
    if to_tag is not None and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    resp.headers.add("To", to)
    resp.headers.add("Call-ID", request.headers["Call-ID"])
    resp.headers.add("CSeq", request.headers["CSeq"])
    for name, value in (extra or {}).items():
        resp.headers.add(name, value)
    resp.headers.add("Server", "recstream-srs")
    if content_type is not None:
        resp.headers.add("Content-Type", content_type)
    resp.headers.add("Content-Length", str(len(body)))
    return bytes(resp)

"""The WebSocket opening handshake, server side, sans I/O: a request head in, a response out.

:func:`parse_request` reads one HTTP/1.1 request head (RFC 9112) strictly --
CRLF line ends, a ``GET``-style request line in origin form, ``name: value``
headers with token names, no obsolete line folding, no request body -- with a
limit on every line and on the header count, and :func:`websocket_key` checks
that it asks for a WebSocket (RFC 6455 §4.2.1: ``Upgrade: websocket``,
``Connection: Upgrade``, version 13, a key of 16 base64 bytes).  Headers that
decide anything (``Host``, the key, ``Authorization``, the signature) may
appear once only: two values are two readings of one request.

Every refusal is an :class:`~recstream.errors.UpgradeRequestError` carrying its
HTTP status, and names the rule broken, never a value: headers are
attacker-written, and the request line can hold a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from recstream.errors import UpgradeRequestError

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "MAX_LINE_BYTES",
    "UpgradeRequest",
    "accept_response",
    "head_length",
    "parse_request",
    "refusal",
    "websocket_key",
]

MAX_LINE_BYTES: Final = 8190  # the request line and each header line (nginx's default)
MAX_HEADERS: Final = 64
MAX_HEAD_BYTES: Final = MAX_LINE_BYTES + 16 * 1024  # no request head may be longer
_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
_TOKEN: Final = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2
_TARGET: Final = re.compile(rb"/[\x21-\x7e]*")  # origin-form, visible ASCII only
_VALUE_BAD: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # RFC 9110 §5.5: no CTLs but HTAB
# Repeated, these would let two parts of the server read two different requests.
_SINGLE: Final = frozenset(
    (b"host", b"sec-websocket-key", b"sec-websocket-version", b"authorization",
     b"x-twilio-signature", b"content-length", b"upgrade")
)  # fmt: skip
_REASONS: Final = {
    101: "Switching Protocols",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    414: "URI Too Long",
    426: "Upgrade Required",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A parsed request head.  ``headers``: lower-case names, values as sent (Latin-1)."""

    method: str
    target: str  # as sent: path and query, still percent-encoded
    headers: Mapping[str, str] = field(repr=False)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]


def head_length(buffer: bytes | bytearray) -> int | None:
    """The length of the request head at the start of ``buffer`` (with its blank line), or None.

    Raises:
        UpgradeRequestError: no head end within :data:`MAX_HEAD_BYTES` (431).
    """
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
    if end >= 0:
        return end + 4
    if len(buffer) >= MAX_HEAD_BYTES:
        msg = f"request head longer than {MAX_HEAD_BYTES} bytes"
        raise UpgradeRequestError(msg, 431)
    return None


def parse_request(head: bytes) -> UpgradeRequest:
    """Parse one request head (up to and including its blank line).

    Raises:
        UpgradeRequestError: malformed (400), a line or the header count over
            its limit (414, 431), or a request with a body (400).
    """
    if not head.endswith(b"\r\n\r\n"):
        msg = "request head does not end with an empty line"
        raise UpgradeRequestError(msg)
    lines = head[:-4].split(b"\r\n")
    method, target = _request_line(lines[0])
    if len(lines) - 1 > MAX_HEADERS:
        msg = f"more than {MAX_HEADERS} header lines"
        raise UpgradeRequestError(msg, 431)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, value = _header(line)
        key = name.decode("ascii")
        if key in headers:
            if name in _SINGLE:
                msg = f"header {key} sent twice"
                raise UpgradeRequestError(msg)
            headers[key] += ", " + value  # RFC 9110 §5.3: a list, in order
        else:
            headers[key] = value
    if headers.get("transfer-encoding") is not None or headers.get("content-length", "0") != "0":
        msg = "an upgrade request has no body"
        raise UpgradeRequestError(msg)
    return UpgradeRequest(method, target, headers)


def _request_line(line: bytes) -> tuple[str, str]:
    if len(line) > MAX_LINE_BYTES:
        msg = f"request line longer than {MAX_LINE_BYTES} bytes"
        raise UpgradeRequestError(msg, 414)
    parts = line.split(b" ")
    if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not _TARGET.fullmatch(parts[1]):
        msg = "malformed request line"
        raise UpgradeRequestError(msg)
    if parts[2] != b"HTTP/1.1":
        msg = "not an HTTP/1.1 request"  # RFC 6455 §4.1: the upgrade needs 1.1
        raise UpgradeRequestError(msg)
    return parts[0].decode("ascii"), parts[1].decode("ascii")


def _header(line: bytes) -> tuple[bytes, str]:
    if len(line) > MAX_LINE_BYTES:
        msg = f"header line longer than {MAX_LINE_BYTES} bytes"
        raise UpgradeRequestError(msg, 431)
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        # Also obsolete folding (a line starting with whitespace) and "name :" (RFC 9112 §5.1).
        msg = "malformed header line"
        raise UpgradeRequestError(msg)
    value = value.strip(b" \t")
    if _VALUE_BAD.search(value):
        msg = "control character in a header value"
        raise UpgradeRequestError(msg)
    return name.lower(), value.decode("latin-1")


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in (value or "").split(",")}


def websocket_key(request: UpgradeRequest) -> str:
    """The ``Sec-WebSocket-Key`` of a valid upgrade request (RFC 6455 §4.2.1).

    Raises:
        UpgradeRequestError: not GET (405), not an upgrade to WebSocket version 13
            (426), a missing Host or a malformed key (400).
    """
    h = request.headers
    if request.method != "GET":
        msg = "not a GET request"
        raise UpgradeRequestError(msg, 405)
    upgrade, connection = _tokens(h.get("upgrade")), _tokens(h.get("connection"))
    if "websocket" not in upgrade or "upgrade" not in connection:
        msg = "not a WebSocket upgrade"
        raise UpgradeRequestError(msg, 426)
    if h.get("sec-websocket-version") != "13":
        msg = "WebSocket version is not 13"
        raise UpgradeRequestError(msg, 426)
    if not h.get("host"):
        msg = "no Host header"
        raise UpgradeRequestError(msg)
    key = h.get("sec-websocket-key", "")
    try:
        raw = base64.b64decode(key.encode("latin-1"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        msg = "Sec-WebSocket-Key is not 16 bytes in base64"
        raise UpgradeRequestError(msg)
    return key


def accept_response(key: str) -> bytes:
    """The 101 response that opens the WebSocket (no extension, no subprotocol)."""
    accept = base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest())  # noqa: S324
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def refusal(status: int, text: str, headers: Mapping[str, str] | None = None) -> bytes:
    """A complete plain-text response that ends the connection."""
    body = text.encode("utf-8")
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in (headers or {}).items()),
    ]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body

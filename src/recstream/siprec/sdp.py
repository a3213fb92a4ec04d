"""The SDP the SRS reads and writes: a strict subset of RFC 8866, pure, no I/O.

Only what a recording offer needs is interpreted (``c=``, ``m=``, ``a=rtpmap``,
``a=label`` (RFC 4574), directions, ``a=crypto`` (RFC 4568)); every line must
still be well formed, so a malformed offer is refused instead of half-read.

Why not a library: the one Python SDP package (sdp-transform) is untyped,
matches lines with unanchored regexes, skips lines it cannot parse and turns
values into ``int``/``float`` by guessing (a label ``1e3`` becomes ``1000.0``);
aiortc's parser is not usable without all of aiortc.  SDP is a line grammar of
``<letter>=<text>``; the part below is small enough to read in one sitting.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "SUPPORTED_CODECS",
    "Crypto",
    "MediaDescription",
    "SdpError",
    "SessionDescription",
    "answer",
    "parse",
    "payload_type",
]

MAX_SDP_BYTES = 16 * 1024
MAX_MEDIA = 16  # m= lines in one offer: far above any recording (2-4 streams)
MAX_LINES = 512
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"  # RFC 4568 §6.2.1, the suite SBCs send to recorders
SRTP_KEY_BYTES = 30  # 16-byte master key + 14-byte master salt
# Static payload types (RFC 3551 §6) and the codecs the recorder keeps.
STATIC_PT = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
SUPPORTED_CODECS = ("PCMU", "PCMA")
TELEPHONE_EVENT = "TELEPHONE-EVENT"

# RFC 8866 §9: type = %x61-7A; the value is any byte string without CR/LF/NUL.
_LINE = re.compile(r"([a-z])=([^\x00\r\n]*)")
_MEDIA = re.compile(r"(\w+) (\d{1,5})(?:/(\d{1,3}))? ([\w/]+)((?: [\w]+)+)", re.ASCII)
_CONN = re.compile(r"IN (IP4|IP6) ([0-9A-Za-z.:\-]+)(?:/\d+)*")
_RTPMAP = re.compile(r"(\d{1,3}) ([\w\-.]+)/(\d{1,7})(?:/\d+)?", re.ASCII)
# RFC 4568 §9.1: tag 1*9DIGIT, crypto-suite, key-params (inline:<base64>[|lifetime][|MKI]).
_CRYPTO = re.compile(r"(\d{1,9}) (\w+) inline:([A-Za-z0-9+/=]+)((?:\|[^|\s]+){0,2})(?: .*)?")
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
_TOKEN = re.compile(r"[\x21-\x7e]{1,64}")


class SdpError(ValueError):
    """The SDP is malformed or outside what the recorder accepts."""


def payload_type(fmt: str) -> int:
    """An m= line's format as an RTP payload type (0-127), or -1 if it is not one.

    ASCII digits only, at most three: ``str.isdigit`` also accepts digits such as
    ``"\u00b2"`` that ``int`` refuses, and sets no bound on the length.
    """
    if not (0 < len(fmt) <= 3 and fmt.isascii() and fmt.isdigit()):
        return -1
    pt = int(fmt)
    return pt if pt <= 127 else -1


@dataclass(frozen=True, slots=True)
class Crypto:
    """One ``a=crypto`` line (RFC 4568): its tag, suite and 30-byte master key+salt."""

    tag: int
    suite: str
    key: bytes


@dataclass(frozen=True, slots=True)
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None
    label: str | None
    direction: str | None
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)
    crypto: tuple[Crypto, ...] = ()
    bad_crypto: bool = False  # an a=crypto line that could not be used

    def codec(self) -> tuple[int, str, int] | None:
        """The first offered payload type the recorder keeps: (pt, name, rate)."""
        for fmt in self.formats:
            pt = payload_type(fmt)
            name, rate = self.rtpmap.get(pt) or STATIC_PT.get(pt) or ("", 0)
            if name in SUPPORTED_CODECS and rate == 8000:
                return pt, name, rate
        return None

    def telephone_event(self) -> int | None:
        for fmt in self.formats:
            pt = payload_type(fmt)
            if self.rtpmap.get(pt, ("", 0))[0] == TELEPHONE_EVENT:
                return pt
        return None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    origin: str
    connection: str | None
    direction: str | None
    media: tuple[MediaDescription, ...]


def parse(data: bytes) -> SessionDescription:
    """Parse an SDP body (RFC 8866 §5).

    Raises:
        SdpError: malformed, too large, or not UTF-8.
    """
    if len(data) > MAX_SDP_BYTES:
        msg = f"SDP body over {MAX_SDP_BYTES} bytes"
        raise SdpError(msg)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        msg = "SDP is not UTF-8"
        raise SdpError(msg) from None
    lines = text.replace("\r\n", "\n").rstrip("\n").split("\n")
    if len(lines) > MAX_LINES:
        msg = f"SDP has more than {MAX_LINES} lines"
        raise SdpError(msg)
    pairs = []
    for line in lines:
        m = _LINE.fullmatch(line)
        if m is None:
            msg = f"malformed SDP line {line[:40]!r}"
            raise SdpError(msg)
        pairs.append((m[1], m[2]))
    if not pairs or pairs[0] != ("v", "0"):
        msg = "SDP must start with v=0"
        raise SdpError(msg)
    return _session(pairs)


def _session(pairs: list[tuple[str, str]]) -> SessionDescription:
    origin, conn, direction = "", None, None
    blocks: list[list[tuple[str, str]]] = []
    for kind, value in pairs[1:]:
        if kind == "m":
            if len(blocks) >= MAX_MEDIA:
                msg = f"SDP has more than {MAX_MEDIA} media descriptions"
                raise SdpError(msg)
            blocks.append([(kind, value)])
        elif blocks:
            blocks[-1].append((kind, value))
        elif kind == "o":
            origin = value
        elif kind == "c":
            conn = _connection(value)
        elif kind == "a" and value in _DIRECTIONS:
            direction = value
    if not origin:
        msg = "SDP has no o= line"
        raise SdpError(msg)
    return SessionDescription(origin, conn, direction, tuple(_media(b) for b in blocks))


def _connection(value: str) -> str:
    m = _CONN.fullmatch(value)
    if m is None:
        msg = f"malformed c= line {value[:40]!r}"
        raise SdpError(msg)
    return m[2]


def _media(block: list[tuple[str, str]]) -> MediaDescription:
    m = _MEDIA.fullmatch(block[0][1])
    if m is None or int(m[2]) > 65535:
        msg = f"malformed m= line {block[0][1][:60]!r}"
        raise SdpError(msg)
    conn = label = direction = None
    rtpmap: dict[int, tuple[str, int]] = {}
    crypto: list[Crypto] = []
    bad_crypto = False
    for kind, value in block[1:]:
        if kind == "c":
            conn = _connection(value)
        elif kind != "a":
            continue
        name, _, arg = value.partition(":")
        if value in _DIRECTIONS:
            direction = value
        elif name == "label":
            if not _TOKEN.fullmatch(arg):
                msg = f"malformed a=label {arg[:40]!r}"
                raise SdpError(msg)
            label = arg
        elif name == "rtpmap":
            r = _RTPMAP.fullmatch(arg)
            if r is None or int(r[1]) > 127:
                msg = f"malformed a=rtpmap {arg[:40]!r}"
                raise SdpError(msg)
            rtpmap[int(r[1])] = (r[2].upper(), int(r[3]))
        elif name == "crypto":
            parsed = _crypto(arg)
            bad_crypto |= parsed is None
            if parsed is not None:
                crypto.append(parsed)
    return MediaDescription(
        m[1],
        int(m[2]),
        m[4],
        tuple(m[5].split()),
        conn,
        label,
        direction,
        rtpmap,
        tuple(crypto),
        bad_crypto,
    )


def _crypto(arg: str) -> Crypto | None:
    """An ``a=crypto`` value we can use, or None (another suite, MKI, a bad key)."""
    c = _CRYPTO.fullmatch(arg)
    if c is None or c[2] != SRTP_SUITE or ("|" in c[4] and ":" in c[4]):
        return None  # RFC 4568: unknown suites are skipped; MKIs are not supported
    try:
        key = base64.b64decode(c[3], validate=True)
    except ValueError:
        return None
    if len(key) != SRTP_KEY_BYTES:
        return None
    return Crypto(int(c[1]), c[2], key)


@dataclass(frozen=True, slots=True)
class AnswerStream:
    """How the recorder answers one offered m= line (``port`` 0: refused)."""

    port: int
    proto: str
    payload_type: int | None = None
    codec: str = ""
    telephone_event: int | None = None
    label: str | None = None
    direction: str = "recvonly"
    crypto: Crypto | None = None  # the recorder's own key (RFC 4568 §7.1.2)
    media: str = "audio"


def answer(host: str, session_id: int, version: int, streams: Sequence[AnswerStream]) -> bytes:
    """The SDP answer: one m= line per offered one, in order (RFC 3264 §6)."""
    family = "IP6" if ":" in host else "IP4"
    out = [
        "v=0",
        f"o=recstream {session_id} {version} IN {family} {host}",
        "s=recstream SRS",
        f"c=IN {family} {host}",
        "t=0 0",
    ]
    for s in streams:
        if s.port == 0 or s.payload_type is None:
            out.append(f"m={s.media} 0 {s.proto} {s.payload_type or 0}")
            continue
        fmts = [str(s.payload_type)]
        if s.telephone_event is not None:
            fmts.append(str(s.telephone_event))
        out.append(f"m=audio {s.port} {s.proto} {' '.join(fmts)}")
        out.append(f"a=rtpmap:{s.payload_type} {s.codec}/8000")
        if s.telephone_event is not None:
            out.append(f"a=rtpmap:{s.telephone_event} telephone-event/8000")
        if s.label is not None:
            out.append(f"a=label:{s.label}")
        if s.crypto is not None:
            key = base64.b64encode(s.crypto.key).decode()
            out.append(f"a=crypto:{s.crypto.tag} {s.crypto.suite} inline:{key}")
        out.append(f"a={s.direction}")
    return ("\r\n".join(out) + "\r\n").encode()

"""From a SIPREC INVITE to what the recorder will do: policy checks and the SDP answer.

Pure functions over parsed messages: is this a recording session (RFC 7866
§6.1.1), which tenant it belongs to (config rules), which offered streams are
recorded and how the answer describes them.  Nothing here touches sockets,
clocks or the recording.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sipmessage import Request

from recstream.siprec import sdp
from recstream.siprec.config import SrsConfig
from recstream.siprec.metadata import (
    MetadataError,
    RecordingMetadata,
    parse_metadata,
    split_body,
)

__all__ = ["Offer", "Refusal", "read_offer", "resolve_tenant"]

SUPPORTED_OPTIONS = frozenset({"siprec"})


class Refusal(Exception):
    """The INVITE is answered with ``status`` (and ``headers``) instead of recorded."""

    def __init__(self, status: int, phrase: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {phrase}")
        self.status = status
        self.phrase = phrase
        self.headers = headers or {}


@dataclass(frozen=True, slots=True)
class Offer:
    sdp: sdp.SessionDescription
    metadata: RecordingMetadata | None


def check_require(request: Request) -> None:
    """RFC 3261 §8.2.2.3: an option tag we do not support in Require is a 420."""
    unknown = [t for t in request.require if t.lower() not in SUPPORTED_OPTIONS]
    if unknown:
        raise Refusal(420, "Bad Extension", {"Unsupported": ", ".join(unknown)[:200]})


def is_recording_session(request: Request) -> bool:
    """RFC 7866 §6.1.1: an RS has the 'siprec' option tag and the '+sip.src' feature tag."""
    tags = {t.lower() for t in request.require + request.supported}
    try:
        contacts = request.contact
    except ValueError:
        return False
    src = any("+sip.src" in c.parameters for c in contacts)
    return "siprec" in tags and src


def read_offer(request: Request) -> Offer:
    """The SDP offer and rs-metadata of an INVITE (or re-INVITE).

    Raises:
        Refusal: 400 for a malformed body, 415 for a body type we cannot read,
            488 for an SDP without a stream we can record.
    """
    ctype = request.headers.get("Content-Type")
    if not ctype or not request.body:
        raise Refusal(488, "Not Acceptable Here (no SDP offer)")
    try:
        sdp_body, md_body = split_body(ctype, request.body)
    except MetadataError as exc:
        status = 415 if "unsupported body type" in str(exc) else 400
        phrase = "Unsupported Media Type" if status == 415 else "Bad Request (body)"
        raise Refusal(status, phrase, {"Accept": "application/sdp, multipart/mixed"}) from None
    if sdp_body is None:
        raise Refusal(488, "Not Acceptable Here (no SDP offer)")
    try:
        offer = sdp.parse(sdp_body)
        metadata = parse_metadata(md_body) if md_body is not None else None
    except (sdp.SdpError, MetadataError):
        raise Refusal(400, "Bad Request (SDP or rs-metadata)") from None
    return Offer(offer, metadata)


def resolve_tenant(config: SrsConfig, request: Request, metadata: RecordingMetadata | None) -> str:
    """The first ``[[tenants.rule]]`` that matches, else ``tenants.default``.

    Raises:
        Refusal: 403 when no rule matches and there is no default.
    """
    for rule in config.rules:
        if rule.request_uri_user is not None:
            hit = request.uri.user == rule.request_uri_user
        elif rule.header is not None:
            hit = request.headers.get(rule.header) == rule.value
        else:
            assert rule.metadata_extension is not None
            hit = metadata is not None and (
                metadata.extensions.get(rule.metadata_extension) == rule.value
            )
        if hit:
            return rule.tenant
    if config.default_tenant is None:
        raise Refusal(403, "Forbidden (no tenant for this call)")
    return config.default_tenant


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """What the recorder does with one offered m= line."""

    index: int
    label: str
    accepted: bool
    media: sdp.MediaDescription
    payload_type: int | None = None
    codec: str = ""
    telephone_event: int | None = None
    srtp_key: bytes | None = None  # the sender's SDES master key+salt
    direction: str = "recvonly"


def plan_streams(offer: sdp.SessionDescription) -> list[StreamPlan]:
    """Decide per m= line: recorded (audio, PCMU/PCMA, RTP/AVP or SDES SRTP) or refused."""
    plans = []
    for i, m in enumerate(offer.media):
        label = m.label or f"m{i}"
        codec = m.codec()
        srtp = m.proto.upper() == "RTP/SAVP"
        usable = (
            m.media == "audio"
            and m.port != 0
            and codec is not None
            and m.proto.upper() in ("RTP/AVP", "RTP/SAVP")
            and (not srtp or bool(m.crypto))
        )
        if not usable or codec is None:
            plans.append(StreamPlan(i, label, False, m))
            continue
        direction = m.direction or offer.direction or "sendrecv"
        plans.append(
            StreamPlan(
                i,
                label,
                True,
                m,
                codec[0],
                codec[1],
                m.telephone_event(),
                m.crypto[0].key if srtp else None,
                # RFC 3264 §6.1: the answer's direction mirrors the offer's; we never send.
                "recvonly" if direction in ("sendonly", "sendrecv") else "inactive",
            )
        )
    return plans


def answer_sdp(  # noqa: PLR0917 - the SDP's fields, in order
    host: str,
    session_id: int,
    version: int,
    plans: Sequence[StreamPlan],
    ports: dict[str, int],
    random: Callable[[int], bytes],
) -> bytes:
    """The SDP answer for ``plans`` with the RTP port of each recorded label."""
    streams = []
    for p in plans:
        if not p.accepted or p.label not in ports:
            streams.append(
                sdp.AnswerStream(0, p.media.proto, _first_pt(p.media), media=p.media.media)
            )
            continue
        crypto = None
        if p.srtp_key is not None:
            tag = p.media.crypto[0].tag
            # RFC 4568 §7.1.2: the answer carries the answerer's own key (we send nothing).
            crypto = sdp.Crypto(tag, sdp.SRTP_SUITE, random(sdp.SRTP_KEY_BYTES))
        streams.append(
            sdp.AnswerStream(
                ports[p.label],
                p.media.proto,
                p.payload_type,
                p.codec,
                p.telephone_event,
                p.media.label,
                p.direction,
                crypto,
            )
        )
    return sdp.answer(host, session_id, version, streams)


def _first_pt(m: sdp.MediaDescription) -> int:
    pt = sdp.payload_type(m.formats[0]) if m.formats else -1
    return pt if pt >= 0 else 0

"""SIPREC bodies: the multipart INVITE body and rs-metadata (RFC 7865), pure, no I/O.

The metadata is attacker-written XML: it is parsed with defusedxml (no DTDs,
no entity expansion, no external references) under size and count limits, and
only the elements RFC 7865 §6 defines are read.  The MIME multipart split uses
the standard library's ``email`` parser.  Participant addresses come out of
here and go only into the encrypted recording, never into logs.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET

__all__ = [
    "METADATA_TYPE",
    "NS",
    "MetadataError",
    "Participant",
    "RecordingMetadata",
    "Stream",
    "parse_metadata",
    "split_body",
]

NS = "urn:ietf:params:xml:ns:recording:1"  # RFC 7865 §9.1
METADATA_TYPE = "application/rs-metadata+xml"  # RFC 7866 §9.1
MAX_METADATA_BYTES = 64 * 1024
MAX_ITEMS = 64  # participants, streams, sessions: a call has a handful
MAX_TEXT = 512  # characters kept of any one value
MAX_PARTS = 8


class MetadataError(ValueError):
    """The body or its rs-metadata is malformed or over a limit."""


@dataclass(frozen=True, slots=True)
class Participant:
    participant_id: str
    name: str | None
    aors: tuple[str, ...]
    send: tuple[str, ...] = ()  # stream IDs this participant sends
    recv: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stream:
    stream_id: str
    session_id: str | None
    label: str | None


@dataclass(frozen=True, slots=True)
class RecordingMetadata:
    """What RFC 7865 metadata says about the recorded communication session."""

    datamode: str | None
    session_ids: tuple[str, ...]
    sip_session_ids: tuple[str, ...]
    participants: tuple[Participant, ...]
    streams: tuple[Stream, ...]
    extensions: dict[str, str] = field(default_factory=dict)  # "{ns}tag" -> text

    def sender_of(self, label: str) -> str | None:
        """The participant ID sending the stream with this SDP label, if the metadata says."""
        ids = {s.stream_id for s in self.streams if s.label == label}
        for p in self.participants:
            if ids & set(p.send):
                return p.participant_id
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "datamode": self.datamode,
            "session_ids": list(self.session_ids),
            "sip_session_ids": list(self.sip_session_ids),
            "participants": [
                {
                    "id": p.participant_id,
                    "name": p.name,
                    "aor": list(p.aors),
                    "send": list(p.send),
                    "recv": list(p.recv),
                }
                for p in self.participants
            ],
            "streams": [
                {"id": s.stream_id, "session_id": s.session_id, "label": s.label}
                for s in self.streams
            ],
        }


def split_body(content_type: str, body: bytes) -> tuple[bytes | None, bytes | None]:
    """(SDP, rs-metadata) from an INVITE body: plain SDP, or multipart/mixed (RFC 7866 §9.1).

    Raises:
        MetadataError: a malformed multipart body, or two parts of one kind.
    """
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/sdp":
        return body, None
    if ctype == METADATA_TYPE:
        return None, body
    if ctype != "multipart/mixed":
        msg = f"unsupported body type {ctype[:60]!r}"
        raise MetadataError(msg)
    head = b"Content-Type: " + content_type.encode("utf-8", "replace") + b"\r\n\r\n"
    msg_obj = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg_obj.is_multipart() or msg_obj.defects:
        msg = "malformed multipart body"
        raise MetadataError(msg)
    parts: dict[str, bytes] = {}
    payload = msg_obj.get_payload()
    if not isinstance(payload, list) or len(payload) > MAX_PARTS:
        msg = "malformed multipart body"
        raise MetadataError(msg)
    for part in payload:
        if isinstance(part, str):
            continue
        kind = part.get_content_type()
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            continue
        if kind in parts:
            msg = f"two {kind} parts in one body"
            raise MetadataError(msg)
        parts[kind] = data
    return parts.get("application/sdp"), parts.get(METADATA_TYPE)


def _text(el: Element | None) -> str | None:
    if el is None or el.text is None:
        return None
    return el.text.strip()[:MAX_TEXT]


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def parse_metadata(data: bytes) -> RecordingMetadata:
    """Parse an rs-metadata document (RFC 7865 §6).

    Raises:
        MetadataError: not well-formed XML, a DTD or entity, not a ``recording``
            document, or over a limit.
    """
    if len(data) > MAX_METADATA_BYTES:
        msg = f"rs-metadata over {MAX_METADATA_BYTES} bytes"
        raise MetadataError(msg)
    try:
        root = SafeET.fromstring(data, forbid_dtd=True)
    except Exception as exc:
        # Not only ParseError and defusedxml's refusals: expat raises LookupError for an
        # unknown encoding=, and whatever it raises on hostile input is still bad metadata.
        msg = f"rs-metadata is not acceptable XML ({type(exc).__name__})"
        raise MetadataError(msg) from None
    if root.tag != _q("recording"):
        msg = "rs-metadata root is not <recording> in the RFC 7865 namespace"
        raise MetadataError(msg)
    children = list(root)
    if len(children) > 4 * MAX_ITEMS:
        msg = "rs-metadata has too many elements"
        raise MetadataError(msg)
    assoc: dict[str, tuple[list[str], list[str]]] = {}
    for el in root.iter(_q("participantstreamassoc")):
        pid = el.get("participant_id", "")[:MAX_TEXT]
        sends = [t for s in el.findall(_q("send")) if (t := _text(s))]
        recvs = [t for s in el.findall(_q("recv")) if (t := _text(s))]
        assoc[pid] = (sends[:MAX_ITEMS], recvs[:MAX_ITEMS])
    participants = []
    for el in root.findall(_q("participant"))[:MAX_ITEMS]:
        pid = el.get("participant_id", "")[:MAX_TEXT]
        aors, name = [], None
        for n in el.findall(_q("nameID"))[:MAX_ITEMS]:
            if aor := n.get("aor"):
                aors.append(aor[:MAX_TEXT])
            name = name or _text(n.find(_q("name")))
        # RFC 7865 §6.7 also allows send/recv inside <participant> (pre-RFC drafts).
        sends, recvs = assoc.get(pid, ([], []))
        sends += [t for s in el.findall(_q("send")) if (t := _text(s))]
        recvs += [t for s in el.findall(_q("recv")) if (t := _text(s))]
        participants.append(Participant(pid, name, tuple(aors), tuple(sends), tuple(recvs)))
    streams = [
        Stream(
            el.get("stream_id", "")[:MAX_TEXT], el.get("session_id"), _text(el.find(_q("label")))
        )
        for el in root.findall(_q("stream"))[:MAX_ITEMS]
    ]
    sessions = root.findall(_q("session"))[:MAX_ITEMS]
    extensions = {
        el.tag[:MAX_TEXT]: (_text(el) or "")
        for el in children[: 4 * MAX_ITEMS]
        if not el.tag.startswith(f"{{{NS}}}")
    }
    return RecordingMetadata(
        datamode=_text(root.find(_q("datamode"))),
        session_ids=tuple(s.get("session_id", "")[:MAX_TEXT] for s in sessions),
        sip_session_ids=tuple(t for s in sessions if (t := _text(s.find(_q("sipSessionID"))))),
        participants=tuple(participants),
        streams=tuple(streams),
        extensions=extensions,
    )

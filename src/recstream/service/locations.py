"""Decryption-proxy locations: validation and hierarchical resolution (pure).

The vendor's decryption proxy maps *node locations* (``/US``, ``/US/AK``) to the
URI of a Recording Crypto Server ending in ``/rcs``.  A node uses the entry of
its own path if there is one, else that of its nearest ancestor, and ``/`` is
the fallback: a node at ``/US/AK`` or ``/US/HI`` uses ``/US``.  No I/O here.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from recstream.service.errors import RequestError
from recstream.tomlconfig import is_loopback_host

__all__ = [
    "Resolution",
    "ancestors",
    "is_loopback_host",
    "normalize_upstream",
    "resolve",
    "validate_contact_center",
    "validate_location",
    "validate_rcs_uri",
]

MAX_LOCATION_CHARS: Final = 256
MAX_LOCATION_DEPTH: Final = 16
MAX_URI_CHARS: Final = 2048
MAX_CONTACT_CENTER_CHARS: Final = 64  # the vendor's IDs are hex UUID-like strings

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a node's decryption requests go.

    Attributes:
        node_path: the node asked about.
        location: the entry that matched (the node itself, an ancestor, or ``/``).
        value: the RCS URI of that entry, ending in ``/rcs``.
    """

    node_path: str
    location: str
    value: str


def validate_contact_center(text: str) -> str:
    """Return the contact-centre ID in lowercase hex.

    Raises:
        RequestError: not a hex string of 1..64 digits.
    """
    if not isinstance(text, str) or not 0 < len(text) <= MAX_CONTACT_CENTER_CHARS:
        msg = "contact-center ID must be 1 to 64 hex digits"
        raise RequestError(msg)
    if not _HEX.fullmatch(text):
        msg = "contact-center ID must be hex (as in the vendor's API)"
        raise RequestError(msg)
    return text.lower()


def validate_location(text: object) -> str:
    """Check a node location: ``/`` or ``/seg(/seg)*``, no empty, ``.`` or ``..`` segment.

    Raises:
        RequestError: with what is wrong.
    """
    if not isinstance(text, str):
        msg = "location must be a string such as '/US/AK'"
        raise RequestError(msg)
    if text == "/":
        return text
    if len(text) > MAX_LOCATION_CHARS or not text.startswith("/") or text.endswith("/"):
        msg = (
            f"location {text[:80]!r} must be '/' or an absolute path of segments "
            "such as '/US/AK' (no trailing '/')"
        )
        raise RequestError(msg)
    segments = text[1:].split("/")
    if len(segments) > MAX_LOCATION_DEPTH:
        msg = f"location has more than {MAX_LOCATION_DEPTH} segments"
        raise RequestError(msg)
    for seg in segments:
        if seg in {".", ".."} or not _SEGMENT.fullmatch(seg):
            msg = (
                f"location segment {seg[:80]!r} is not allowed: use letters, digits, "
                "'_', '-' and '.' (not '.' or '..' alone), 1 to 64 characters"
            )
            raise RequestError(msg)
    return text


def validate_rcs_uri(text: object) -> str:
    """Check an RCS URI: ``http(s)://host[:port]/.../rcs``, no credentials, query or fragment.

    Raises:
        RequestError: with what is wrong.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_URI_CHARS:
        msg = "value must be the RCS URI, such as 'https://rcs-us.example:8443/rcs'"
        raise RequestError(msg)
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        msg = "value must not contain whitespace or control characters"
        raise RequestError(msg)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        msg = f"value is not a valid URI: {exc}"
        raise RequestError(msg) from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        msg = "value must be an http:// or https:// URI with a host"
        raise RequestError(msg)
    if parts.username is not None or parts.password is not None:
        msg = "value must not carry credentials (the proxy passes the caller's through)"
        raise RequestError(msg)
    if parts.query or parts.fragment or "?" in text or "#" in text:
        msg = "value must not have a query or fragment"
        raise RequestError(msg)
    if not parts.path.endswith("/rcs"):
        msg = "value must end in '/rcs' (the RCS's API root)"
        raise RequestError(msg)
    if port == 0:
        msg = "value must not use port 0"
        raise RequestError(msg)
    return text


def normalize_upstream(text: object) -> str:
    """An RCS URI a decryption proxy may forward to, in one canonical spelling.

    ``https://`` (the proxy verifies the certificate), or ``http://`` only to a
    loopback IP address (127.0.0.0/8, ::1): plain HTTP anywhere else would carry
    decrypted recordings in the clear.  The scheme and host are lowercased so
    that the allowlist and the settings compare exactly.

    Raises:
        RequestError: not a valid RCS URI, or plain HTTP to a non-loopback host.
    """
    uri = validate_rcs_uri(text)
    parts = urlsplit(uri)
    host = (parts.hostname or "").lower()
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            msg = (
                f"{uri[:200]}: plain http:// is allowed only to a loopback address "
                "(127.0.0.1, ::1); use https://"
            )
            raise RequestError(msg)
    shown = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{shown}{port}{parts.path}"


def ancestors(node_path: str) -> list[str]:
    """``/US/AK`` -> ``['/US/AK', '/US', '/']``: the node first, ``/`` last."""
    out = [node_path]
    path = node_path
    while path != "/":
        path = path.rsplit("/", 1)[0] or "/"
        out.append(path)
    return out


def resolve(entries: Mapping[str, str], node_path: str) -> Resolution | None:
    """The entry a node at ``node_path`` uses: its own, its nearest ancestor's, or ``/``.

    Args:
        entries: location -> RCS URI, for one contact centre.
        node_path: a validated location.

    Returns:
        The resolution, or None when neither the node, an ancestor nor ``/`` has one.
    """
    for location in ancestors(node_path):
        value = entries.get(location)
        if value is not None:
            return Resolution(node_path, location, value)
    return None

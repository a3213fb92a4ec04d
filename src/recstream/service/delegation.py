"""Proxy delegation: a decryption proxy vouches for a user it authenticated (pure: no I/O).

A decryption proxy never forwards a player's password or token.  It
authenticates the player itself, then sends the RCS an assertion::

    Authorization: RecstreamProxy <base64url(claims JSON)>.<base64url(HMAC-SHA256)>

with the claims ``{"v": 1, "proxy", "user", "aud", "method", "path", "exp",
"nonce"}``, MACed with the key the proxy and that RCS share (``[proxy]
identity_key_file`` on the proxy, ``[auth] proxies`` on the RCS).  It is useless
anywhere else:

* ``aud`` is the RCS's own host and port, ``method`` and ``path`` the one request
  (path and query, as sent): it opens one request at one server;
* ``exp`` is :data:`ASSERTION_SECONDS` ahead (allowing for clock skew), and
  the RCS remembers each ``nonce`` until then, so it is accepted once;
* it names a user, not a secret: the RCS loads that user from its own settings
  database and applies its own tenants, so a proxy cannot grant what the RCS's
  administrator did not.

Key files hold at least :data:`MIN_KEY_BYTES` random bytes (the first line,
as written by ``head -c 32 /dev/urandom | base64``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ASSERTION_SECONDS",
    "SCHEME",
    "Claims",
    "DelegationError",
    "NonceCache",
    "sign",
    "verify",
]

SCHEME: Final = "RecstreamProxy"
ASSERTION_SECONDS: Final = 30.0  # long enough for a slow upload to start, no longer
MAX_SKEW_SECONDS: Final = 30.0  # clocks of proxy and RCS may differ by this much
MIN_KEY_BYTES: Final = 32
MAX_ASSERTION_CHARS: Final = 4096
_LABEL: Final = b"recstream-delegation-v1\x00"


class DelegationError(Exception):
    """The assertion is malformed, forged, expired, replayed or for another request."""


@dataclass(frozen=True, slots=True)
class Claims:
    proxy: str
    user: str
    aud: str  # host:port of the RCS, lowercase
    method: str
    path: str  # path and query exactly as requested
    exp: float  # seconds since the epoch
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.digest(key, _LABEL + payload, hashlib.sha256)


def sign(key: bytes, claims: Claims) -> str:
    """The ``Authorization`` value carrying ``claims``."""
    body = {
        "v": 1,
        "proxy": claims.proxy,
        "user": claims.user,
        "aud": claims.aud,
        "method": claims.method,
        "path": claims.path,
        "exp": claims.exp,
        "nonce": claims.nonce,
    }
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return f"{SCHEME} {_b64(payload)}.{_b64(_mac(key, payload))}"


def new_claims(proxy: str, user: str, aud: str, *, method: str, path: str, now: float) -> Claims:
    """Claims for one request, valid :data:`ASSERTION_SECONDS` from ``now``."""
    nonce = secrets.token_urlsafe(16)
    return Claims(proxy, user, aud.lower(), method, path, now + ASSERTION_SECONDS, nonce)


def verify(
    value: str, keys: dict[str, bytes], *, aud: str, method: str, path: str, now: float
) -> Claims:
    """Check an assertion (the part after the scheme) for this request.

    Args:
        keys: proxy name -> shared key.

    Raises:
        DelegationError: with what is wrong (for the log and audit, not the client).
    """
    if len(value) > MAX_ASSERTION_CHARS:
        raise DelegationError("assertion too long")
    encoded, sep, tag = value.partition(".")
    try:
        payload, mac = _unb64(encoded), _unb64(tag)
    except (binascii.Error, ValueError):
        raise DelegationError("malformed assertion") from None
    # The MAC first: nothing an unauthenticated client wrote reaches the JSON parser.
    # Every configured key is tried (a handful), without stopping at the first match.
    signer = None
    for name, key in keys.items():
        if hmac.compare_digest(_mac(key, payload), mac) and signer is None:
            signer = name
    if not sep or signer is None:
        raise DelegationError("unknown proxy or bad MAC")
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # Only a proxy holding a key gets here; still an error, never a traceback.
        raise DelegationError("malformed assertion") from None
    if not isinstance(body, dict) or body.get("v") != 1 or body.get("proxy") != signer:
        raise DelegationError("malformed assertion, or signed by another proxy")
    try:
        claims = Claims(
            str(body["proxy"]),
            str(body["user"]),
            str(body["aud"]),
            str(body["method"]),
            str(body["path"]),
            float(body["exp"]),
            str(body["nonce"]),
        )
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError):
        raise DelegationError("malformed assertion") from None
    if not now - MAX_SKEW_SECONDS < claims.exp <= now + ASSERTION_SECONDS + MAX_SKEW_SECONDS:
        raise DelegationError("expired or not yet valid")
    if claims.aud != aud.lower() or claims.method != method or claims.path != path:
        raise DelegationError("for another server or request")
    return claims


class NonceCache:
    """Nonces seen, until their assertion expires (bounded; the oldest forgotten first)."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries

    def first_use(self, claims: Claims, now: float) -> bool:
        """True the first time this assertion is presented (records it)."""
        while self._seen:
            nonce, exp = next(iter(self._seen.items()))
            if exp > now - MAX_SKEW_SECONDS:
                break
            del self._seen[nonce]
        key = f"{claims.proxy}\x00{claims.nonce}"
        if key in self._seen:
            return False
        self._seen[key] = claims.exp
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

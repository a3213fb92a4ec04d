"""Who may open a media stream, decided at the WebSocket upgrade, sans I/O.

Two checks, per tenant, as the platforms do it:

* a **shared secret** the platform puts in the connection URL (query
  ``token=``, or the last path segment, since Twilio's ``<Stream url>`` allows
  no query string) or in a header (``Authorization: Bearer``);
* the platform's **request signature**: Twilio's ``X-Twilio-Signature`` is the
  base64 HMAC-SHA1, keyed with the account's auth token, of the URL Twilio
  connected to (for a WebSocket upgrade, a GET, nothing is appended).

A tenant configured with both needs both.  Every tenant's credentials are
checked on every attempt, in constant time (HMAC digests compared with
:func:`hmac.compare_digest`), so timing tells nothing about which tenant or how
much of a secret matched.  The result is the set of tenants the credentials
are good for: several tenants may share one platform account, and then the
stream's ``tenant`` custom parameter chooses among them
(:func:`choose_tenant`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "AuthRefused",
    "Credentials",
    "TenantCredentials",
    "authenticate",
    "choose_tenant",
    "twilio_signature",
]

_DEFAULT_PORTS: Final = {"wss": 443, "https": 443, "ws": 80, "http": 80}


class AuthRefused(Exception):
    """Credentials refused.  ``reason`` is for the audit log only, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TenantCredentials:
    """A tenant's secrets (never in repr)."""

    tenant: str
    secret: bytes | None = field(default=None, repr=False)
    twilio_auth_token: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one upgrade request presented (attacker-written, all of it)."""

    url: str = field(repr=False)  # the URL as the platform signed it (may hold a secret)
    token: str | None = field(default=None, repr=False)
    signature: str | None = field(default=None, repr=False)


def twilio_signature(auth_token: bytes, url: str) -> str:
    """Twilio's request signature of a GET to ``url``: base64(HMAC-SHA1(token, url))."""
    digest = hmac.new(auth_token, url.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _url_variants(url: str) -> list[str]:
    """The URL, with and without its default port (Twilio's helper libraries accept both)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return [url]
    if default is None:
        return [url]
    if port is None:
        other = urlunsplit(parts._replace(netloc=f"{host}:{default}"))
    elif port == default:
        other = urlunsplit(parts._replace(netloc=host))
    else:
        return [url]
    return [url, other]


def _same(a: bytes, b: bytes) -> bool:
    # Compare fixed-length digests: compare_digest on raw secrets would leak their length.
    return hmac.compare_digest(hashlib.sha256(a).digest(), hashlib.sha256(b).digest())


def _signature_ok(token: bytes, url: str, signature: str) -> bool:
    ok = False
    for variant in _url_variants(url):
        ok |= _same(twilio_signature(token, variant).encode(), signature.encode())
    return ok


def authenticate(
    tenants: Sequence[TenantCredentials], presented: Credentials, *, only: str | None = None
) -> tuple[str, ...]:
    """The tenants whose every configured credential ``presented`` satisfies.

    Args:
        tenants: the configured tenants.
        presented: the request's URL, token and signature.
        only: a tenant named by the URL path; the others are not considered.

    Raises:
        AuthRefused: no tenant matches (the reason is for the audit log).
    """
    if presented.token is None and presented.signature is None:
        raise AuthRefused("no credentials")
    pool = [t for t in tenants if only is None or t.tenant == only]
    if not pool:
        raise AuthRefused("unknown tenant in path")
    good: list[str] = []
    for cred in pool:  # no early exit: every tenant costs the same
        ok = True
        if cred.secret is not None:
            ok &= presented.token is not None and _same(cred.secret, presented.token.encode())
        if cred.twilio_auth_token is not None:
            sig = presented.signature or ""
            ok &= _signature_ok(cred.twilio_auth_token, presented.url, sig)
        if ok:
            good.append(cred.tenant)
    if good:
        return tuple(good)
    if presented.signature is not None and any(t.twilio_auth_token for t in pool):
        raise AuthRefused("bad secret or signature")
    raise AuthRefused("bad secret")


def choose_tenant(allowed: Sequence[str], requested: str | None) -> str:
    """The stream's tenant: the ``tenant`` custom parameter if given, checked.

    Raises:
        AuthRefused: the parameter names a tenant these credentials are not
            good for, or it is absent and the credentials fit several tenants.
    """
    if requested is not None:
        if requested not in allowed:
            raise AuthRefused("tenant parameter not allowed for these credentials")
        return requested
    if len(allowed) != 1:
        raise AuthRefused("credentials fit several tenants and no tenant parameter chose one")
    return allowed[0]

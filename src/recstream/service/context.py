"""What every route handler shares: configuration, stores, keys, audit and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.envelope import KeyRing
from recstream.format import RecipientStanza
from recstream.service.archive import Archive
from recstream.service.audit import AuditLog
from recstream.service.auth import Authenticator, Principal
from recstream.service.config import ServiceConfig
from recstream.service.errors import (
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServiceError,
    TenantMismatchError,
)
from recstream.service.http import client_address
from recstream.service.index import HeaderIndex
from recstream.service.metrics import Metrics
from recstream.service.objects import StoreArchive
from recstream.service.signatures import SignatureCache
from recstream.service.store import Role, SettingsStore

__all__ = ["AUDITED", "CONTEXT", "PRINCIPAL", "ServiceContext", "TracingKeyRing"]


@dataclass(slots=True)
class ServiceContext:
    config: ServiceConfig
    store: SettingsStore
    auth: Authenticator
    audit: AuditLog
    metrics: Metrics
    keyring: KeyRing | None = None  # None for a proxy: it holds no keys
    archive: Archive | StoreArchive | None = None
    index: HeaderIndex | None = None  # the archive's headers, for listings
    index_ready: asyncio.Event = field(default_factory=asyncio.Event)
    # issue 16: verified signatures per file version (service/signatures.py)
    signatures: SignatureCache = field(default_factory=SignatureCache)

    def client(self, request: web.Request) -> str:
        return client_address(request, self.config.server.trusted_proxies)

    async def authenticate(self, request: web.Request) -> Principal:
        """Raises AuthenticationError, RateLimitedError (audited by :meth:`audit_refusal`)."""
        who = await self.auth.authenticate(
            request.headers.get("Authorization"),
            self.client(request),
            (request.method, request.raw_path, request.host),
        )
        request[PRINCIPAL] = who
        return who

    async def require_ops(self, request: web.Request) -> Principal:
        """Raises AuthenticationError, RateLimitedError, PermissionDeniedError."""
        who = await self.authenticate(request)
        if who.user.role is not Role.OPS:
            msg = f"user {who.name!r} does not have the ops role needed for settings"
            raise PermissionDeniedError(msg)
        return who

    def audit_base(self, request: web.Request, who: Principal | None) -> dict[str, Any]:
        record: dict[str, Any] = {
            "user": None if who is None else who.name,
            "auth": None if who is None else who.method,
            "client": self.client(request),
        }
        if who is not None and who.via is not None:
            record["via"] = who.via
        return record

    def audit_refusal(self, request: web.Request, exc: BaseException, status: int) -> None:
        """Audit a refused request (the error middleware calls this for every error).

        Authentication failures (401), rate limits (429), permission refusals (403)
        and hidden ones (a 404 that stands for "another tenant's") are written,
        rate-limited per client address; a request whose handler audited its own
        outcome (decrypt, playback) is not written twice.
        """
        if request.get(AUDITED) or not isinstance(exc, ServiceError):
            return
        hidden = getattr(exc, "hidden_reason", None)
        if status not in (401, 403, 429) and hidden is None:
            return
        who: Principal | None = request.get(PRINCIPAL)
        record = self.audit_base(request, who)
        if who is None and isinstance(exc, AuthenticationError | RateLimitedError):
            record["user"] = exc.user  # the name claimed (never a password)
        if isinstance(exc, AuthenticationError):
            event, reason = "auth_failed", exc.reason
            if exc.detail:
                record["detail"] = exc.detail
        elif isinstance(exc, RateLimitedError):
            event, reason = "auth_refused", f"rate_limited_{exc.reason or 'client'}"
        elif isinstance(exc, NotFoundError):
            event, reason = "refused", str(hidden)
        else:
            assert isinstance(exc, PermissionDeniedError)
            event, reason = "refused", type(exc).__name__
        self.audit.write_limited(
            event,
            f"client:{record['client']}",
            **record,
            method=request.method,
            path=_loggable_path(request.path),
            status=status,
            reason=reason,
        )


def _loggable_path(path: str) -> str:
    """A request path fit for a log: a playback ticket (a credential) is not written."""
    return "/rcs/play/…" if path.startswith("/rcs/play/") else path


CONTEXT = web.AppKey("recstream_context", ServiceContext)
PRINCIPAL = web.RequestKey("recstream_principal", Principal)
AUDITED = web.RequestKey("recstream_audited", bool)


class TracingKeyRing:
    """A :class:`KeyRing` that remembers which certificate, of which tenant, gave a key.

    ``open_file_key`` stops at the first stanza whose key unwraps and
    authenticates the header, so after a successful open :attr:`cert_id` is
    the certificate that decrypted the recording (for the audit log) and
    :attr:`tenant` the tenant the keystore holds it for, when the inner key
    ring can tell (``tenant_for(stanza)``, as the keystore's does).
    """

    def __init__(self, inner: KeyRing) -> None:
        self._inner = inner
        self.cert_id: str | None = None
        self.tenant: str | None = None
        # Every tenant holding the key that opened it; None when the inner ring cannot
        # tell (private key files: no tenants).
        self.tenants: frozenset[str] | None = None

    def private_key_for(self, stanza: RecipientStanza) -> rsa.RSAPrivateKey | None:
        with_tenants = getattr(self._inner, "key_and_tenants_for", None)
        if with_tenants is None:
            key = self._inner.private_key_for(stanza)
            tenant, tenants = None, None
        else:
            key, tenant, tenants = with_tenants(stanza)
        if key is not None:
            self.cert_id = stanza.cert_id_hex
            self.tenant, self.tenants = tenant, tenants
        return key

    def describe(self) -> Sequence[str]:
        return self._inner.describe()

    def check_tenant(self, header_tenant: str) -> None:
        """Refuse a recording whose key belongs to another tenant than its header names.

        Anyone holding tenant B's (public) certificate can write an envelope whose
        header says tenant A: without this check a player of tenant A would
        decrypt tenant B's key's recordings.

        Raises:
            TenantMismatchError: the key ring knows the tenants holding the key, and the
                header's is not one of them (fails closed: a keystore ring that found a
                key but no tenant refuses).
        """
        if self.tenants is not None and header_tenant not in self.tenants:
            raise TenantMismatchError(header_tenant, self.tenant or "(none)")

"""The Recording Crypto Server's errors: requests refused, configuration rejected.

They belong to the service, not to the core tree: :mod:`recstream.errors`
knows nothing of HTTP.  Every class here is a :class:`~recstream.errors.RecstreamError`
(through :class:`ServiceError`), so a caller that catches the root still catches
them, and :data:`recstream.service.http.HTTP_STATUS` (the one table) maps each
leaf to a status.  Messages are safe to send to a client: never key material,
credentials or plaintext.
"""

from __future__ import annotations

from recstream.errors import ConfigError, RecstreamError, StoreUnavailableError

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "ForbiddenOriginError",
    "InvalidTokenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "RequestError",
    "RequestTimeoutError",
    "ServiceConfigError",
    "ServiceError",
    "StoreTimeoutError",
    "TenantMismatchError",
    "TicketError",
    "UnsupportedMediaTypeError",
    "UpstreamError",
]


class ServiceError(RecstreamError):
    """The Recording Crypto Server cannot start, or refuses a request."""


class ServiceConfigError(ServiceError, ConfigError):
    """The RCS configuration is wrong; the server refuses to start.

    A :class:`recstream.errors.ConfigError` (what the CLI catches for every server)
    and a :class:`ServiceError` (what ``service/http.py`` maps).
    """


class RequestError(ServiceError):
    """The request is malformed or invalid (bad JSON, a field that fails validation)."""


class PayloadTooLargeError(RequestError):
    """A request body is over its limit.

    Attributes:
        limit: the largest body accepted, in bytes.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over the limit of {limit} bytes")
        self.limit = limit


class RangeNotSatisfiableError(RequestError):
    """No byte of the requested range lies inside the recording.

    Attributes:
        size: the recording's plaintext length.
    """

    def __init__(self, size: int) -> None:
        super().__init__(f"range not satisfiable: the recording has {size} bytes")
        self.size = size


class RequestTimeoutError(RequestError):
    """The client took too long to send its request body."""


class UnsupportedMediaTypeError(RequestError):
    """A state-changing request whose body is not ``application/json``."""


class AuthenticationError(ServiceError):
    """No credentials, or credentials that do not identify a user.

    Attributes:
        reason: why, for the audit log (``missing``, ``malformed``,
            ``bad_credentials``, ``bad_token``, ``bad_delegation``).
        user: the user name the request claimed, if any (never a password).
    """

    def __init__(self, message: str, *, reason: str = "bad_credentials", user: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.user = user
        self.detail = ""  # for the audit log only (what exactly failed)


class InvalidTokenError(AuthenticationError):
    """The bearer token is unknown, expired or revoked."""


class RateLimitedError(ServiceError):
    """Too many failed authentications from this client or for this user.

    Attributes:
        retry_after: seconds until another attempt is considered.
    """

    def __init__(self, retry_after: float, *, reason: str = "", user: str | None = None) -> None:
        seconds = max(1, int(retry_after + 0.999))
        super().__init__(f"too many failed attempts; retry in {seconds} s")
        self.retry_after = seconds
        self.reason = reason  # which limit: "client" or "user"
        self.user = user


class PermissionDeniedError(ServiceError):
    """An authenticated user asked for something their role or tenants do not allow."""


class TicketError(PermissionDeniedError):
    """A playback ticket that is malformed, forged, expired, for another recording, or
    whose sign-in has ended.  A 403, not a 401: a media element that met a 401's
    Basic challenge would make the browser ask for a password."""


class ForbiddenOriginError(PermissionDeniedError):
    """A state-changing request sent by a page of another origin (cross-site request forgery)."""


class TenantMismatchError(ServiceError):
    """A recording labelled with one tenant was encrypted to another tenant's certificate.

    Attributes:
        header_tenant: the tenant the header names.
        key_tenant: the tenant whose key opened it.
    """

    def __init__(self, header_tenant: str, key_tenant: str) -> None:
        super().__init__(
            f"the recording is labelled with tenant {header_tenant!r} but encrypted to a "
            "certificate of another tenant: refused (a forged or mislabelled recording)"
        )
        self.header_tenant = header_tenant
        self.key_tenant = key_tenant


class NotFoundError(ServiceError):
    """No such recording or setting (or one the caller may not know exists).

    Attributes:
        hidden_reason: set when the thing exists but the caller may not know it
            (``other_tenant``): answered as missing, audited as a refusal.
    """

    def __init__(self, message: str, *, hidden_reason: str | None = None) -> None:
        super().__init__(message)
        self.hidden_reason = hidden_reason


class ConflictError(ServiceError):
    """The thing to create exists already."""


class UpstreamError(ServiceError):
    """A decryption proxy could not get an answer from the RCS it resolved.

    Attributes:
        target: the RCS URI (without credentials).
    """

    def __init__(self, message: str, target: str = "") -> None:
        super().__init__(message)
        self.target = target


class StoreTimeoutError(ServiceError, StoreUnavailableError):
    """The recordings store did not answer within ``[recordings] store_timeout`` (a 504).

    A :class:`recstream.errors.StoreUnavailableError` (the store's failures, 502) that
    the service tells apart: the store may be up but slow.
    """

"""Who is asking: HTTP Basic (over TLS) and bearer tokens, with failed attempts limited.

* **Basic** checks the password against the user's Argon2id hash (memory-hard,
  ~0.1 s).  A browser sends Basic credentials with every request (each Range
  request of a playing recording), so a *verified* credential is remembered
  for :data:`BASIC_CACHE_SECONDS` under ``HMAC(process secret, name, password,
  stored hash)``: a changed password or a removed user no longer matches, and
  the cache holds no password.
* **Bearer tokens** are issued by ``POST /rcs/tokens`` to a Basic-authenticated
  user: 32 random bytes, kept in memory only as their SHA-256, valid for
  ``[auth] token_ttl`` seconds or until revoked (``DELETE /rcs/tokens``), the
  server restarts, or the user's *credential version* changes.  A token carries
  the version the user had when it was issued; the store replaces it whenever
  the user is written (``add-user --replace``: a new password, role or
  tenants) and it disappears with the user, so a password change or a removal
  revokes every token, and a new user of the same name does not inherit them.
* **Equal work**: every Basic attempt that reaches a check costs exactly one
  Argon2id verification, whether the user exists or not and however long the
  password is (:func:`recstream.service.passwords.verify_password`).
* **Lockout policy** (:class:`~recstream.service.ratelimit.FailureLimiter`
  windows of ``[auth] failure_window`` seconds, ``max_failures`` each):

  - a client address with ``max_failures`` recent failures is refused (429)
    before any password is checked: it pays for its own guesses;
  - a user name with ``max_failures`` recent failures is refused only to
    clients that have failed recently themselves: a client with a clean record
    still gets its password checked, so nobody can lock a known user out by
    guessing wrong from elsewhere;
  - a valid bearer token is accepted whatever its address did: tokens are
    checked before any limit, and only an invalid one counts as a failure.

Comparisons of secrets are constant-time (``hmac.compare_digest``, and the
Argon2id verification itself).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, NoReturn

from recstream.service import delegation, passwords
from recstream.service.errors import (
    AuthenticationError,
    InvalidTokenError,
    RateLimitedError,
    TicketError,
)
from recstream.service.metrics import Metrics
from recstream.service.ratelimit import FailureLimiter
from recstream.service.store import SettingsStore, User

__all__ = ["Authenticator", "Principal", "TokenStore", "challenge_headers"]

BASIC_CACHE_SECONDS: Final = 300.0
BASIC_CACHE_ENTRIES: Final = 10_000
MAX_TOKENS: Final = 100_000
MAX_TOKENS_PER_USER: Final = 64
TOKEN_PREFIX: Final = "rst_"  # noqa: S105 - a prefix that marks recstream tokens, not a secret
MAX_AUTHORIZATION_CHARS: Final = 4096
# Argon2id verifications at once: each takes 64 MiB and a core for ~0.1 s.
HASH_CONCURRENCY: Final = 2
REALM: Final = "recstream"
DB_THREADS: Final = 2  # settings-database lookups at once (each ~20 us)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the user and how they proved it.

    Attributes:
        method: ``basic``, ``bearer``, ``proxy`` (a delegation), or ``ticket`` (a
            playback ticket, :mod:`recstream.service.tickets`).
        via: the decryption proxy that vouched for the user (``proxy`` only).
    """

    user: User
    method: str
    via: str | None = None

    @property
    def name(self) -> str:
        return self.user.name


def challenge_headers(invalid_token: bool = False) -> dict[str, str]:
    """``WWW-Authenticate`` for a 401 (RFC 7617 Basic and RFC 6750 Bearer)."""
    bearer = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if invalid_token else "")
    return {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8", {bearer}'}


@dataclass(slots=True)
class _Grant:
    digest: bytes
    user: str
    credential: str  # the user's credential version when the token was issued
    expires: float


class TokenStore:
    """Bearer tokens in memory, by SHA-256 digest.  Time is an argument."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._grants: OrderedDict[bytes, _Grant] = OrderedDict()

    def issue(self, user: str, credential: str, now: float) -> tuple[str, float]:
        """A new token for ``user`` at credential version ``credential``;
        returns (token, seconds it is valid)."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).digest()
        self._expire(now)
        mine = [g for g in self._grants.values() if g.user == user]
        for old in mine[: max(0, len(mine) - MAX_TOKENS_PER_USER + 1)]:
            del self._grants[old.digest]
        self._grants[digest] = _Grant(digest, user, credential, now + self.ttl)
        while len(self._grants) > MAX_TOKENS:
            self._grants.popitem(last=False)
        return token, self.ttl

    def user_for(self, token: str, now: float) -> tuple[str, str] | None:
        """(user, credential version) a live token was issued for, or None."""
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        grant = self._grants.get(digest)
        if grant is None or not hmac.compare_digest(grant.digest, digest):
            return None
        if grant.expires <= now:
            del self._grants[digest]
            return None
        return grant.user, grant.credential

    @staticmethod
    def digest(token: str) -> bytes:
        """The SHA-256 a token is kept under (what a playback ticket names it by)."""
        return hashlib.sha256(token.encode("utf-8", "replace")).digest()

    def live(self, digest: bytes, now: float) -> float:
        """Seconds the token of ``digest`` has left, 0 if it is unknown, expired or revoked."""
        grant = self._grants.get(digest)
        if grant is None or not hmac.compare_digest(grant.digest, digest):
            return 0.0
        return max(0.0, grant.expires - now)

    def revoke(self, token: str) -> bool:
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        return self._grants.pop(digest, None) is not None

    def _expire(self, now: float) -> None:
        dead = [d for d, g in self._grants.items() if g.expires <= now]
        for d in dead:
            del self._grants[d]

    def __len__(self) -> int:
        return len(self._grants)


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal`, or refuses.

    Args:
        store: the settings database (users).
        limiter: failed-attempt limiter.
        tokens: the bearer tokens issued by this server.
        metrics: counts failures by reason.
        clock: monotonic seconds (a seam for tests).
        proxies: decryption proxies whose delegations are accepted (name -> key).
        wall_clock: seconds since the epoch, for delegations' expiry.
    """

    def __init__(
        self,
        store: SettingsStore,
        limiter: FailureLimiter,
        tokens: TokenStore,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        proxies: dict[str, bytes] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._limiter = limiter
        self.tokens = tokens
        self._metrics = metrics
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        self._hashing = asyncio.Semaphore(HASH_CONCURRENCY)
        self._proxies = dict(proxies or {})
        self._wall = wall_clock
        self._nonces = delegation.NonceCache()
        # User lookups (every request) get threads of their own: in the default
        # executor they queued behind playback's decryption and slowed it down.
        self._db = ThreadPoolExecutor(DB_THREADS, thread_name_prefix="recstream-users")

    async def _lookup(self, name: str) -> tuple[User, str] | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db, self._store.user_with_hash, name)

    def close(self) -> None:
        """Stop the lookup threads (after the last request)."""
        self._db.shutdown(wait=True)

    async def authenticate(
        self,
        authorization: str | None,
        client: str,
        target: tuple[str, str, str] = ("", "", ""),
    ) -> Principal:
        """Authenticate a request.

        Args:
            target: (method, raw path and query, Host) of the request, which a
                delegation must name.

        Raises:
            AuthenticationError: no, malformed or wrong credentials (HTTP 401).
            RateLimitedError: too many recent failures (429), under the policy above.
        """
        if not authorization:
            self._metrics.auth_failures.inc(reason="missing")
            msg = "authentication required: HTTP Basic (over TLS) or a bearer token"
            raise AuthenticationError(msg, reason="missing")
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if len(authorization) > MAX_AUTHORIZATION_CHARS or not value:
            self._refuse_if_limited(client, None)
            self._fail("malformed", client)
        if scheme.lower() == "bearer":
            return await self._bearer(value, client)
        if scheme.lower() == delegation.SCHEME.lower() and self._proxies:
            return await self._delegated(value, client, target)
        if scheme.lower() != "basic":
            self._refuse_if_limited(client, None)
            self._fail("malformed", client)
        return await self._basic(value, client)

    def issue_token(self, who: Principal) -> tuple[str, float]:
        """A new bearer token for ``who`` at their current credential version."""
        return self.tokens.issue(who.name, who.user.credential, self._clock())

    async def _basic(self, value: str, client: str) -> Principal:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._refuse_if_limited(client, None)
            self._fail("malformed", client)
        name, sep, password = decoded.partition(":")
        if not sep or not name:
            self._refuse_if_limited(client, None)
            self._fail("malformed", client)
        keys = self._limit_keys(client, name)
        # Limits first, even before the cache of verified credentials: otherwise a
        # limited client could test guesses against it, unthrottled, for as long as
        # the real user keeps a credential remembered.
        now = self._clock()
        wait = max(self._limiter.retry_after(k, now) for k in keys)
        if wait > 0:
            self._refused(wait, keys, name)
        found = await self._lookup(name)
        secret = password.encode("utf-8")
        mark = b""
        if found is not None:
            mark = hmac.digest(
                self._secret, b"\0".join((name.encode(), secret, found[1].encode())), "sha256"
            )
            if self._remembered(mark):  # verified moments ago: no hash, no reservation
                return Principal(found[0], "basic")
        # Check and reserve in one synchronous step: the hash below is awaited, and a
        # burst of concurrent guesses must not all pass a check of finished failures.
        wait = self._limiter.reserve(keys, self._clock())
        if wait > 0:
            self._refused(wait, keys, name)
        try:
            async with self._hashing:
                encoded = found[1] if found is not None else None
                ok = await asyncio.to_thread(passwords.verify_password, secret, encoded)
        finally:
            self._limiter.release(keys)
        if not ok or found is None:
            self._fail("bad_credentials", client, name)
        self._remember(mark)
        return Principal(found[0], "basic")

    def _limit_keys(self, client: str, name: str) -> tuple[str, ...]:
        """The limits a Basic attempt is under: its address's always; the user's only
        when this client has failed recently (a clean client is never locked out by
        other clients' failures)."""
        if self._limiter.recent_failures(f"client:{client}", self._clock()) == 0:
            return (f"client:{client}",)
        return (f"client:{client}", f"user:{name}")

    async def _bearer(self, token: str, client: str) -> Principal:
        # A valid token is accepted before any limit: its address's failures
        # (a shared NAT, a proxy) are not its holder's.
        grant = self.tokens.user_for(token, self._clock())
        if grant is None:
            self._refuse_if_limited(client, None)
            self._fail("bad_token", client)
        name, credential = grant
        found = await self._lookup(name)
        if found is None or not hmac.compare_digest(found[0].credential, credential):
            # Removed, or its password (or role, or tenants) changed since: revoked.
            self.tokens.revoke(token)
            self._refuse_if_limited(client, None)
            self._fail("bad_token", client, name)
        return Principal(found[0], "bearer")

    def token_left(self, token: str) -> float:
        """Seconds a bearer token has left (0: dead)."""
        return self.tokens.live(self.tokens.digest(token), self._clock())

    async def ticket_holder(self, name: str, credential: str, token_digest: bytes) -> Principal:
        """The user a playback ticket was issued to, if it still stands: the bearer
        token it was issued under is live and the user's credential version unchanged
        (a sign-out, a password change or a removal ends the user's tickets too).

        Raises:
            TicketError: it no longer stands (HTTP 403).
        """
        if self.tokens.live(token_digest, self._clock()) <= 0:
            self._metrics.auth_failures.inc(reason="bad_ticket")
            msg = "the playback ticket's sign-in has ended (signed out or expired)"
            raise TicketError(msg)
        found = await self._lookup(name)
        if found is None or not hmac.compare_digest(found[0].credential, credential):
            self._metrics.auth_failures.inc(reason="bad_ticket")
            msg = "the playback ticket's user has changed or been removed"
            raise TicketError(msg)
        return Principal(found[0], "ticket")

    async def _delegated(self, value: str, client: str, target: tuple[str, str, str]) -> Principal:
        # Like a token: checked before any limit, and only a bad one counts.
        method, path, host = target
        try:
            claims = delegation.verify(
                value, self._proxies, aud=host, method=method, path=path, now=self._wall()
            )
        except delegation.DelegationError as exc:
            self._refuse_if_limited(client, None)
            self._fail("bad_delegation", client, detail=str(exc))
        if not self._nonces.first_use(claims, self._wall()):
            self._fail("bad_delegation", client, claims.user, detail="replayed")
        found = await self._lookup(claims.user)
        if found is None:
            self._fail("bad_delegation", client, claims.user, detail="no such user here")
        return Principal(found[0], "proxy", via=claims.proxy)

    def _refuse_if_limited(self, client: str, name: str | None) -> None:
        key = f"client:{client}"
        wait = self._limiter.retry_after(key, self._clock())
        if wait > 0:
            self._refused(wait, (key,), name)

    def _refused(self, wait: float, keys: tuple[str, ...], name: str | None) -> NoReturn:
        self._metrics.auth_failures.inc(reason="rate_limited")
        now = self._clock()
        which = "client" if self._limiter.retry_after(keys[0], now) > 0 else "user"
        raise RateLimitedError(wait, reason=which, user=name)

    def _fail(
        self, reason: str, client: str, name: str | None = None, detail: str = ""
    ) -> NoReturn:
        now = self._clock()
        self._limiter.record_failure(f"client:{client}", now)
        if name is not None and reason == "bad_credentials":
            self._limiter.record_failure(f"user:{name}", now)
        self._metrics.auth_failures.inc(reason=reason)
        text = {
            "malformed": "malformed Authorization header",
            "bad_credentials": "wrong user name or password",
            "bad_token": "the bearer token is unknown, expired or revoked",
            "bad_delegation": "the decryption proxy's delegation is not accepted here",
        }[reason]
        cls = InvalidTokenError if reason == "bad_token" else AuthenticationError
        exc = cls(text, reason=reason, user=name)
        exc.detail = detail
        raise exc

    def _remembered(self, mark: bytes) -> bool:
        expires = self._verified.get(mark)
        if expires is None:
            return False
        if expires <= self._clock():
            del self._verified[mark]
            return False
        return True

    def _remember(self, mark: bytes) -> None:
        self._verified[mark] = self._clock() + BASIC_CACHE_SECONDS
        while len(self._verified) > BASIC_CACHE_ENTRIES:
            self._verified.popitem(last=False)

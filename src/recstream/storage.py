"""Archive store URLs: parse them, open an fsspec filesystem on them, map their errors.

The one place that knows what ``s3://bucket/prefix``, ``webdav+https://host/path`` (and
``webdav+http://`` on loopback only) and plain paths mean.  The uploader
(:mod:`recstream.upload`), the batch jobs and the RCS's store-backed root all open stores
here, and nothing here does more I/O than building a client.

Credentials never come from the URL or a command line, and are never logged:

* **S3**: the AWS SDK's own chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
  ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws/``); the endpoint of an S3-compatible
  store from ``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``), as the SDK reads it.
* **WebDAV**: ``RECSTREAM_WEBDAV_USERNAME`` / ``RECSTREAM_WEBDAV_PASSWORD``, else the
  ``machine`` entry for the URL's host in ``$NETRC`` or ``~/.netrc``.  The password is
  sent only to the host the URL names (netrc entries are per host by construction);
  plain ``http`` is accepted only for loopback hosts, so a password never crosses a
  network in clear.
"""

from __future__ import annotations

import contextlib
import netrc
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from recstream.errors import (
    StorageError,
    StoreRefusedError,
    StoreUnavailableError,
)
from recstream.tomlconfig import is_loopback_host

__all__ = [
    "WEBDAV_PASSWORD_ENV",
    "WEBDAV_USERNAME_ENV",
    "Store",
    "StoreURL",
    "client_errors",
    "is_store_url",
    "open_store",
    "storage_error",
    "url_to_fs",
    "webdav_credentials",
]

WEBDAV_USERNAME_ENV: Final = "RECSTREAM_WEBDAV_USERNAME"
WEBDAV_PASSWORD_ENV: Final = "RECSTREAM_WEBDAV_PASSWORD"  # noqa: S105 - a variable's name
REMOTE_SCHEMES: Final = ("s3", "webdav+https", "webdav+http")
# S3 bucket names (AWS's rules, the common subset every S3-compatible store accepts).
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Seconds: a store that accepts a connection and then says nothing must not hold an
# upload forever (the uploader retries with back-off instead).
CONNECT_TIMEOUT: Final = 10.0
READ_TIMEOUT: Final = 120.0


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL.

    Attributes:
        scheme: ``s3``, ``webdav+https``, ``webdav+http`` or ``file`` (a local directory).
        netloc: the bucket (S3), ``host[:port]`` (WebDAV), or "" (file).
        path: the prefix below it, without leading or trailing ``/`` (``""`` for the root);
            for ``file`` an absolute local path.
    """

    scheme: str
    netloc: str
    path: str

    @classmethod
    def parse(cls, text: str) -> StoreURL:
        """``s3://bucket/prefix``, ``webdav+https://host[:port]/path``, a path or ``file://``.

        Raises:
            ValueError: an unknown scheme, credentials or a query in the URL, a bad
                bucket name, or ``webdav+http`` to a host that is not loopback.
        """
        if "://" not in text:
            if not text:
                msg = "an empty store URL"
                raise ValueError(msg)
            return cls("file", "", str(Path(text).absolute()))
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme == "file":
            return cls("file", "", str(Path(parts.path).absolute()))
        if scheme not in REMOTE_SCHEMES:
            msg = (
                f"unsupported store URL scheme {parts.scheme!r}: use s3://BUCKET/PREFIX, "
                "webdav+https://HOST/PATH or a local directory"
            )
            raise ValueError(msg)
        if "@" in parts.netloc:
            msg = (
                "a store URL must not carry credentials: give them in the environment "
                f"(AWS_* for S3; {WEBDAV_USERNAME_ENV} / {WEBDAV_PASSWORD_ENV} or ~/.netrc "
                "for WebDAV)"
            )
            raise ValueError(msg)
        if parts.query or parts.fragment:
            msg = "a store URL takes no query or fragment"
            raise ValueError(msg)
        path = parts.path.strip("/")
        if any(seg in (".", "..") for seg in path.split("/")) or "//" in path:
            msg = "a store URL's path must not contain '.', '..' or empty segments"
            raise ValueError(msg)
        netloc = parts.netloc.lower()
        if scheme == "s3" and not _BUCKET.fullmatch(netloc):
            msg = f"{netloc!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')"
            raise ValueError(msg)
        if scheme.startswith("webdav"):
            host = parts.hostname or ""
            if not host:
                msg = "a WebDAV URL needs a host"
                raise ValueError(msg)
            if scheme == "webdav+http" and not is_loopback_host(host):
                msg = (
                    "webdav+http:// would send the password in clear: use webdav+https:// "
                    "(plain http is accepted for loopback hosts only)"
                )
                raise ValueError(msg)
            try:
                parts.port  # noqa: B018 - validates the port
            except ValueError:
                msg = f"bad port in store URL host {parts.netloc!r}"
                raise ValueError(msg) from None
        return cls(scheme, netloc, path)

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def host(self) -> str:
        """The host name (WebDAV), the bucket (S3)."""
        return urlsplit(f"//{self.netloc}").hostname or self.netloc

    def join(self, rel: str) -> StoreURL:
        """The URL of ``rel`` (a relative ``/``-separated path) below this one."""
        rel = rel.strip("/")
        if not rel:
            return self
        path = f"{self.path}/{rel}" if self.path else rel
        if self.is_local:
            path = str(Path(self.path) / rel)
        return StoreURL(self.scheme, self.netloc, path)

    def __str__(self) -> str:
        if self.is_local:
            return self.path
        return f"{self.scheme}://{self.netloc}/{self.path}".rstrip("/")


def is_store_url(text: str) -> bool:
    """True for a remote store URL (S3 or WebDAV), False for a local path."""
    return text.split("://", 1)[0].lower() in REMOTE_SCHEMES if "://" in text else False


@dataclass(frozen=True)
class Store:
    """An opened store: an fsspec filesystem and where the URL's prefix is in it.

    Attributes:
        url: the store URL.
        fs: the fsspec filesystem (s3fs, webdav4, or fsspec's local one).
        root: the URL's prefix as a path in ``fs``.
    """

    url: StoreURL
    fs: Any
    root: str

    def path(self, rel: str) -> str:
        """The ``fs`` path of ``rel`` below the store's prefix."""
        rel = rel.strip("/")
        if not rel:
            return self.root
        return f"{self.root.rstrip('/')}/{rel}" if self.root else rel

    @property
    def kind(self) -> str:
        """``s3``, ``webdav`` or ``file``."""
        return self.url.scheme.split("+", 1)[0]


def webdav_credentials(host: str, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(username, password) for a WebDAV host: the environment, else netrc, else None.

    Raises:
        StorageError: only one of the two variables is set, or the netrc file is unreadable
            or malformed (named, never quoted).
    """
    env = os.environ if env is None else env
    user, password = env.get(WEBDAV_USERNAME_ENV), env.get(WEBDAV_PASSWORD_ENV)
    if user is not None or password is not None:
        if not user or not password:
            msg = f"set both {WEBDAV_USERNAME_ENV} and {WEBDAV_PASSWORD_ENV}, or neither"
            raise StorageError(msg)
        return user, password
    path = Path(env.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except (netrc.NetrcParseError, OSError) as exc:
        reason = exc.msg if isinstance(exc, netrc.NetrcParseError) else exc.strerror
        msg = f"netrc file {path} cannot be read: {reason}"
        raise StorageError(msg) from None
    if entry is None or not entry[0] or entry[2] is None:
        return None
    return entry[0], entry[2]


def open_store(url: str | StoreURL, env: Mapping[str, str] | None = None) -> Store:
    """An fsspec filesystem on ``url``, with credentials from the environment.

    Raises:
        ValueError: the URL is not a store URL (see :meth:`StoreURL.parse`).
        StorageError: the store's client library is not installed, or credentials are
            half-given.
    """
    parsed = url if isinstance(url, StoreURL) else StoreURL.parse(url)
    if parsed.is_local:
        from fsspec.implementations.local import LocalFileSystem

        return Store(parsed, LocalFileSystem(), parsed.path)
    if parsed.scheme == "s3":
        return Store(parsed, _s3_filesystem(parsed), f"{parsed.netloc}/{parsed.path}".rstrip("/"))
    return Store(parsed, _webdav_filesystem(parsed, env), parsed.path)


def url_to_fs(text: str) -> tuple[Any, str]:
    """(filesystem, root path) for a store URL, a local path, or any other fsspec URL
    (``memory://``, ``file://``...): the batch jobs' and the RCS's entry point.

    Raises:
        ValueError: a malformed store URL.
        StorageError: as :func:`open_store`.
    """
    if is_store_url(text):
        store = open_store(text)
        return store.fs, store.root
    import fsspec

    fs, root = fsspec.core.url_to_fs(text)
    return fs, str(root).rstrip("/") or "/"


def _missing(package: str, exc: ImportError) -> StorageError:
    msg = f"the {package} package is needed for this store: pip install 'recstream[storage]'"
    err = StorageError(msg)
    err.__cause__ = exc
    return err


def _s3_filesystem(url: StoreURL) -> Any:
    try:
        import s3fs
    except ImportError as exc:  # pragma: no cover - the storage extra is not installed
        raise _missing("s3fs", exc) from exc
    # skip_instance_cache: a fresh client per store, so a rotated credential in the
    # environment is read; no listings cache: "does the final name exist" must be fresh.
    fs = s3fs.S3FileSystem(
        skip_instance_cache=True,
        use_listings_cache=False,
        config_kwargs={
            "connect_timeout": CONNECT_TIMEOUT,
            "read_timeout": READ_TIMEOUT,
            "retries": {"max_attempts": 2, "mode": "standard"},
        },
    )
    # s3fs retries failed calls itself too (5 times by default); the uploader has its
    # own back-off, so one more try here is enough.
    fs.retries = 2
    return fs


def _webdav_filesystem(url: StoreURL, env: Mapping[str, str] | None) -> Any:
    try:
        import httpx
        from webdav4.fsspec import WebdavFileSystem
    except ImportError as exc:  # pragma: no cover - the storage extra is not installed
        raise _missing("webdav4", exc) from exc
    http = "https" if url.scheme == "webdav+https" else "http"
    auth = webdav_credentials(url.host, env)
    return WebdavFileSystem(
        f"{http}://{url.netloc}/",
        auth=auth,
        timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
        # No proxies or netrc from httpx's own environment handling: the credential
        # goes only to the host the URL names (read above, per host).
        trust_env=False,
        follow_redirects=False,
    )


# The store clients' own exception packages (their errors are not OSErrors throughout).
_CLIENT_PACKAGES: Final = frozenset(
    {"webdav4", "httpx", "httpcore", "botocore", "aiobotocore", "s3fs", "aiohttp"}
)


@contextlib.contextmanager
def client_errors(url: StoreURL | str, action: str) -> Iterator[None]:
    """Turn a store client's own exceptions into :class:`StorageError` (see
    :func:`storage_error`); OSErrors, recstream's errors and anything else pass unchanged."""
    try:
        yield
    except Exception as exc:
        if type(exc).__module__.split(".", 1)[0] not in _CLIENT_PACKAGES:
            raise
        raise storage_error(exc, url, action) from exc


def storage_error(exc: BaseException, url: StoreURL | str, action: str) -> StorageError:
    """The :class:`StorageError` for a client library's exception (s3fs, botocore, webdav4).

    401/403 become :class:`StoreRefusedError` (fix the credentials or permissions);
    connection failures, timeouts and server errors :class:`StoreUnavailableError`.
    The message names the action and the URL and never quotes request headers.
    """
    where = str(url)
    if isinstance(exc, StorageError):
        return exc
    status = _http_status(exc)
    reason = _reason(exc)
    if status in (401, 403) or isinstance(exc, PermissionError) or _forbidden(exc):
        msg = (
            f"{where} refused to {action} ({reason}): check the credentials and their "
            "permissions on the store"
        )
        return StoreRefusedError(msg, where)
    if isinstance(exc, FileNotFoundError) and where.startswith("s3://"):
        msg = f"{where}: cannot {action}: {reason} (does the bucket exist?)"
        return StoreRefusedError(msg, where)
    msg = f"{where} is unavailable: cannot {action} ({reason})"
    return StoreUnavailableError(msg, where)


def _http_status(exc: BaseException) -> int | None:
    for e in _chain(exc):
        status = getattr(e, "status_code", None)
        if isinstance(status, int):
            return status
        response = getattr(e, "response", None)
        if isinstance(response, dict):  # botocore ClientError
            code = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(code, int):
                return code
    return None


def _forbidden(exc: BaseException) -> bool:
    # webdav4 turns a 403 on MOVE/COPY into ForbiddenOperation without the status.
    return any(type(e).__name__ == "ForbiddenOperation" for e in _chain(exc))


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 8:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def _reason(exc: BaseException) -> str:
    text = (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or str(exc)
    text = " ".join(text.split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

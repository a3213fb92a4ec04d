"""Put one file to a store so that only a complete, verified copy ever has the final name.

1. *Check before commit*: if the final name exists with the same size (and, on S3, the
   same MD5 ETag), the file was committed by an earlier attempt that died before the
   spool was cleaned: nothing is written again.  A different object there is a conflict
   and is never overwritten.
2. WebDAV, and S3 objects too large for one request: upload under a temporary name
   beside the final one (``.NAME.<token>.partial``, the token fixed by the local file, so
   a killed attempt's leftover is overwritten by the next attempt, never left to pile
   up), verify what the store holds, then commit: S3
   copies it to the final key (server-side; a key appears only whole) and deletes the
   temporary; WebDAV MOVEs it with ``Overwrite: F``, so a name taken meanwhile is refused
   by the server, not replaced.
3. S3 objects put in one request (below s3fs's multipart threshold, 100 MiB): straight to
   the final key, because S3 makes an object visible only once it is completely stored,
   and only if it is what was sent: the request carries ``Content-MD5`` (the store refuses
   a body that does not match, before anything is visible) and ``If-None-Match: *`` (the
   store refuses the write if the key exists: an atomic check-before-commit).  Half the
   requests of a copy, and no second copy of the bytes on the server.
4. Verification: the size, and on S3 the ETag, which for a single-request object is its
   MD5 and for a multipart upload the MD5 of the parts' MD5s (both computed here from the
   local file).  WebDAV servers give no content checksum; the size is checked (the
   envelope's own authentication catches any other damage on playback).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import posixpath
from enum import Enum
from pathlib import Path
from typing import Any, Final

from recstream.durable import commit_object
from recstream.errors import StorageError, UploadConflictError, UploadVerifyError
from recstream.storage import Store, storage_error

__all__ = ["PutResult", "put_verified", "s3_etag"]

TEMP_SUFFIX: Final = ".partial"
_READ: Final = 1024 * 1024
# s3fs puts an object in one request below 2 x its part size (50 MiB), else multipart
# with parts of that size (s3fs.core.calculate_chunksize), so the ETag can be predicted.
S3_PART_SIZE: Final = 50 * 2**20
S3_MAX_PARTS: Final = 10_000


class PutResult(Enum):
    UPLOADED = "uploaded"
    ALREADY_THERE = "already there"  # committed by an earlier attempt


def _part_size(size: int) -> int:
    return max(S3_PART_SIZE, -(-size // S3_MAX_PARTS))


def single_request(size: int) -> bool:
    """True when s3fs puts an object of ``size`` bytes in one request (not multipart)."""
    return size < min(5 * 2**30, 2 * _part_size(size))


def s3_etag(path: Path, size: int) -> str:
    """The ETag S3 gives ``path`` once s3fs has put it (plain MD5 or multipart form)."""
    if single_request(size):
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()
    part = _part_size(size)
    digests = []
    with path.open("rb") as fh:
        while chunk := fh.read(part):
            digests.append(hashlib.md5(chunk, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"


def put_verified(store: Store, local: Path, rel: str, *, direct: bool = True) -> PutResult:
    """Upload ``local`` to ``rel`` below the store's prefix (see the module docstring).

    ``direct``: on S3, put single-request objects straight to the final key (False: go
    through a temporary and a copy, as multipart objects do).

    Raises:
        StoreUnavailableError, StoreRefusedError: from the store.
        UploadConflictError: a different object has the final name.
        UploadVerifyError: the store holds something else than was sent.
        OSError: the local file cannot be read.
    """
    size = local.stat().st_size
    final = store.path(rel)
    url = str(store.url.join(rel))
    try:
        if store.kind == "s3" and direct and single_request(size):
            return _put_s3_direct(store, local, final, url)
        etag = s3_etag(local, size) if store.kind == "s3" else None
        if _matches(store, final, size, etag, url):
            return PutResult.ALREADY_THERE
        temp = _temp_name(final, local)
        try:
            _put_temporary(store, local, temp)
            _verify(store, temp, size, etag, url)
            result = _commit(store, temp, final, size, etag, url)
        except BaseException:
            with contextlib.suppress(Exception):
                store.fs.rm_file(temp)
            raise
        if store.kind != "webdav" or result is PutResult.ALREADY_THERE:
            with contextlib.suppress(FileNotFoundError):  # a MOVE took it already
                store.fs.rm_file(temp)
    except StorageError:
        raise
    except FileNotFoundError as exc:
        if exc.filename == str(local):
            raise
        raise storage_error(exc, url, "store the recording") from exc
    except Exception as exc:
        raise storage_error(exc, url, "store the recording") from exc
    return result


def _put_s3_direct(store: Store, local: Path, final: str, url: str) -> PutResult:
    body = local.read_bytes()  # s3fs reads a single-request object whole too
    digest = hashlib.md5(body, usedforsecurity=False)
    etag, size = digest.hexdigest(), len(body)
    if _matches(store, final, size, etag, url):  # also for stores ignoring If-None-Match
        return PutResult.ALREADY_THERE
    bucket, key, _ = store.fs.split_path(final)
    try:
        out = store.fs.call_s3(
            "put_object",
            Bucket=bucket,
            Key=key,
            Body=body,
            ContentMD5=base64.b64encode(digest.digest()).decode(),
            IfNoneMatch="*",
        )
    except FileExistsError:  # 412: the key appeared since the check
        if _matches(store, final, size, etag, url):
            return PutResult.ALREADY_THERE
        raise  # pragma: no cover - _matches raised the conflict
    if str(out.get("ETag", "")).strip('"') != etag:
        msg = f"{url}: the store's checksum of the upload is not the file's MD5"
        raise UploadVerifyError(msg, url)
    return PutResult.UPLOADED


def _info(store: Store, path: str) -> dict[str, Any] | None:
    if store.kind == "s3":
        # One HEAD: s3fs's info() also lists the prefix when the key is missing.
        bucket, key, _ = store.fs.split_path(path)
        try:
            head = store.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        return {"size": head["ContentLength"], "ETag": head["ETag"]}
    with contextlib.suppress(AttributeError):
        store.fs.invalidate_cache(path)
    try:
        info: dict[str, Any] = store.fs.info(path)
    except FileNotFoundError:
        return None
    return info


def _matches(store: Store, path: str, size: int, etag: str | None, url: str) -> bool:
    """True if ``path`` holds this content; False if absent; conflict if different."""
    info = _info(store, path)
    if info is None:
        return False
    if int(info.get("size", -1)) == size and _etag_ok(info, etag):
        return True
    msg = (
        f"{url} already exists with different content; the recording stays in the "
        "spool (an archive file is never overwritten)"
    )
    raise UploadConflictError(msg, url)


def _etag_ok(info: dict[str, Any], etag: str | None) -> bool:
    if etag is None:
        return True
    remote = str(info.get("ETag") or info.get("etag") or "").strip('"')
    return remote == etag


def _verify(store: Store, path: str, size: int, etag: str | None, url: str) -> None:
    info = _info(store, path)
    if info is None:
        msg = f"{url}: the uploaded copy vanished before it was committed"
        raise UploadVerifyError(msg, url)
    if int(info.get("size", -1)) != size or not _etag_ok(info, etag):
        msg = (
            f"{url}: the store holds {info.get('size')} bytes, not the {size} sent, or "
            "another checksum; not committed, will retry"
        )
        raise UploadVerifyError(msg, url)


def _commit(  # noqa: PLR0917 - private, one call site
    store: Store, temp: str, final: str, size: int, etag: str | None, url: str
) -> PutResult:
    if store.kind == "s3":
        # Checked again just before the copy: S3 has no copy-if-absent, so this and the
        # spool item's lock (one uploader per recording) keep the final key single-written.
        if _matches(store, final, size, etag, url):
            return PutResult.ALREADY_THERE
        store.fs.copy(temp, final)
        _verify(store, final, size, etag, url)
        return PutResult.UPLOADED
    try:
        commit_object(store.fs, temp, final, replace=False)  # WebDAV: MOVE, Overwrite: F
    except FileExistsError:
        if _matches(store, final, size, etag, url):
            return PutResult.ALREADY_THERE
        raise  # pragma: no cover - _matches raised the conflict
    # A MOVE renames what was verified as the temporary: no second check needed.
    return PutResult.UPLOADED


def _temp_name(final: str, local: Path) -> str:
    """The temporary beside ``final``: the same for every attempt at the same local file,
    so an attempt killed half-way is overwritten by the next, never left behind."""
    st = local.stat()
    ident = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}".encode()
    token = hashlib.sha256(ident).hexdigest()[:16]
    parent, name = posixpath.split(final)
    return f"{parent}/.{name}.{token}{TEMP_SUFFIX}"


def _put_temporary(store: Store, local: Path, temp: str) -> None:
    try:
        store.fs.put_file(str(local), temp)
    except Exception:
        parent = posixpath.dirname(temp)
        if store.kind == "s3" or store.fs.exists(parent):
            raise
        # The first file of a new directory (WebDAV answers 409): make the collections.
        store.fs.makedirs(parent, exist_ok=True)
        store.fs.put_file(str(local), temp)

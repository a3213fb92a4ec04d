"""Put one file to a store so that only a complete, verified copy ever has the final name.

1. *Check before commit*: if the final name exists with the same size (and, on S3, the
   same MD5 ETag), the file was committed by an earlier attempt that died before the
   spool was cleaned: nothing is written again.  A different object there is a conflict
   and is never overwritten.
2. Upload under a temporary name beside the final one (``.NAME.<uuid>.partial``), after
   deleting temporaries an earlier, killed attempt left for the same name.
3. Verify what the store holds: its size, and on S3 the ETag, which for an object put in
   one request is its MD5 and for a multipart upload the MD5 of the parts' MD5s (both
   computed here from the local file).  WebDAV servers give no content checksum; the size
   is checked (the envelope's own authentication catches any other damage on playback).
4. Commit: S3 copies the object to the final key (a server-side copy; a key appears only
   when complete) and deletes the temporary; WebDAV MOVEs it with ``Overwrite: F``, so a
   name taken meanwhile is refused by the server, not replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import uuid
from enum import Enum
from pathlib import Path
from typing import Any, Final

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


def s3_etag(path: Path, size: int) -> str:
    """The ETag S3 gives ``path`` once s3fs has put it (plain MD5 or multipart form)."""
    part = S3_PART_SIZE
    if -(-size // part) > S3_MAX_PARTS:
        part = -(-size // S3_MAX_PARTS)
    whole = hashlib.md5(usedforsecurity=False)
    parts: list[bytes] = []
    part_hash = hashlib.md5(usedforsecurity=False)
    in_part = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_READ):
            whole.update(chunk)
            view = memoryview(chunk)
            while view:
                take = view[: part - in_part]
                part_hash.update(take)
                in_part += len(take)
                view = view[len(take) :]
                if in_part == part:
                    parts.append(part_hash.digest())
                    part_hash, in_part = hashlib.md5(usedforsecurity=False), 0
    if size < min(5 * 2**30, 2 * part):
        return whole.hexdigest()
    if in_part:
        parts.append(part_hash.digest())
    return f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"


def put_verified(store: Store, local: Path, rel: str) -> PutResult:
    """Upload ``local`` to ``rel`` below the store's prefix (see the module docstring).

    Raises:
        StoreUnavailableError, StoreRefusedError: from the store.
        UploadConflictError: a different object has the final name.
        UploadVerifyError: the store holds something else than was sent.
        OSError: the local file cannot be read.
    """
    size = local.stat().st_size
    etag = s3_etag(local, size) if store.kind == "s3" else None
    final = store.path(rel)
    url = str(store.url.join(rel))
    try:
        if _matches(store, final, size, etag, url):
            return PutResult.ALREADY_THERE
        parent, name = posixpath.split(final)
        if store.kind != "s3":
            store.fs.makedirs(parent, exist_ok=True)
        _remove_stale_temporaries(store, parent, name)
        temp = f"{parent}/.{name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        try:
            store.fs.put_file(str(local), temp)
            _verify(store, temp, size, etag, url)
            result = _commit(store, temp, final, size, etag, url)
        finally:
            with contextlib.suppress(Exception):
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


def _info(store: Store, path: str) -> dict[str, Any] | None:
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
    if store.kind == "webdav":
        from webdav4.client import ResourceAlreadyExists

        try:
            store.fs.client.move(temp, final, overwrite=False)
        except ResourceAlreadyExists:
            if _matches(store, final, size, etag, url):
                return PutResult.ALREADY_THERE
            raise  # pragma: no cover - _matches raised the conflict
        _verify(store, final, size, etag, url)
        return PutResult.UPLOADED
    store.fs.mv(temp, final)  # local directory: fsspec's rename
    return PutResult.UPLOADED


def _remove_stale_temporaries(store: Store, parent: str, name: str) -> None:
    """Temporaries of this name left by a killed attempt (this process holds the item's
    lock, so no live uploader is writing one)."""
    prefix = f".{name}."
    try:
        entries = store.fs.ls(parent, detail=False)
    except FileNotFoundError:
        return
    for entry in entries:
        base = posixpath.basename(str(entry).rstrip("/"))
        if base.startswith(prefix) and base.endswith(TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                store.fs.rm_file(str(entry))

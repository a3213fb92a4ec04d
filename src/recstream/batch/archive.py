"""Listing the envelopes under a directory or fsspec URL.

Archives follow the vendor's layout (:mod:`recstream.archive`)::

    {contact-centre-id}/{tenant}/{yyyy-mm-dd}/{recording-id}/{kind}.rsv
    {contact-centre-id}/{tenant}/{yyyy-mm-dd}/{recording-id}/recording.json

and the batch jobs also read plain directories of envelopes.  An envelope is
any file whose first bytes are the format's magic (docs/FORMAT.md §2).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from recstream import storage
from recstream.archive import ArchiveLayout
from recstream.format import MAGIC

__all__ = ["ArchiveLayout", "list_envelopes", "url_to_fs"]

SKIP_DIRS = {".recstream-batch"}


def url_to_fs(url: str) -> tuple[Any, str]:
    """(filesystem, root path) for a directory, a store URL or an fsspec URL."""
    return storage.url_to_fs(url)


def list_envelopes(url: str) -> Iterator[str]:
    """Paths (relative to ``url``) of every envelope below it, sorted.

    Files named ``*.rsv`` are taken on their name (the listing runs on the
    driver: opening millions of files there would serialise the job; a task
    that finds no envelope says so); any other file is checked by its magic.
    """
    with storage.client_errors(url, "list recordings"):
        found = _list(url)
    yield from found


def _list(url: str) -> list[str]:
    fs, root = url_to_fs(url)
    if not fs.exists(root):
        msg = f"no such directory: {url}"
        raise FileNotFoundError(2, msg, url)
    found = []
    for path in fs.find(root):
        rel = str(PurePosixPath(path).relative_to(PurePosixPath(root)))
        if set(PurePosixPath(rel).parts) & SKIP_DIRS or rel.endswith((".partial", ".json")):
            continue
        if rel.endswith(".rsv"):
            found.append(rel)
            continue
        with fs.open(path, "rb") as fh:
            if fh.read(len(MAGIC)) == MAGIC:
                found.append(rel)
    return sorted(found)

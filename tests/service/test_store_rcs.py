"""Issue 18: the RCS serves recordings from a store URL (fsspec), checked on ``memory://``.

The same code serves S3 and WebDAV (tests/service/test_store_servers.py runs it
against moto and wsgidav on loopback); here fsspec's in-process memory store
lets the tests break the store at will: refuse, vanish mid-stream, stall.
"""

from __future__ import annotations

import http.client
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from recstream.format import MediaKind
from recstream.service import load_config
from recstream.service.context import CONTEXT
from recstream.service.errors import ServiceConfigError
from recstream.service.objects import StoreArchive
from tests.service.conftest import (
    Archive,
    ServerThread,
    basic,
    connect,
    rcs_toml,
    request,
    seal,
    wait_for_audit,
    write_config,
)

BIG = "acme/big.rsv"


def upload(fs: Any, root: str, archive: Archive) -> None:
    for name, env in archive.sealed.items():
        fs.pipe_file(f"{root}/{name}", env)


@pytest.fixture
def memory_root(archive: Archive) -> Iterator[str]:
    """A fresh prefix of the in-process memory store holding the sample archive."""
    fs = fsspec.filesystem("memory")
    root = f"/rcs-{uuid.uuid4().hex[:8]}"
    upload(fs, root, archive)
    yield f"memory://{root}"
    fs.rm(root, recursive=True)


@pytest.fixture
def store_rcs(start_rcs: Callable[..., ServerThread], memory_root: str) -> ServerThread:
    # The tests refresh the index themselves (rescans would add requests to the counts).
    return start_rcs(root=memory_root, recordings_extra="rescan_interval = 3600")


def store_of(st: ServerThread) -> StoreArchive:
    archive = st.server.runner.app[CONTEXT].archive
    assert isinstance(archive, StoreArchive)
    return archive


def play(st: ServerThread, name: str, rng: str | None = None, user: str = "alice") -> Any:
    headers = {"Range": rng} if rng else {}
    return request(st.url, "GET", f"/rcs/recordings/{name}", headers=headers, user=user)


def names(st: ServerThread, user: str) -> set[str]:
    r = request(st.url, "GET", "/rcs/recordings", user=user)
    assert r.status == 200, r.body
    return {row["id"] for row in r.json()["recordings"]}


# --- configuration -----------------------------------------------------------------


def config_with_root(tmp_path: Path, root: str) -> Path:
    return write_config(
        tmp_path, rcs_toml(tmp_path, Path("unused")).replace('root = "unused"', f'root = "{root}"')
    )


@pytest.mark.parametrize(
    "url",
    [
        "s3://recordings/acme",
        "webdav+https://dav.example.com/rec",
        "webdav+http://127.0.0.1:8080/r",
    ],
)
def test_store_urls_are_accepted(tmp_path: Path, url: str) -> None:
    cfg = load_config(config_with_root(tmp_path, url))
    assert cfg.recordings_url == url and cfg.recordings_root is None
    assert cfg.rescan_interval == 30.0  # a listing of the whole prefix: not every 2 s


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("s3://AKIAXXX:s3cr3t-pw@bucket/prefix", "credentials"),
        ("webdav+https://user:s3cr3t-pw@dav.example.com/rec", "credentials"),
        ("ftp://host/rec", "not a supported store URL"),
        ("webdav+http://dav.example.com/rec", "in clear"),
        ("s3://bucket/rec?versionId=3", "no query"),
        ("s3:///rec", "bucket name"),
    ],
)
def test_bad_store_urls_are_refused_without_echoing_secrets(
    tmp_path: Path, url: str, says: str
) -> None:
    with pytest.raises(ServiceConfigError) as info:
        load_config(config_with_root(tmp_path, url))
    assert says in str(info.value)
    assert "[recordings] root" in str(info.value)
    assert "s3cr3t-pw" not in str(info.value)


def test_file_url_is_a_local_directory(tmp_path: Path, archive: Archive) -> None:
    cfg = load_config(config_with_root(tmp_path, f"file://{archive.root}"))
    assert cfg.recordings_url is None and cfg.recordings_root == archive.root


# --- listing and playback ------------------------------------------------------------


def test_listing_from_the_store_keeps_tenants_apart(store_rcs: ServerThread) -> None:
    assert names(store_rcs, "alice") == {"acme/call-1.rsv", "acme/call-1-screen.rsv", BIG}
    assert names(store_rcs, "bob") == {"globex/call-9.rsv"}


def test_playback_with_range_reads_only_what_it_needs(
    store_rcs: ServerThread, archive: Archive
) -> None:
    plain = archive.plain[BIG]
    r = play(store_rcs, BIG)
    assert r.status == 200 and r.body == plain
    stats = store_of(store_rcs).stats
    before = stats.bytes_read
    start = len(plain) - 100_000
    r = play(store_rcs, BIG, f"bytes={start}-")
    assert r.status == 206 and r.body == plain[start:]
    served = stats.bytes_read - before
    # the final segment (the header block came with the first playback), the ~7 asked for
    assert served < 100_000 + 2 * (16 * 1024 + 16) + 8 * 16
    assert served < len(archive.sealed[BIG]) // 20


def test_missing_and_other_tenants_recordings_are_404(store_rcs: ServerThread) -> None:
    assert play(store_rcs, "acme/nope.rsv").status == 404
    r = play(store_rcs, "globex/call-9.rsv", user="alice")
    assert r.status == 404  # answered exactly as a missing one
    assert r.json() == {"error": "not_found", "message": "no recording 'globex/call-9.rsv'"}
    assert play(store_rcs, "../etc/passwd.rsv").status == 404


def test_new_changed_and_removed_objects_are_picked_up(
    store_rcs: ServerThread, memory_root: str, archive: Archive
) -> None:
    fs = fsspec.filesystem("memory")
    root = memory_root.removeprefix("memory://")
    assert names(store_rcs, "bob") == {"globex/call-9.rsv"}
    index = store_rcs.server.runner.app[CONTEXT].index
    assert index is not None
    fs.pipe_file(f"{root}/globex/new.rsv", archive.sealed["globex/call-9.rsv"])
    fs.pipe_file(f"{root}/globex/.new2.rsv.1.2.partial", archive.sealed["globex/call-9.rsv"])
    fs.pipe_file(f"{root}/globex/junk.rsv", b"not an envelope")
    index.refresh()
    assert names(store_rcs, "bob") == {"globex/call-9.rsv", "globex/new.rsv"}
    assert play(store_rcs, "globex/new.rsv", user="bob").body == archive.plain["globex/call-9.rsv"]
    stats = store_of(store_rcs).stats
    before = stats.requests
    index.refresh()  # nothing changed: one listing, no header read (not even junk.rsv's)
    assert stats.requests - before == 1
    fs.rm(f"{root}/globex/new.rsv")
    index.refresh()
    assert names(store_rcs, "bob") == {"globex/call-9.rsv"}


# --- the store failing ------------------------------------------------------------------


class Breakable:
    """A filesystem wrapper that fails (or stalls) on demand, then recovers."""

    def __init__(self, fs: Any) -> None:
        self.fs = fs
        self.fail: BaseException | None = None
        self.fail_after_reads: int | None = None  # reads allowed before failing
        self.stall: threading.Event | None = None

    def _check(self, read: bool = False) -> None:
        if self.stall is not None:
            self.stall.wait(30)
        if read and self.fail_after_reads is not None:
            if self.fail_after_reads == 0:
                raise ConnectionResetError(104, "connection reset by the store")
            self.fail_after_reads -= 1
        if self.fail is not None:
            raise self.fail

    def cat_file(self, *a: Any, **kw: Any) -> bytes:
        self._check(read=True)
        return bytes(self.fs.cat_file(*a, **kw))

    def info(self, *a: Any, **kw: Any) -> Any:
        self._check()
        return self.fs.info(*a, **kw)

    def find(self, *a: Any, **kw: Any) -> Any:
        self._check()
        return self.fs.find(*a, **kw)

    def invalidate_cache(self, *a: Any) -> None:
        self.fs.invalidate_cache(*a)


@pytest.fixture
def broken(store_rcs: ServerThread) -> Breakable:
    store = store_of(store_rcs)
    wrapper = Breakable(store.fs)
    store.fs = wrapper
    return wrapper


def test_store_down_is_a_502_then_works_again(
    store_rcs: ServerThread, broken: Breakable, archive: Archive
) -> None:
    broken.fail = ConnectionRefusedError(111, "connection refused")
    r = play(store_rcs, "acme/call-1.rsv")
    assert r.status == 502
    assert r.json()["error"] == "store_unavailable"
    assert "cannot be reached" in r.json()["message"]
    rec = wait_for_audit(store_rcs, lambda a: a.get("result") == "store_unavailable")
    assert rec["reason"] == "store_unavailable" and rec["bytes"] == 0
    index = store_rcs.server.runner.app[CONTEXT].index
    assert index is not None
    with pytest.raises(Exception, match="cannot be reached"):
        index.refresh()
    r = request(store_rcs.url, "GET", "/rcs/recordings")
    assert r.status == 502 and r.json()["error"] == "store_unavailable"
    health = request(store_rcs.url, "GET", "/healthz", user=None)
    assert health.status == 503
    broken.fail = None
    index.refresh()
    assert names(store_rcs, "alice") == {"acme/call-1.rsv", "acme/call-1-screen.rsv", BIG}
    assert play(store_rcs, "acme/call-1.rsv").body == archive.plain["acme/call-1.rsv"]
    assert request(store_rcs.url, "GET", "/healthz", user=None).status == 200
    metrics = request(store_rcs.url, "GET", "/metrics", user="olga").body.decode()
    failures = next(x for x in metrics.splitlines() if x.startswith("recstream_store_failures"))
    assert int(failures.split()[1]) >= 3  # the playback, the refresh and the health check
    assert "recstream_store_read_bytes_total" in metrics


def test_store_refusing_access_is_a_502_that_says_so(
    store_rcs: ServerThread, broken: Breakable
) -> None:
    broken.fail = PermissionError(13, "Access Denied")
    r = play(store_rcs, "acme/call-1.rsv")
    assert r.status == 502 and "access denied" in r.json()["message"]
    assert r.json()["error"] == "store_refused"
    rec = wait_for_audit(store_rcs, lambda a: a.get("result") == "store_refused")
    assert rec["reason"] == "store_refused"


def test_store_vanishing_mid_stream_ends_the_response_incomplete(
    store_rcs: ServerThread, broken: Breakable, archive: Archive
) -> None:
    plain = archive.plain[BIG]
    # the header block, the final segment and one 1 MiB chunk are served, then the store goes
    broken.fail_after_reads = 3
    conn = connect(store_rcs.url)
    conn.request("GET", f"/rcs/recordings/{BIG}", headers={"Authorization": basic("alice")})
    resp = conn.getresponse()
    assert resp.status == 200
    assert int(resp.headers["Content-Length"]) == len(plain)
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    got = info.value.partial
    assert 0 < len(got) < len(plain)
    assert got == plain[: len(got)]  # only authenticated plaintext, and nothing else
    conn.close()
    rec = wait_for_audit(
        store_rcs, lambda a: a.get("event") == "playback" and a.get("result") == "store_unavailable"
    )
    assert rec["reason"] == "store_unavailable" and rec["bytes"] == len(got)


def test_a_stalled_store_is_a_504(start_rcs: Callable[..., ServerThread], memory_root: str) -> None:
    st = start_rcs(root=memory_root, recordings_extra="store_timeout = 0.5")
    store = store_of(st)
    wrapper = Breakable(store.fs)
    wrapper.stall = threading.Event()
    store.fs = wrapper
    try:
        r = play(st, "acme/call-1.rsv")
        assert r.status == 504 and r.json()["error"] == "store_timeout"
        rec = wait_for_audit(st, lambda a: a.get("result") == "store_timeout")
        assert rec["reason"] == "store_timeout"
    finally:
        wrapper.stall.set()


def test_an_object_replaced_mid_stream_never_mixes_two_recordings(
    start_rcs: Callable[..., ServerThread], huge: Archive, keys: Any
) -> None:
    """A store object rewritten while it is played (re-upload, re-wrap in place): the
    ranged reads then return the new object's bytes, which fail authentication under
    the key opened for the old one, so the response stops; no byte of the new one is sent."""
    fs = fsspec.filesystem("memory")
    root = f"/rcs-{uuid.uuid4().hex[:8]}"
    name = "acme/huge.rsv"
    fs.pipe_file(f"{root}/{name}", huge.sealed[name])
    st = start_rcs(root=f"memory://{root}", recordings_extra="rescan_interval = 3600")
    plain = huge.plain[name]
    other = seal(
        keys.acme,
        bytes(len(plain)),  # same length, other content, another file key
        rid="huge",
        tenant="acme",
        kind=MediaKind.VOICE,
        mtype="audio/basic",
    )
    assert len(other) == len(huge.sealed[name])
    conn = connect(st.url)
    conn.request("GET", f"/rcs/recordings/{name}", headers={"Authorization": basic("alice")})
    resp = conn.getresponse()
    assert resp.status == 200
    first = resp.read(1024)
    fs.pipe_file(f"{root}/{name}", other)  # replaced while the RCS is streaming it
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    got = first + info.value.partial
    assert got == plain[: len(got)] and len(got) < len(plain)
    conn.close()
    rec = wait_for_audit(st, lambda a: a.get("event") == "playback" and a.get("file") == name)
    assert rec["result"] == "integrity_failure" and rec["bytes"] == len(got)
    fs.rm(root, recursive=True)

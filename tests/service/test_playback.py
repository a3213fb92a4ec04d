"""GET /rcs/recordings[/{name}]: listing by tenant, Range requests, content types, traversal."""

from __future__ import annotations

import http.client
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from recstream.format import BodyLayout, Header, MediaKind, parse_header
from tests.service.conftest import (
    Archive,
    ServerThread,
    basic,
    connect,
    request,
    wait_for_audit,
)

BIG = "acme/big.rsv"


def play(rcs: ServerThread, name: str, rng: str | None = None, **kw: Any) -> Any:
    headers = {"Range": rng} if rng else {}
    headers.update(kw.pop("headers", {}))
    return request(
        rcs.url, kw.pop("method", "GET"), f"/rcs/recordings/{name}", headers=headers, **kw
    )


def test_whole_recording_with_its_content_type(rcs: ServerThread, archive: Archive) -> None:
    r = play(rcs, "acme/call-1.rsv")
    assert r.status == 200
    assert r.body == archive.plain["acme/call-1.rsv"]
    assert r.headers["Content-Type"] == "audio/wav"
    assert r.headers["Accept-Ranges"] == "bytes"
    r = play(rcs, "acme/call-1-screen.rsv")
    assert r.headers["Content-Type"] == "video/webm"
    assert r.body == archive.plain["acme/call-1-screen.rsv"]


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [
        ("bytes=0-0", 0, 1),
        ("bytes=16383-16384", 16383, 16385),  # across a segment boundary
        ("bytes=1000000-", 1000000, None),  # open-ended, as media elements ask
        ("bytes=-1000", -1000, None),  # suffix
        ("bytes=3000000-99999999", 3000000, None),  # clipped to the end
    ],
)
def test_ranges(
    rcs: ServerThread, archive: Archive, spec: str, start: int, end: int | None
) -> None:
    plain = archive.plain[BIG]
    want = plain[start:end] if end is not None else plain[start:]
    r = play(rcs, BIG, spec)
    assert r.status == 206
    assert r.body == want
    first = start % len(plain)
    assert r.headers["Content-Range"] == f"bytes {first}-{first + len(want) - 1}/{len(plain)}"
    assert int(r.headers["Content-Length"]) == len(want)


def test_range_past_the_end_is_416(rcs: ServerThread, archive: Archive) -> None:
    size = len(archive.plain[BIG])
    r = play(rcs, BIG, f"bytes={size}-")
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{size}"


def test_invalid_or_multi_ranges_get_the_whole_recording(
    rcs: ServerThread, archive: Archive
) -> None:
    for spec in ("bytes=0-1,5-6", "items=0-5", "bytes=9-3"):
        r = play(rcs, "acme/call-1.rsv", spec)
        assert r.status == 200 and r.body == archive.plain["acme/call-1.rsv"]


def test_if_range_mismatch_sends_everything(rcs: ServerThread, archive: Archive) -> None:
    etag = play(rcs, "acme/call-1.rsv", "bytes=0-0").headers["ETag"]
    r = play(rcs, "acme/call-1.rsv", "bytes=10-20", headers={"If-Range": etag})
    assert r.status == 206
    r = play(rcs, "acme/call-1.rsv", "bytes=10-20", headers={"If-Range": '"other"'})
    assert r.status == 200 and len(r.body) == len(archive.plain["acme/call-1.rsv"])


def test_head(rcs: ServerThread, archive: Archive) -> None:
    r = play(rcs, BIG, method="HEAD")
    assert r.status == 200 and r.body == b""
    assert int(r.headers["Content-Length"]) == len(archive.plain[BIG])


def test_seeking_decrypts_only_the_segments_needed(
    rcs: ServerThread, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recstream import reader

    opened: list[int] = []
    real = reader.SegmentReader.read_segment

    def spy(self: reader.SegmentReader, index: int) -> bytes:
        opened.append(index)
        return real(self, index)

    monkeypatch.setattr(reader.SegmentReader, "read_segment", spy)
    r = play(rcs, BIG, "bytes=2000000-2000099")
    assert r.status == 206 and r.body == archive.plain[BIG][2000000:2000100]
    segments = BodyLayout.for_plaintext(len(archive.plain[BIG])).segments
    # The final segment (length authentication at open) and the one holding the range.
    assert sorted(set(opened)) == [2000000 // 16384, segments - 1]


def test_listing_shows_only_the_users_tenants(rcs: ServerThread) -> None:
    ids = {r["id"] for r in request(rcs.url, "GET", "/rcs/recordings").json()["recordings"]}
    assert ids == {"acme/call-1.rsv", "acme/call-1-screen.rsv", BIG}
    rows = request(rcs.url, "GET", "/rcs/recordings", user="bob").json()["recordings"]
    assert [(r["id"], r["tenant"], r["media_type"]) for r in rows] == [
        ("globex/call-9.rsv", "globex", "audio/wav")
    ]
    assert request(rcs.url, "GET", "/rcs/recordings", user="olga").json() == {
        "recordings": [],
        "next": None,
    }


def test_other_tenants_recording_is_answered_as_missing(rcs: ServerThread) -> None:
    # Issue 13 (Low): a 403 for another tenant's file against a 404 for a missing one
    # told a prober which names exist.  Both are the same 404 now, and audited apart.
    r = play(rcs, "globex/call-9.rsv", user="alice")
    missing = play(rcs, "globex/call-99.rsv", user="alice")
    assert r.status == missing.status == 404
    assert r.json() == {"error": "not_found", "message": "no recording 'globex/call-9.rsv'"}
    assert missing.json()["message"] == "no recording 'globex/call-99.rsv'"
    assert {k for k in r.headers if k.lower() != "date"} == {
        k for k in missing.headers if k.lower() != "date"
    }
    rec = wait_for_audit(rcs, lambda a: a.get("file") == "globex/call-9.rsv")
    assert rec["result"] == "not_found" and rec["reason"] == "other_tenant"
    assert play(rcs, "acme/call-1.rsv", user="bob").status == 404
    assert play(rcs, "globex/call-9.rsv", user="bob").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/rcs/recordings/../rcs.toml",
        "/rcs/recordings/acme/../../settings.sqlite",
        "/rcs/recordings/%2e%2e/%2e%2e/etc/passwd",
        "/rcs/recordings/..%2f..%2fetc%2fpasswd",
        "/rcs/recordings/%2Fetc%2Fpasswd",
        "/rcs/recordings//etc/passwd",
        "/rcs/recordings/acme/./call-1.rsv",
        "/rcs/recordings/acme\\call-1.rsv",
        "/rcs/recordings/acme/call-1.rsv%00.rsv",
        "/rcs/recordings/.hidden.rsv",
        "/rcs/recordings/acme",
        "/rcs/recordings/acme/",
        "/rcs/recordings/escape.rsv",  # a symlink inside the root, pointing outside
        "/rcs/recordings/linkdir/call-1.rsv",  # a symlinked directory
    ],
)
def test_path_traversal_is_refused(rcs: ServerThread, archive: Archive, path: str) -> None:
    outside = archive.root.parent / "outside.rsv"
    outside.write_bytes(archive.sealed["acme/call-1.rsv"])
    for link, target in (("escape.rsv", outside), ("linkdir", archive.root / "acme")):
        if not (archive.root / link).is_symlink():
            os.symlink(target, archive.root / link)
    # Raw request line: no client-side normalisation of '..'.
    s = socket.create_connection(("127.0.0.1", rcs.port), timeout=5)
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic('alice')}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1])
    assert status in (400, 404)
    assert b"RIFF" not in data  # nothing decrypted
    assert archive.plain["acme/call-1.rsv"][:64] not in data


def test_tampered_archive_file_mid_stream_aborts(
    start_rcs: Any, archive: Archive, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    (root / "acme").mkdir(parents=True)
    env = bytearray(archive.sealed[BIG])
    env[len(env) // 2] ^= 4
    (root / "acme" / "bad.rsv").write_bytes(env)
    st = start_rcs(root=root)
    conn = connect(st.url)
    conn.request("GET", "/rcs/recordings/acme/bad.rsv", headers={"Authorization": basic("alice")})
    resp = conn.getresponse()
    assert resp.status == 200
    with pytest.raises(http.client.IncompleteRead) as info:
        resp.read()
    assert info.value.partial == archive.plain[BIG][: len(info.value.partial)]
    # A range wholly before the damage still plays; one over it is refused before any byte
    # only if it starts in the damaged segment.
    r = request(st.url, "GET", "/rcs/recordings/acme/bad.rsv", headers={"Range": "bytes=0-99"})
    assert r.status == 206 and r.body == archive.plain[BIG][:100]


def test_truncated_archive_file_is_refused_before_any_byte(
    start_rcs: Any, archive: Archive, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    (root / "acme").mkdir(parents=True)
    env = archive.sealed[BIG]
    header = parse_header(env)
    assert isinstance(header, Header)
    (root / "acme" / "cut.rsv").write_bytes(env[: len(env) - 3000])
    st = start_rcs(root=root)
    r = request(st.url, "GET", "/rcs/recordings/acme/cut.rsv")
    assert r.status == 422 and r.json()["error"] in ("integrity_failure", "truncated")
    listed = request(st.url, "GET", "/rcs/recordings").json()["recordings"]
    assert listed[0]["id"] == "acme/cut.rsv"


def test_unknown_recording_is_404(rcs: ServerThread) -> None:
    r = play(rcs, "acme/nope.rsv")
    assert r.status == 404 and r.json()["error"] == "not_found"


def test_non_media_types_are_served_as_opaque_sandboxed_bytes(
    start_rcs: Any, keys: Any, tmp_path: Path
) -> None:
    """A header may say text/html (anyone with the public cert can write one): never served so."""
    from tests.service.conftest import Archive

    a = Archive(tmp_path)
    a.add(
        "acme/page.rsv",
        keys.acme,
        b"<script>alert(1)</script>",
        rid="p",
        tenant="acme",
        kind=MediaKind.SCREEN,
        mtype="text/html",
    )
    a.add(
        "acme/js.rsv",
        keys.acme,
        b"fetch('/rcs/recordings')",
        rid="j",
        tenant="acme",
        kind=MediaKind.SCREEN,
        mtype="text/javascript",
    )
    rcs = start_rcs(root=tmp_path)
    for name in ("acme/page.rsv", "acme/js.rsv"):
        r = play(rcs, name)
        assert r.status == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Security-Policy"].startswith("sandbox")
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    r = request(rcs.url, "POST", "/rcs/decrypt", body=a.sealed["acme/page.rsv"])
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/octet-stream"


def test_the_authenticated_header_decides_the_tenant(
    start_rcs: Any, keys: Any, tmp_path: Path
) -> None:
    """A file swapped in place (same size and mtime) cannot ride on a cached header."""
    from tests.service.conftest import Archive

    a = Archive(tmp_path)
    a.add(
        "acme/x.rsv",
        keys.acme,
        b"A" * 5000,
        rid="x",
        tenant="acme",
        kind=MediaKind.VOICE,
        mtype="audio/basic",
    )
    other = Archive(tmp_path / "elsewhere")
    other.add(
        "y.rsv",
        keys.globex,
        b"B" * 5000,
        rid="x",
        tenant="beta",
        kind=MediaKind.VOICE,
        mtype="audio/basic",
    )
    rcs = start_rcs(root=tmp_path)
    assert play(rcs, "acme/x.rsv").status == 200  # alice: acme only; the header is cached
    path = tmp_path / "acme" / "x.rsv"
    st = path.stat()
    swapped = other.sealed["y.rsv"]
    assert len(swapped) == st.st_size
    with path.open("r+b") as fh:  # same inode, same size
        fh.write(swapped)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the mtime put back
    r = play(rcs, "acme/x.rsv")
    assert r.status == 404
    assert b"B" * 10 not in r.body

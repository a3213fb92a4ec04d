"""The SRS as a real process: CANCEL, re-INVITE, SRTP, refusals, malformed input, 503 when
full, BYE from the recorder, SIGTERM and SIGKILL + recover.

SIPp drives what it can (re-INVITE, 503, the SRS's BYE); a raw client on a socket
drives what SIPp 3.6 cannot send on cue: a CANCEL in the same burst as its INVITE
(SIPp schedules its next send after reading the answer, so it races a fast SRS),
malformed messages, and SRTP (3.6 has none; pylibsrtp here).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest

from recstream.cli import EXIT_PARTIAL, main
from recstream.format import BODY_PREFIX_BYTES, SEGMENT_SIZE, SEGMENT_WIRE_SIZE
from recstream.keystore import load
from recstream.reader import FileSource, read_header_at, recover
from recstream.tracks import extract
from tests.keystore_helpers import PASSWORD
from tests.siprec.helpers import (
    SIPREC_HEADERS,
    SIPREC_TYPE,
    Sender,
    SipClient,
    Srs,
    answer_ports,
    decrypt_tracks,
    payloads,
    request,
    rtp_packet,
    run_sipp,
    siprec_body,
    to_tag,
    write_config,
)

needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp")


@pytest.fixture(scope="module")
def srs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Srs]:
    server = Srs.start(write_config(tmp_path_factory.mktemp("srs")))
    yield server
    assert server.stop() == 0


def _id() -> str:
    return uuid.uuid4().hex


def _invite(
    client: SipClient,
    call_id: str,
    streams: list[tuple[str, int]],
    srtp: dict[str, bytes] | None = None,
    branch: str = "",
    *,
    edit: tuple[str, str] | None = None,
    headers: tuple[str, ...] = SIPREC_HEADERS,
) -> bytes:
    """A SIPREC INVITE offering ``streams``; ``edit`` (old, new) changes its body."""
    body = siprec_body(streams, srtp)
    if edit:
        assert edit[0] in body
        body = body.replace(*edit)
    return request(
        "INVITE",
        client.srs,
        client.local,
        call_id,
        branch=branch or f"z9hG4bK{_id()}",
        body=body,
        content_type=SIPREC_TYPE,
        headers=headers,
    )


def _call(
    client: SipClient,
    call_id: str,
    streams: list[tuple[str, int]],
    srtp: dict[str, bytes] | None = None,
) -> tuple[str, list[int]]:
    client.send(_invite(client, call_id, streams, srtp))
    ok = client.expect(200, "INVITE")
    tag = to_tag(ok)
    client.send(
        request("ACK", client.srs, client.local, call_id, branch=f"z9hG4bK{_id()}", to_tag=tag)
    )
    return tag, answer_ports(ok)


def _call_with_audio(
    srs: Srs, client: SipClient, packets: int, seed: int, port: int = 40000
) -> tuple[str, str, dict[str, Any], bytes]:
    """A one-stream call with ``packets`` of audio sent: (call ID, tag, call_start, audio)."""
    call_id = _id()
    tag, ports = _call(client, call_id, [("1", port)])
    start = srs.wait_for("call_start")
    audio = payloads(packets, seed)
    Sender().send(ports[0], [rtp_packet(i, i * 160, 9, p, pt=0) for i, p in enumerate(audio)])
    return call_id, tag, start, b"".join(audio)


def _bye(client: SipClient, call_id: str, tag: str) -> None:
    client.send(
        request(
            "BYE", client.srs, client.local, call_id, branch=f"z9hG4bK{_id()}", cseq=2, to_tag=tag
        )
    )
    client.expect(200, "BYE")


def test_cancel_before_answer(srs: Srs) -> None:
    client = SipClient(srs)
    call_id, branch = _id(), f"z9hG4bK{_id()}"
    invite = _invite(client, call_id, [("1", 40000)], branch=branch)
    cancel = request("CANCEL", client.srs, client.local, call_id, branch=branch)
    client.send(invite)
    client.send(cancel)  # in the same burst: read before the recording has opened
    client.expect(200, "CANCEL")
    terminated = client.expect(487, "INVITE")
    client.send(
        request("ACK", client.srs, client.local, call_id, branch=branch, to_tag=to_tag(terminated))
    )
    # A CANCEL of nothing: 481.
    client.send(request("CANCEL", client.srs, client.local, _id(), branch="z9hG4bKnone"))
    client.expect(481, "CANCEL")
    client.close()


def test_srtp_call_and_bad_packets(srs: Srs) -> None:
    client = SipClient(srs)
    keys = {"1": os.urandom(30), "2": os.urandom(30)}
    call_id = _id()
    tag, ports = _call(client, call_id, [("1", 41000), ("2", 41002)], keys)
    start = srs.wait_for("call_start")
    assert start["srtp"] is True
    audio = {label: payloads(20, seed=10 + i) for i, label in enumerate(("1", "2"))}
    for (label, key), port in zip(keys.items(), ports, strict=True):
        tx = pylibsrtp.Session(
            pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        )
        wire = [
            tx.protect(rtp_packet(i, i * 160, 0xABC0 + int(label), p, pt=0))
            for i, p in enumerate(audio[label])
        ]
        sender = Sender()
        sender.send(port, wire[:3])
        forged = bytearray(wire[3])
        forged[20] ^= 1  # fails authentication: dropped and counted
        sender.send(port, [bytes(forged), rtp_packet(3, 480, 0xABC1, b"\x00" * 160, pt=0)])
        sender.send(port, wire[3:])
        sender.send(port, [wire[5]])  # replayed: caught by libsrtp's replay window
        sender.close()
    _bye(client, call_id, tag)
    end = srs.wait_for("call_end", recording_id=start["recording_id"])
    path = next(p for p in srs.recordings() if p.parent.name == start["recording_id"])
    got = decrypt_tracks(path, srs.directory)
    for n, label in ((1, "1"), (2, "2")):
        track = got.tracks[n]
        assert track.decl.label == label and track.decl.info["srtp"] is True, end
        assert len(track.audio) == 20 * 160, end
        assert bytes(track.audio) == b"".join(audio[label])
        assert track.stats is not None
        assert track.stats.counts["undecryptable"] == 2  # the forged one, the plain one
        assert track.stats.counts["duplicate"] == 1
    assert all(s["undecryptable"] == 2 for s in end["streams"])
    client.close()


def test_refusals_are_answered(srs: Srs) -> None:
    client = SipClient(srs)
    local, dst = client.local, client.srs
    one = [("1", 40000)]
    # Not a recording session (no Require: siprec, no +sip.src): RFC 7866 §6.1.1.
    plain = _invite(client, _id(), one, branch="z9hG4bKa1", headers=())
    client.send(plain.replace(b";+sip.src", b""))
    client.expect(403, "INVITE")
    # An option tag we do not support: 420 with Unsupported.
    client.send(
        _invite(client, _id(), one, branch="z9hG4bKa2", headers=("Require: siprec, 100rel",))
    )
    assert b"Unsupported: 100rel" in client.expect(420, "INVITE")
    # No stream we can record (only video): 488.
    client.send(_invite(client, _id(), one, branch="z9hG4bKa3", edit=("m=audio", "m=video")))
    client.expect(488, "INVITE")
    # Malformed SDP: 400.
    garbled = ("c=IN IP4 127.0.0.1", "c=garbage")
    client.send(_invite(client, _id(), one, branch="z9hG4bKa4", edit=garbled))
    client.expect(400, "INVITE")
    # rs-metadata with a DTD (an entity bomb's carrier): 400, never expanded.
    dtd = (
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]>',
    )
    client.send(_invite(client, _id(), one, branch="z9hG4bKa5", edit=dtd))
    client.expect(400, "INVITE")
    # Unknown method: 501; BYE outside any dialog: 481; OPTIONS: 200.
    client.send(request("SUBSCRIBE", dst, local, _id(), branch="z9hG4bKa6"))
    client.expect(501, "SUBSCRIBE")
    client.send(request("BYE", dst, local, _id(), branch="z9hG4bKa7", to_tag="nope"))
    client.expect(481, "BYE")
    client.send(request("OPTIONS", dst, local, _id(), branch="z9hG4bKa8"))
    client.expect(200, "OPTIONS")
    client.close()
    statuses = sorted(srs.wait_for("call_rejected")["status"] for _ in range(5))
    assert statuses == [400, 400, 403, 420, 488]


def test_malformed_messages_never_stop_the_server(srs: Srs) -> None:
    client = SipClient(srs)
    garbage = [
        b"\x00\xff" * 50,
        b"INVITE sip:x SIP/2.0\r\n\r\n",  # no headers at all: dropped
        b"NOT SIP AT ALL\r\n\r\n",
        b"INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: bogus\r\nContent-Length: 99999\r\n\r\n",
        request("OPTIONS", client.srs, client.local, "c1", branch="z9hG4bKm1").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"
        ),
        request(
            "INVITE",
            client.srs,
            client.local,
            "c2",
            branch="z9hG4bKm2",
            body="x" * 70000,
            content_type=SIPREC_TYPE,
        ),
    ]
    for data in garbage:
        client.send(data[:65000])
    # A request whose mandatory headers are there but one is broken gets a 400.
    client.send(
        request("OPTIONS", client.srs, client.local, "c3", branch="z9hG4bKm3").replace(
            b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"
        )
    )
    client.expect(400)
    # TCP: garbage without Content-Length closes that connection, nothing else.
    with socket.create_connection(srs.sip, timeout=30) as tcp:
        tcp.sendall(b"INVITE sip:x SIP/2.0\r\nVia: x\r\n\r\n")
        assert tcp.recv(100) == b""
    with socket.create_connection(srs.sip, timeout=30) as tcp:
        options = request(
            "OPTIONS", client.srs, tcp.getsockname(), "c4", branch="z9hG4bKm4", transport="TCP"
        )
        for i in range(len(options)):  # one byte at a time: framing survives any split
            tcp.sendall(options[i : i + 1])
        assert tcp.recv(4096).startswith(b"SIP/2.0 200 OK")
    client.send(request("OPTIONS", client.srs, client.local, "c5", branch="z9hG4bKm5"))
    client.expect(200, "OPTIONS")
    assert srs.proc.poll() is None
    client.close()


@needs_sipp
def test_reinvite_hold_remove_and_add_streams(srs: Srs, tmp_path: Path) -> None:
    box: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.update(r=run_sipp("uac_reinvite.xml", srs, tmp_path, pause_ms=1200)),
        daemon=True,
    )
    t.start()
    start = srs.wait_for("call_start")
    ports = {r["label"]: r["port"] for r in start["rtp"]}
    a1, a2, a3 = payloads(10, 21), payloads(10, 22), payloads(10, 23)
    sender = Sender()
    sender.send(ports["1"], [rtp_packet(i, i * 160, 1, p, pt=0) for i, p in enumerate(a1)])
    sender.send(ports["2"], [rtp_packet(i, i * 160, 2, p) for i, p in enumerate(a2)])
    update = srs.wait_for("call_update", recording_id=start["recording_id"])
    new = {r["label"]: r["port"] for r in update["rtp"]}
    assert set(new) == {"1", "3"} and new["1"] == ports["1"]  # a kept stream keeps its port
    sender.send(new["3"], [rtp_packet(i, i * 160, 3, p) for i, p in enumerate(a3)])
    sender.close()
    t.join()
    assert box["r"].returncode == 0, box["r"].stderr
    end = srs.wait_for("call_end", recording_id=start["recording_id"])
    assert end["reason"] == "bye"
    path = next(p for p in srs.recordings() if p.parent.name == start["recording_id"])
    got = decrypt_tracks(path, srs.directory)
    labels = {t.decl.label: t for t in got.tracks.values()}
    assert set(labels) == {"1", "2", "3"} and got.complete
    for label, sent in (("1", a1), ("2", a2), ("3", a3)):
        assert bytes(labels[label].audio) == b"".join(sent)


def _own_srs(directory: Path, sip: str) -> Iterator[Srs]:
    server = Srs.start(write_config(directory, sip=sip))
    yield server
    server.stop()


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Srs]:
    yield from _own_srs(tmp_path, "max_calls = 1")


@needs_sipp
def test_503_when_full(full: Srs, tmp_path: Path) -> None:
    client = SipClient(full)
    _call(client, _id(), [("1", 40000)])
    full.wait_for("call_start")
    res = run_sipp("uac_busy.xml", full, tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout[-1500:]
    client.close()


@pytest.fixture
def quick(tmp_path: Path) -> Iterator[Srs]:
    yield from _own_srs(tmp_path, "rtp_timeout = 1")


@needs_sipp
def test_bye_from_the_srs_after_rtp_timeout(quick: Srs, tmp_path: Path) -> None:
    audio = b"".join(payloads(10, 31))
    (tmp_path / "stream1.ul").write_bytes(audio)
    res = run_sipp("uac_server_bye.xml", quick, tmp_path)
    assert res.returncode == 0, res.stderr + res.stdout[-1500:]
    end = quick.wait_for("call_end")
    assert end["reason"] == "rtp_timeout" and end["complete"]
    got = decrypt_tracks(quick.recordings()[0], quick.directory)
    assert bytes(got.tracks[1].audio) == audio
    assert got.close is not None and got.close.reason == "rtp_timeout"


def test_sigterm_finalises_every_open_recording(tmp_path: Path) -> None:
    srs = Srs.start(write_config(tmp_path))
    clients, sent = [], {}
    for n in range(3):
        client = SipClient(srs)
        _, _, start, audio = _call_with_audio(srs, client, 30, 40 + n, port=40000 + 2 * n)
        sent[start["recording_id"]] = audio
        clients.append(client)
    assert srs.stop(signal.SIGTERM) == 0
    for client in clients:  # the SRS ended each call with a BYE
        assert client.next().startswith(b"BYE ")
        client.close()
    ends = [srs.wait_for("call_end") for _ in range(3)]
    assert {e["reason"] for e in ends} == {"shutdown"} and all(e["complete"] for e in ends)
    assert not list((tmp_path / "recordings").rglob("*.incomplete"))
    for path in srs.recordings():
        got = decrypt_tracks(path, tmp_path)
        assert got.complete and bytes(got.tracks[1].audio) == sent[path.parent.name]


def test_sigkill_then_recover_keeps_flushed_segments(tmp_path: Path) -> None:
    srs = Srs.start(write_config(tmp_path))
    client = SipClient(srs)
    _, ports = _call(client, _id(), [("1", 40000)])
    srs.wait_for("call_start")
    audio = payloads(700, 50)  # 700 MEDIA records of 175 bytes: 7 whole segments and more
    sender = Sender()
    sender.send(
        ports[0], [rtp_packet(i, i * 160, 5, p, pt=0) for i, p in enumerate(audio)], pace=0.0005
    )
    partial = next((tmp_path / "recordings").rglob("*.incomplete"))
    with open(partial, "rb", buffering=0) as fh:
        header = read_header_at(FileSource(fh.fileno()))
    # Ready when 7 whole segments are on disk (flush_interval is 0.2 s): every segment
    # completed more than a flush interval before the kill must come back.
    whole = header.length + BODY_PREFIX_BYTES + 7 * SEGMENT_WIRE_SIZE
    deadline = time.monotonic() + 60
    while partial.stat().st_size < whole:
        assert time.monotonic() < deadline, "segments never reached the disk"
        time.sleep(0.05)
    srs.stop(signal.SIGKILL)
    sender.close()
    client.close()
    keys = load(tmp_path / "keystore.rsk", PASSWORD)
    chunks: list[bytes] = []
    with open(partial, "rb", buffering=0) as fh:
        result = recover(FileSource(fh.fileno()), keys, chunks.append)
    plain = b"".join(chunks)
    assert not result.complete and result.plaintext_bytes == result.segments * SEGMENT_SIZE
    got = extract(plain)
    assert not got.complete and got.session is not None
    prefix = plain.index(b"\x03\x00\x00\x00\xaa\x00\x01")  # the first MEDIA record
    assert result.segments == (prefix + 700 * 175) // SEGMENT_SIZE  # every whole segment
    track = bytes(got.tracks[1].audio)
    assert len(track) >= (result.segments * SEGMENT_SIZE - prefix) // 175 * 160
    assert track == b"".join(audio)[: len(track)]
    out = tmp_path / "out"
    out.mkdir()

    def tracks(*args: str) -> int:
        keystore = ["--keystore", str(tmp_path / "keystore.rsk")]
        password = ["--password-file", str(tmp_path / "keystore.pass")]
        return main(["tracks", *keystore, *password, "--out-dir", str(out), *args])

    assert tracks("--recover", str(partial)) == EXIT_PARTIAL
    assert (out / "track-1.raw").read_bytes() == track
    # without --recover an interrupted recording is refused
    assert tracks("--force", str(partial)) == 3


def test_several_processes_share_the_sip_port(tmp_path: Path) -> None:
    srs = Srs.start(write_config(tmp_path, sip="processes = 2\nrtp_timeout = 30"))
    other = srs.wait_for("ready", worker=1)
    assert other["sip"] == srs.ready["sip"] and other["pid"] != srs.ready["pid"]
    recorded, workers = [], set()
    for n in range(16):  # the kernel spreads sources (by address and port) over both
        client = SipClient(srs)
        call_id, tag, start, audio = _call_with_audio(srs, client, 5, 60 + n)
        workers.add(start["worker"])
        _bye(client, call_id, tag)
        srs.wait_for("call_end", recording_id=start["recording_id"])
        recorded.append((start["recording_id"], audio))
        client.close()
    assert workers == {0, 1}
    assert srs.stop() == 0
    assert {srs.wait_for("stopped")["worker"], srs.wait_for("stopped")["worker"]} == {0, 1}
    for rid, audio in recorded:
        path = next(p for p in srs.recordings() if p.parent.name == rid)
        assert bytes(decrypt_tracks(path, tmp_path).tracks[1].audio) == audio

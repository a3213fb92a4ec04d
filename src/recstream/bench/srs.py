"""``recstream bench srs``: the SIPREC recording server under SIPp load, ramped.

Each step: SIPp opens N concurrent SIPREC calls (``-l N -r RATE -m N``) whose
first stream it plays in real time (``rtp_stream``, looped) and hangs up after
``--hold`` seconds; the bench's own sender plays every call's second stream
(50 packets/s each) to the port the SRS reported.  The SRS runs as its own
process(es) (``recstream srs``), exactly as deployed.

Per step it reports: calls answered and completed, the SRS's CPU (utime+stime
of its processes over the step, 100% = one core), RTP packets lost or late
inside the recorder (sequence gaps, from each call's status line), the kernel's
UDP receive-buffer drops over the step (``RcvbufErrors`` in /proc/net/snmp: the
whole machine's, so other load shows up too), and packet-to-disk latency p99 as
a bound: the time a packet's 16 KiB segment takes to fill at the call's byte
rate, plus the flusher's measured segment-to-disk p99.  A step is *held* when
every call completed with nothing lost in the recorder or in the kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import queue
import resource
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from recstream.bench.fixtures import BenchError, make_identity, work_directory
from recstream.bench.machine import describe_machine
from recstream.bench.modes import Progress
from recstream.bench.report import Column, Report

__all__ = ["run_from_args"]

PACKETS_PER_SECOND = 50  # 20 ms G.711 frames
RECORD_BYTES = 160 + 15  # one MEDIA record in the track container
SEGMENT = 16 * 1024

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="recstream bench srs">
  <send retrans="500">
    <![CDATA[

      INVITE sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]B[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:src@[local_ip]:[local_port]>;+sip.src
      Require: siprec
      Max-Forwards: 70
      Content-Type: multipart/mixed;boundary=bb
      Content-Length: [len]

      --bb
      Content-Type: application/sdp

      v=0
      o=SRC 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=label:1
      a=sendonly
      m=audio [media_port+2] RTP/AVP 0
      a=label:2
      a=sendonly
      --bb
      Content-Type: application/rs-metadata+xml

      <?xml version="1.0"?>
      <recording xmlns="urn:ietf:params:xml:ns:recording:1">
      <datamode>complete</datamode><session session_id="s[call_number]"/>
      <participant participant_id="a"><nameID aor="sip:a@bench.invalid"/></participant>
      <participant participant_id="b"><nameID aor="sip:b@bench.invalid"/></participant>
      <stream stream_id="x" session_id="s[call_number]"><label>1</label></stream>
      <stream stream_id="y" session_id="s[call_number]"><label>2</label></stream>
      </recording>
      --bb--

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[

      ACK sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]B[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop><action><exec rtp_stream="bench.ul,-1,0"/></action></nop>
  <pause/>
  <send retrans="500">
    <![CDATA[

      BYE sip:srs@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:src@[local_ip]:[local_port]>;tag=[pid]B[call_number]
      To: <sip:srs@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""


@dataclass
class StepResult:
    calls: int
    answered: int = 0
    completed: int = 0
    sipp_ok: bool = False
    cpu_percent: float = 0.0
    received: int = 0
    lost: int = 0
    late: int = 0
    kernel_drops: int = 0
    sent_stream2: int = 0
    flush_p99_ms: float = 0.0
    fill_ms: float = 0.0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return (
            self.sipp_ok
            and self.completed == self.calls
            and self.lost == 0
            and self.late == 0
            and self.kernel_drops == 0
        )


def udp_rcvbuf_errors() -> int:
    """The kernel's UDP receive-buffer drops so far (/proc/net/snmp, IPv4 and IPv6)."""
    total = 0
    for path, prefix in (("/proc/net/snmp", "Udp:"), ("/proc/net/snmp6", "Udp6RcvbufErrors")):
        with contextlib.suppress(OSError):
            text = Path(path).read_text()
            if prefix == "Udp:":
                rows = [ln.split() for ln in text.splitlines() if ln.startswith("Udp:")]
                if len(rows) >= 2:
                    total += int(rows[1][rows[0].index("RcvbufErrors")])
            else:
                for ln in text.splitlines():
                    if ln.startswith(prefix):
                        total += int(ln.split()[1])
    return total


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_flags() -> str:
    """The CPU features that matter for this workload (AES-NI, CLMUL, AVX2, VAES, SHA)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("aes", "pclmulqdq", "avx", "avx2", "avx512f", "vaes", "vpclmulqdq", "sha_ni")
    return " ".join(f for f in wanted if f in flags) or "unknown"


class SrsProcess:
    """``recstream srs`` as a child process; its status lines on a queue."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "recstream", "srs", "--config", str(config)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=config.parent,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.ready: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))
        self.lines.put({"event": "exit"})

    def wait_ready(self, processes: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.ready) < processes:
            try:
                doc = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                msg = "the SRS did not become ready"
                raise BenchError(msg) from None
            if doc["event"] == "exit":
                msg = "the SRS exited at start"
                raise BenchError(msg)
            if doc["event"] == "ready":
                self.ready.append(doc)

    @property
    def pids(self) -> list[int]:
        return [int(d["pid"]) for d in self.ready]

    @property
    def sip(self) -> str:
        return str(self.ready[0]["sip"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class SecondStreams:
    """Plays label 2 of every answered call at 50 packets/s from one socket."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.ports: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.sent = 0
        self.payload = bytes(range(0x20, 0x20 + 160))

    def add(self, rid: str, port: int) -> None:
        with self.lock:
            self.ports[rid] = port

    def remove(self, rid: str) -> None:
        with self.lock:
            self.ports.pop(rid, None)

    def run(self) -> None:
        header = struct.Struct(">BBHII")
        seq = 0
        start = time.monotonic()
        tick = 0
        while not self.stop.is_set():
            with self.lock:
                targets = list(self.ports.values())
            for port in targets:
                packet = header.pack(0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, port)
                with contextlib.suppress(OSError):
                    self.sock.sendto(packet + self.payload, ("127.0.0.1", port))
                    self.sent += 1
            seq += 1
            tick += 1
            delay = start + tick / PACKETS_PER_SECOND - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _metrics(srs: SrsProcess) -> dict[str, float]:
    url = srs.ready[0].get("metrics")
    if not url:
        return {}
    out: dict[str, float] = {}
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as resp,
    ):
        for line in resp.read().decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
    return out


def _p99(before: dict[str, float], after: dict[str, float]) -> float:
    """p99 (a bucket's upper bound) of the latency histogram's samples between two scrapes."""
    prefix = 'recstream_srs_segment_to_disk_seconds_bucket{le="'
    rows = sorted(
        (
            float("inf") if k[len(prefix) : -2] == "+Inf" else float(k[len(prefix) : -2]),
            v - before.get(k, 0.0),
        )
        for k, v in after.items()
        if k.startswith(prefix)
    )
    total = rows[-1][1] if rows else 0.0
    for bound, count in rows:
        if total and count >= 0.99 * total:
            return bound
    return 0.0


def _launch_sipp(
    n: int, ns: argparse.Namespace, srs: SrsProcess, work: Path
) -> tuple[list[subprocess.Popen[bytes]], list[IO[str]]]:
    host, port = srs.sip.rsplit(":", 1)
    # SO_REUSEPORT spreads SIP by source address and port: one SIPp would reach one
    # process, so several processes get two SIPp instances each (its own -p port).
    count = 1 if ns.processes == 1 else 2 * ns.processes
    shares = [n // count + (1 if i < n % count else 0) for i in range(count)]
    sipps: list[subprocess.Popen[bytes]] = []
    logs: list[IO[str]] = []
    for i, share in enumerate(shares):
        mp = 30000 + (os.getpid() % 500) * 40 + i * 4
        log = (work / f"sipp-{n}-{i}.err").open("w")
        logs.append(log)
        sipps.append(
            subprocess.Popen(  # noqa: S603
                [
                    shutil.which("sipp") or "sipp",
                    f"{host}:{port}",
                    "-sf",
                    str(work / "bench.xml"),
                    "-l",
                    str(share),
                    "-m",
                    str(share),
                    "-r",
                    str(max(1, ns.rate // count)),
                    "-d",
                    str(int(ns.hold * 1000)),
                    "-i",
                    "127.0.0.1",
                    "-p",
                    "0",
                    "-mi",
                    "127.0.0.1",
                    "-mp",
                    str(mp),
                    "-nostdin",
                    "-max_socket",
                    str(4 * share + 100),
                    "-timeout",
                    f"{int(ns.hold + n / ns.rate + 120)}s",
                    "-timeout_error",
                ],
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )

    return sipps, logs


def _step(
    n: int, ns: argparse.Namespace, srs: SrsProcess, work: Path, progress: Progress
) -> StepResult:
    r = StepResult(n)
    streams = SecondStreams()
    sender = threading.Thread(target=streams.run, daemon=True)
    sender.start()
    drops0, cpu0, t0 = udp_rcvbuf_errors(), cpu_seconds(srs.pids), time.monotonic()
    before = _metrics(srs)
    sipps, logs = _launch_sipp(n, ns, srs, work)

    def running() -> bool:
        return any(p.poll() is None for p in sipps)

    ended: list[dict[str, Any]] = []
    while running() or len(ended) < r.answered:
        try:
            doc = srs.lines.get(timeout=0.5)
        except queue.Empty:
            if not running() and time.monotonic() - t0 > ns.hold + n / ns.rate + 120:
                r.notes.append(f"{r.answered - len(ended)} calls never ended")
                break
            continue
        if doc["event"] == "call_start":
            r.answered += 1
            streams.add(
                doc["recording_id"], next(x["port"] for x in doc["rtp"] if x["label"] == "2")
            )
            if r.answered % max(1, n // 4) == 0:
                progress(f"{n} calls: {r.answered} answered")
        elif doc["event"] == "call_end":
            streams.remove(doc["recording_id"])
            ended.append(doc)
    streams.stop.set()
    sender.join()
    r.seconds = time.monotonic() - t0
    r.cpu_percent = 100 * (cpu_seconds(srs.pids) - cpu0) / r.seconds
    r.kernel_drops = udp_rcvbuf_errors() - drops0
    for log in logs:
        log.close()
    r.sipp_ok = all(p.returncode == 0 for p in sipps)
    for i, p in enumerate(sipps):
        if p.returncode:
            tail = (work / f"sipp-{n}-{i}.err").read_text(errors="replace")
            first = next(
                (ln for ln in tail.splitlines() if "Aborting" in ln or "rror" in ln), tail[-200:]
            )
            r.notes.append(f"sipp #{i} exit {p.returncode}: {first.strip()[:240]}")
    r.completed = sum(1 for d in ended if d.get("complete") and d.get("reason") == "bye")
    reasons: dict[str, int] = {}
    for d in ended:
        reasons[d.get("reason", "?")] = reasons.get(d.get("reason", "?"), 0) + 1
    if set(reasons) - {"bye"}:
        r.notes.append(f"calls ended by: {reasons}")
    for d in ended:
        for s in d["streams"]:
            r.received += s["received"]
            r.lost += s["lost"]
            r.late += s["late"]
    r.sent_stream2 = streams.sent
    m = _metrics(srs)
    r.flush_p99_ms = 1000 * _p99(before, m)
    bytes_per_s = 2 * PACKETS_PER_SECOND * RECORD_BYTES
    r.fill_ms = 1000 * SEGMENT / bytes_per_s
    return r


def run_from_args(ns: argparse.Namespace, progress: Progress) -> Report:
    if shutil.which("sipp") is None:
        msg = "recstream bench srs needs SIPp: apt-get install -y sip-tester"
        raise BenchError(msg)
    from recstream.format import MediaKind
    from recstream.keystore import KdfParams, create, update

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # SIPp and the SRS inherit it
    report = Report(
        "srs",
        describe_machine(),
        {
            "calls": ",".join(map(str, ns.calls)),
            "hold_s": ns.hold,
            "rate_cps": ns.rate,
            "processes": ns.processes,
            "sipp_instances": 1 if ns.processes == 1 else 2 * ns.processes,
            "cpu_flags": cpu_flags(),
        },
    )
    table = report.table(
        "SIPREC calls held (two G.711 streams each: SIPp + the bench's sender)",
        Column("calls", "calls"),
        Column("pps", "RTP pkt/s"),
        Column("answered", "answered"),
        Column("completed", "completed"),
        Column("cpu", "SRS CPU %"),
        Column("lost", "lost+late"),
        Column("drops", "kernel drops"),
        Column("p99", "pkt-to-disk p99 ms (bound)"),
        Column("held", "held"),
    )
    results = []
    with work_directory(ns.dir, need_bytes=max(ns.calls) * 40_000 * int(ns.hold + 1)) as work:
        ident = make_identity(work, 2048)
        password = b"bench keystore password"
        (work / "ks.pass").write_bytes(password + b"\n")
        create(work / "ks.rsk", password, kdf=KdfParams(memory_kib=8, iterations=1, lanes=1))
        with update(work / "ks.rsk", password) as ks:
            ks.add("bench", MediaKind.VOICE, ident.cert, ident.key, now=dt.datetime.now(dt.UTC))
        (work / "recordings").mkdir()
        (work / "bench.ul").write_bytes(bytes(range(0x20, 0x20 + 160)) * 50)
        (work / "bench.xml").write_text(SCENARIO)
        top = max(ns.calls)
        (work / "srs.toml").write_text(
            f'[sip]\nlisten = "127.0.0.1:0"\nmax_calls = {top * 2}\nrtp_timeout = 60\n'
            f"processes = {ns.processes}\n"
            f'[rtp]\nhost = "127.0.0.1"\nports = "40000-{40000 + 8 * top + 64}"\n'
            f'[recordings]\nroot = "recordings"\n'
            f'[keystore]\npath = "ks.rsk"\npassword_file = "ks.pass"\n'
            f'[metrics]\nlisten = "127.0.0.1:0"\n[tenants]\ndefault = "bench"\n'
        )
        srs = SrsProcess(work / "srs.toml")
        try:
            srs.wait_ready(ns.processes)
            for n in ns.calls:
                progress(f"step: {n} calls held {ns.hold:.0f} s")
                r = _step(n, ns, srs, work, progress)
                results.append(r)
                table.add(
                    calls=n,
                    pps=n * 2 * PACKETS_PER_SECOND,
                    answered=r.answered,
                    completed=r.completed,
                    cpu=r.cpu_percent,
                    lost=r.lost + r.late,
                    drops=r.kernel_drops,
                    p99=r.fill_ms + r.flush_p99_ms,
                    held="yes" if r.held else "NO",
                )
                for note in r.notes:
                    report.notes.append(f"{n} calls: {note}")
                # Recordings stay until the end: a call still closing must not lose its
                # directory (the work directory goes once the SRS has stopped).
                if not r.held and not ns.keep_going:
                    break
        finally:
            srs.stop()
    best = max((r.calls for r in results if r.held), default=0)
    report.notes.append(
        f"most calls held with nothing lost: {best} "
        f"({best * 2 * PACKETS_PER_SECOND} RTP packets/s) "
        f"with {ns.processes} SRS process(es); CPU flags: {cpu_flags()}"
    )
    report.notes.append(
        "pkt-to-disk p99 is a bound: a 16 KiB segment's fill time at 2 x 50 "
        "x 175 B/s plus the step's segment-to-disk p99 (the SRS's histogram "
        "bucket bound: 0.05/0.1/0.25/0.5/1/1.5/2/3/5/10/20/60 s)"
    )
    report.notes.append("SIPp, the second-stream sender and the SRS share this machine's cores")
    return report

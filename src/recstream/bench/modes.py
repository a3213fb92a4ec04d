"""The registry of benchmark modes: ``recstream bench MODE`` for each entry of :data:`MODES`.

This module is what the CLI imports to build its parser, so it stays light:
argparse options, defaults and help text only.  Each mode's implementation
lives in its own module and is imported only when that mode runs, so
``recstream encrypt`` pays nothing at start-up for the harness.

A new mode: write ``recstream/bench/NAME.py`` with ``run_from_args(ns,
progress) -> Report`` and add its options function and a ``Mode("NAME", ...,
"recstream.bench.NAME:run_from_args")`` entry to :data:`MODES` (``rcs`` is the
latest: the Recording Crypto Server on loopback).  The CLI, ``--json``,
``--plot``, repeats and noise warnings come with it.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from recstream.bench.stats import parse_size

if TYPE_CHECKING:
    from recstream.bench.report import Report

__all__ = [
    "DEFAULT_CALLS",
    "DEFAULT_RCS_SIZES",
    "DEFAULT_SEGMENT_SIZES",
    "DEFAULT_STREAMS",
    "MODES",
    "PEER_NAMES",
    "Mode",
    "Progress",
    "add_repeat",
    "all_modes",
    "list_type",
    "positive_int",
    "size_type",
]

Progress = Callable[[str], None]
T = TypeVar("T")

DEFAULT_CALLS = (500, 1000, 2000, 5000, 8000)
DEFAULT_SEGMENT_SIZES = tuple(4096 << i for i in range(11))  # 4 KiB .. 4 MiB
PEER_NAMES = ("openssl", "age", "aws", "tink")
DEFAULT_RCS_SIZES = (16 << 20, 64 << 20, 256 << 20)
DEFAULT_STREAMS = (100, 250, 500, 1000, 1500, 2000)  # two-track media streams, issue 19


@dataclass(frozen=True, slots=True)
class Mode:
    """One ``recstream bench`` subcommand.

    Attributes:
        name: the subcommand.
        help: one line for ``recstream bench --help``.
        description: the subcommand's own ``--help`` text.
        add_arguments: adds the mode's options (``--repeat`` included, with the
            mode's default); ``--json``, ``--plot``, ``--dir`` are the CLI's.
        runner: ``"module:function"`` taking ``(namespace, progress)`` and
            returning a :class:`~recstream.bench.report.Report`.  It raises
            ``ValueError`` for options that do not make sense together and
            :class:`~recstream.bench.fixtures.BenchError` when it cannot run.
    """

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    runner: str

    def run(self, ns: argparse.Namespace, progress: Progress) -> Report:
        """Import the mode's module and run it."""
        module, func = self.runner.split(":")
        run: Callable[[argparse.Namespace, Progress], Report] = getattr(
            importlib.import_module(module), func
        )
        return run(ns, progress)


# --- argparse types ------------------------------------------------------------


def size_type(text: str) -> int:
    """argparse ``type=`` for sizes such as ``1G``, ``256M``, ``16K``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def list_type(item: Callable[[str], T]) -> Callable[[str], tuple[T, ...]]:
    """argparse ``type=`` for comma-separated lists (``500,1000,5000``, ``4K,16K``)."""

    def parse(text: str) -> tuple[T, ...]:
        try:
            values = tuple(item(part.strip()) for part in text.split(",") if part.strip())
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        if not values:
            msg = "an empty list"
            raise argparse.ArgumentTypeError(msg)
        return values

    return parse


def positive_int(text: str) -> int:
    """argparse ``type=`` for an integer of at least 1."""
    try:
        value = int(text)
    except ValueError as exc:
        msg = f"not an integer: {text!r}"
        raise argparse.ArgumentTypeError(msg) from exc
    if value < 1:
        msg = f"must be at least 1: {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def add_repeat(parser: argparse.ArgumentParser, default: int, what: str = "figure") -> None:
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"runs of each {what}; the report gives the median, min and max "
        "(default: %(default)s)",
    )


def _warmup(p: argparse.ArgumentParser, why: str) -> None:
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        metavar="N",
        help=f"untimed rounds first, {why} (default: %(default)s)",
    )


def _rsa_bits(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rsa-bits",
        type=positive_int,
        default=3072,
        metavar="BITS",
        help="recipient RSA key size (default: %(default)s)",
    )


# --- the modes ---------------------------------------------------------------------


def _bulk_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--size",
        type=size_type,
        default=1 << 30,
        metavar="SIZE",
        help="input file size, e.g. 256M, 1G, 2G (default: 1G; needs about 3.2x this in --dir)",
    )
    add_repeat(p, 5, "subject")
    _warmup(p, "to fault in tmpfs and guest memory")
    _rsa_bits(p)
    p.add_argument("--no-cli", action="store_true", help="skip the CLI subjects")
    p.add_argument("--no-library", action="store_true", help="skip the in-process subjects")


_BULK = """\
Encrypt and decrypt one large file on tmpfs, interleaved round by round with the
limits measured in the same run:

  cat IN > OUT            the kernel's own copy: the I/O limit
  cli encrypt/decrypt     whole 'recstream' processes, with peak RSS (GNU time)
  library encrypt/decrypt EnvelopeEncryptor/Decryptor through files.pump, in-process
  AES-GCM encrypt_into    raw single-thread AEAD over the same bytes at 16 KiB
  / decrypt_into          segments, only the AEAD calls timed: the crypto limit

Reports MB/s, the ratios to cat and to raw AES-GCM (per round), and the
project's targets: CLI at >= 75% of cat, peak RSS < 64 MiB.
"""


def _segments_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=list_type(size_type),
        default=DEFAULT_SEGMENT_SIZES,
        metavar="LIST",
        help="segment sizes, comma-separated (default: powers of two, 4K..4M)",
    )
    p.add_argument(
        "--total",
        type=size_type,
        default=64 << 20,
        metavar="SIZE",
        help="bytes encrypted per measurement (default: 64M)",
    )
    add_repeat(p, 5)


_SEGMENTS = """\
AES-256-GCM throughput against segment size, one thread, in memory:

  AES-GCM encrypt_into/decrypt_into   one AEAD call per segment of each size
  Cobblestone-256 encrypt/decrypt     the format's body (16 KiB segments, fixed
                                      by C2SP) fed update_into calls of each size

Shows what the format's 16 KiB segment costs against larger ones, and what the
size of the caller's writes matters.  --plot draws the curves.
"""


def _live_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calls",
        type=list_type(positive_int),
        default=DEFAULT_CALLS,
        metavar="LIST",
        help="the ramp: concurrent calls per step (default: 500,1000,2000,5000,8000)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="wall time each step feeds its calls (default: %(default)s)",
    )
    p.add_argument(
        "--flush-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the hook's flush interval (default: the hook's own, 1 s)",
    )
    p.add_argument("--no-sync", action="store_true", help="do not fdatasync each batch")
    p.add_argument(
        "--screen",
        type=int,
        default=0,
        metavar="N",
        help="calls that also carry a screen stream (default: 0)",
    )
    p.add_argument(
        "--screen-bitrate",
        type=float,
        default=2e6,
        metavar="BITS_PER_S",
        help="screen stream bit rate, in 100 ms chunks (default: 2e6)",
    )
    p.add_argument(
        "--slots",
        type=positive_int,
        default=10,
        metavar="N",
        help="phases of the 20 ms frame period the calls are spread over (default: 10)",
    )
    p.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop (default: uvloop where installed)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="run the larger steps even after one was not sustained",
    )
    add_repeat(p, 1, "step")


_LIVE = """\
Simulated G.711 calls (160-byte frames every 20 ms, paced in real time by one
ticker task, frames staggered over the period, segments filling out of step)
through RecordingHook, ramped to find the most calls one process sustains in
real time: the ticker keeps up (p99 lag <= 20 ms, not growing) and p99
segment-complete-to-disk latency stays within the flush interval.  Reports
latency p50/p99/max, tick lag and the process's CPU (200% = both cores).
A frame also waits up to 2.048 s for its 16 KiB segment to fill: reported apart.
"""


def _small_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--count",
        type=positive_int,
        default=1000,
        metavar="N",
        help="recordings per subject per run (default: %(default)s; 10000 for reference figures)",
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="length of each recording, in seconds of G.711 (default: %(default)s)",
    )
    p.add_argument(
        "--bits",
        type=list_type(positive_int),
        default=(2048, 3072, 4096),
        metavar="LIST",
        help="RSA key sizes (default: 2048,3072,4096)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=2,
        metavar="N",
        help="threads for the parallel decrypt and unwrap (default: %(default)s)",
    )
    add_repeat(p, 3, "subject")


_SMALL = """\
Many short recordings (default 60 s of G.711 = 480 KB each), in memory, for
each RSA key size: recordings/s for encrypt and for decrypt (1 thread and
--threads threads), with the RSA-OAEP wrap and unwrap measured alone in the
same rounds: their share of the time, and decrypt against the unwrap rate.
"""


def _peers_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--size",
        type=size_type,
        default=256 << 20,
        metavar="SIZE",
        help="input file size (default: 256M, as the reference figures)",
    )
    add_repeat(p, 3, "subject")
    _warmup(p, "to fault in tmpfs and guest memory")
    _rsa_bits(p)
    p.add_argument(
        "--only",
        type=list_type(str),
        default=PEER_NAMES,
        metavar="LIST",
        help=f"peers to run (default: {','.join(PEER_NAMES)})",
    )
    p.add_argument(
        "--null",
        action="store_true",
        help="write the timed outputs to /dev/null instead of tmpfs",
    )


_PEERS = """\
The same file on tmpfs, encrypted to the same RSA key by the tools a user would
pick instead, each a whole process (wall time, MB/s, peak RSS), interleaved
with recstream encrypt/decrypt:

  openssl   cms -encrypt -stream, AES-256-GCM where accepted (else CBC, said so)
  age       to the key as an ssh-rsa recipient      (apt-get install -y age)
  aws       AWS Encryption SDK, raw RSA master key, streaming
  tink      Tink streaming AEAD, bulk only (no RSA)  (pip install 'recstream[bench]')

Peers that are not installed are skipped with a note.
"""


def _rcs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes",
        type=list_type(size_type),
        default=DEFAULT_RCS_SIZES,
        metavar="LIST",
        help="recording sizes, one fresh server each (default: 16M,64M,256M)",
    )
    p.add_argument(
        "--streams",
        type=positive_int,
        default=16,
        metavar="N",
        help="streams per run of each endpoint (default: %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=8,
        metavar="N",
        help="streams in flight at a time, at most --streams (default: %(default)s)",
    )
    p.add_argument(
        "--time-limit",
        type=float,
        default=150.0,
        metavar="SECONDS",
        help="wall time for the whole run; past it the run stops with an error "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--listing",
        type=int,
        default=100_000,
        metavar="N",
        help="also measure GET /rcs/recordings over an archive of N recordings (and N/10 of "
        "another tenant), alone and against playback; 0 skips it (default: %(default)s)",
    )
    p.add_argument(
        "--listing-clients",
        type=positive_int,
        default=8,
        metavar="N",
        help="clients paging through the listing at once (default: %(default)s)",
    )
    add_repeat(p, 3, "endpoint and size")


_RCS = """\
The Recording Crypto Server under load: for each recording size a fresh
'recstream serve' (real keystore, user and bearer token) on 127.0.0.1 only,
driven over HTTP by aiohttp in this process, --concurrency streams at a time:

  decrypt    POST /rcs/decrypt of the whole envelope, plaintext streamed back
  playback   GET /rcs/recordings/NAME with Range: bytes=OFFSET- (random seek)

Reports plaintext MB/s, p50/p99 time to first and last byte, the server's CPU,
and its RSS before each run against its peak during it: bounded memory means
the peak is flat in recording size.  Stops by itself (--time-limit).

With --listing N (default 100,000) a further server lists an archive of N
recordings: p50/p99 per page (?limit=100&after=...) for --listing-clients
clients paging, and playback latency with and without them, interleaved.
The listing part is not bounded by --time-limit (writing N files takes a while).
"""


def _streams_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--streams",
        type=list_type(positive_int),
        default=DEFAULT_STREAMS,
        metavar="LIST",
        help="the ramp: concurrent two-track streams per step "
        f"(default: {','.join(map(str, DEFAULT_STREAMS))})",
    )
    p.add_argument(
        "--duration", type=float, default=10.0, metavar="SECONDS",
        help="wall time each step streams for (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--flush-interval", type=float, default=None, metavar="SECONDS",
        help="the hook's flush interval (default: the hook's own, 1 s)",
    )  # fmt: skip
    p.add_argument("--no-sync", action="store_true", help="do not fdatasync each batch")
    p.add_argument(
        "--slots", type=positive_int, default=10, metavar="N",
        help="phases of the 20 ms period the streams are spread over (default: 10)",
    )  # fmt: skip
    p.add_argument(
        "--max-late", type=float, default=0.25, metavar="SECONDS",
        help="p99 lateness of the server's reading still counted as real time (default: 0.25)",
    )  # fmt: skip
    p.add_argument(
        "--processes", type=list_type(positive_int), default=(1,), metavar="LIST",
        help="server processes sharing the port (SO_REUSEPORT); a list such as 1,2 runs "
        "each step against each (default: 1)",
    )  # fmt: skip
    p.add_argument(
        "--read-batch-ms", type=float, default=5.0, metavar="MS",
        help="the server's [server] read_batch_ms: read the sockets every MS ms while 32 or "
        "more streams are open; 0 reads each write as it arrives (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--ticks-per-write", type=positive_int, default=1, metavar="N",
        help="the generator holds each stream's frames and writes N ticks' worth every "
        "N x 20 ms: the same messages in 1/N of the writes, to separate the server's cost "
        "from the per-write loopback cost; Twilio writes every 20 ms (default: 1)",
    )  # fmt: skip
    p.add_argument(
        "--no-reference", action="store_true",
        help="skip the reference step (a bare aiohttp consumer of the same load)",
    )  # fmt: skip
    p.add_argument(
        "--keep-going", action="store_true",
        help="run the larger steps even after one was not sustained",
    )  # fmt: skip
    add_repeat(p, 1, "step")


_STREAMS = """\
The media-streams front door ('recstream streams') under load: the real endpoint
on uvloop in a child process, recording every call encrypted with both tracks,
and this process as the telephony platform: N WebSockets on 127.0.0.1, each a
Twilio-style fork sending an inbound and an outbound 160-byte mu-law chunk every
20 ms (base64 JSON), paced in real time, ramped until a step is not sustained:
the platform side keeps time, the server reads each chunk within --max-late of
its timestamp (p99), sealed segments reach the disk within the flush interval,
and every stream ends as a complete recording.  Reports streams held, both
processes' CPU and the chunk-to-disk p99 (as its parts and their sum).
"""


def _srs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calls",
        type=list_type(positive_int),
        default=(50, 100, 200, 400, 700, 1000),
        metavar="LIST",
        help="the ramp: concurrent calls per step (default: 50,100,200,400,700,1000)",
    )
    p.add_argument(
        "--hold",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long SIPp holds each call (default: %(default)s)",
    )
    p.add_argument(
        "--rate",
        type=positive_int,
        default=100,
        metavar="CPS",
        help="SIPp's call rate, calls per second (default: %(default)s)",
    )
    p.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        metavar="N",
        help="SRS processes behind one SIP port (SO_REUSEPORT; default: 1)",
    )
    p.add_argument(
        "--keep-going", action="store_true", help="run the larger steps even after one was not held"
    )


_SRS = """\
The SIPREC recording server (recstream srs) as deployed, under SIPp: each step
opens N concurrent two-stream calls (SIPp -l N -r RATE; SIPp plays stream 1 in
real time, the bench's own sender stream 2), holds them --hold seconds, and
reports calls completed, the SRS's CPU, RTP packets lost or late inside the
recorder, the kernel's UDP receive-buffer drops (/proc/net/snmp) and a
packet-to-disk p99 bound.  Needs sipp (apt-get install sip-tester).
"""

MODES: tuple[Mode, ...] = (
    Mode(
        "bulk",
        "encrypt/decrypt a large file: CLI and library vs cat and raw AES-GCM",
        _BULK,
        _bulk_arguments,
        "recstream.bench.bulk:run_from_args",
    ),
    Mode(
        "segments",
        "AES-GCM throughput against segment size (4 KiB..4 MiB), raw and Cobblestone",
        _SEGMENTS,
        _segments_arguments,
        "recstream.bench.segments:run_from_args",
    ),
    Mode(
        "live",
        "concurrent real-time G.711 calls through the recording hook, ramped",
        _LIVE,
        _live_arguments,
        "recstream.bench.live:run_from_args",
    ),
    Mode(
        "small",
        "many short recordings: recordings/s and the share of RSA wrap/unwrap",
        _SMALL,
        _small_arguments,
        "recstream.bench.small:run_from_args",
    ),
    Mode(
        "peers",
        "the same file and RSA key through openssl cms, age, the AWS SDK and Tink",
        _PEERS,
        _peers_arguments,
        "recstream.bench.peers:run_from_args",
    ),
    Mode(
        "rcs",
        "the Recording Crypto Server on loopback: concurrent decrypt and Range streams",
        _RCS,
        _rcs_arguments,
        "recstream.bench.rcs:run_from_args",
    ),
    Mode(
        "streams",
        "concurrent two-track media streams over WebSocket (recstream streams), ramped",
        _STREAMS,
        _streams_arguments,
        "recstream.bench.streams:run_from_args",
    ),
    Mode(
        "srs",
        "the SIPREC recording server under SIPp load: two-stream calls held, ramped",
        _SRS,
        _srs_arguments,
        "recstream.bench.srs:run_from_args",
    ),
)


def all_modes() -> list[Mode]:
    """Every registered mode, in ``recstream bench --help`` order."""
    return list(MODES)

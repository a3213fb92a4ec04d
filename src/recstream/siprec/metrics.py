"""Prometheus metrics of the SRS, read from its counters at scrape time.

The packet path only bumps plain integers in each stream's receiver; this
collector sums them when Prometheus asks (prometheus_client's custom-collector
pattern), so metrics cost nothing per packet.  No label carries personal data:
only outcomes and the tenant name.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from recstream.tracks import STAT_NAMES
from recstream.upload.metrics import upload_metrics

if TYPE_CHECKING:
    from recstream.siprec.server import SrsServer

__all__ = ["SrsCollector", "exposition"]

# The per-stream counters are the container's STATS names (docs/TRACKS.md).
PACKET_COUNTERS = STAT_NAMES


class SrsCollector(Collector):
    def __init__(self, server: SrsServer) -> None:
        self.server = server

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        s = self.server
        ua = s.ua
        calls = CounterMetricFamily(
            "recstream_srs_calls", "SIPREC calls by outcome", labels=["outcome"]
        )
        for outcome, n in sorted((ua.counts if ua else {}).items()):
            calls.add_metric([outcome], n)
        yield calls
        yield GaugeMetricFamily(
            "recstream_srs_active_calls",
            "calls being recorded",
            value=ua.active_count() if ua else 0,
        )
        active_streams = sum(len(live.call.streams) for live in s.live.values())
        yield GaugeMetricFamily(
            "recstream_srs_active_streams", "RTP streams being recorded", value=active_streams
        )
        yield CounterMetricFamily(
            "recstream_srs_streams", "RTP streams recorded", value=s.totals.streams
        )
        packets = CounterMetricFamily(
            "recstream_srs_rtp_packets", "RTP packets by what became of them", labels=["outcome"]
        )
        totals = dict.fromkeys(PACKET_COUNTERS, 0)
        for live in s.live.values():
            for row in live.call.stream_stats():
                for k in PACKET_COUNTERS:
                    totals[k] += row.get(k, 0)
        for k in PACKET_COUNTERS:
            packets.add_metric([k], totals[k] + s.totals.packets.get(k, 0))
        yield packets
        yield CounterMetricFamily(
            "recstream_srs_bytes_encrypted",
            "track container bytes handed to encryption",
            value=s.totals.bytes_encrypted,
        )
        yield _latency_histogram(list(s.hook.flusher.latencies))
        yield CounterMetricFamily(
            "recstream_srs_malformed_sip",
            "SIP messages refused as malformed",
            value=s.totals.malformed_sip,
        )
        yield CounterMetricFamily(
            "recstream_srs_recording_failures",
            "recordings that failed mid-call",
            value=s.totals.recording_failures,
        )
        yield CounterMetricFamily(
            "recstream_srs_internal_errors",
            "SIP messages whose handling failed unexpectedly (answered 500 if possible)",
            value=s.totals.internal_errors,
        )
        refused = CounterMetricFamily(
            "recstream_srs_refused",
            "SIP messages, RTP datagrams and TCP connections refused",
            labels=["what"],
        )
        refused.add_metric(["sip_source"], s.totals.sip_refused)
        refused.add_metric(["rtp_source"], s.totals.rtp_refused)
        for reason, n in sorted(s.limiter.refused.items()):
            # "total" is the descriptor reserve here: the label says which
            refused.add_metric([f"tcp_{'descriptors' if reason == 'total' else reason}"], n)
        yield refused
        yield CounterMetricFamily(
            "recstream_srs_tcp_idle_closed",
            "SIP/TCP connections closed after tcp_idle_timeout without a message or call",
            value=s.totals.idle_closed,
        )
        yield GaugeMetricFamily(
            "recstream_srs_tcp_connections", "open SIP/TCP connections", value=s.limiter.count
        )
        if s.hook.uploader is not None:  # [recordings] archive: the upload backlog
            yield from upload_metrics(s.hook.uploader.statistics())


LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 60.0)


def _latency_histogram(samples: list[float]) -> HistogramMetricFamily:
    """Sealed segment -> written and synced, over the flusher's recent samples."""
    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    for v in samples:
        counts[bisect.bisect_left(LATENCY_BUCKETS, v)] += 1
    buckets, total = [], 0
    for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
        total += n
        buckets.append((bound, total))
    return HistogramMetricFamily(
        "recstream_srs_segment_to_disk_seconds",
        "a sealed 16 KiB segment until written and synced (the flusher's recent samples)",
        buckets=buckets,
        sum_value=sum(samples),
    )


def exposition(server: SrsServer) -> tuple[CollectorRegistry, bytes]:
    registry = CollectorRegistry()
    registry.register(SrsCollector(server))
    return registry, generate_latest(registry)

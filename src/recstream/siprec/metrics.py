"""Prometheus metrics of the SRS, read from its counters at scrape time.

The packet path only bumps plain integers in each stream's receiver; this
collector sums them when Prometheus asks (prometheus_client's custom-collector
pattern), so metrics cost nothing per packet.  No label carries personal data:
only outcomes and the tenant name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from recstream.siprec.server import SrsServer

__all__ = ["SrsCollector", "exposition"]

PACKET_COUNTERS = ("received", "lost", "late", "duplicate", "reordered", "foreign",
                   "ssrc_changes", "undecryptable", "malformed")


class SrsCollector(Collector):
    def __init__(self, server: SrsServer) -> None:
        self.server = server

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self.server
        ua = s.ua
        calls = CounterMetricFamily("recstream_srs_calls", "SIPREC calls by outcome",
                                    labels=["outcome"])
        for outcome, n in sorted((ua.counts if ua else {}).items()):
            calls.add_metric([outcome], n)
        yield calls
        yield GaugeMetricFamily("recstream_srs_active_calls", "calls being recorded",
                                value=ua.active_count() if ua else 0)
        active_streams = sum(len(live.call.streams) for live in s.live.values())
        yield GaugeMetricFamily("recstream_srs_active_streams", "RTP streams being recorded",
                                value=active_streams)
        yield CounterMetricFamily("recstream_srs_streams", "RTP streams recorded",
                                  value=s.totals.streams)
        packets = CounterMetricFamily("recstream_srs_rtp_packets",
                                      "RTP packets by what became of them", labels=["outcome"])
        totals = dict.fromkeys(PACKET_COUNTERS, 0)
        for live in s.live.values():
            for row in live.call.stream_stats():
                for k in PACKET_COUNTERS:
                    totals[k] += row.get(k, 0)
        for k in PACKET_COUNTERS:
            packets.add_metric([k], totals[k] + s.totals.packets.get(k, 0))
        yield packets
        yield CounterMetricFamily("recstream_srs_bytes_encrypted",
                                  "track container bytes handed to encryption",
                                  value=s.totals.bytes_encrypted)
        flush = s.hook.flusher.statistics()
        lat = GaugeMetricFamily("recstream_srs_segment_to_disk_seconds",
                                "a sealed 16 KiB segment until written and synced (recent)",
                                labels=["quantile"])
        for q, v in (("0.5", flush.latency_p50), ("0.99", flush.latency_p99),
                     ("1", flush.latency_max)):
            lat.add_metric([q], v)
        yield lat
        yield CounterMetricFamily("recstream_srs_malformed_sip",
                                  "SIP messages refused as malformed",
                                  value=s.totals.malformed_sip)
        yield CounterMetricFamily("recstream_srs_recording_failures",
                                  "recordings that failed mid-call",
                                  value=s.totals.recording_failures)


def exposition(server: SrsServer) -> tuple[CollectorRegistry, bytes]:
    registry = CollectorRegistry()
    registry.register(SrsCollector(server))
    return registry, generate_latest(registry)

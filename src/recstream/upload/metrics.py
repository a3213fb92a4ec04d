"""The upload backlog as Prometheus metric families, for every server's /metrics."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from recstream.upload.uploader import UploadStatistics

__all__ = ["upload_metrics"]


def upload_metrics(stats: UploadStatistics) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """Backlog gauges and upload counters (no labels: nothing personal, nothing secret)."""
    yield GaugeMetricFamily(
        "recstream_upload_pending_recordings",
        "finished recordings in the spool waiting for the archive store",
        value=stats.pending,
    )
    yield GaugeMetricFamily(
        "recstream_upload_pending_bytes",
        "bytes of finished recordings waiting for the archive store",
        value=stats.pending_bytes,
    )
    yield GaugeMetricFamily(
        "recstream_upload_held_recordings",
        "recordings the store refused (403), that conflict or failed verification",
        value=len(stats.held),
    )
    yield GaugeMetricFamily(
        "recstream_upload_store_available",
        "1 if the last attempt reached the archive store, else 0",
        value=1 if stats.store_available else 0,
    )
    yield GaugeMetricFamily(
        "recstream_upload_spool_bytes", "bytes in the spool", value=stats.spool_bytes
    )
    yield CounterMetricFamily(
        "recstream_upload_recordings",
        "recordings uploaded and removed from the spool",
        value=stats.uploaded,
    )
    yield CounterMetricFamily(
        "recstream_upload_bytes", "bytes uploaded", value=stats.uploaded_bytes
    )
    yield CounterMetricFamily(
        "recstream_upload_failures", "upload attempts that failed", value=stats.failures
    )

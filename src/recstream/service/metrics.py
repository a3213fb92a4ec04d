"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

Counters and one histogram are all the server needs; the format is a few
lines (https://prometheus.io/docs/instrumenting/exposition_formats/).  Label
values are a closed set chosen by the server (endpoints, results, reasons),
never user input, so the series count stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["Counter", "Gauge", "Histogram", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(
        f'{n}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for n, v in zip(names, values, strict=True)
    )
    return "{" + inner + "}"


class Counter:
    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(labels[n] for n in self.label_names)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(labels[n] for n in self.label_names), 0.0)

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        for key, v in sorted(self._values.items()):
            out.append(f"{self.name}{_labels(self.label_names, key)} {_num(v)}")
        return out


class Gauge(Counter):
    kind = "gauge"

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Histogram:
    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self.name, self.help, self.label_names = name, help_text, tuple(labels)
        self.buckets = tuple(sorted(buckets))
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(labels[n] for n in self.label_names)
        counts, total = self._series.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
        counts[-1] += 1
        total[0] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(labels[n] for n in self.label_names))
        return 0 if series is None else series[0][-1]

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        names = (*self.label_names, "le")
        for key, (counts, total) in sorted(self._series.items()):
            for bound, n in zip((*map(_num, self.buckets), "+Inf"), counts, strict=True):
                out.append(f"{self.name}_bucket{_labels(names, (*key, str(bound)))} {n}")
            out.append(f"{self.name}_sum{_labels(self.label_names, key)} {_num(total[0])}")
            out.append(f"{self.name}_count{_labels(self.label_names, key)} {counts[-1]}")
        return out


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


class Metrics:
    """The server's metrics.  ``endpoint`` is ``decrypt`` or ``playback``."""

    def __init__(self) -> None:
        self.decryptions = Counter(
            "recstream_decryptions_total",
            "Decryption requests by endpoint and result.",
            ("endpoint", "result"),
        )
        self.decrypted_bytes = Counter(
            "recstream_decrypted_bytes_total",
            "Plaintext bytes sent to clients.",
            ("endpoint",),
        )
        self.decrypt_seconds = Histogram(
            "recstream_decrypt_duration_seconds",
            "Time from request to the last byte sent (or the failure).",
            ("endpoint",),
        )
        self.auth_failures = Counter(
            "recstream_auth_failures_total",
            "Refused authentications by reason.",
            ("reason",),
        )
        self.proxy_requests = Counter(
            "recstream_proxy_requests_total",
            "Requests forwarded by a decryption proxy, by result.",
            ("result",),
        )
        self.connections_refused = Counter(
            "recstream_connections_refused_total",
            "Connections refused by the per-address or total cap.",
            ("reason",),
        )
        self.in_flight = Gauge("recstream_decryptions_in_flight", "Decryptions being streamed now.")
        self.responses = Counter(
            "recstream_http_responses_total", "HTTP responses by status class.", ("code",)
        )

    def render(self) -> str:
        parts: list[str] = []
        for m in (
            self.decryptions,
            self.decrypted_bytes,
            self.decrypt_seconds,
            self.auth_failures,
            self.proxy_requests,
            self.connections_refused,
            self.in_flight,
            self.responses,
        ):
            parts.extend(m.render())
        return "\n".join(parts) + "\n"

"""Repeats, summaries, ratios and sizes: the arithmetic every benchmark shares.

A figure is never one run.  :func:`interleave` runs every subject once per
round, rotating the order each round, so that noise from other work on the
machine (a test suite on the other core, the host reclaiming memory) falls on
all subjects alike; :class:`Summary` keeps the median with the min and max, and
says when the spread means the machine was noisy.  Ratios are taken per round
(:func:`paired_ratio`): two subjects measured back to back share their noise,
so the ratio of a pair is steadier than either figure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "NOISE_THRESHOLD",
    "Summary",
    "format_size",
    "interleave",
    "paired_ratio",
    "parse_size",
    "parse_size_list",
    "rate",
    "summarize",
    "timed",
]

# A figure whose (max - min) / median exceeds this is flagged as noisy.  On an
# idle machine repeated bulk runs agree within ~5-10%; a neighbour's test run
# on the other core moves them by 30-300%.
NOISE_THRESHOLD = 0.20

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Summary:
    """The median, min and max of repeated measurements of one figure."""

    median: float
    min: float
    max: float
    samples: tuple[float, ...]

    @property
    def spread(self) -> float:
        """(max - min) / median: 0 when all runs agreed."""
        if self.median == 0:
            return 0.0 if self.max == self.min else float("inf")
        return (self.max - self.min) / abs(self.median)

    @property
    def noisy(self) -> bool:
        return len(self.samples) > 1 and self.spread > NOISE_THRESHOLD

    def map(self, func: Callable[[float], float]) -> Summary:
        """Apply a monotonic ``func`` to every sample (seconds -> MB/s flips min/max)."""
        return summarize([func(s) for s in self.samples])

    def to_json(self) -> dict[str, object]:
        return {
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "n": len(self.samples),
            "samples": list(self.samples),
        }


def summarize(samples: Sequence[float]) -> Summary:
    """Summarize repeated measurements.

    Raises:
        ValueError: no samples.
    """
    if not samples:
        msg = "no samples to summarize"
        raise ValueError(msg)
    values = tuple(float(s) for s in samples)
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return Summary(median, ordered[0], ordered[-1], values)


def rate(nbytes: int, seconds: Sequence[float]) -> Summary:
    """MB/s (10^6 bytes per second) for each run that moved ``nbytes``."""
    return summarize([nbytes / s / 1e6 if s > 0 else float("inf") for s in seconds])


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> Summary:
    """Per-round ratios ``numerator[i] / denominator[i]`` of two interleaved subjects.

    Raises:
        ValueError: the sequences differ in length or are empty.
    """
    if len(numerator) != len(denominator):
        msg = "paired ratios need the same number of runs of both subjects"
        raise ValueError(msg)
    return summarize(
        [n / d if d else float("inf") for n, d in zip(numerator, denominator, strict=True)]
    )


def interleave(
    subjects: Mapping[str, Callable[[], T]],
    repeat: int,
    *,
    warmup: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[T]]:
    """Run each subject ``repeat`` times, round-robin, rotating the order each round.

    ``warmup`` extra rounds run first and are discarded (they fault in memory
    and caches).  Returns each subject's results in round order, so results
    of the same index were measured back to back.
    """
    if repeat < 1:
        msg = "repeat must be at least 1"
        raise ValueError(msg)
    names = list(subjects)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(-warmup, repeat):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            if progress is not None:
                label = "warm-up" if r < 0 else f"round {r + 1}/{repeat}"
                progress(f"{label}: {name}")
            value = subjects[name]()
            if r >= 0:
                results[name].append(value)
    return results


def timed(func: Callable[[], object]) -> Callable[[], float]:
    """A subject that runs ``func`` and returns its wall time in seconds."""

    def run() -> float:
        start = time.perf_counter()
        func()
        return time.perf_counter() - start

    return run


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse ``"1G"``, ``"256M"``, ``"16KiB"``, ``"4096"`` (binary units) into bytes.

    Raises:
        ValueError: not a size.
    """
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        msg = f"not a size: {text!r} (use e.g. 4096, 16K, 256M, 1G)"
        raise ValueError(msg)
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def parse_size_list(text: str) -> tuple[int, ...]:
    """Parse a comma-separated list of sizes."""
    return tuple(parse_size(part) for part in text.split(",") if part.strip())


def format_size(n: float) -> str:
    """``1073741824`` -> ``"1 GiB"``, ``16384`` -> ``"16 KiB"``, ``1536`` -> ``"1.5 KiB"``."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.3g} {unit}"
    return f"{n:.0f} B"

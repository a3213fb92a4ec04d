"""Draw a report's curves into one PNG with matplotlib (``pip install recstream[bench]``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from recstream.bench.report import Curve, Report
from recstream.bench.stats import format_size

__all__ = ["PlotUnavailableError", "write_plot"]


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed, or the report has no curves to draw."""


def _pyplot() -> Any:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        msg = "--plot needs matplotlib: pip install 'recstream[bench]' (or matplotlib)"
        raise PlotUnavailableError(msg) from exc
    matplotlib.use("Agg")  # files only: never open a window
    return importlib.import_module("matplotlib.pyplot")


def write_plot(report: Report, path: str | Path) -> None:
    """Draw every curve of ``report`` as a subplot; write a PNG to ``path``.

    Raises:
        PlotUnavailableError: matplotlib is missing or there is nothing to draw.
    """
    if not report.curves:
        msg = f"'bench {report.mode}' has no curves to plot"
        raise PlotUnavailableError(msg)
    plt = _pyplot()
    n = len(report.curves)
    fig, axes = plt.subplots(n, 1, figsize=(8, 4 * n), squeeze=False)
    for ax, curve in zip(axes[:, 0], report.curves, strict=True):
        _draw(ax, curve)
    m = report.machine
    fig.suptitle(
        f"recstream bench {report.mode} - {m.get('cpu')}, {m.get('usable_cores')} cores, "
        f"{m.get('openssl')}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _draw(ax: Any, curve: Curve) -> None:
    for name, points in curve.series.items():
        xs = [x for x, _ in points]
        ys = [y.median for _, y in points]
        lo = [y.median - y.min for _, y in points]
        hi = [y.max - y.median for _, y in points]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=3, capsize=2, label=name)
    for label, y in curve.hlines.items():
        ax.axhline(y, linestyle="--", linewidth=1, color="grey")
        ax.annotate(
            label,
            (0.01, y),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            va="bottom",
            color="grey",
        )
    if curve.logx:
        ax.set_xscale("log", base=2)
    if curve.x_is_size:
        ticks = sorted({x for points in curve.series.values() for x, _ in points})
        ax.set_xticks(ticks, [format_size(x) for x in ticks], fontsize=8)
    if curve.logy:
        ax.set_yscale("log")
    ax.set_title(curve.title, fontsize=10)
    ax.set_xlabel(curve.xlabel)
    ax.set_ylabel(curve.ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

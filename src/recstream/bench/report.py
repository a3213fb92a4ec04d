"""What a benchmark run produces: tables for people, JSON for machines, curves for plots.

A :class:`Report` holds the machine, the parameters, tables of cells (a cell
is a :class:`~recstream.bench.stats.Summary`, a number, a string or nothing),
curves (drawn by :mod:`recstream.bench.plot`), notes and warnings.
:meth:`Report.check_noise` turns every noisy summary into a warning, so no
run can report a figure without saying when its repeats disagreed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstream.bench.machine import load_average, machine_line
from recstream.bench.stats import NOISE_THRESHOLD, Summary

__all__ = ["Cell", "Column", "Curve", "Report", "Table"]

Cell = Summary | float | int | str | None


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: ``key`` in JSON, ``label`` on screen, ``digits`` after the point.

    ``noise_floor``: a spread smaller than this, in the column's unit, is not
    called noise however large relative to the median (1 ms of timer jitter
    on a 2 ms lag is 50%, and says nothing about the machine).
    """

    key: str
    label: str
    digits: int = 0
    noise_floor: float = 0.0

    def noisy(self, cell: Cell) -> bool:
        return isinstance(cell, Summary) and cell.noisy and cell.max - cell.min > self.noise_floor


@dataclass(slots=True)
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]] = field(default_factory=list)

    def add(self, **cells: Cell) -> None:
        unknown = set(cells) - {c.key for c in self.columns}
        if unknown:
            msg = f"unknown columns for table {self.title!r}: {sorted(unknown)}"
            raise KeyError(msg)
        self.rows.append(cells)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": {c.key: c.label for c in self.columns},
            "rows": [{k: _cell_json(v) for k, v in row.items()} for row in self.rows],
        }


@dataclass(slots=True)
class Curve:
    """Series of (x, y) points, y a Summary drawn as median with a min-max bar."""

    title: str
    xlabel: str
    ylabel: str
    series: dict[str, list[tuple[float, Summary]]] = field(default_factory=dict)
    logx: bool = False
    logy: bool = False
    x_is_size: bool = False  # label x ticks "4 KiB", "1 MiB"
    hlines: dict[str, float] = field(default_factory=dict)  # label -> y (limits, targets)

    def point(self, series: str, x: float, y: Summary) -> None:
        self.series.setdefault(series, []).append((x, y))

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "xlabel": self.xlabel,
            "ylabel": self.ylabel,
            "series": {
                name: [{"x": x, "y": y.to_json()} for x, y in points]
                for name, points in self.series.items()
            },
            "hlines": self.hlines,
        }


@dataclass(slots=True)
class Report:
    mode: str
    machine: dict[str, Any]
    parameters: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def table(self, title: str, *columns: Column) -> Table:
        t = Table(title, list(columns))
        self.tables.append(t)
        return t

    def curve(self, title: str, xlabel: str, ylabel: str, **kw: Any) -> Curve:
        c = Curve(title, xlabel, ylabel, **kw)
        self.curves.append(c)
        return c

    def check_noise(self) -> None:
        """Add a warning for every noisy summary, and for a loaded machine."""
        noisy = 0
        for t in self.tables:
            first = t.columns[0].key
            for row in t.rows:
                cols = [c for c in t.columns if c.noisy(row.get(c.key))]
                if not cols:
                    continue
                noisy += 1
                col = cols[0]
                cell = row[col.key]
                assert isinstance(cell, Summary)
                others = f" (also {', '.join(c.label for c in cols[1:])})" if cols[1:] else ""
                self.warnings.append(
                    f"{row.get(first)}: {col.label} varied by {cell.spread:.0%} between runs "
                    f"({_fmt(cell.min, col.digits)}-{_fmt(cell.max, col.digits)}){others}"
                )
        if noisy:
            self.warnings.append(
                f"{noisy} row(s) varied by more than {NOISE_THRESHOLD:.0%} between runs: "
                "the machine was noisy. Subjects were interleaved, so medians and ratios "
                "are comparable with each other; absolute figures are not a clean measure."
            )
        cores = self.machine.get("usable_cores") or 1
        for when, load in (
            ("start", self.machine.get("load_average_at_start")),
            ("end", load_average()),
        ):
            # Our own runs load at most one core on average; more means neighbours.
            if load is not None and load > max(1.0, cores / 2):
                self.warnings.append(
                    f"load average {load:.2f} on {cores} cores at the {when} of the run: "
                    "other work was competing for the CPU"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "machine": self.machine,
            "parameters": self.parameters,
            "tables": [t.to_json() for t in self.tables],
            "curves": [c.to_json() for c in self.curves],
            "notes": self.notes,
            "warnings": self.warnings,
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")

    def render(self) -> str:
        """The human-readable report: machine, tables, notes, warnings."""
        params = ", ".join(f"{k}={v}" for k, v in self.parameters.items())
        lines = [f"recstream bench {self.mode}: {params}", f"machine: {machine_line(self.machine)}"]
        for t in self.tables:
            lines += ["", *_render_table(t)]
        for label, items in (("note", self.notes), ("WARNING", self.warnings)):
            if items:
                lines.append("")
                lines += [f"{label}: {item}" for item in items]
        return "\n".join(lines)


def _cell_json(cell: Cell) -> Any:
    if isinstance(cell, Summary):
        return cell.to_json()
    if isinstance(cell, float) and not math.isfinite(cell):
        return None
    return cell


def _fmt(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return "inf"
    return f"{value:,.{digits}f}"


def _render_cell(cell: Cell, col: Column) -> str:
    digits = col.digits
    if cell is None:
        return "-"
    if isinstance(cell, Summary):
        if len(cell.samples) == 1:
            return _fmt(cell.median, digits)
        flag = " !" if col.noisy(cell) else ""
        return (
            f"{_fmt(cell.median, digits)} ({_fmt(cell.min, digits)}-{_fmt(cell.max, digits)}){flag}"
        )
    if isinstance(cell, bool):
        return "yes" if cell else "no"
    if isinstance(cell, int | float):
        return _fmt(cell, digits)
    return cell


def _render_table(t: Table) -> list[str]:
    grid = [[c.label for c in t.columns]]
    grid += [[_render_cell(row.get(c.key), c) for c in t.columns] for row in t.rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(t.columns))]
    # Text columns read left to right; numbers line up on the right.
    left = [
        i == 0 or all(isinstance(row.get(c.key), str | None) for row in t.rows)
        for i, c in enumerate(t.columns)
    ]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(cells, widths, left, strict=True)
        ).rstrip()

    out = [t.title, line(grid[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in grid[1:]]
    if any("!" in c for r in grid[1:] for c in r):
        out.append(f"(median (min-max) of the runs; ! = spread over {NOISE_THRESHOLD:.0%})")
    elif len(grid) > 1 and any("(" in c for r in grid[1:] for c in r):
        out.append("(median (min-max) of the runs)")
    return out

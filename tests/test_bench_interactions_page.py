"""``bench/interactions_page.py``: its deep-page cursor at any archive size.

``--entries`` below ~2,000 used to fail with an IndexError: the middle page was
looked for among pages of 1,000 recordings (200 interactions), and a listing that
fitted on one of them had no cursor at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench.interactions_page import MIN_ENTRIES, middle_cursor

ROOT = Path(__file__).resolve().parent.parent
HANG_GUARD = 300.0  # seconds: only ever reached if something hangs


class _Listing:
    """``items`` things served in pages; a cursor is the index of the next item."""

    def __init__(self, items: int) -> None:
        self.items = items
        self.calls: list[tuple[int, str | None]] = []

    def fetch(self, limit: int, cursor: str | None) -> str | None:
        self.calls.append((limit, cursor))
        end = (0 if cursor is None else int(cursor)) + limit
        return str(end) if end < self.items else None


@pytest.mark.parametrize(
    ("items", "want", "limits"),
    [
        (20_000, "10000", {1000}),  # 20 large pages: their middle, no small page fetched
        (2_500, "1000", {1000}),  # 3 large pages, 2 cursors: the second page
        (1_000, "500", {1000, 50}),  # one large page: walked again in pages of 50
        (900, "450", {1000, 50}),
        (51, "50", {1000, 50}),  # two small pages: the second
    ],
)
def test_middle_cursor_falls_back_to_the_subjects_page_size(
    items: int, want: str, limits: set[int]
) -> None:
    listing = _Listing(items)
    assert middle_cursor(listing.fetch, (1000, 50)) == want
    assert {limit for limit, _ in listing.calls} == limits


@pytest.mark.parametrize("items", [0, 1, 50])
def test_a_listing_on_one_page_has_no_middle(items: int) -> None:
    with pytest.raises(ValueError, match="fits on one page of 50"):
        middle_cursor(_Listing(items).fetch, (1000, 50))


def test_the_benchmark_runs_at_its_smallest_size_and_refuses_smaller(tmp_path: Path) -> None:
    """The whole script against a real RCS on loopback at ``MIN_ENTRIES``: every subject
    measured; one fewer is refused with the reason (exit 2), not a traceback."""
    script = ROOT / "bench" / "interactions_page.py"
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, script, "--entries", str(MIN_ENTRIES), "--rounds", "2",
         "--dir", tmp_path, "--json", out],
        cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    assert set(result["subjects"]) >= {
        "listing", "listing deep", "interactions", "interactions deep",
        "interactions search", "interactions one day",
    }  # fmt: skip
    small = subprocess.run(
        [sys.executable, script, "--entries", str(MIN_ENTRIES - 1), "--dir", tmp_path],
        cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD, check=False,
    )  # fmt: skip
    assert small.returncode == 2
    assert f"--entries must be at least {MIN_ENTRIES}" in small.stderr
    assert "Traceback" not in small.stderr

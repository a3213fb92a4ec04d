"""``recstream bench srs`` on a tiny ramp: the harness runs end to end (figures unchecked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from recstream.bench.srs import cpu_seconds, udp_rcvbuf_errors
from recstream.cli import main


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sipp") is None, reason="needs sipp")
def test_tiny_srs_bench(tmp_path: Path) -> None:
    out = tmp_path / "srs.json"
    assert (
        main(
            [
                "bench",
                "srs",
                "--calls",
                "2",
                "--hold",
                "1",
                "--json",
                str(out),
                "--dir",
                str(tmp_path),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    row = report["tables"][0]["rows"][0]
    assert row["calls"] == 2 and row["answered"] == 2 and row["completed"] == 2
    assert "cpu_flags" in report["parameters"]


def test_probes_read_the_kernel() -> None:
    assert udp_rcvbuf_errors() >= 0
    assert cpu_seconds([1]) >= 0

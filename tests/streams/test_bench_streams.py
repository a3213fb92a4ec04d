"""``recstream bench streams`` on a tiny ramp: it runs the real endpoint in a child process,
drives it, and every stream ends as a complete recording.  No figure is asserted (the
machine is shared); only that the report is whole and the recordings were made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recstream.cli import main


def test_bench_streams_tiny(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    argv = ["bench", "streams", "--streams", "3,6", "--duration", "1", "--keep-going"]
    argv += ["--processes", "1,2"]  # each step against one and two server processes
    code = main([*argv, "--flush-interval", "0.2", "--json", str(out), "--dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "recstream bench streams" in captured.out and "Traceback" not in captured.err
    report = json.loads(out.read_text())
    assert len(report["tables"]) == 2
    assert "1 server process" in report["tables"][0]["title"]
    assert "2 server process" in report["tables"][1]["title"]
    for table in report["tables"]:
        rows = {str(r["streams"]): r for r in table["rows"]}
        assert set(rows) == {"3", "6"}
        for n, row in rows.items():
            assert row["complete"] == f"{n}/{n}"
            assert row["server_cpu"]["median"] > 0 and row["msgs"]["median"] > 0
            assert row["bare_us"]["median"] > 0 and row["x_bare"]["median"] > 0
    assert report["parameters"]["processes"] == "1,2"
    assert "max_sustained_streams_2proc" in report["parameters"]
    assert "cpu_flags" in report["machine"]
    assert any("CPU features seen" in note for note in report["notes"])
    assert not list(tmp_path.glob("recstream-bench-*"))  # the work directory is removed


def test_bench_streams_rejects_bad_options() -> None:
    assert main(["bench", "streams", "--duration", "0"]) == 2
    assert main(["bench", "streams", "--streams", "0"]) == 2

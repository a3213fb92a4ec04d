"""The benchmark harness's own logic, and every mode on a tiny size.

Nothing here asserts a throughput: benchmarks never gate CI.  What is checked
is the arithmetic (medians, ratios, noise), the reports (table, JSON, plot),
honest peak-RSS measurement, and that each mode runs end to end and says what
it measured.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from recstream.bench import proc as proc_mod
from recstream.bench.fixtures import BenchError
from recstream.bench.machine import cpu_features, cpu_model, describe_machine, machine_line
from recstream.bench.modes import MODES
from recstream.bench.proc import run_measured
from recstream.bench.report import Column, Report
from recstream.bench.stats import (
    format_size,
    interleave,
    paired_ratio,
    parse_size,
    rate,
    summarize,
)
from recstream.cli import main

MACHINE = {
    "cpu": "test cpu",
    "cores": 2,
    "usable_cores": 2,
    "python": "CPython 3",
    "cryptography": "50",
    "openssl": "OpenSSL x",
    "kernel": "Linux",
    "load_average_at_start": 0.0,
}


def run_mode(capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str) -> dict[str, Any]:
    """Run ``recstream bench COMMAND`` with --json; return the parsed report."""
    argv = command.split()
    out = tmp_path / "report.json"
    code = main(["bench", *argv, "--json", str(out), "--dir", str(tmp_path), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())
    assert f"recstream bench {argv[0]}" in printed
    assert report["mode"] == argv[0]
    assert report["machine"]["cores"] >= 1
    return report


def rows(report: dict[str, Any], table: int = 0) -> dict[str, dict[str, Any]]:
    t = report["tables"][table]
    first = next(iter(t["columns"]))
    return {str(r[first]): r for r in t["rows"]}


# --- arithmetic ----------------------------------------------------------------


def test_summary_median_min_max_and_spread() -> None:
    s = summarize([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.samples) == (2.0, 1.0, 3.0, (3.0, 1.0, 2.0))
    assert summarize([1, 2, 3, 10]).median == 2.5
    assert s.spread == 1.0 and s.noisy
    assert not summarize([100, 101, 99]).noisy
    assert not summarize([5.0]).noisy  # one run cannot disagree with itself
    with pytest.raises(ValueError, match="no samples"):
        summarize([])


def test_rate_and_paired_ratio() -> None:
    r = rate(2_000_000, [1.0, 2.0, 4.0])
    assert (r.median, r.min, r.max) == (1.0, 0.5, 2.0)
    # Paired per round: a slow round for both subjects cancels out.
    ratio = paired_ratio([1.0, 3.0], [2.0, 6.0])
    assert ratio.samples == (0.5, 0.5) and not ratio.noisy
    with pytest.raises(ValueError, match="same number"):
        paired_ratio([1.0], [1.0, 2.0])


def test_interleave_rotates_order_and_drops_warmup() -> None:
    calls: list[str] = []

    def subject(name: str) -> Any:
        return lambda: calls.append(name) or len(calls)

    res = interleave({n: subject(n) for n in "abc"}, 3, warmup=1)
    assert "".join(calls) == "cab" + "abc" + "bca" + "cab"  # warm-up, then rotations
    assert res == {"a": [4, 9, 11], "b": [5, 7, 12], "c": [6, 8, 10]}
    with pytest.raises(ValueError, match="at least 1"):
        interleave({"a": lambda: 1}, 0)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1G", 1 << 30), ("256M", 256 << 20), ("16KiB", 16384), ("4096", 4096), ("1.5k", 1536)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_parse_size_rejects_garbage_and_formats_back() -> None:
    for bad in ("", "G", "1X", "-1M", "1 GB GB"):
        with pytest.raises(ValueError, match="not a size"):
            parse_size(bad)
    assert [format_size(n) for n in (1 << 30, 16384, 1536, 100)] == [
        "1 GiB",
        "16 KiB",
        "1.5 KiB",
        "100 B",
    ]


# --- reports ---------------------------------------------------------------------


def sample_report() -> Report:
    report = Report("unit", dict(MACHINE), {"size": "1 MiB"})
    t = report.table(
        "speeds",
        Column("subject", "subject"),
        Column("mb_s", "MB/s"),
        Column("lag", "lag ms", 1, noise_floor=5.0),
    )
    t.add(subject="steady", mb_s=summarize([1000, 1010, 990]), lag=summarize([1.0, 2.0]))
    t.add(subject="jumpy", mb_s=summarize([500, 1500, 1000]), lag=None)
    t.add(subject="inf", mb_s=float("inf"), lag="n/a")
    return report


def test_report_renders_medians_with_ranges() -> None:
    text = sample_report().render()
    assert "recstream bench unit: size=1 MiB" in text
    assert "machine: test cpu, 2 of 2 cores" in text
    assert "1,000 (990-1,010)" in text
    assert "1,000 (500-1,500) !" in text
    lines = text.splitlines()
    assert lines[lines.index("speeds") + 1].split() == ["subject", "MB/s", "lag", "ms"]


def test_noise_warnings_name_the_noisy_row_only() -> None:
    report = sample_report()
    report.check_noise()
    noisy = [w for w in report.warnings if w.startswith("jumpy")]
    assert noisy == ["jumpy: MB/s varied by 100% between runs (500-1,500)"]
    # 1 ms of jitter on a 1.5 ms lag is 67% but under the column's 5 ms floor.
    assert not any(w.startswith("steady") for w in report.warnings)
    assert any("machine was noisy" in w for w in report.warnings)


def test_a_quiet_report_has_no_noise_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recstream.bench.report.load_average", lambda: 0.1)
    report = Report("unit", dict(MACHINE))
    report.table("t", Column("a", "a"), Column("b", "b")).add(a="x", b=summarize([1, 1.05]))
    report.check_noise()
    assert report.warnings == []


def test_loaded_machine_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("recstream.bench.report.load_average", lambda: 3.5)
    report = Report("unit", {**MACHINE, "load_average_at_start": 2.5})
    report.check_noise()
    assert [w.split(" on ")[0] for w in report.warnings] == [
        "load average 2.50",
        "load average 3.50",
    ]


def test_report_json(tmp_path: Path) -> None:
    report = sample_report()
    report.curve("c", "x", "y").point("s", 4096, summarize([1, 2, 3]))
    path = tmp_path / "r.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    cells = {r["subject"]: r for r in data["tables"][0]["rows"]}
    assert cells["jumpy"]["mb_s"] == {
        "median": 1000.0,
        "min": 500.0,
        "max": 1500.0,
        "n": 3,
        "samples": [500.0, 1500.0, 1000.0],
    }
    assert cells["inf"]["mb_s"] is None  # JSON has no infinity
    assert data["curves"][0]["series"]["s"][0]["x"] == 4096
    assert data["machine"]["cpu"] == "test cpu"


def test_table_refuses_unknown_columns() -> None:
    with pytest.raises(KeyError, match="unknown columns"):
        sample_report().tables[0].add(subject="x", speed=1.0)


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from recstream.bench.plot import PlotUnavailableError, write_plot

    report = sample_report()
    with pytest.raises(PlotUnavailableError, match="no curves"):
        write_plot(report, tmp_path / "none.png")
    curve = report.curve(
        "throughput", "segment", "MB/s", logx=True, x_is_size=True, hlines={"limit": 2.0}
    )
    for x in (4096, 16384, 65536):
        curve.point("enc", x, summarize([1.0, x / 4096]))
    write_plot(report, tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# --- the machine and processes ----------------------------------------------------


def test_cpu_model_from_cpuinfo() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
    assert cpu_model(text) == "AMD EPYC 7B13"
    assert cpu_model("processor : 0\nHardware : BCM2835\n") == "BCM2835"
    assert cpu_model("nothing here") is None


def test_cpu_features_name_what_changes_aes_speed() -> None:
    """Issue 20: every report says which of AES-NI, VAES, AVX-512 ... the run saw."""
    text = (
        "processor\t: 0\nflags\t\t: fpu sse2 avx2 aes pclmulqdq vaes avx sha_ni\n"
        "processor\t: 1\nflags\t\t: fpu avx512f\n"
    )
    assert cpu_features(text) == ["aes", "pclmulqdq", "vaes", "avx", "avx2", "sha_ni"]
    assert cpu_features("Features\t: fp asimd aes pmull sha2\n") == ["aes"]
    assert cpu_features("no flags line") == []
    m = describe_machine()
    assert isinstance(m["cpu_features"], list)
    line = machine_line({**m, "cpu_features": ["aes", "vaes"]})
    assert "[aes vaes]" in line
    assert "[no AES-NI/AVX flags]" in machine_line({**m, "cpu_features": []})


def test_describe_machine_names_the_versions() -> None:
    m = describe_machine()
    assert m["openssl"].startswith("OpenSSL")
    assert m["python"].startswith("CPython") or m["python"]
    assert m["cores"] >= 1 and m["usable_cores"] >= 1
    assert "uvloop" in m


@pytest.mark.skipif(not proc_mod.GNU_TIME.exists(), reason="needs GNU time")
def test_child_peak_rss_is_its_own_not_ours() -> None:
    # A child forked from a big process inherits its high-water mark in
    # ru_maxrss; the measurement must not.  Make this process big first.
    ballast = bytearray(256 << 20)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))
    res = run_measured(["true"])
    del ballast
    assert res.rss_method == "GNU time"
    assert res.peak_rss_kib is not None and res.peak_rss_kib < 32 << 10
    assert res.wall > 0


def test_polling_fallback_sees_a_child_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc_mod, "_has_gnu_time", lambda: False)
    code = "import time; b = bytearray(96 << 20); time.sleep(0.2)"
    res = run_measured([sys.executable, "-c", code])
    assert res.rss_method == "VmHWM polling"
    assert res.peak_rss_kib is not None and res.peak_rss_kib > 96 << 10


def test_a_failing_subject_stops_the_benchmark(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="exited with 3: boom"):
        run_measured([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    run_measured(["echo", "hi"], stdout=tmp_path / "out")
    assert (tmp_path / "out").read_text() == "hi\n"


# --- the command line --------------------------------------------------------------


def test_bench_help_lists_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for mode in MODES:
        assert mode.name in out


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    assert main(["bench", "bulk", "--size", "lots"]) == 2
    assert main(["bench", "segments", "--sizes", "64K", "--total", "16K"]) == 2
    assert main(["bench", "peers", "--only", "gpg"]) == 2
    assert main(["bench", "small", "--bits", "1024"]) == 2
    assert main(["bench", "live", "--json", str(tmp_path / "no" / "such.json")]) == 2


def test_the_command_line_does_not_import_the_harness() -> None:
    # `recstream encrypt` must not pay at start-up for benchmark modules.
    code = (
        "import sys, recstream.cli as c; c.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith('recstream.bench')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['recstream.bench', 'recstream.bench.modes', 'recstream.bench.stats']"


# --- each mode, tiny -------------------------------------------------------------------


def test_bulk(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = run_mode(capsys, tmp_path, "bulk --size 2M --repeat 2 --warmup 0 --rsa-bits 2048")
    subjects = rows(report)
    assert list(subjects) == [
        "cat",
        "cat > null",
        "cli encrypt",
        "cli decrypt",
        "cli encrypt > null",
        "cli decrypt > null",
        "cli encrypt, 1 thread",
        "cli decrypt, 1 thread",
        "cli encrypt > null, 1 thread",
        "cli decrypt > null, 1 thread",
        "library encrypt",
        "library decrypt",
        "library encrypt, 1 thread",
        "library decrypt, 1 thread",
        "AES-GCM encrypt_into",
        "AES-GCM decrypt_into",
    ]
    # issue 20: the multi-core path against the single-thread one in the same run,
    # and CPU per byte for every subject that is a process or runs in this one
    assert subjects["cli decrypt > null"]["to_one_thread"]["median"] > 0
    assert subjects["library encrypt"]["to_one_thread"]["median"] > 0
    assert subjects["cli encrypt, 1 thread"]["to_one_thread"] is None
    assert subjects["library decrypt"]["cpu_ns_b"]["median"] > 0
    for name, row in subjects.items():
        assert row["mb_s"]["n"] == 2 and row["mb_s"]["median"] > 0, name
        if name != "cat":
            assert row["to_cat"]["median"] > 0
    assert subjects["cat"]["peak_rss_mib"]["median"] < 32
    assert subjects["cli encrypt"]["to_aesgcm"]["median"] < 1  # a process is no raw AEAD
    fixed = rows(report, 1)  # what a process costs before its first byte
    assert list(fixed) == ["cli encrypt, 1 byte", "cli decrypt, 1 byte"]
    # a ratio of two ~0.1 s process timings: only its presence is stable enough to test
    assert fixed["cli encrypt, 1 byte"]["share"]["median"] > 0
    targets = rows(report, 2)
    assert {"cli encrypt >= 75% of cat", "cli decrypt peak RSS < 64 MiB"} <= set(targets)
    assert not list(tmp_path.glob("recstream-bench-*"))  # the work directory is gone


def test_segments_with_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "seg.png"
    report = run_mode(
        capsys, tmp_path, f"segments --sizes 4K,64K --total 256K --repeat 2 --plot {plot}"
    )
    table = rows(report)
    assert list(table) == ["4 KiB", "64 KiB"]
    assert all(table["4 KiB"][k]["n"] == 2 for k in ("aesgcm_encrypt", "cobblestone_decrypt"))
    assert set(report["curves"][0]["series"]) == {
        "AES-GCM encrypt_into",
        "AES-GCM decrypt_into",
        "Cobblestone-256 encrypt (feed)",
        "Cobblestone-256 decrypt (feed)",
    }
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_live(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = run_mode(
        capsys,
        tmp_path,
        "live --calls 20 --duration 1 --flush-interval 0.2 --screen 2 --screen-bitrate 1e6",
    )
    row = rows(report)["20"]
    # Whether 20 calls kept up with real time depends on the machine's load: the
    # verdict is reported, not asserted (no wall-clock assertions in tests).
    assert re.fullmatch(r"(yes|no) \(\d+/\d+\)", row["sustained"])
    assert row["segments"]["median"] >= 1  # screen streams fill segments within a second
    # segments reached the disk (a latency bound would be a timed assertion on a noisy CI)
    assert 0 < row["flush_p99_ms"]["median"] < 10_000
    assert report["machine"]["event_loop"] in ("uvloop", "asyncio")
    assert report["parameters"]["max_sustained_calls"] in (0, 20)
    assert any("2.048 s" in n for n in report["notes"])


def test_small(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = run_mode(capsys, tmp_path, "small --count 4 --seconds 1 --bits 2048 --repeat 2")
    row = rows(report)["RSA-2048"]
    assert row["encrypt"]["n"] == 2 and row["decrypt_n"]["median"] > 0
    assert row["wrap_share"]["median"] > 0  # timing ratios: no bound that noise can break
    assert row["unwrap_share"]["median"] > 0
    # Issue 20: decrypt --out-dir's own code over files, and AES off the GIL, in the
    # same rounds as the 2-thread unwraps (whose CPU use is recorded).
    files = rows(report, 1)["RSA-2048"]
    assert files["batch"]["n"] == 2 and files["batch_to_unwrap"]["median"] > 0
    assert files["gil_free_to_decrypt"]["median"] > 0
    assert files["unwrap_cpu"]["n"] == 2 and files["unwrap_cpu"]["median"] > 0
    # ... into a new directory (the CLI's default), and the CPU each recording cost.
    assert files["fresh"]["n"] == 2 and files["fresh_to_unwrap"]["median"] > 0
    cpu = rows(report, 2)["RSA-2048"]
    assert cpu["unwrap"]["median"] > 0 and cpu["batch"]["median"] > 0
    assert cpu["fresh_bound"]["n"] == 2 and cpu["batch_bound"]["median"] > 0
    assert report["parameters"]["work directory"].endswith(")")


def test_peers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = run_mode(
        capsys, tmp_path, "peers --size 1M --repeat 1 --warmup 0 --rsa-bits 2048 --only openssl,age"
    )
    ran = rows(report)
    assert "recstream" in ran and ran["recstream"].get("encrypt_speedup") is None
    for peer in ("openssl", "age"):
        skipped = any(n.startswith(f"{peer} skipped") for n in report["notes"])
        assert (peer in ran) != skipped, peer
        if peer in ran:
            assert math.isfinite(ran[peer]["decrypt_speedup"]["median"])
    if shutil.which("openssl"):
        assert "AES-256-GCM" in rows(report, 1)["openssl"]["method"]


def test_peers_to_null_with_the_single_thread_path(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 20: timed outputs to /dev/null, recstream on one thread in the same run."""
    report = run_mode(
        capsys,
        tmp_path,
        "peers --size 2M --repeat 1 --warmup 0 --rsa-bits 2048 --only openssl --null",
    )
    assert report["parameters"]["output"] == "/dev/null"
    ran = rows(report)
    one = ran["recstream 1 thread"]
    assert math.isfinite(one["encrypt_speedup"]["median"])
    assert math.isfinite(one["decrypt_speedup"]["median"])
    assert ran["recstream"]["decrypt_cpu"]["median"] > 0
    assert Path("/dev/null").is_char_device()  # never unlinked or replaced


def test_rcs(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    report = run_mode(
        capsys,
        tmp_path,
        "rcs --sizes 1M,2M --streams 2 --concurrency 2 --repeat 2 --listing 300 "
        "--listing-clients 2",
    )
    subjects = rows(report)
    assert list(subjects) == ["decrypt 1 MiB", "decrypt 2 MiB", "playback 1 MiB", "playback 2 MiB"]
    for name, row in subjects.items():
        assert row["mb_s"]["n"] == 2 and row["mb_s"]["min"] > 0, name
        first, last = row["first_p50_ms"]["median"] / 1e3, row["last_p99_s"]["median"]
        assert 0 < first <= last, name
        assert 0 < row["rss_before_mib"]["median"] <= row["peak_rss_mib"]["median"] < 1024, name
    servers = rows(report, 1)
    assert list(servers) == ["1 MiB", "2 MiB"]
    for server in servers.values():
        assert server["stopped"] == "exit 0 on SIGTERM"
        assert not Path(f"/proc/{server['pid']}").exists()  # reaped, not left running
        assert server["idle_rss_mib"] <= server["peak_rss_mib"]
    assert report["parameters"]["concurrency"] == 2
    assert any("flat in recording size" in n for n in report["notes"])
    listing = rows(report, 2)  # issue 13: listing latency, and playback beside it
    assert list(listing) == ["listing (listing requests)", "playback + listing (listing requests)"]
    assert all(0 < row["p50_ms"]["median"] <= row["p99_ms"]["median"] for row in listing.values())
    assert list(rows(report, 3)) == ["playback alone", "playback + listing"]
    assert any("listing p99 at 300 recordings" in n for n in report["notes"])
    assert not list(tmp_path.glob("recstream-bench-*"))  # the work directory is gone


def test_rcs_checks_what_it_receives_and_stops_the_server(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recstream.bench import rcs

    stops: list[str] = []
    stop = rcs._Server.stop
    monkeypatch.setattr(rcs._Server, "stop", lambda self: stops.append(stop(self)) or stops[-1])
    monkeypatch.setattr(rcs._Target, "expect", lambda self, offset, data: False)
    argv = ["bench", "rcs", "--sizes", "64K", "--streams", "1", "--dir", str(tmp_path)]
    assert main([*argv, "--quiet"]) == 1
    assert "not what was encrypted" in capsys.readouterr().err
    assert stops == ["exit 0 on SIGTERM"]
    assert main(["bench", "rcs", "--sizes", "0"]) == 2
    assert main(["bench", "rcs", "--concurrency", "1000"]) == 2


def test_rcs_says_when_peak_memory_grows_with_the_recording() -> None:
    from recstream.bench.rcs import _flatness

    report = Report("rcs", dict(MACHINE))
    _flatness(report, {16 << 20: 100 << 10, 256 << 20: 104 << 10})
    assert report.notes[-1].endswith("flat in recording size (bounded memory).")
    _flatness(report, {16 << 20: 100 << 10, 256 << 20: 356 << 10})
    assert report.warnings == [
        "server peak RSS 100.0 MiB with 16 MiB recordings, 356.0 MiB with 256 MiB "
        "(16x the size): it grows by 256.0 MiB with the recording size."
    ]

"""A/B of ``recstream bench live``: this checkout against another source tree, in pairs.

Usage: python bench/ab_live.py BASE_SRC [--calls 2000,5000,10000] [--duration 10]
                                        [--pairs 2] [--dir DIR] [--out DIR]

BASE_SRC is the ``src`` directory of another checkout (``git archive <rev> | tar x
-C /tmp/base``, then ``/tmp/base/src``).  Each pair runs the same ``bench live``
ramp on the base and on this checkout, each in a fresh process with the same
harness (order alternating), and the report is the per-pair ratio of CPU
microseconds per frame, this/base, for every step: the metric a loaded machine
distorts least.  The JSON reports go to ``--out``.  Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run(src: Path, args: argparse.Namespace, json_path: Path) -> dict[int, float]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    cmd = [sys.executable, "-m", "recstream", "bench", "live", "--calls", args.calls,
           "--duration", str(args.duration), "--keep-going", "--quiet",
           "--json", str(json_path)]  # fmt: skip
    if args.dir:
        cmd += ["--dir", args.dir]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads(json_path.read_text())["tables"][0]["rows"]
    return {int(r["calls"]): float(r["cpu_us_frame"]["median"]) for r in rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("base_src", type=Path)
    p.add_argument("--calls", default="2000,5000,10000")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--pairs", type=int, default=2)
    p.add_argument("--dir", default=None)
    p.add_argument("--out", type=Path, default=Path("."))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    ratios: dict[int, list[float]] = {}
    for i in range(args.pairs):
        order = [("base", args.base_src), ("new", HERE / "src")]
        if i % 2:
            order.reverse()
        got = {name: run(src, args, args.out / f"live-{name}-{i + 1}.json") for name, src in order}
        for calls, new in got["new"].items():
            base = got["base"][calls]
            ratios.setdefault(calls, []).append(new / base)
            load = os.getloadavg()[0]
            print(f"pair {i + 1}: {calls:>6} calls  CPU us/frame base {base:.2f}  new {new:.2f}"
                  f"  new/base {new / base:.2f}  load {load:.1f}", flush=True)  # fmt: skip
    for calls, rs in sorted(ratios.items()):
        print(f"{calls:>6} calls: new/base CPU per frame median {statistics.median(rs):.2f} "
              f"({min(rs):.2f}-{max(rs):.2f}) over {len(rs)} pairs")  # fmt: skip


if __name__ == "__main__":
    main()

"""A/B ``decrypt --out-dir``'s code: this checkout against another source tree, paired.

Usage: python bench/ab_outdir.py BASE_SRC [--count 500] [--pairs 2] [--dir DIR]

BASE_SRC is the ``src`` directory of another checkout (``git archive <rev> src | tar
-x -C /tmp/base`` gives ``/tmp/base/src``) whose ``recstream.bench.small._Subjects``
has ``batch_decrypt`` and ``_unwrap_range`` (any revision since issue 20's round 2).
Each pair runs the base and this checkout back to back, each in a fresh process
(order alternating), each doing ``--count`` decryptions of 60 s G.711 recordings
on 2 threads as ``bench small`` does, and the 2-thread RSA-3072 unwraps alone in
the same process.  Reported per side: process CPU per recording and the bound
it sets (unwrap CPU / --out-dir CPU: the --out-dir rate over the unwrap rate with
both cores busy), which load on the machine hardly moves.  Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from recstream.bench.fixtures import default_directory
from recstream.bench.machine import describe_machine, machine_line

HERE = Path(__file__).resolve().parents[1] / "src"
RUN = """
import json, resource, sys, tempfile, shutil
sys.path.insert(0, {src!r})
from pathlib import Path
from recstream.bench.fixtures import make_identity, random_bytes
from recstream.bench.small import SmallConfig, _Subjects
work = Path(tempfile.mkdtemp(dir={dir!r}))
try:
    cfg = SmallConfig(count={count}, bits=(3072,), threads=2, repeat=1)
    s = _Subjects(cfg, make_identity(work, 3072), random_bytes(480000), work)
    def cpu():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    out = {{}}
    for name, f in (("unwrap", s.threaded(s._unwrap_range, 2)), ("outdir", s.batch_decrypt(2))):
        f()  # warm: page cache, buffers
        c0 = cpu(); f(); out[name] = 1e3 * (cpu() - c0) / {count}
    print(json.dumps(out))
finally:
    shutil.rmtree(work, ignore_errors=True)
"""


def _side(src: Path, count: int, directory: str) -> dict[str, float]:
    code = RUN.format(src=str(src), count=count, dir=directory)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("base_src", type=Path)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--dir", default=str(default_directory()))
    ns = ap.parse_args()
    print(f"machine: {machine_line(describe_machine())}")
    print(f"work directory: {ns.dir}; {ns.count} recordings of 60 s G.711, RSA-3072, 2 threads")
    sides = {"base": ns.base_src.resolve(), "this": HERE}
    got: dict[str, list[dict[str, float]]] = {"base": [], "this": []}
    for i in range(ns.pairs):
        order = ("base", "this") if i % 2 == 0 else ("this", "base")
        for name in order:
            got[name].append(_side(sides[name], ns.count, ns.dir))
    for name, runs in got.items():
        unwrap = [r["unwrap"] for r in runs]
        outdir = [r["outdir"] for r in runs]
        bound = [u / o for u, o in zip(unwrap, outdir, strict=True)]
        print(
            f"{name}: CPU ms per recording: unwrap 2T {statistics.median(unwrap):.3f}, "
            f"--out-dir 2T {statistics.median(outdir):.3f} ({min(outdir):.3f}-{max(outdir):.3f}); "
            f"bound {statistics.median(bound):.3f} ({min(bound):.3f}-{max(bound):.3f})"
        )


if __name__ == "__main__":
    main()

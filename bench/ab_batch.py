"""A/B batch decryption: this checkout against another source tree, in paired runs.

Usage: python bench/ab_batch.py BASE_ROOT [--files 300] [--size 160K] [--pairs 8] [--dir DIR]

BASE_ROOT is another checkout (e.g. ``git worktree add /tmp/base <rev>``, or
``git archive <rev> | tar x -C /tmp/base``) whose ``bench/keystore_batch.py`` has
``bench_batch(files, ks_path, out, jobs)``.  One set of envelopes and one keystore
are made here; then each pair runs the base and this checkout's ``bench_batch``
back to back, each in a fresh process (order alternating), and the report is the
median and range of the per-pair ratio this/base: noise that hits both halves of
a pair cancels.  Benchmarks never gate CI.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from keystore_batch import PASSWORD, certificate, make_files, parse_size

from recstream.bench.machine import describe_machine, machine_line
from recstream.envelope import Recipient
from recstream.format import MediaKind
from recstream.keystore import KdfParams, create, update

HERE = Path(__file__).resolve().parents[1]
RUN = """
import sys
sys.path[:0] = [{src!r}, {bench!r}]
from pathlib import Path
from keystore_batch import bench_batch
files = sorted(Path({inp!r}).glob("*.rsv"))
fps, _ = bench_batch(files, Path({ks!r}), Path({out!r}), {jobs})
print(fps)
"""


def cpu_features() -> list[str]:
    """The CPU features the crypto hot paths use, as the kernel reports them."""
    wanted = ("aes", "pclmulqdq", "avx", "avx2", "vaes", "vpclmulqdq", "sha_ni", "avx512f")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # pragma: no cover - not Linux
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    return [f for f in wanted if f in flags]


def one(root: Path, inp: Path, ks: Path, out: Path, jobs: int) -> float:
    code = RUN.format(src=str(root / "src"), bench=str(root / "bench"), inp=str(inp),
                      ks=str(ks), out=str(out), jobs=jobs)  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=600)  # fmt: skip
    return float(proc.stdout.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--size", default="160K")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    machine = describe_machine()
    print(f"# {machine_line(machine)}; load {machine['load_average_at_start']}; "
          f"CPU features: {' '.join(cpu_features())}")  # fmt: skip
    from cryptography.hazmat.primitives.asymmetric import rsa

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        ks = root / "ks.rsk"
        create(ks, PASSWORD, kdf=KdfParams(64 * 1024, 1, 1))
        key = rsa.generate_private_key(65537, 2048)
        cert = certificate(key)
        with update(ks, PASSWORD) as k:
            k.add("acme", MediaKind.VOICE, cert, key, now=datetime.now(UTC))
        (root / "in").mkdir()
        make_files(root / "in", Recipient.from_certificate(cert), args.files,
                   parse_size(args.size))  # fmt: skip
        print(f"{args.files} files of {args.size} in {root}; {args.pairs} pairs per row")
        for jobs in (1, 2):
            ratios, this_fps, base_fps = [], [], []
            for i in range(args.pairs):
                order = [(HERE, this_fps), (args.base, base_fps)]
                for tree, sink in order if i % 2 else order[::-1]:
                    sink.append(one(tree, root / "in", ks, root / "out", jobs))
                ratios.append(this_fps[-1] / base_fps[-1])
            this, base = statistics.median(this_fps), statistics.median(base_fps)
            print(f"jobs={jobs}: this/base median {statistics.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f}); files/s this "
                  f"{this:.0f}, base {base:.0f}")  # fmt: skip


if __name__ == "__main__":
    main()

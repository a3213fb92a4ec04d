"""``recstream bench MODE``: the benchmark harness (:mod:`recstream.bench`).

Each mode prints a table, and optionally writes ``--json`` for machines and
``--plot`` (matplotlib) for its curves.  Progress goes to stderr, the report to
stdout.  Benchmarks never gate CI: nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from recstream.bench.modes import Mode, all_modes
from recstream.cli import EXIT_INTERNAL, UsageError, eprint
from recstream.cli._util import file_arg


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "bench",
        help="measure throughput, concurrency and latency against the machine's limits",
        description="Benchmark recstream on this machine, with the limits and the "
        "alternatives measured in the same run. Every figure is the median of repeated, "
        "interleaved runs with min and max; a noisy machine is reported as such. "
        "See bench/RESULTS.md for the latest figures.",
    )
    modes = p.add_subparsers(dest="bench_mode", metavar="MODE", parser_class=type(p))
    modes.required = True
    for mode in all_modes():
        mp = modes.add_parser(
            mode.name,
            help=mode.help,
            description=mode.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mode.add_arguments(mp)
        _add_common(mp)
        mp.set_defaults(func=cmd_bench, bench=mode)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", metavar="FILE", type=file_arg, help="also write the report as JSON to FILE"
    )
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        type=file_arg,
        help="draw the report's curves to FILE.png (matplotlib)",
    )
    p.add_argument(
        "--dir",
        type=lambda text: Path(file_arg(text)),
        metavar="DIR",
        help="work directory for the files a run makes (default: /dev/shm, a tmpfs)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress messages on stderr")


def cmd_bench(args: argparse.Namespace) -> int:
    mode: Mode = args.bench
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        msg = "--plot needs matplotlib: pip install 'recstream[bench]'"
        raise UsageError(msg)
    for option in ("json", "plot"):
        target = getattr(args, option)
        if target and not Path(target).resolve().parent.is_dir():
            msg = f"--{option}: directory does not exist: {Path(target).parent}"
            raise UsageError(msg)

    from recstream.bench.fixtures import BenchError
    from recstream.bench.plot import write_plot

    def progress(message: str) -> None:
        if not args.quiet:
            eprint(f"bench {mode.name}: {message}")

    try:
        report = mode.run(args, progress)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    except BenchError as exc:
        eprint(f"recstream bench {mode.name}: error: {exc}")
        return EXIT_INTERNAL
    print(report.render())
    if args.json:
        report.write_json(args.json)
    if args.plot:
        if report.curves:
            write_plot(report, args.plot)
        else:
            eprint(f"recstream bench {mode.name}: no curves in this mode; --plot ignored")
    return 0

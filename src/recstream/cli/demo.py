"""``recstream demo``: the whole story on built-in defaults, narrated."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from recstream.cli import eprint
from recstream.demo import run_demo


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on built-in defaults",
        description="Make a throwaway CA and recording certificate, encrypt a synthetic "
        "call recording, inspect it, decrypt it, and check the result.",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        help="where to write the demo files (default: a new temporary directory)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="recstream-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for line in run_demo(workdir):
        print(line, flush=True)
    eprint(f"demo finished in {time.perf_counter() - start:.1f} s; files in {workdir}")
    return 0

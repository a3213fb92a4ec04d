"""``recstream demo``: the whole story on built-in defaults, narrated."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from recstream.cli._util import file_arg


def register(sub: argparse._SubParsersAction[Any]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on built-in defaults",
        description="Provision a CA and voice and screen recording certificates in a fresh "
        "keystore, record the sample call and screen recording through the live hook, mux "
        "them, decrypt the result for playback and check it with the media library.",
    )
    p.add_argument(
        "--workdir",
        metavar="DIR",
        type=file_arg,
        help="where to write the demo files (default: a new temporary directory)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="then start the Recording Crypto Server with its player page on localhost "
        "and print its address (Ctrl-C stops it)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8443,
        help="port for --serve (default: %(default)s; 0 picks a free one)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="recstream-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    from recstream.demo import run_demo  # PyAV, the keystore, the hook: only for the demo

    for line in run_demo(workdir):
        print(line, flush=True)
    if not args.serve:
        return 0
    from recstream.cli._serving import serve_config_file
    from recstream.demo import add_demo_player, serve_config

    config = serve_config(workdir, args.port)
    user, password_file = add_demo_player(config, workdir)
    print(
        f"7. starting the Recording Crypto Server with the player page ({config.name}); "
        f"sign in as '{user}' with the password in {password_file}",
        flush=True,
    )
    return serve_config_file(config, banner=lambda url: print(f"   open {url}", flush=True))

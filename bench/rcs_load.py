"""Load test of the Recording Crypto Server on loopback: now ``recstream bench rcs``.

The implementation lives in :mod:`recstream.bench.rcs`; this script is kept so
that the old command still works, and passes its arguments through::

    python bench/rcs_load.py [--sizes 16M,64M,256M] [--streams 16] [--concurrency 8]
                             [--repeat 3] [--time-limit 150] [--json FILE] [--dir DIR]

which is ``recstream bench rcs`` with the same options (see its ``--help``).
Both endpoints (decrypt, and playback with Range) run in every round.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from recstream.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    return cli_main(["bench", "rcs", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

"""``recstream pki ...``: certificate provisioning (being built for issue 4)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Register the ``pki`` command group."""

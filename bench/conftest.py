"""pytest-benchmark suites for recstream's hot paths (not part of the test run).

Run them with one command from the repository root::

    .venv/bin/python -m pytest bench/ --benchmark-only

(``pyproject.toml`` has ``testpaths = ["tests"]``, so the default ``pytest``
never collects this directory.)  Every run records the machine and the
versions in the benchmark JSON (``--benchmark-json FILE``), and each suite
carries its raw ``AESGCM`` or RSA baseline beside the recstream code it
measures: compare within a run, not across machines.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from recstream.bench.machine import describe_machine


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info["recstream"] = describe_machine()


@pytest.fixture(scope="session")
def rsa_keys() -> dict[int, rsa.RSAPrivateKey]:
    return {bits: rsa.generate_private_key(65537, bits) for bits in (2048, 3072, 4096)}

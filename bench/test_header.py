"""Header parse and build: the per-recording cost before any media byte."""

from __future__ import annotations

import os
from typing import Any

import pytest

from recstream.bench.fixtures import make_identity
from recstream.envelope import Recipient, build_header, new_metadata
from recstream.format import Header, MediaKind, parse_header


@pytest.fixture(scope="module")
def recipients(tmp_path_factory: pytest.TempPathFactory) -> list[Recipient]:
    """16 distinct RSA-2048 recipients (the format's maximum)."""
    out = []
    for i in range(16):
        directory = tmp_path_factory.mktemp(f"keys{i}")
        out.append(make_identity(directory, 2048).recipient)
    return out


def _metadata() -> Any:
    return new_metadata(
        recording_id="call-0001",
        tenant="acme",
        media_kind=MediaKind.VOICE,
        media_type="audio/basic",
        created_ms=0,
    )


@pytest.mark.parametrize("count", [1, 16], ids=["1-recipient", "16-recipients"])
def test_parse_header(benchmark: Any, recipients: list[Recipient], count: int) -> None:
    header = build_header(_metadata(), recipients[:count], os.urandom(32))
    benchmark.group = "header: parse"
    benchmark.extra_info["header_bytes"] = len(header)
    result = benchmark(parse_header, header)
    assert isinstance(result, Header)


def test_build_header_one_recipient(benchmark: Any, recipients: list[Recipient]) -> None:
    """Serialize, wrap (RSA-2048 OAEP) and MAC: dominated by the wrap."""
    benchmark.group = "header: build"
    benchmark(build_header, _metadata(), recipients[:1], os.urandom(32))

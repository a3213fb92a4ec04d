"""Issue 12: the service's HTTP error classes live in the service, not in the core tree."""

from __future__ import annotations

import ast
from pathlib import Path

import recstream.errors as core
from recstream.errors import RecstreamError
from recstream.service import errors as service_errors
from recstream.service.http import HTTP_STATUS, status_for

SRC = Path(__file__).resolve().parents[2] / "src" / "recstream"


def test_core_errors_know_nothing_of_the_service() -> None:
    for name in service_errors.__all__:
        assert not hasattr(core, name), name
    text = (SRC / "errors.py").read_text()
    assert "HTTP" not in text and "recstream.service" not in text


def test_every_service_error_is_a_recstream_error_with_a_status() -> None:
    for name in service_errors.__all__:
        cls = getattr(service_errors, name)
        assert issubclass(cls, RecstreamError)
        exc = cls.__new__(cls)
        assert status_for(exc)[0] in {
            400,
            401,
            403,
            404,
            408,
            409,
            413,
            415,
            416,
            422,
            429,
            500,
            502,
            504,  # issue 18: the recordings store timed out
        }
    assert service_errors.ServiceError not in HTTP_STATUS  # every leaf is named


def test_only_the_service_and_its_command_import_service_errors() -> None:
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("service/") or rel == "cli/serve.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("recstream.service.errors"), rel

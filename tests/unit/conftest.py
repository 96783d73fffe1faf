"""The unit tier: pure and in-memory. A test here that asks for Postgres or a simulator, or
opens a network socket, fails with a message saying where it belongs."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest

OUT_OF_TIER_FIXTURES = frozenset({"pg_server_url", "template_db", "db_url", "world"})


@pytest.fixture(autouse=True)
def _unit_tier_rules(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    used = OUT_OF_TIER_FIXTURES.intersection(request.fixturenames)
    if used:
        pytest.fail(f"unit tests use no {sorted(used)}: move the test to tests/integration")

    def refuse(self: socket.socket, *args: Any) -> NoReturn:
        raise AssertionError(
            f"unit tests open no sockets ({self.family.name} {args!r}): "
            "move the test to tests/integration"
        )

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)
    yield

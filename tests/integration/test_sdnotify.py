"""sd_notify against a real AF_UNIX datagram socket, the way systemd listens for it."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from katsyncd import sdnotify

RECV_TIMEOUT_SECONDS = 2.0


class Listener:
    """A bound datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": env_value}

    def receive(self) -> str:
        return self.sock.recv(4096).decode()


def _bind(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(RECV_TIMEOUT_SECONDS)
    sock.bind(address)
    return sock


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = tmp_path / "notify.sock"
    with _bind(str(path)) as sock:
        yield Listener(sock, str(path))


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"katsyncd-test-{uuid.uuid4().hex}"
    with _bind("\0" + name) as sock:
        yield Listener(sock, "@" + name)


def test_unset_socket_is_a_no_op() -> None:
    assert sdnotify.notify("READY=1", env={}) is False
    assert sdnotify.ready(env={"NOTIFY_SOCKET": ""}) is False


def test_ready_reaches_a_path_socket(listener: Listener) -> None:
    assert sdnotify.ready(env=listener.env) is True
    assert listener.receive() == "READY=1"


def test_ready_reaches_an_abstract_socket(abstract_listener: Listener) -> None:
    assert sdnotify.ready(env=abstract_listener.env) is True
    assert abstract_listener.receive() == "READY=1"


def test_reads_os_environ_by_default(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", listener.env["NOTIFY_SOCKET"])
    assert sdnotify.stopping() is True
    assert listener.receive() == "STOPPING=1"


def test_reloading_carries_a_monotonic_timestamp(listener: Listener) -> None:
    before = time.monotonic_ns() // 1_000
    assert sdnotify.reloading(env=listener.env)
    after = time.monotonic_ns() // 1_000
    first, second = listener.receive().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (sdnotify.stopping, "STOPPING=1"),
        (sdnotify.watchdog, "WATCHDOG=1"),
    ],
)
def test_simple_states(listener: Listener, send: Callable[..., bool], expected: str) -> None:
    assert send(env=listener.env) is True
    assert listener.receive() == expected


def test_status_is_one_line(listener: Listener) -> None:
    assert sdnotify.status("syncing 2 stores\nbacklog 0", env=listener.env)
    assert listener.receive() == "STATUS=syncing 2 stores backlog 0"


def test_multi_field_state_is_one_datagram(listener: Listener) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=up", env=listener.env)
    assert listener.receive() == "READY=1\nSTATUS=up"


def test_unreachable_socket_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        sdnotify.ready(env={"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})


def test_unsupported_socket_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        sdnotify.ready(env={"NOTIFY_SOCKET": "vsock:2:1234"})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "garbage"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected

"""sd_notify(3) without libsystemd: tell systemd (Type=notify) what the daemon is doing.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named by
``$NOTIFY_SOCKET``; a name starting with ``@`` is a Linux abstract socket. When the variable is
unset (not under systemd, tests, containers) every call is a no-op that returns False.

Only the main process may notify (the unit uses the default ``NotifyAccess=main``); the
embedded Postgres children are built without systemd support and never send anything.

A socket that is named but cannot be reached raises ``OSError``: under Type=notify that is a
broken setup, and a loud error at start beats systemd silently timing the start out.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

USEC_PER_SECOND = 1_000_000


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` pairs) to systemd.

    Returns True when sent, False when ``$NOTIFY_SOCKET`` is unset or empty.
    """
    address = _socket_address((os.environ if env is None else env).get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def _socket_address(raw: str) -> str | None:
    """Turn ``$NOTIFY_SOCKET`` into a ``connect()`` address; None when it is unset."""
    if not raw:
        return None
    if raw.startswith("@"):
        return "\0" + raw[1:]  # abstract namespace: leading NUL instead of "@"
    if raw.startswith("/"):
        return raw
    # systemd >= 254 also knows "vsock:CID:PORT"; katsyncd runs on a host or in a pod, never in
    # a VM that systemd supervises from outside, and RestrictAddressFamilies forbids AF_VSOCK.
    raise ValueError(f"unsupported NOTIFY_SOCKET address {raw!r}: need an absolute path or @name")


def ready(*, env: Mapping[str, str] | None = None) -> bool:
    """Start-up (or a reload) is complete: the service is serving."""
    return notify("READY=1", env=env)


def reloading(*, env: Mapping[str, str] | None = None) -> bool:
    """A reload has begun; send ``ready()`` when it is done (also after a failed reload).

    ``MONOTONIC_USEC`` is required by ``Type=notify-reload`` (systemd >= 253) so it can tell
    this reload from an older one; earlier systemd versions ignore the field.
    """
    now_usec = time.monotonic_ns() // 1_000  # CLOCK_MONOTONIC, as systemd expects
    return notify(f"RELOADING=1\nMONOTONIC_USEC={now_usec}", env=env)


def stopping(*, env: Mapping[str, str] | None = None) -> bool:
    """Shutdown has begun (SIGTERM received); systemd shows the unit as deactivating."""
    return notify("STOPPING=1", env=env)


def watchdog(*, env: Mapping[str, str] | None = None) -> bool:
    """Keep-alive ping for ``WatchdogSec=``; send it every ``watchdog_interval() / 2``."""
    return notify("WATCHDOG=1", env=env)


def status(text: str, *, env: Mapping[str, str] | None = None) -> bool:
    """One line of free text shown by ``systemctl status`` (newlines are flattened)."""
    return notify("STATUS=" + " ".join(text.splitlines()), env=env)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds, or None when this process has no watchdog.

    Mirrors sd_watchdog_enabled(3): ``WATCHDOG_USEC`` must be a positive integer, and when
    ``WATCHDOG_PID`` is set it must be this process (children inherit the environment).
    """
    env = os.environ if env is None else env
    usec = _positive_int(env.get("WATCHDOG_USEC", ""))
    if usec is None:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text and _positive_int(pid_text) != os.getpid():
        return None
    return usec / USEC_PER_SECOND


def _positive_int(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None

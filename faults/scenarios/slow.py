"""Slow clients: ``slow_clients`` connections to the webhook endpoint, half trickling their
headers one byte a second (slowloris), half sending headers then trickling a declared 64 KiB
body. How many the daemon closes within ``slow_cap`` seconds, how long that took, and its RSS
before and after; then every client is closed and the daemon must still answer."""

from __future__ import annotations

import asyncio
import contextlib
import time

from faults.common import Context, Daemon, make_world, wait_right
from faults.report import Expect, Row

HEAD = b"POST /webhooks/katana HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


async def _client(port: int, slow_head: bool, cap: float) -> float | None:
    """Seconds until the server closed the connection, or None if it was still open at cap."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0.0
    try:
        if slow_head:
            payload = HEAD + b"X-Slow: " + b"a" * 10_000
        else:
            writer.write(HEAD + b"Content-Length: 65536\r\nx-sha2-signature: 00\r\n\r\n{")
            payload = b" " * 65_535
        i = 0
        while time.monotonic() - started < cap:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reader.read(1024), 1.0)
                return time.monotonic() - started  # an answer (408, 400…) or EOF: done
            if i < len(payload):
                writer.write(payload[i : i + 1])
                i += 1
                await writer.drain()
        return None
    except (ConnectionError, OSError):
        return time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def slow_clients(ctx: Context) -> list[Row]:
    p = ctx.profile
    name = "slow clients"
    world = await make_world(ctx, stores=1)
    daemon = Daemon(ctx, world, "slow", subscribe=False)
    try:
        await daemon.start()
        await wait_right(world, p.converge_cap)
        rss_before = daemon.rss_kib()
        tasks = [
            asyncio.create_task(_client(daemon.port, i % 2 == 0, p.slow_cap))
            for i in range(p.slow_clients)
        ]
        await asyncio.sleep(min(2.0, p.slow_cap / 2))
        rss_during = daemon.rss_kib()
        closed = await asyncio.gather(*tasks)
        rss_after = daemon.rss_kib()
        alive = daemon.alive() and await daemon.healthy()
        done = [c for c in closed if c is not None]
        ctx.say(
            name,
            f"closed by the server {len(done)}/{len(closed)}; RSS {rss_before} → "
            f"{rss_during} → {rss_after} KiB; alive {alive}",
        )
    finally:
        await daemon.stop()
        await world.stop()
    growth = None if rss_before is None or rss_after is None else (rss_after - rss_before) / 1024
    peak = None if rss_before is None or rss_during is None else (rss_during - rss_before) / 1024
    return [
        Row(
            name,
            f"closed by the server within {p.slow_cap:g} s",
            len(done),
            "",
            Expect(p.slow_clients, equal=True),
            note=f"of {p.slow_clients}",
        ),
        Row(name, "slowest close", max(done) if done else None, "s"),
        Row(
            name,
            "RSS growth while held / after",
            growth,
            "MiB",
            Expect(50, unit=" MiB"),
            note=f"{peak if peak is None else round(peak, 1)} MiB while held",
        ),
        Row(name, "daemon still healthy", float(alive), "", Expect(1, equal=True), True),
    ]

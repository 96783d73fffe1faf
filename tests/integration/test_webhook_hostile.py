"""Issue 11: hostile input at POST /webhooks/katana (findings 3, 5, 6 and the bounded queue).

One bad signed webhook is a 400 for itself only; unauthenticated clients cannot pin memory or
connections (refused on the header, bodies read in bounded slots under a timeout, headers under
a timeout); nothing a client does is counted as a database outage."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest

from katsyncd.config import build_config
from katsyncd.daemon import Daemon
from katsyncd.flush import LEADING_MAX_ARRIVALS
from katsyncd.ingest import CommitterFull, Effect, GroupCommitter, _Pending, data_fault
from katsyncd.sim.world import World, free_port
from tests.support.harness import eventually, katana_signature, make_config_data, metric

pytestmark = pytest.mark.timeout(120)

RECEIVED = "katsyncd_webhooks_received_total"
STOCK = "current_inventory.product_updated"
WELL_FORMED_WRONG = "0" * 64  # passes the shape check, fails the HMAC


@asynccontextmanager
async def daemon_with(world: World, db_url: str, **server: Any) -> AsyncIterator[Daemon]:
    """The daemon in this process with ``[server]`` settings of the test's choosing."""
    port = free_port()
    data = make_config_data(world, db_url, port, debounce_seconds=30, max_delay_seconds=60)
    data["server"].update(server)
    daemon = Daemon(build_config(data, source="<test>"))
    task = asyncio.create_task(daemon.run(install_signals=False))
    await eventually(lambda: daemon.ready or task.done(), 30)
    if task.done():
        task.result()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


def stock_event(oid: object) -> bytes:
    return json.dumps({"action": STOCK, "object": {"id": oid}}).encode()


def outcomes(d: Daemon, outcome: str) -> float:
    """Webhooks counted under ``outcome``, whatever their event label."""
    total = 0.0
    for fam in d.metrics.registry.collect():
        for s in fam.samples:
            if s.name == RECEIVED and s.labels.get("outcome") == outcome:
                total += s.value
    return total


def server_connections(port: int) -> int:
    """Open TCP connections on the daemon's side of its listening port."""
    return sum(
        1
        for c in psutil.Process().net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def head(port: int, headers: dict[str, str], length: int) -> bytes:
    lines = [
        "POST /webhooks/katana HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def raw_request(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def status_of(reader: asyncio.StreamReader, limit: float = 5.0) -> int:
    line = await asyncio.wait_for(reader.readline(), limit)
    return int(line.split()[1])


# ----- finding 3: one bad webhook is that webhook's problem --------------------------------
async def test_one_bad_webhook_among_300_good_ones(world: World, db_url: str) -> None:
    async with daemon_with(world, db_url) as d:
        url = f"http://127.0.0.1:{d.http_port}/webhooks/katana"
        bad_bodies = [
            stock_event("12345678901234567890"),
            stock_event(2**63),
            stock_event("\u00b2"),  # isdigit() but not a number: no id, ignored
            b'{"action": "sales_order.created", "object": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        ]

        async def post(s: aiohttp.ClientSession, body: bytes) -> int:
            headers = {"x-sha2-signature": katana_signature(body)}
            async with s.post(url, data=body, headers=headers) as r:
                return r.status

        conn = aiohttp.TCPConnector(limit=400)
        async with aiohttp.ClientSession(connector=conn) as s:
            good = [post(s, stock_event(1000 + i)) for i in range(300)]
            bad = [post(s, b) for b in bad_bodies]
            statuses = await asyncio.gather(*good[:150], *bad, *good[150:])
        good_statuses = statuses[:150] + statuses[150 + len(bad) :]
        assert good_statuses == [200] * 300
        assert statuses[150 : 150 + len(bad)] == [400, 400, 200, 400]
        stale = {r[0] for r in await d.db.pool.fetch("SELECT variant_id FROM stale_variant")}
        # every good one was marked durably; the first few may already have been read on
        # their leading edge (and their marks cleared)
        assert len(set(range(1000, 1300)) - stale) <= LEADING_MAX_ARRIVALS
        assert metric(d, "katsyncd_debounce_marks_total") >= 300
        assert outcomes(d, "db_unavailable") == 0 and outcomes(d, "malformed") == 3


async def test_group_commit_isolates_the_webhook_whose_data_postgres_refuses(
    db_url: str,
) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        seen: list[Effect] = []
        committer = GroupCommitter(lambda: pool, on_committed=seen.extend)
        stop = asyncio.Event()
        runner = asyncio.create_task(committer.run(stop))
        good = [committer.submit((Effect("variant", i),), "test") for i in range(1, 51)]
        bad = committer.submit((Effect("variant", 2**63),), "test")  # not a bigint
        results = await asyncio.gather(*good[:25], bad, *good[25:], return_exceptions=True)
        stop.set()
        await asyncio.wait_for(runner, 5)
        assert [r for i, r in enumerate(results) if i != 25] == [None] * 50
        assert data_fault(results[25])  # asyncpg: value out of int64 range
        rows = await pool.fetch("SELECT variant_id FROM stale_variant")
        assert {r[0] for r in rows} == set(range(1, 51))
        assert {e.ident for e in seen} == set(range(1, 51))
    finally:
        await pool.close()


async def test_the_commit_queue_is_bounded(db_url: str) -> None:
    pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
    assert pool is not None
    try:
        committer = GroupCommitter(lambda: pool, on_committed=lambda _: None, max_queue=2)
        waiting = [
            asyncio.create_task(committer.submit((Effect("variant", i),), "test")) for i in (1, 2)
        ]
        await eventually(lambda: committer._queue.full())  # no run(): nothing is taken
        with pytest.raises(CommitterFull):
            await committer.submit((Effect("variant", 3),), "test")
        stop = asyncio.Event()
        runner = asyncio.create_task(committer.run(stop))
        await asyncio.wait_for(asyncio.gather(*waiting), 5)  # the queued ones still commit
        await committer.submit((Effect("variant", 3),), "test")  # and there is room again
        stop.set()
        await asyncio.wait_for(runner, 5)
        assert await pool.fetchval("SELECT count(*) FROM stale_variant") == 3
    finally:
        await pool.close()


async def test_a_full_commit_queue_answers_503_queue_full(world: World, db_url: str) -> None:
    async with daemon_with(world, db_url) as d:
        assert d.parts is not None
        # As if 10,000 webhooks were waiting: a queue that is full and not being emptied.
        full: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=1)
        full.put_nowait(_Pending((Effect("variant", 1),), "test"))
        d.parts.committer._queue = full
        body = stock_event(5)
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{d.http_port}/webhooks/katana",
                data=body,
                headers={"x-sha2-signature": katana_signature(body)},
            ) as r,
        ):
            assert r.status == 503 and "retry" in (await r.json())["error"]
        assert outcomes(d, "queue_full") == 1 and outcomes(d, "db_unavailable") == 0


# ----- finding 6: clients cannot fake a database outage ------------------------------------
async def test_non_ascii_signature_and_hang_ups_are_not_database_outages(
    world: World, db_url: str
) -> None:
    async with daemon_with(world, db_url) as d:
        port = d.http_port
        assert port is not None
        body = stock_event(7)
        reader, writer = await raw_request(
            port, head(port, {"x-sha2-signature": "é" * 64}, len(body)) + body
        )
        assert await status_of(reader) == 401
        writer.close()
        # Hang up mid-body (the signature is well formed, so the body is being read).
        reader, writer = await raw_request(
            port, head(port, {"x-sha2-signature": WELL_FORMED_WRONG}, 1000) + b'{"action": '
        )
        await eventually(lambda: server_connections(port) >= 1)
        writer.close()
        await eventually(lambda: outcomes(d, "client_gone") == 1)
        assert outcomes(d, "bad_signature") == 1
        assert outcomes(d, "db_unavailable") == 0
        assert metric(d, RECEIVED, event="unknown", outcome="error") == 0


# ----- finding 5: unauthenticated clients cannot pin memory or connections -----------------
async def test_refused_on_the_headers_before_any_body_is_sent(world: World, db_url: str) -> None:
    async with daemon_with(world, db_url, max_body_bytes=10_000) as d:
        port = d.http_port
        assert port is not None
        for headers, length, expected in (
            ({}, 5_000, 401),  # no signature
            ({"x-sha2-signature": "nothex"}, 5_000, 401),
            ({"x-sha2-signature": WELL_FORMED_WRONG}, 1_000_000, 413),
        ):
            # Only the headers: an answer now proves the body is not waited for.
            reader, writer = await raw_request(port, head(port, headers, length))
            assert await status_of(reader, limit=3) == expected
            writer.close()
        assert outcomes(d, "bad_signature") == 2 and outcomes(d, "too_large") == 1


async def test_a_stalled_body_is_answered_408_and_closed(world: World, db_url: str) -> None:
    async with daemon_with(world, db_url, body_timeout_seconds=1.0) as d:
        port = d.http_port
        assert port is not None
        started = time.monotonic()
        reader, writer = await raw_request(
            port, head(port, {"x-sha2-signature": WELL_FORMED_WRONG}, 1000) + b"{"
        )
        assert await status_of(reader, limit=5) == 408
        await asyncio.wait_for(reader.read(), 5)  # then EOF: the server closed it
        assert time.monotonic() - started < 1.0 + 1.0 + 1.5  # timeout + linger + slack
        writer.close()
        assert outcomes(d, "body_timeout") == 1


async def test_slow_headers_are_closed_within_the_header_timeout(world: World, db_url: str) -> None:
    async with daemon_with(world, db_url, header_timeout_seconds=1.0) as d:
        port = d.http_port
        assert port is not None
        clients = [
            await raw_request(port, b"POST /webhooks/katana HTTP/1.1\r\nHost: x\r\n")
            for _ in range(200)
        ]
        await eventually(lambda: server_connections(port) >= 200)
        started = time.monotonic()
        await eventually(lambda: server_connections(port) == 0, limit=10)
        assert time.monotonic() - started < 1.0 + 2 * 0.25 + 1.0  # timeout + two sweeps + slack
        for reader, writer in clients:
            assert await asyncio.wait_for(reader.read(), 2) == b""  # closed, no answer
            writer.close()
        # A real webhook on a fresh connection is still served.
        body = stock_event(9)
        reader, writer = await raw_request(
            port, head(port, {"x-sha2-signature": katana_signature(body)}, len(body)) + body
        )
        assert await status_of(reader) == 200
        writer.close()


ATTACKER = r"""
import asyncio, sys
port, n, length, sent = (int(a) for a in sys.argv[1:5])
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write((f"POST /webhooks/katana HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
             f"x-sha2-signature: {'0' * 64}\r\n\r\n").encode())
    w.write(b"x" * sent)
    await w.drain()
    return r, w
async def main():
    conns = await asyncio.gather(*(one() for _ in range(n)))
    print("sent", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"""


async def test_stalled_unverified_bodies_do_not_pin_memory(world: World, db_url: str) -> None:
    """150 clients each stall after 900 kB of a 1 MB body with a well-formed but wrong
    signature (finding 5: RSS 90 → 255 MB, never closed). The clients run in another process,
    so this process's RSS is the daemon's."""
    async with daemon_with(world, db_url, body_timeout_seconds=3.0) as d:
        port = d.http_port
        assert port is not None
        proc = psutil.Process()
        baseline = proc.memory_info().rss
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            ATTACKER,
            str(port),
            "150",
            "1000000",
            "900000",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert attacker.stdout is not None
            line = await asyncio.wait_for(attacker.stdout.readline(), 30)
            assert line.strip() == b"sent"
            peak = baseline

            def all_closed() -> bool:
                nonlocal peak
                peak = max(peak, proc.memory_info().rss)
                return server_connections(port) == 0

            await eventually(all_closed, limit=3.0 + 1.0 + 6.0)
        finally:
            attacker.kill()
            await attacker.wait()
        grown_mb = (peak - baseline) / 1e6
        print(f"RSS baseline {baseline / 1e6:.0f} MB, peak growth {grown_mb:.0f} MB")
        assert grown_mb < 60, f"RSS grew {grown_mb:.0f} MB under 150 stalled bodies"
        timed_out = outcomes(d, "body_timeout") + outcomes(d, "busy")
        assert timed_out == 150

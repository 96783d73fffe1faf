"""POST /webhooks/katana against the running daemon: bad input gets a clear error and loses
nothing; an acknowledged event is durable; Postgres down means 503 so Katana retries."""

from __future__ import annotations

import io
import json
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from katsyncd.daemon import Daemon
from katsyncd.sim.world import WEBHOOK_TOKEN, World
from tests.support.harness import eventually, get_json, katana_signature, running_daemon
from tests.support.pg import with_db

pytestmark = pytest.mark.timeout(90)


def signed(payload: object, token: str = WEBHOOK_TOKEN) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    sig = katana_signature(body, token)
    return body, {"x-sha2-signature": sig, "Content-Type": "application/json"}


async def post(d: Daemon, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{d.http_port}/webhooks/katana"
    data = io.BytesIO(body) if len(body) > 1_000_000 else body
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=headers) as r:
        return r.status, await r.json()


async def is_ready(d: Daemon) -> bool:
    status, _ = await get_json(d, "/readyz")
    return status == 200


async def accepted(d: Daemon, body: bytes, headers: dict[str, str]) -> bool:
    status, _ = await post(d, body, headers)
    return status == 200


async def stale(d: Daemon) -> tuple[set[int], set[int]]:
    v = {r[0] for r in await d.db.pool.fetch("SELECT variant_id FROM stale_variant")}
    o = {r[0] for r in await d.db.pool.fetch("SELECT so_id FROM stale_sales_order")}
    return v, o


def event(action: str, oid: object) -> dict[str, object]:
    return {
        "resource_type": action.split(".")[0],
        "action": action,
        "webhook_id": 1,
        "object": {"id": oid, "status": "NOT_SHIPPED", "href": "https://x/y"},
    }


async def test_acknowledged_events_are_durable(world: World, db_url: str) -> None:
    async with running_daemon(
        world, db_url, subscribe=False, debounce_seconds=30, max_delay_seconds=60
    ) as d:
        status, _ = await post(d, *signed(event("current_inventory.product_updated", "424242")))
        assert status == 200
        body, headers = signed(event("sales_order.updated", 77))
        headers["x-sha2-signature"] = "sha256=" + headers["x-sha2-signature"]
        assert (await post(d, body, headers))[0] == 200
        assert await stale(d) == ({424242}, {77})


async def test_bad_signature_malformed_oversized_and_unknown(world: World, db_url: str) -> None:
    async with running_daemon(
        world, db_url, subscribe=False, debounce_seconds=30, max_delay_seconds=60
    ) as d:
        body, headers = signed(event("current_inventory.product_updated", 1), token="f" * 16)
        status, err = await post(d, body, headers)
        assert (status, "signature" in str(err["error"])) == (401, True)
        body, _ = signed(event("current_inventory.product_updated", 2))
        assert (await post(d, body, {}))[0] == 401  # no signature at all
        raw = b'{"action": "sales_order.created", "object": {'
        sig = katana_signature(raw)
        status, err = await post(d, raw, {"x-sha2-signature": sig})
        assert (status, "malformed JSON" in str(err["error"])) == (400, True)
        big = {"action": "sales_order.created", "object": {"id": 3}, "pad": "x" * 1_100_000}
        status, _ = await post(d, *signed(big))
        assert status == 413
        status, reply = await post(d, *signed(event("material.updated", 4)))
        assert (status, reply["effects"]) == (200, 0)
        assert await stale(d) == (set(), set())  # nothing recorded from any of them
        _, metrics = await get_text(d, "/metrics")
        assert 'outcome="bad_signature"' in metrics and 'outcome="too_large"' in metrics


async def get_text(d: Daemon, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{d.http_port}{path}") as r:
        return r.status, await r.text()


async def test_postgres_down_answers_503_then_recovers(world: World, db_url: str) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    admin_url = with_db(db_url, "postgres")  # keeps ?host=… of an embedded server's URL
    async with running_daemon(
        world, db_url, subscribe=False, debounce_seconds=30, max_delay_seconds=60
    ) as d:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            status, err = await post(d, *signed(event("current_inventory.product_updated", 9)))
            assert status == 503 and "retry" in str(err["error"])
            ready, _ = await get_json(d, "/readyz")
            assert ready == 503
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        finally:
            await admin.close()
        # The pool reconnects on its own: the daemon says it is ready again, and Katana's next
        # delivery of the event is acknowledged.
        await eventually(lambda: is_ready(d))
        body, headers = signed(event("current_inventory.product_updated", 9))
        await eventually(lambda: accepted(d, body, headers), limit=5)
        assert 9 in (await stale(d))[0]
        assert not d.stop_event.is_set()  # the outage did not take the daemon down

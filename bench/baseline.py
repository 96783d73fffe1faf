"""The baseline: a deliberately straightforward Katana → BigCommerce stock syncer, the way
home-grown integrations are usually written. It is what katsyncd is compared against.

* An aiohttp server receives the same Katana webhooks and verifies the HMAC like katsyncd,
  puts the event on an in-memory queue and answers 200 at once (nothing durable).
* One worker takes events in order and, for each one, asks Katana about the affected record:
  ``current_inventory.*`` → ``GET /inventory?variant_id=X&extend=variant`` (the variant's
  rows and its SKU); ``sales_order.*`` → ``GET /sales_orders/{id}`` then one
  ``GET /inventory?variant_id=…`` per row variant. Other events are ignored.
* The level is Σ in stock - Σ ``quantity_committed`` over all locations, floored and clamped
  to 0 … 2**31-1. Katana's ``quantity_committed`` includes manufacturing-order ingredients, so
  the baseline gets rule S4 wrong for subassemblies, as such integrations do.
* For every store, one ``PUT /v3/inventory/adjustments/absolute`` with one item per SKU. The
  item is found with ``GET /v3/catalog/products?sku=…`` (then ``/v3/catalog/variants?sku=…``)
  the first time and cached.
* A simple client-side rate limit: requests to Katana are spaced ``60 / rpm`` seconds apart
  (1 a second at 60/min); a 429 from either API means sleep and retry.
* ``--initial-sync`` first reads the whole ``/inventory`` (with ``extend=variant``) and writes
  every SKU to every store, one request per SKU (the cold start such an integration has).

Run it as ``python -m bench.baseline --config baseline.json`` (the benchmark writes the file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import signal
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

MAX_QUANTITY = 2_147_483_647
KATANA_PAGE_SIZE = 250
RETRIES = 5
SALES_ORDER_PREFIX = "sales_order."
STOCK_PREFIXES = ("current_inventory.product_",)


# ----- configuration ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreTarget:
    name: str
    api_base_url: str
    store_hash: str
    access_token: str
    location_id: int = 1


@dataclass(frozen=True, slots=True)
class BaselineConfig:
    listen_host: str
    listen_port: int
    katana_url: str
    katana_key: str
    webhook_token: str
    katana_rpm: int
    stores: tuple[StoreTarget, ...]
    initial_sync: bool = False
    initial_sync_max_skus: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineConfig:
        stores = tuple(StoreTarget(**s) for s in data["stores"])
        return cls(**{**data, "stores": stores})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----- pure helpers -------------------------------------------------------------------------


def verify_signature(body: bytes, header: str | None, token: str) -> bool:
    """HMAC-SHA256 of the raw body, hex, optional ``sha256=`` prefix (like katsyncd)."""
    if not header:
        return False
    given = header.strip().lower().removeprefix("sha256=")
    expected = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given)


def level_of(rows: Iterable[Mapping[str, Any]]) -> int:
    """Σ in stock - Σ committed (Katana's committed, MO ingredients included), clamped."""
    total = Decimal(0)
    for r in rows:
        total += Decimal(str(r.get("quantity_in_stock") or 0))
        total -= Decimal(str(r.get("quantity_committed") or 0))
    return max(0, min(math.floor(total), MAX_QUANTITY))


def sku_of(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The SKU of a product variant from ``extend=variant`` rows (None for materials)."""
    for r in rows:
        v = r.get("variant") or {}
        if v.get("type") == "product" and v.get("sku"):
            return str(v["sku"])
    return None


def row_variants(order: Mapping[str, Any]) -> list[int]:
    rows = order.get("sales_order_rows") or []
    return list(dict.fromkeys(int(r["variant_id"]) for r in rows if r.get("variant_id")))


# ----- Katana -------------------------------------------------------------------------------


class Pacer:
    """Spaces calls ``interval`` seconds apart (the client-side rate limit)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)


class KatanaReader:
    def __init__(self, session: aiohttp.ClientSession, cfg: BaselineConfig) -> None:
        self.session = session
        self.base = cfg.katana_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {cfg.katana_key}"}
        self.pacer = Pacer(60.0 / cfg.katana_rpm)
        self.requests = 0

    async def get(self, path: str, params: Sequence[tuple[str, str]] = ()) -> Any:
        """GET with the pacer; 429 → sleep Retry-After and retry; 404 → None."""
        for attempt in range(RETRIES + 50):
            await self.pacer.wait()
            self.requests += 1
            async with self.session.get(
                self.base + path, params=list(params), headers=self.headers
            ) as resp:
                if resp.status == 429:
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                    continue
                if resp.status == 404:
                    return None
                if resp.status >= 500 and attempt < RETRIES:
                    await asyncio.sleep(1.0)
                    continue
                resp.raise_for_status()
                return await resp.json()
        raise RuntimeError(f"Katana kept refusing {path}")

    async def inventory(self, variant_id: int) -> list[dict[str, Any]]:
        body = await self.get(
            "/inventory", [("variant_id", str(variant_id)), ("extend", "variant")]
        )
        return [] if body is None else list(body.get("data", []))

    async def sales_order(self, so_id: int) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self.get(f"/sales_orders/{so_id}")
        return body

    async def all_inventory(self) -> AsyncIterator[list[dict[str, Any]]]:
        page = 1
        while True:
            params = [("extend", "variant"), ("limit", str(KATANA_PAGE_SIZE)), ("page", str(page))]
            body = await self.get("/inventory", params)
            rows = [] if body is None else list(body.get("data", []))
            if rows:
                yield rows
            if len(rows) < KATANA_PAGE_SIZE:
                return
            page += 1


# ----- BigCommerce --------------------------------------------------------------------------


Item = tuple[str, int]  # ("product_id" | "variant_id", id)


class StoreClient:
    def __init__(self, session: aiohttp.ClientSession, target: StoreTarget) -> None:
        self.session = session
        self.target = target
        self.base = f"{target.api_base_url.rstrip('/')}/stores/{target.store_hash}/v3"
        self.headers = {"X-Auth-Token": target.access_token, "Accept": "application/json"}
        self.items: dict[str, Item | None] = {}
        self.requests = 0
        self.writes = 0

    async def call(
        self, method: str, path: str, params: Sequence[tuple[str, str]] = (), body: Any = None
    ) -> Any:
        """One request; 429 → sleep until the window resets and retry."""
        for attempt in range(RETRIES + 50):
            self.requests += 1
            async with self.session.request(
                method, self.base + path, params=list(params), json=body, headers=self.headers
            ) as resp:
                if resp.status == 429:
                    await asyncio.sleep(_bc_wait(resp.headers))
                    continue
                if resp.status >= 500 and attempt < RETRIES:
                    await asyncio.sleep(1.0)
                    continue
                resp.raise_for_status()
                return await resp.json()
        raise RuntimeError(f"BigCommerce kept refusing {path}")

    async def find_item(self, sku: str) -> Item | None:
        if sku in self.items:
            return self.items[sku]
        item = await self._lookup(sku)
        self.items[sku] = item
        return item

    async def _lookup(self, sku: str) -> Item | None:
        body = await self.call("GET", "/catalog/products", [("sku", sku), ("include", "variants")])
        for p in body.get("data", []):
            if p.get("inventory_tracking") == "product" and p.get("sku") == sku:
                return ("product_id", int(p["id"]))
            for v in p.get("variants") or []:
                if v.get("sku") == sku:
                    return ("variant_id", int(v["id"]))
        body = await self.call("GET", "/catalog/variants", [("sku", sku)])
        for v in body.get("data", []):
            if v.get("sku") == sku:
                return ("variant_id", int(v["id"]))
        return None

    async def write(self, sku: str, quantity: int) -> bool:
        item = await self.find_item(sku)
        if item is None:
            return False
        key, ident = item
        payload = {
            "reason": "baseline sync",
            "items": [{"location_id": self.target.location_id, key: ident, "quantity": quantity}],
        }
        await self.call("PUT", "/inventory/adjustments/absolute", body=payload)
        self.writes += 1
        return True


def _bc_wait(headers: Mapping[str, str]) -> float:
    reset_ms = headers.get("X-Rate-Limit-Time-Reset-Ms")
    if reset_ms is not None:
        return max(0.05, int(reset_ms) / 1000)
    return float(headers.get("X-Retry-After", "1"))


# ----- the syncer ---------------------------------------------------------------------------


@dataclass
class Counters:
    received: int = 0
    processed: int = 0
    failed: int = 0
    initial_sync: str = "off"
    initial_skus: int = 0
    initial_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


class Baseline:
    def __init__(self, cfg: BaselineConfig) -> None:
        self.cfg = cfg
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.counters = Counters()
        self.session: aiohttp.ClientSession | None = None
        self.katana: KatanaReader | None = None
        self.stores: list[StoreClient] = []

    # -- HTTP --
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/katana", self.webhook)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/status", self.status)
        return app

    async def webhook(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_signature(
            body, request.headers.get("x-sha2-signature"), self.cfg.webhook_token
        ):
            return web.json_response({"error": "bad signature"}, status=401)
        try:
            data = json.loads(body)
            event, obj_id = str(data["action"]), int(data["object"]["id"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"error": "malformed"}, status=400)
        self.counters.received += 1
        self.queue.put_nowait((event, obj_id))
        return web.json_response({"ok": True})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def status(self, request: web.Request) -> web.Response:
        c = self.counters
        return web.json_response(
            {
                "received": c.received,
                "processed": c.processed,
                "failed": c.failed,
                "queued": self.queue.qsize(),
                "initial_sync": c.initial_sync,
                "initial_skus": c.initial_skus,
                "initial_seconds": round(c.initial_seconds, 3),
                "katana_requests": self.katana.requests if self.katana else 0,
                "stores": {s.target.name: s.requests for s in self.stores},
            }
        )

    # -- work --
    async def worker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            event, obj_id = await self.queue.get()
            try:
                await self.process(event, obj_id)
                self.counters.processed += 1
            except (aiohttp.ClientError, RuntimeError, TimeoutError) as exc:
                self.counters.failed += 1
                print(f"baseline: {event} {obj_id} failed: {exc}", flush=True)

    async def process(self, event: str, obj_id: int) -> None:
        assert self.katana is not None
        if event.startswith(STOCK_PREFIXES):
            variants = [obj_id]
        elif event.startswith(SALES_ORDER_PREFIX):
            order = await self.katana.sales_order(obj_id)
            variants = [] if order is None else row_variants(order)
        else:
            return
        for variant_id in variants:
            rows = await self.katana.inventory(variant_id)
            sku = sku_of(rows)
            if sku is not None:
                await self.push(sku, level_of(rows))

    async def push(self, sku: str, quantity: int) -> None:
        for store in self.stores:
            await store.write(sku, quantity)

    async def initial_sync(self) -> None:
        """Cold start: every variant's level from the full inventory, one write per SKU."""
        assert self.katana is not None
        started = time.monotonic()
        self.counters.initial_sync = "reading"
        levels: dict[str, list[dict[str, Any]]] = {}
        async for page in self.katana.all_inventory():
            for r in page:
                sku = sku_of([r])
                if sku is not None:
                    levels.setdefault(sku, []).append(r)
        self.counters.initial_sync = "writing"
        skus = sorted(levels)[: self.cfg.initial_sync_max_skus]
        for sku in skus:
            await self.push(sku, level_of(levels[sku]))
            self.counters.initial_skus += 1
        self.counters.initial_seconds = time.monotonic() - started
        self.counters.initial_sync = "done"

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            self.session = session
            self.katana = KatanaReader(session, self.cfg)
            self.stores = [StoreClient(session, t) for t in self.cfg.stores]
            runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
            await runner.setup()
            await web.TCPSite(runner, self.cfg.listen_host, self.cfg.listen_port).start()
            print(
                f"baseline listening on {self.cfg.listen_host}:{self.cfg.listen_port}", flush=True
            )
            try:
                await self._work(stop)
            finally:
                await runner.cleanup()

    async def _work(self, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.cfg.initial_sync:
                await self.initial_sync()
            worker = tg.create_task(self.worker(stop), name="baseline-worker")
            await stop.wait()
            worker.cancel()


async def serve(cfg: BaselineConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(asyncio.CancelledError):
        await Baseline(cfg).run(stop)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__)
    p.add_argument("--config", required=True, help="JSON file (see BaselineConfig)")
    args = p.parse_args(argv)
    cfg = BaselineConfig.from_dict(json.loads(Path(args.config).read_text()))
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

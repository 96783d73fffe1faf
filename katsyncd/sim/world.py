"""A simulated world: one Katana account and BigCommerce stores, with the oracle that says
what every store should show. Shared by ``katsyncd demo``, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from katsyncd.sim.bigcommerce import BigCommerceSim, SimStore
from katsyncd.sim.katana import KatanaSim
from katsyncd.sim.quirks import Quirks

WEBHOOK_TOKEN = "d3m0d3m0d3m0d3m0"
STOP_TIMEOUT_SECONDS = 20.0
_log = structlog.get_logger(__name__)
KATANA_KEY = "sim-katana-key"


@dataclass
class WorldStore:
    """A simulated store and the settings katsyncd is given for it."""

    name: str
    hash: str
    sim: SimStore
    settings: dict[str, Any]
    location_ids: list[int] | None  # Katana locations counted (None = all)
    skus: list[str]  # the Katana SKUs this store sells

    @property
    def token(self) -> str:
        return f"token-{self.name}"

    def expected(self, katana: KatanaSim, sku: str) -> int | None:
        return katana.expected_level(
            sku,
            mode=self.settings.get("quantity", "in_stock_minus_committed"),
            count_katana_orders=self.settings.get("katana_sales_orders_count", True),
            locations=self.location_ids,
            buffer=self.settings.get("buffer", 0),
            max_quantity=self.settings.get("max_quantity"),
        )

    def wrong(self, katana: KatanaSim) -> list[tuple[str, int | None, int | None]]:
        """(sku, BigCommerce has, Katana says) for every SKU that is not right now."""
        out: list[tuple[str, int | None, int | None]] = []
        loc = int(self.settings.get("location_id", 1))
        for sku in self.skus:
            want = self.expected(katana, sku)
            if want is None:
                continue
            have = self.sim.level(sku, loc)
            if have != want:
                out.append((sku, have, want))
        return out


@dataclass
class World:
    katana: KatanaSim
    bc: BigCommerceSim
    stores: list[WorldStore] = field(default_factory=list)
    katana_url: str = ""
    bc_url: str = ""

    @classmethod
    async def start(
        cls,
        *,
        katana_rpm: int = 60,
        bc_quota: int = 150,
        webhook_retry_delays: Sequence[float] = (30.0, 120.0, 900.0),
        quirks: Quirks | None = None,
    ) -> World:
        quirks = quirks or Quirks()
        katana = KatanaSim(
            requests_per_minute=katana_rpm,
            quirks=quirks.katana,
            api_key=KATANA_KEY,
            webhook_retry_delays=webhook_retry_delays,
        )
        bc = BigCommerceSim(quirks=quirks.bigcommerce)
        world = cls(katana, bc)
        world.katana_url = await katana.start()
        world.bc_url = await bc.start()
        world._bc_quota = bc_quota
        world.quirks = quirks
        return world

    _bc_quota: int = 150
    quirks: Quirks = field(default_factory=Quirks)

    async def stop(self) -> None:
        """Stop both simulators, each within ``STOP_TIMEOUT_SECONDS``: a teardown must not hang
        on a connection a killed daemon left behind (seen once in a while after the kill -9
        end-to-end test); a part that does not stop in time is logged and left."""
        for name, stop in (("katana", self.katana.stop), ("bigcommerce", self.bc.stop)):
            try:
                await asyncio.wait_for(stop(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                _log.warning("sim_stop_timed_out", simulator=name, seconds=STOP_TIMEOUT_SECONDS)

    def add_store(
        self,
        name: str,
        skus: Sequence[str],
        *,
        tracking: str = "product",
        settings: dict[str, Any] | None = None,
        quota: int | None = None,
        group: int = 5,
        locations: Sequence[tuple[int, str, str, bool]] | None = None,
    ) -> WorldStore:
        """A store selling ``skus``: simple products (tracking "product") or variants of
        products of ``group`` variants each (tracking "variant")."""
        kwargs: dict[str, Any] = {"quota": quota or self._bc_quota}
        if locations is not None:
            kwargs["locations"] = locations
        sim = self.bc.add_store(f"h{name}", f"token-{name}", **kwargs)
        if tracking == "product":
            for sku in skus:
                sim.add_product(f"Product {sku}", sku, tracking="product")
        else:
            for i in range(0, len(skus), group):
                sim.add_product(
                    f"Group {name} {i}",
                    f"{name.upper()}-G{i:05d}",
                    tracking="variant",
                    variant_skus=list(skus[i : i + group]),
                )
        settings = dict(settings or {})
        locs = settings.get("katana_locations") or None
        loc_ids = (
            None
            if locs is None
            else [
                lid for lid, loc in self.katana.locations.items() if loc.name in locs or lid in locs
            ]
        )
        store = WorldStore(name, f"h{name}", sim, settings, loc_ids, list(skus))
        self.stores.append(store)
        return store

    def config_data(
        self,
        *,
        port: int,
        database: dict[str, Any],
        rpm: int | None = None,
        sync: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A katsyncd config (as a TOML-shaped dict) pointing at this world."""
        return {
            "server": {"listen": f"127.0.0.1:{port}"},
            "database": database,
            "katana": {
                "base_url": self.katana_url,
                "api_key": KATANA_KEY,
                "webhook_token": WEBHOOK_TOKEN,
                "requests_per_minute": rpm or self.katana.requests_per_minute,
            },
            "sync": {"debounce_seconds": 2.0, "max_delay_seconds": 10.0, **(sync or {})},
            "log": {"level": "warning"},
            "stores": [
                {
                    "name": s.name,
                    "store_hash": s.hash,
                    "access_token": s.token,
                    "api_base_url": self.bc_url,
                    **s.settings,
                }
                for s in self.stores
            ],
        }

    def subscribe(self, port: int, events: Sequence[str]) -> int:
        return self.katana.subscribe(
            f"http://127.0.0.1:{port}/webhooks/katana", events, token=WEBHOOK_TOKEN
        )

    def wrong(self) -> dict[str, list[tuple[str, int | None, int | None]]]:
        return {s.name: s.wrong(self.katana) for s in self.stores}

    def converged(self) -> bool:
        return all(not w for w in self.wrong().values())

    async def wait_converged(self, limit: float, *, poll: float = 0.1) -> float | None:
        """Seconds until every store is right, or None if not within ``limit`` seconds."""
        start = time.monotonic()
        while time.monotonic() - start < limit:
            if self.converged():
                return time.monotonic() - start
            await asyncio.sleep(poll)
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def state_dir_db(state_dir: Path) -> dict[str, Any]:
    return {"state_dir": str(state_dir)}

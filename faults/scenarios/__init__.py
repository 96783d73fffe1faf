"""The fault scenarios, in the order they run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from faults.common import Context
from faults.report import Row
from faults.scenarios import fuzz, ha_postgres, katana_storm, kills, postgres, slow, stores

Scenario = Callable[[Context], Awaitable[list[Row]]]

SCENARIOS: dict[str, Scenario] = {
    "kill9": kills.kill9,
    "sigterm": kills.sigterm,
    "postgres": postgres.outage,
    "stores": stores.failing_store,
    "katana-storms": katana_storm.storms,
    "reload-outage": postgres.reload_outage,
    "ha-postgres-restart": ha_postgres.restart,
    "fuzz-webhooks": fuzz.webhooks,
    "slow-clients": slow.slow_clients,
    "config-fuzz": fuzz.configs,
}

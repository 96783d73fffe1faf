"""How big and how long each scenario is: the full suite and the ``--quick`` one (same code)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    variants: int
    katana_rpm: int  # the simulated account's quota for the scenarios that are not about it
    kills: int  # kill -9 and SIGTERM rounds each
    converge_cap: float  # seconds a round may take to converge before it counts items lost
    outage_seconds: float  # Postgres stopped, then frozen, this long each
    ha_lease_seconds: float  # [ha] lease of the two replicas in the HA Postgres restart
    ha_outage_seconds: float  # Postgres stopped this long under them (longer than the lease)
    storm_seconds: float  # Katana answering 503 (then 429) this long each
    storm_rpm: int  # the Katana quota during the storm scenario (the real one: 60)
    lag_events: int  # changes timed per phase of the failing-store scenario
    fuzz_bodies: int
    slow_clients: int
    slow_cap: float  # seconds a slow client is kept trickling before we give up on it
    config_fuzz: int  # configs loaded in-process
    config_fuzz_cli: int  # of them also through `katsyncd check-config` and SIGHUP


PROFILES = {
    "full": Profile(
        name="full",
        variants=300,
        katana_rpm=600,
        kills=20,
        converge_cap=60.0,
        outage_seconds=20.0,
        ha_lease_seconds=10.0,
        ha_outage_seconds=20.0,
        storm_seconds=20.0,
        storm_rpm=60,
        lag_events=10,
        fuzz_bodies=2400,
        slow_clients=200,
        slow_cap=75.0,
        config_fuzz=2000,
        config_fuzz_cli=12,
    ),
    "quick": Profile(
        name="quick",
        variants=60,
        katana_rpm=600,
        kills=2,
        converge_cap=30.0,
        outage_seconds=3.0,
        ha_lease_seconds=4.0,
        ha_outage_seconds=6.0,
        storm_seconds=3.0,
        storm_rpm=120,
        lag_events=3,
        fuzz_bodies=300,
        slow_clients=40,
        slow_cap=4.0,
        config_fuzz=300,
        config_fuzz_cli=2,
    ),
}

"""Sizes, quotas and timings of each scenario: the full benchmark and the tiny ``--quick`` one.

Everything a scenario needs to know about "how big" lives here, so the scenarios themselves
read the same in both profiles and CI exercises exactly the code the full run uses.
"""

from __future__ import annotations

from dataclasses import dataclass

KATANA_RPM = 60  # Katana's documented quota, shared by the whole account
BC_QUOTA = 150  # BigCommerce Standard/Plus: 150 requests ...
BC_WINDOW_MS = 30_000  # ... per 30 s


@dataclass(frozen=True, slots=True)
class Sync:
    """What katsyncd is configured with (``[sync]``)."""

    debounce_seconds: float
    max_delay_seconds: float
    poll_interval_seconds: float

    def as_config(self) -> dict[str, float]:
        return {
            "debounce_seconds": self.debounce_seconds,
            "max_delay_seconds": self.max_delay_seconds,
            "poll_interval_seconds": self.poll_interval_seconds,
        }


@dataclass(frozen=True, slots=True)
class Burst:
    variants: int
    touched: int
    webhooks: int
    seconds: float
    katana_rpm: int
    bc_quota: int
    converge_cap_seconds: float
    warmup_cap_seconds: float


@dataclass(frozen=True, slots=True)
class Quiet:
    variants: int
    events: int
    spacing_seconds: float
    katana_rpm: int
    bc_quota: int
    tail_seconds: float  # after the last event, how long writes may still arrive


@dataclass(frozen=True, slots=True)
class Ingest:
    variants: int
    sales_orders: int
    seconds: float
    connections: int
    loadgen: str  # "auto" (wrk if installed), "wrk" or "python"
    katana_rpm: int


@dataclass(frozen=True, slots=True)
class Cold:
    variants: int
    katana_rpm: int  # raised so the run takes seconds; figures are converted back to 60/min
    bc_quota: int
    cap_seconds: float
    baseline_max_skus: int  # the baseline's per-SKU BigCommerce phase is measured on this many


@dataclass(frozen=True, slots=True)
class Footprint:
    variants: int
    katana_rpm: int
    bc_quota: int
    cap_seconds: float
    baseline_max_skus: int


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    sync: Sync
    burst: Burst
    quiet: Quiet
    ingest: Ingest
    cold: Cold
    footprint: Footprint


FULL = Profile(
    name="full",
    sync=Sync(debounce_seconds=2.0, max_delay_seconds=10.0, poll_interval_seconds=30.0),
    burst=Burst(
        variants=5000,
        touched=2000,
        webhooks=10_000,
        seconds=60.0,
        katana_rpm=KATANA_RPM,
        bc_quota=BC_QUOTA,
        converge_cap_seconds=120.0,
        warmup_cap_seconds=300.0,
    ),
    quiet=Quiet(
        variants=1000,
        events=30,
        spacing_seconds=3.0,
        katana_rpm=KATANA_RPM,
        bc_quota=BC_QUOTA,
        tail_seconds=40.0,
    ),
    ingest=Ingest(
        variants=2000,
        sales_orders=300,
        seconds=15.0,
        connections=64,
        loadgen="auto",
        katana_rpm=KATANA_RPM,
    ),
    cold=Cold(
        variants=50_000,
        katana_rpm=6000,
        bc_quota=BC_QUOTA,  # katsyncd's ~250 requests a store fit; the baseline's are raised
        cap_seconds=600.0,
        baseline_max_skus=2000,
    ),
    footprint=Footprint(
        variants=100_000,
        katana_rpm=10_000,
        bc_quota=100_000,
        cap_seconds=600.0,
        baseline_max_skus=500,
    ),
)

QUICK = Profile(
    name="quick",
    sync=Sync(debounce_seconds=0.5, max_delay_seconds=2.0, poll_interval_seconds=5.0),
    burst=Burst(
        variants=300,
        touched=120,
        webhooks=300,
        seconds=5.0,
        katana_rpm=1200,
        bc_quota=3000,
        converge_cap_seconds=6.0,
        warmup_cap_seconds=30.0,
    ),
    quiet=Quiet(
        variants=200,
        events=6,
        spacing_seconds=1.0,
        katana_rpm=1200,
        bc_quota=3000,
        tail_seconds=4.0,
    ),
    ingest=Ingest(
        variants=200,
        sales_orders=20,
        seconds=2.0,
        connections=16,
        loadgen="python",
        katana_rpm=1200,
    ),
    cold=Cold(
        variants=1000,
        katana_rpm=6000,
        bc_quota=3000,
        cap_seconds=30.0,
        baseline_max_skus=100,
    ),
    footprint=Footprint(
        variants=2000,
        katana_rpm=10_000,
        bc_quota=100_000,
        cap_seconds=30.0,
        baseline_max_skus=50,
    ),
)

PROFILES = {"full": FULL, "quick": QUICK}

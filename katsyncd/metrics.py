"""Prometheus metrics. One registry per daemon so tests can run several daemons in a process.

Names follow Prometheus conventions: prefix ``katsyncd_``, base units in names, ``_total`` on
counters. Every metric is created here and nowhere else.
"""

from __future__ import annotations

import platform
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from katsyncd import __version__

LAG_BUCKETS_SECONDS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600)
HTTP_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All of katsyncd's metrics, registered in their own registry."""

    def unexpected_counter(self, api: str) -> Callable[[str, str], None]:
        """``(endpoint, what)`` → counts one answer of ``api`` not as documented."""

        def count(endpoint: str, what: str) -> None:
            self.api_unexpected.labels(api=api, endpoint=endpoint, what=what).inc()

        return count

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.build_info = Info("katsyncd_build", "katsyncd build information", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

        # Ingest
        self.webhooks_received = Counter(
            "katsyncd_webhooks_received_total",
            "Katana webhooks received, by event and outcome",
            ["event", "outcome"],
            registry=r,
        )
        self.webhook_inventory_refs = Counter(
            "katsyncd_webhook_inventory_refs_total",
            "current_inventory.* webhooks by what object.href named "
            "(variant, product, material, no_href, unrecognized)",
            ["reading"],
            registry=r,
        )
        self.webhook_ack_seconds = Histogram(
            "katsyncd_webhook_ack_seconds",
            "Time from receiving a webhook to answering it (after the durable commit)",
            buckets=HTTP_BUCKETS_SECONDS,
            registry=r,
        )
        self.stale_variants_pending = Gauge(
            "katsyncd_stale_variants_pending",
            "Variants marked stale and waiting to be read from Katana",
            registry=r,
        )
        self.debounce_marks = Counter(
            "katsyncd_debounce_marks_total",
            "Stale marks fed into the debouncer (events, polls and reconciles)",
            registry=r,
        )
        self.debounce_flushed_variants = Counter(
            "katsyncd_debounce_flushed_variants_total",
            "Variants released by the debouncer for a Katana read",
            registry=r,
        )

        self.api_unexpected = Counter(
            "katsyncd_api_unexpected_responses_total",
            "Answers not as the API documents them, by API, endpoint and what: body (a 2xx "
            "whose body is not JSON of the promised shape; retried) or no_rate_limit_headers",
            ["api", "endpoint", "what"],
            registry=r,
        )

        # Katana
        self.katana_requests = Counter(
            "katsyncd_katana_requests_total",
            "Requests sent to the Katana API, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.katana_rate_limited = Counter(
            "katsyncd_katana_rate_limited_total",
            "Katana responses with HTTP 429",
            registry=r,
        )
        self.katana_budget_remaining = Gauge(
            "katsyncd_katana_budget_remaining_requests",
            "Requests the Katana limiter can still send in the current window",
            registry=r,
        )
        self.katana_max_share = Gauge(
            "katsyncd_katana_max_share",
            "Fraction of the Katana account's quota katsyncd may use ([katana] max_share)",
            registry=r,
        )
        self.katana_requests_per_minute = Gauge(
            "katsyncd_katana_requests_per_minute",
            "Katana requests a minute katsyncd allows itself (its share of the account's quota)",
            registry=r,
        )
        self.inventory_cache_hits = Counter(
            "katsyncd_inventory_cache_hits_total",
            "Variants whose level was recomputed from the inventory read last instead of a new "
            "Katana read (only their committed stock had changed)",
            registry=r,
        )
        self.katana_limiter_wait_seconds = Counter(
            "katsyncd_katana_limiter_wait_seconds_total",
            "Seconds spent waiting on the Katana limiter, by priority",
            ["priority"],
            registry=r,
        )
        self.katana_ids_per_request = Gauge(
            "katsyncd_katana_ids_per_request",
            "Ids sent per filtered Katana read (lowered below the configured value when a "
            "gateway ignored or rejected a longer id filter)",
            registry=r,
        )
        self.katana_id_filter_failures = Counter(
            "katsyncd_katana_id_filter_failures_total",
            "Katana id filters found ignored (rows for ids not asked for) or rejected (4xx), "
            "by endpoint",
            ["endpoint", "kind"],
            registry=r,
        )
        self.katana_read_plans = Counter(
            "katsyncd_katana_read_plans_total",
            "Reads the planner served other than by id chunks (a full /inventory sweep, a "
            "sales-order poll), by endpoint and plan",
            ["endpoint", "plan"],
            registry=r,
        )

        # BigCommerce
        self.bc_requests = Counter(
            "katsyncd_bigcommerce_requests_total",
            "Requests sent to BigCommerce, by store, endpoint and HTTP status",
            ["store", "endpoint", "status"],
            registry=r,
        )
        self.bc_items_written = Counter(
            "katsyncd_bigcommerce_items_written_total",
            "Stock levels acknowledged by BigCommerce, by store",
            ["store"],
            registry=r,
        )
        self.bc_items_failed = Counter(
            "katsyncd_bigcommerce_items_failed_total",
            "Stock levels BigCommerce rejected (422 after isolating the item), by store",
            ["store"],
            registry=r,
        )
        self.bc_writes_skipped = Counter(
            "katsyncd_bigcommerce_writes_skipped_unchanged_total",
            "Recomputed levels not written because BigCommerce already has them, by store",
            ["store"],
            registry=r,
        )
        self.bc_rate_limit_wait_seconds = Counter(
            "katsyncd_bigcommerce_rate_limit_wait_seconds_total",
            "Seconds a store's writer waited on its rate limiter or after a 429",
            ["store"],
            registry=r,
        )
        self.bc_write_failures = Counter(
            "katsyncd_bigcommerce_write_failures_total",
            "Failed write attempts, by store and reason "
            "(rate_limited, server_error, timeout, rejected, auth, request, location)",
            ["store", "reason"],
            registry=r,
        )
        self.store_error = Gauge(
            "katsyncd_store_error",
            "1 while a store cannot be written for a store-wide reason, by store and kind "
            "(auth, not_found, location, request); see /status for what to check",
            ["store", "kind"],
            registry=r,
        )
        self.store_backlog = Gauge(
            "katsyncd_store_backlog_items",
            "Levels computed but not yet written, by store",
            ["store"],
            registry=r,
        )
        self.store_last_push = Gauge(
            "katsyncd_store_last_successful_push_timestamp_seconds",
            "Unix time of the last successful stock write, by store",
            ["store"],
            registry=r,
        )
        self.unmatched_skus = Gauge(
            "katsyncd_unmatched_skus",
            "Katana product SKUs with no BigCommerce item, by store",
            ["store"],
            registry=r,
        )
        self.sync_lag_seconds = Histogram(
            "katsyncd_sync_lag_seconds",
            "Time from the first stale mark of a variant to BigCommerce acknowledging its level",
            ["store"],
            buckets=LAG_BUCKETS_SECONDS,
            registry=r,
        )

        # Polls and reconcile
        self.poll_runs = Counter(
            "katsyncd_poll_runs_total",
            "Incremental Katana polls, by kind and outcome",
            ["kind", "outcome"],
            registry=r,
        )
        self.poll_watermark = Gauge(
            "katsyncd_poll_watermark_timestamp_seconds",
            "Where each incremental poll resumes (Katana updated_at, unix time)",
            ["kind"],
            registry=r,
        )
        self.reconcile_runs = Counter(
            "katsyncd_reconcile_runs_total",
            "Full reconciles, by outcome",
            ["outcome"],
            registry=r,
        )

        # Config
        self.config_reload_ok = Gauge(
            "katsyncd_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or failed (0); 0 also while "
            "a reload's rule recompute is still pending",
            registry=r,
        )
        self.config_reload_pending = Gauge(
            "katsyncd_config_reload_pending_stores",
            "Stores whose changed level rules are in force but whose variants are not yet "
            "marked for a recompute (Postgres was unavailable; retried until it succeeds)",
            registry=r,
        )
        self.config_reload_ts = Gauge(
            "katsyncd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            registry=r,
        )

        # Leadership (several replicas, one leader)
        self.leader = Gauge(
            "katsyncd_leader",
            "1 while this replica holds the leader lease (runs polls, flushes and writers)",
            registry=r,
        )
        self.leader_epoch = Gauge(
            "katsyncd_leader_epoch",
            "Epoch of the lease this replica holds (the last it held, as a follower)",
            registry=r,
        )
        self.leader_lease_age = Gauge(
            "katsyncd_leader_lease_age_seconds",
            "Seconds since this replica acquired the lease it holds (0 as a follower)",
            registry=r,
        )
        self.leader_transitions = Counter(
            "katsyncd_leader_transitions",
            "Leadership changes of this replica: acquired, released (a clean stop), expired "
            "(renewals failed until the deadline) or taken (another replica holds the lease)",
            ["event"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""In-process Katana MRP API simulator: a real aiohttp server on loopback.

A real HTTP client cannot tell it from Katana for the calls katsyncd makes: ``/variants``,
``/inventory``, ``/sales_orders``, ``/sales_order_rows``, ``/inventory_movements``,
``/locations``, ``/manufacturing_orders`` and webhook CRUD, with Katana's auth, paging
(``X-Pagination``), array parameters (``ids=1&ids=2`` and ``ids[]=1&ids[]=2``), silently ignored
unknown filters, error bodies and a per-account sliding 60-second rate limit. Webhooks are
POSTed with ``x-sha2-signature`` and retried on Katana's schedule.

Python methods build state and move stock the way Katana does (see ``katana_state.py``), and
an oracle (:meth:`KatanaSim.expected_level` and friends) says what katsyncd must end up
writing to BigCommerce.

Assumptions where Katana's documentation is silent (see KATANA_API.md):

* ``current_inventory.product_updated``/``material_updated``: what ``object`` names follows
  ``quirks.inventory_event_shape``: ``variant`` (default) the VARIANT id with ``href``
  ``<base_url>/variants/<id>``; ``product`` the variant's product (or material) id with
  ``href`` ``<base_url>/products/<id>`` (``/materials/<id>``); ``no_href`` that product or
  material id and no ``href``. They fire for purchase-order receipts and
  finished manufacturing orders only; stock adjustments, transfers and sales orders being
  packed or delivered send no ``current_inventory`` event (the sync must not depend on them).
* Creating locations, variants and materials sends no webhook (``populate`` stays quiet).
* Webhook URLs must be https, except plain http to a loopback host (127.0.0.1, localhost,
  ::1), which the simulator allows so tests can run a receiver without TLS.
* A request rejected with 429 does not enter the rate window; 401s do not either.
* ``GET /<resource>/{id}`` answers 404 for a soft-deleted resource.
* ``path_prefix`` (faults, :meth:`KatanaSim.request_count`) matches whole path segments:
  ``"/inventory"`` matches ``/inventory`` but not ``/inventory_movements``.
* Oracle ``locations``: None or an empty collection means every location.
"""

from __future__ import annotations

import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiohttp import web

from katsyncd.sim import katana_activity
from katsyncd.sim.katana_api import KatanaApi
from katsyncd.sim.katana_http import path_matches
from katsyncd.sim.katana_json import event_problems, webhook_url_allowed
from katsyncd.sim.katana_model import (
    EVENTS_WITHOUT_HREF,
    WEBHOOK_EVENTS,
    RequestRecord,
    WebhookAttempt,
    WebhookSubscription,
)
from katsyncd.sim.katana_state import KatanaState
from katsyncd.sim.katana_webhooks import Delivery, WebhookDispatcher
from katsyncd.sim.quirks import KatanaQuirks

__all__ = ["KatanaSim", "RequestRecord", "WebhookAttempt"]

DEFAULT_RETRY_DELAYS = (30.0, 120.0, 900.0)
SHUTDOWN_TIMEOUT_SECONDS = 2.0

# Where an event's ``href`` points, by resource type (default: the plural of the type);
# ``current_inventory`` follows ``quirks.inventory_event_shape``.
_HREF_RESOURCES: dict[str, str] = {}


class KatanaSim(KatanaState):
    """The Katana API simulator. Build state with the sync methods, ``await start()``, point
    a client at :attr:`base_url`, and ``await stop()`` at the end (or use ``async with``)."""

    def __init__(
        self,
        *,
        requests_per_minute: int = 60,
        api_key: str = "test-katana-key",
        webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        webhook_timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        quirks: KatanaQuirks | None = None,
    ) -> None:
        super().__init__(clock)
        self.quirks = quirks or KatanaQuirks()
        self.requests_per_minute = requests_per_minute
        self.api_key = api_key
        self.latency = 0.0
        self.base_url = ""
        self.request_log: list[RequestRecord] = []
        self.webhook_log: list[WebhookAttempt] = []
        self._api = KatanaApi(self, clock)
        self._dispatcher = WebhookDispatcher(
            retry_delays=webhook_retry_delays,
            timeout=webhook_timeout,
            clock=clock,
            log=self.webhook_log,
        )
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on ``host:port`` (0: an ephemeral port) and start webhook delivery.
        Returns the base URL, e.g. ``http://127.0.0.1:54321/v1``."""
        if self._runner is not None:
            return self.base_url
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        runner = web.AppRunner(
            self._api.application(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner
        shown_host = f"[{host}]" if family == socket.AF_INET6 else host
        self.base_url = f"http://{shown_host}:{sock.getsockname()[1]}/v1"
        await self._dispatcher.start(self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Stop webhook delivery (queued deliveries are dropped), then the server."""
        try:
            await self._dispatcher.stop()
        finally:
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()

    async def __aenter__(self) -> KatanaSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ catalogue, activity

    def populate(
        self, n_variants: int, *, locations: int = 2, seed: int = 0, sku_prefix: str = "KS-"
    ) -> list[int]:
        """Build a realistic catalogue (see :func:`katana_activity.populate`): ``locations``
        locations (the first primary), ``n_variants`` product variants with SKUs
        ``f"{sku_prefix}{i:05d}"``, random stock 0..200 per location, plus some materials.
        Returns the product variant ids."""
        return katana_activity.populate(
            self, n_variants, locations=locations, seed=seed, sku_prefix=sku_prefix
        )

    def random_activity(self, rng: random.Random) -> str:
        """Perform one random, realistic operation and return a short description of it."""
        return katana_activity.random_activity(self, rng)

    # ------------------------------------------------------------------ webhooks

    def subscribe(self, url: str, events: Sequence[str], *, token: str | None = None) -> int:
        """Python shortcut for ``POST /webhooks``; returns the webhook id. The token defaults
        to 16 random lowercase hex characters. Raises ValueError on what the API rejects."""
        if not webhook_url_allowed(url):
            raise ValueError(f"webhook url must be https (or http to loopback): {url!r}")
        if event_problems(list(events)):
            raise ValueError(
                f"subscribed events must be a non-empty list of known events: {events!r}"
            )
        return self.add_webhook(url, list(events), token=token).id

    def add_webhook(
        self,
        url: str,
        events: list[str],
        *,
        enabled: bool = True,
        description: str | None = None,
        token: str | None = None,
    ) -> WebhookSubscription:
        """Register an already validated subscription."""
        now = self._stamp()
        webhook_id = self._next_id("webhook")
        subscription = WebhookSubscription(
            id=webhook_id,
            url=url,
            token=secrets.token_hex(8) if token is None else token,
            enabled=enabled,
            description=description,
            subscribed_events=list(events),
            created_at=now,
            updated_at=now,
        )
        self.webhooks[webhook_id] = subscription
        return subscription

    def change_webhook(self, subscription: WebhookSubscription, changes: Mapping[str, Any]) -> None:
        """Apply a validated PATCH body to a subscription."""
        if "url" in changes:
            subscription.url = changes["url"]
        if "enabled" in changes:
            subscription.enabled = changes["enabled"]
        if "description" in changes:
            subscription.description = changes["description"]
        if "subscribed_events" in changes:
            subscription.subscribed_events = list(changes["subscribed_events"])
        subscription.updated_at = self._stamp()

    def emit(self, event: str, object_id: int, *, resource_type: str | None = None) -> None:
        """Queue ``event`` about ``object_id`` for every enabled subscription to it.
        ``resource_type`` defaults to the part of the event name before the dot. For
        ``current_inventory.*`` pass a variant id: the payload names what
        ``quirks.inventory_event_shape`` says (an unknown id is sent as a variant id)."""
        if event not in WEBHOOK_EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        kind = resource_type or event.partition(".")[0]
        self._queue_event(event, kind, object_id, self._status_of(kind, object_id))

    def _row_edits_bump_order(self) -> bool:
        return self.quirks.row_edits_bump_order

    def _on_event(self, event: str, object_id: int, status: str | None) -> None:
        self._queue_event(event, event.partition(".")[0], object_id, status)

    def inventory_event_object(self, variant_id: int) -> tuple[int, str | None]:
        """``(object.id, href path)`` of a ``current_inventory.*`` event about this variant,
        in the shape ``quirks.inventory_event_shape`` plays."""
        shape = self.quirks.inventory_event_shape
        variant = self.variants.get(variant_id)
        if shape == "variant" or variant is None:
            return variant_id, f"/variants/{variant_id}"
        parent_path = f"/{variant.type}s/{variant.parent_id}"  # /products/… or /materials/…
        return variant.parent_id, (parent_path if shape == "product" else None)

    def _queue_event(self, event: str, kind: str, object_id: int, status: str | None) -> None:
        href = None
        if kind == "current_inventory":
            object_id, href = self.inventory_event_object(object_id)
        elif event not in EVENTS_WITHOUT_HREF:
            href = f"/{_HREF_RESOURCES.get(kind, kind + 's')}/{object_id}"
        for subscription in self.webhooks.values():
            if subscription.enabled and event in subscription.subscribed_events:
                delivery = Delivery(
                    webhook_id=subscription.id,
                    url=subscription.url,
                    token=subscription.token,
                    event=event,
                    resource_type=kind,
                    object_id=object_id,
                    status=status,
                    href_path=href,
                )
                self._dispatcher.enqueue(delivery)

    def _status_of(self, kind: str, object_id: int) -> str | None:
        if kind == "sales_order" and object_id in self.sales_orders:
            return self.sales_orders[object_id].status
        if kind == "manufacturing_order" and object_id in self.manufacturing_orders:
            return self.manufacturing_orders[object_id].status
        if kind == "purchase_order" and object_id in self.purchase_orders:
            return "RECEIVED"
        return None

    async def drain_webhooks(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (public API)
        """Wait until every queued delivery, and every retry due within ``timeout``, is done.
        Retries due later are left pending. Raises TimeoutError if work due within the
        timeout is still unfinished."""
        await self._dispatcher.drain(timeout)

    # ------------------------------------------------------------------ faults, accounting

    def fail_next(self, n: int, status: int = 500, *, path_prefix: str = "") -> None:
        """The next ``n`` API requests under ``path_prefix`` (path after /v1, e.g.
        ``"/inventory"``) answer ``status`` with Katana's error body."""
        self._api.faults.add(n, status, path_prefix)

    def garbage_next(self, n: int, *, path_prefix: str = "") -> None:
        """The next ``n`` API requests under ``path_prefix`` answer 200 with a body that is
        not JSON (a truncated document, still labelled application/json)."""
        self._api.faults.add(n, 200, path_prefix)

    def clear_faults(self) -> None:
        """Forget the failures injected with :meth:`fail_next` / :meth:`garbage_next`."""
        self._api.faults.clear()

    def spend_quota(self, n: int, seconds_ago: float) -> None:
        """Put ``n`` requests made ``seconds_ago`` into the account's rate window, as another
        client of the account (or katsyncd's previous process) would have."""
        self._api.window.spend(n, seconds_ago)

    def request_count(self, path_prefix: str = "", *, include_rate_limited: bool = True) -> int:
        """How many API requests under ``path_prefix`` were answered (429s optional)."""
        return sum(
            1
            for record in self.request_log
            if path_matches(record.path, path_prefix)
            and (include_rate_limited or record.status != 429)
        )

"""Webhook delivery of the Katana simulator: signed POSTs, Katana's retry schedule, bounded
concurrency.

One owned task (:meth:`WebhookDispatcher.start` / :meth:`~WebhookDispatcher.stop`) pops due
deliveries from a time-ordered heap and runs each in a child task of a TaskGroup, at most
``concurrency`` POSTs at a time, so a slow receiver never stalls the queue. Retry delays are
real (monotonic) seconds; the times recorded in the log come from the simulator's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import hmac
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp
import structlog

from katsyncd.sim.katana_model import WebhookAttempt

_log = structlog.get_logger(__name__)

DEFAULT_CONCURRENCY = 32


def sign(token: str, body: bytes) -> str:
    """Katana's ``x-sha2-signature``: lowercase hex HMAC-SHA256 of the raw body."""
    return hmac.new(token.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class Delivery:
    """One event for one subscription, with its retry state. The body is built on the first
    attempt (the base URL is known by then) and resent byte for byte on retries."""

    webhook_id: int
    url: str
    token: str
    event: str
    resource_type: str
    object_id: int
    status: str | None
    href_path: str | None  # e.g. "/sales_orders/7"; None: no href in the payload
    attempt: int = 0
    body: bytes | None = None

    def render(self, base_url: str) -> bytes:
        """The JSON body Katana POSTs (compact, as sent on the wire)."""
        if self.body is None:
            obj: dict[str, object] = {"id": self.object_id}
            if self.status is not None:
                obj["status"] = self.status
            if self.href_path is not None:
                obj["href"] = base_url + self.href_path
            payload = {
                "resource_type": self.resource_type,
                "action": self.event,
                "webhook_id": self.webhook_id,
                "object": obj,
            }
            self.body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return self.body


class WebhookDispatcher:
    """Queues deliveries and sends them, retrying on failure like Katana does."""

    def __init__(
        self,
        *,
        retry_delays: Sequence[float],
        timeout: float,
        clock: Callable[[], float],
        log: list[WebhookAttempt],
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._retry_delays = tuple(retry_delays)
        self._timeout = timeout
        self._clock = clock
        self._log = log
        self._concurrency = concurrency
        self._heap: list[tuple[float, int, Delivery]] = []
        self._seq = 0
        self._inflight = 0
        self._base_url = ""
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._limit = asyncio.Semaphore(concurrency)

    @property
    def running(self) -> bool:
        """Whether the delivery task is running."""
        return self._task is not None and not self._task.done()

    def enqueue(self, delivery: Delivery) -> None:
        """Queue a delivery for now (sent once the dispatcher runs)."""
        self._push(time.monotonic(), delivery)

    def _push(self, due: float, delivery: Delivery) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, delivery))
        self._wake.set()

    async def start(self, base_url: str) -> None:
        """Start delivering; ``base_url`` prefixes every ``href``."""
        if self.running:
            return
        self._base_url = base_url
        self._wake, self._changed = asyncio.Event(), asyncio.Event()
        self._limit = asyncio.Semaphore(self._concurrency)
        self._wake.set()
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="katana-sim-webhooks")

    async def stop(self) -> None:
        """Stop delivering: in-flight POSTs are cancelled, queued deliveries are dropped."""
        task, self._task = self._task, None
        try:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # re-raises if a delivery crashed the dispatcher
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None
            self._heap.clear()
            self._inflight = 0
            self._changed.set()

    async def drain(self, within: float) -> None:
        """Wait until nothing is in flight and no delivery is due within ``within`` seconds.

        Raises TimeoutError if deliveries due within the timeout are still not done, and
        RuntimeError if deliveries are waiting but the dispatcher is not running."""
        deadline = time.monotonic() + within
        while not self._settled(deadline):
            if not self.running:
                raise RuntimeError("webhook delivery is not running: start the simulator")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"webhook deliveries still pending after {within} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def _settled(self, deadline: float) -> bool:
        return self._inflight == 0 and all(due > deadline for due, _, _ in self._heap)

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                self._wake.clear()
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    delivery = heapq.heappop(self._heap)[2]
                    self._inflight += 1
                    group.create_task(self._deliver(delivery), name=f"webhook-{delivery.event}")
                await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        timeout = self._heap[0][0] - time.monotonic() if self._heap else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            async with self._limit:
                status = await self._post(delivery)
            self._log.append(
                WebhookAttempt(
                    delivery.webhook_id,
                    delivery.event,
                    delivery.object_id,
                    delivery.attempt,
                    status,
                    self._clock(),
                )
            )
            if status is None or not 200 <= status < 300:
                self._retry_or_drop(delivery, status)
        finally:
            self._inflight -= 1
            self._changed.set()

    async def _post(self, delivery: Delivery) -> int | None:
        """POST once; the HTTP status, or None on a connection error or timeout."""
        assert self._session is not None  # set in start(), before the task exists
        body = delivery.render(self._base_url)
        headers = {
            "Content-Type": "application/json",
            "x-sha2-signature": sign(delivery.token, body),
        }
        if delivery.attempt:
            headers["X-Katana-Retry-Num"] = str(delivery.attempt)
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with self._session.post(
                delivery.url, data=body, headers=headers, timeout=timeout
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    def _retry_or_drop(self, delivery: Delivery, status: int | None) -> None:
        if delivery.attempt >= len(self._retry_delays):
            _log.warning(
                "katana_sim_webhook_dropped",
                webhook_id=delivery.webhook_id,
                webhook_event=delivery.event,
                object_id=delivery.object_id,
                attempts=delivery.attempt + 1,
                last_status=status,
            )
            return
        delay = self._retry_delays[delivery.attempt]
        delivery.attempt += 1
        self._push(time.monotonic() + delay, delivery)

"""Katana MRP API client: paged reads in bulk, retries, and the shared rate limiter.

Every attempt takes one token from the process-wide ``KatanaLimiter`` and feeds the response's
X-Ratelimit-* headers back to it. A 429 pauses the limiter for Retry-After and retries; 5xx,
timeouts, connection errors and garbage bodies back off (full jitter) and retry up to
``max_attempts``; 401/403 raise ``KatanaAuthError`` at once; other 4xx raise ``KatanaError``.
The loop is ``katsyncd.httpcore``'s; what is Katana's own is in ``_KatanaHooks``.

The parsing helpers at the bottom are pure and lenient, because Katana's docs disagree with
each other about types (strings vs numbers, "Z" vs "+00:00", seconds vs milliseconds).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import aiohttp
import structlog

from katsyncd import __version__
from katsyncd.httpcore import (
    ANY_BODY,
    JSON_OBJECT,
    HttpCore,
    Params,
    RateLimited,
    Refused,
    Reply,
    Request,
    RetryPolicy,
    Shape,
    Transient,
    retry_after_seconds,
    session_transport,
)
from katsyncd.metrics import Metrics
from katsyncd.models import (
    InventoryRow,
    KatanaLocation,
    KatanaVariant,
    Movement,
    Priority,
    SalesOrder,
    SalesOrderRow,
    SalesOrderRowChange,
)
from katsyncd.ratelimit import KatanaLimiter

log = structlog.get_logger(__name__)

T = TypeVar("T")
PageHook = Callable[[int, int | None], None]  # (pages done, total pages or None)

MAX_PAGE_SIZE = 250
KATANA_DEFAULT_LIMIT = 50  # what Katana pages by when no ``limit`` is sent
IDS_PER_REQUEST = 250
QS_ARRAY_LIMIT = 20  # the repeated-key limit of common Express/qs versions
# A read needing this many id chunks, with the size of a full /inventory sweep unknown, tries
# the sweep's first page: X-Pagination tells its size, and the sweep is abandoned if longer.
SWEEP_PROBE_MIN_CHUNKS = 4
# 4xx statuses that say "this request is too big" whatever the body names.
_TOO_BIG_STATUSES = frozenset({413, 414, 431})
DEFAULT_RETRY_AFTER_SECONDS = 60.0
SERVER_ERRORS = range(500, 600)  # every 5xx is retried
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 30.0
BODY_EXCERPT_CHARS = 500
# A list endpoint's answer: {"data": [{...}, ...]} (or a bare list).
ROWS = Shape("a data list of objects", lambda body: extract_rows(body) is not None)


class KatanaError(Exception):
    """A Katana call failed for good. ``body`` is a truncated excerpt of the response."""

    def __init__(
        self, message: str, *, status: int | None = None, endpoint: str = "", body: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.endpoint = endpoint
        self.body = body[:BODY_EXCERPT_CHARS]


class KatanaAuthError(KatanaError):
    """401/403: the API key is missing, wrong or lacks access. Never retried."""


class IdsLimitLowered(Exception):
    """A read asked to stop when the ids per request were lowered (``inventory(...,
    stop_if_lowered=True)``): its caller plans again with the new size (nothing was used)."""


class KatanaClient:
    """Reads Katana in bulk through the shared limiter. The session belongs to the caller."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        limiter: KatanaLimiter,
        metrics: Metrics | None = None,
        *,
        max_attempts: int = 6,
        timeout: float = 30.0,
        page_size: int = MAX_PAGE_SIZE,
        rng: random.Random | None = None,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
        ids_per_request: int = IDS_PER_REQUEST,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self._metrics = metrics
        self._core = HttpCore(
            session_transport(session, timeout),
            RetryPolicy(max_attempts, backoff_base, backoff_cap, rng=rng),
            service="katana",
            retry_statuses=SERVER_ERRORS,
            rate_limit_header="X-Ratelimit-Remaining",
            unexpected=None if metrics is None else metrics.unexpected_counter("katana"),
        )
        self._hooks = {p: _KatanaHooks(limiter, metrics, p) for p in Priority}
        self._page_size = min(max(1, page_size), MAX_PAGE_SIZE)
        self._learned_ids_limit: int | None = None  # lowered after an ignored/rejected filter
        self.ids_per_request = ids_per_request
        self._id_filter_events: list[dict[str, Any]] = []
        self._inventory_rows: int | None = None  # X-Pagination total of an unfiltered read

    def __repr__(self) -> str:  # never show the key
        return f"KatanaClient({self._base_url!r})"

    @property
    def base_url(self) -> str:
        """Root of the API, e.g. ``https://api.katanamrp.com/v1`` (settable on config reload)."""
        return self._base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self._base_url = value.rstrip("/")

    @property
    def api_key(self) -> str:
        """The bearer key (settable on config reload). Never log it."""
        return self._api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        self._api_key = value
        self._headers = {
            "Authorization": f"Bearer {value}",
            "Accept": "application/json",
            "User-Agent": f"katsyncd/{__version__}",
        }

    # -- id filters ----------------------------------------------------------------------------

    @property
    def ids_per_request(self) -> int:
        """Configured ids per filtered request (``[katana] ids_per_request``, 1..250)."""
        return self._ids_per_request

    @ids_per_request.setter
    def ids_per_request(self, value: int) -> None:
        self._ids_per_request = min(max(1, value), IDS_PER_REQUEST)
        self._publish_ids_per_request()

    @property
    def effective_ids_per_request(self) -> int:
        """Ids per request actually sent: the configured value, or less once the gateway was
        seen ignoring or rejecting a longer id filter."""
        learned = self._learned_ids_limit
        return self._ids_per_request if learned is None else min(learned, self._ids_per_request)

    @property
    def learned_ids_limit(self) -> int | None:
        """Ids per request the gateway was seen to honour at most (None: never lowered)."""
        return self._learned_ids_limit

    def adopt_learned_ids_limit(self, limit: int) -> None:
        """Start from a size a previous process learned (kept under ``state_dir``)."""
        self._learned_ids_limit = min(max(1, limit), IDS_PER_REQUEST)
        self._publish_ids_per_request()

    def id_filter_status(self) -> dict[str, Any]:
        """For ``/status`` (under ``katana``): configured and effective ids per request, and
        each time the size was lowered (newest last)."""
        return {
            "configured": self._ids_per_request,
            "effective": self.effective_ids_per_request,
            "lowered": list(self._id_filter_events),
        }

    def inventory_sweep_pages(self) -> int | None:
        """Requests a full ``/inventory`` read takes (from the last unfiltered read's
        X-Pagination), or None before one was seen."""
        if self._inventory_rows is None:
            return None
        return max(1, math.ceil(self._inventory_rows / self._page_size))

    def inventory_sweep_cheaper(self, variants: int) -> bool:
        """Whether reading ``variants`` variants' inventory costs more id chunks than a full
        ``/inventory`` sweep of known size (False while the sweep's size is unknown)."""
        sweep = self.inventory_sweep_pages()
        chunks = math.ceil(variants / self.effective_ids_per_request)
        return sweep is not None and sweep < chunks

    def _publish_ids_per_request(self) -> None:
        if self._metrics is not None:
            self._metrics.katana_ids_per_request.set(self.effective_ids_per_request)

    def _lower_ids_limit(
        self, endpoint: str, param: str, size: int, how: str, status: int | None = None
    ) -> None:
        """A chunk of ``size`` ids was ignored or rejected: send fewer from now on (20, the
        known qs limit, then halving). Logged once per lowering; raises below one id."""
        new = QS_ARRAY_LIMIT if size > QS_ARRAY_LIMIT else size // 2
        if self._metrics is not None:
            self._metrics.katana_id_filter_failures.labels(endpoint=endpoint, kind=how).inc()
        if new < 1:
            raise KatanaError(
                f"the {param}= filter is {how} even with one id",
                status=status,
                endpoint=endpoint,
            )
        before = self.effective_ids_per_request
        if new >= before:
            return  # a concurrent read already lowered it further
        self._learned_ids_limit = new
        self._publish_ids_per_request()
        event = {
            "endpoint": endpoint,
            "parameter": param,
            "how": how,
            "status": status,
            "ids_sent": size,
            "ids_per_request": new,
            "at": datetime.now(UTC).isoformat(),
        }
        self._id_filter_events = [*self._id_filter_events, event][-10:]
        log.warning(
            "katana_id_filter_limited",
            endpoint=endpoint,
            parameter=param,
            how=how,
            status=status,
            expected=f"only rows for the {size} ids sent in {param}=",
            ids_sent=size,
            ids_per_request=new,
        )

    async def _by_ids(
        self,
        path: str,
        base: Params,
        param: str,
        ids: Collection[int],
        parse: Callable[[Mapping[str, Any]], T],
        key: Callable[[T], int],
        *,
        priority: Priority,
    ) -> AsyncIterator[list[T]]:
        """Rows for these ids, read in chunks of repeated ``param=`` values (non-empty lists)."""
        reader = self._id_chunks(path, base, param, ids, parse, key, priority=priority)
        async with contextlib.aclosing(reader) as chunks:
            async for _, rows in chunks:
                if rows:
                    yield rows

    async def _id_chunks(
        self,
        path: str,
        base: Params,
        param: str,
        ids: Collection[int],
        parse: Callable[[Mapping[str, Any]], T],
        key: Callable[[T], int],
        *,
        priority: Priority,
        size: int | None = None,
    ) -> AsyncGenerator[tuple[Sequence[int], list[T]], None]:
        """(chunk of ids, their rows) for these ids, read in chunks of repeated ``param=``
        values; ``((), [])`` right after the chunk size was lowered.

        Never trusts the gateway to have filtered: a row for an id not in the chunk means the
        filter was dropped (qs past its array limit), a 4xx about the parameter (or 413/414/
        431) means it was refused; either way the chunk size is lowered and the chunk read
        again, and rows of a dropped filter are never used.
        """
        pending = sorted(set(ids))
        while pending:
            limit = self.effective_ids_per_request
            chunk = pending[: min(limit, size) if size is not None else limit]
            params = [*base, *((param, str(i)) for i in chunk)]
            try:
                rows = await self._read_chunk(path, params, parse, key, set(chunk), priority)
            except KatanaAuthError:
                raise
            except KatanaError as exc:
                if len(chunk) <= 1 or not _about_param(exc, param):
                    raise
                self._lower_ids_limit(path, param, len(chunk), "rejected", exc.status)
                yield (), []  # the size was lowered: the caller may plan again
                continue
            if rows is None:
                self._lower_ids_limit(path, param, len(chunk), "ignored")
                yield (), []
                continue
            pending = pending[len(chunk) :]
            yield chunk, rows

    async def _read_chunk(
        self,
        path: str,
        params: Params,
        parse: Callable[[Mapping[str, Any]], T],
        key: Callable[[T], int],
        wanted: set[int],
        priority: Priority,
    ) -> list[T] | None:
        """Every row of one filtered read; None (at the first bad page) if the filter was
        ignored."""
        out: list[T] = []
        async with contextlib.aclosing(self.pages(path, params, priority=priority)) as pages:
            async for page in pages:
                rows = _parse_rows(page, parse, path)
                if any(key(r) not in wanted for r in rows):
                    return None
                out.extend(rows)
        return out

    # -- reads ---------------------------------------------------------------------------------

    async def get_page(
        self, path: str, params: Params, *, priority: Priority
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of a list endpoint: (rows, is_last_page). One limiter token per attempt."""
        rows, last, _ = await self._get_page(path, params, priority=priority)
        return rows, last

    async def _get_page(
        self, path: str, params: Params, *, priority: Priority
    ) -> tuple[list[dict[str, Any]], bool, int | None]:
        """One page: (rows, is_last_page, total_pages from X-Pagination or None)."""
        rows, last, info = await self._get_page_info(path, params, priority=priority)
        total = info["total_pages"]
        return rows, last, total if isinstance(total, int) else None

    async def _get_page_info(
        self, path: str, params: Params, *, priority: Priority
    ) -> tuple[list[dict[str, Any]], bool, dict[str, int | bool | None]]:
        """One page: (rows, is_last_page, X-Pagination as ``parse_pagination`` reads it)."""
        reply = await self._call(
            "GET", path, endpoint=path, priority=priority, params=params, shape=ROWS
        )
        rows = extract_rows(reply.body) or []
        limit = _param_int(params, "limit", KATANA_DEFAULT_LIMIT)
        header = reply.headers.get("X-Pagination")
        last = is_last_page(header, len(rows), limit)
        info = parse_pagination(header)
        records = info["total_records"]
        if path == "/inventory" and isinstance(records, int) and not _filtered(params):
            self._inventory_rows = records
        return rows, last, info

    async def pages(
        self, path: str, params: Params, *, priority: Priority, on_page: PageHook | None = None
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Every non-empty page, page=1.. until X-Pagination says last (or a short page).

        ``on_page(pages_done, total_pages)`` is called after each page (total None if unknown).
        """
        base = [(k, v) for k, v in params if k not in ("page", "limit")]
        page = 1
        while True:
            paging = [("limit", str(self._page_size)), ("page", str(page))]
            rows, last, total = await self._get_page(path, [*base, *paging], priority=priority)
            if on_page is not None:
                on_page(page, total)
            if rows:
                yield rows
            if last:
                return
            page += 1

    async def inventory(
        self,
        variant_ids: Collection[int],
        *,
        priority: Priority = Priority.LIVE,
        ids_per_request: int | None = None,
        stop_if_lowered: bool = False,
    ) -> list[InventoryRow]:
        """Current inventory of these variants at every location, read in bulk (never per id).

        Planned by cost: ``variant_id=`` chunks, or one full ``/inventory`` sweep when that is
        fewer requests (known from the last unfiltered read; probed with one page otherwise).
        ``stop_if_lowered``: raise ``IdsLimitLowered`` instead of planning again when the ids
        per request are lowered (the flush policy may rather hold the read, e.g. in a burst).
        """
        remaining = set(variant_ids)
        result: list[InventoryRow] = []
        while remaining:  # planned again whenever the ids per request are lowered
            per = self.effective_ids_per_request
            if ids_per_request is not None:
                per = min(per, max(1, ids_per_request))
            chunks = math.ceil(len(remaining) / per)
            sweep = self.inventory_sweep_pages()
            worth = chunks >= SWEEP_PROBE_MIN_CHUNKS if sweep is None else sweep < chunks
            if worth:
                swept = await self._sweep_inventory(remaining, chunks, priority)
                if swept is not None:
                    return result + swept
            reader = self._id_chunks(
                "/inventory",
                [],
                "variant_id",
                remaining,
                parse_inventory_row,
                _variant_of,
                priority=priority,
                size=per,
            )
            async with contextlib.aclosing(reader) as read:
                async for chunk, rows in read:
                    result.extend(rows)
                    remaining.difference_update(chunk)
                    if self.effective_ids_per_request < min(per, self._ids_per_request):
                        if stop_if_lowered:
                            raise IdsLimitLowered(self.effective_ids_per_request)
                        break
        return result

    async def _sweep_inventory(
        self, wanted: set[int], budget: int, priority: Priority
    ) -> list[InventoryRow] | None:
        """The wanted variants' rows from a full sweep, or None after the first page if the
        sweep turns out to take ``budget`` requests or more (id chunks are then cheaper)."""
        result: list[InventoryRow] = []
        total: list[int | None] = [None]

        def on_page(_done: int, pages: int | None) -> None:
            total[0] = pages

        reader = self.pages("/inventory", [], priority=priority, on_page=on_page)
        async with contextlib.aclosing(reader) as pages:
            async for page in pages:
                if total[0] is not None and total[0] >= budget:
                    return None
                rows = _parse_rows(page, parse_inventory_row, "/inventory")
                result.extend(r for r in rows if r.variant_id in wanted)
        if self._metrics is not None:
            self._metrics.katana_read_plans.labels(endpoint="/inventory", plan="sweep").inc()
        return result

    async def inventory_with_variants(
        self, *, location_id: int | None = None, priority: Priority = Priority.POLL
    ) -> AsyncGenerator[InventoryPage, None]:
        """``/inventory?extend=variant`` (of one location, or all), page by page: each row with
        the variant it embeds (``None`` where the answer left ``variant`` out)."""
        base: list[tuple[str, str]] = [("extend", "variant")]
        if location_id is not None:
            base.append(("location_id", str(location_id)))
        page = 1
        while True:
            paging = [("limit", str(self._page_size)), ("page", str(page))]
            raw, last, info = await self._get_page_info(
                "/inventory", [*base, *paging], priority=priority
            )
            yield _inventory_page(raw, info["total_records"])
            if last:
                return
            page += 1

    def note_inventory_rows(self, rows: int) -> None:
        """A full read of ``/inventory`` in location streams counted ``rows`` rows (what an
        unfiltered read's X-Pagination would have said): the read planner's sweep size."""
        self._inventory_rows = rows

    async def count_product_variants(
        self, *, created_before: datetime, priority: Priority = Priority.POLL
    ) -> int | None:
        """Live product variants created before ``created_before`` (one request of one row:
        X-Pagination's ``total_records``), or None when the answer does not say."""
        params = [
            ("include_deleted", "false"),
            ("type", "product"),
            ("created_at_max", format_datetime(created_before)),
            ("limit", "1"),
            ("page", "1"),
        ]
        _, _, info = await self._get_page_info("/variants", params, priority=priority)
        records = info["total_records"]
        return records if isinstance(records, int) else None

    async def all_inventory(
        self, *, priority: Priority = Priority.RECONCILE, on_page: PageHook | None = None
    ) -> AsyncIterator[list[InventoryRow]]:
        """The whole inventory, page by page (a full reconcile); ``on_page`` as in ``pages``."""
        async for page in self.pages("/inventory", [], priority=priority, on_page=on_page):
            yield _parse_rows(page, parse_inventory_row, "/inventory")

    async def variants(
        self,
        *,
        updated_at_min: datetime | None = None,
        include_deleted: bool = True,
        product_only: bool = False,
        priority: Priority = Priority.POLL,
    ) -> AsyncIterator[list[KatanaVariant]]:
        """Variants (optionally only those updated since ``updated_at_min``, only product
        variants), page by page."""
        params = [("include_deleted", _bool_param(include_deleted))]
        if product_only:
            params.append(("type", "product"))  # S10: materials never sync; don't page them
        if updated_at_min is not None:
            params.append(("updated_at_min", format_datetime(updated_at_min)))
        async for page in self.pages("/variants", params, priority=priority):
            yield _parse_rows(page, parse_variant, "/variants")

    async def variants_by_ids(
        self,
        ids: Collection[int],
        *,
        include_deleted: bool = True,
        priority: Priority = Priority.LIVE,
    ) -> AsyncIterator[list[KatanaVariant]]:
        """These variants (chunked, repeated ``ids=``), page by page; nothing for no ids."""
        params = [("include_deleted", _bool_param(include_deleted))]
        async for rows in self._by_ids(
            "/variants", params, "ids", ids, parse_variant, _id_of, priority=priority
        ):
            yield rows

    async def sales_orders(
        self,
        *,
        ids: Collection[int] | None = None,
        updated_at_min: datetime | None = None,
        status: str | None = None,
        include_deleted: bool = True,
        priority: Priority = Priority.POLL,
        on_page: PageHook | None = None,
    ) -> AsyncGenerator[list[SalesOrder], None]:
        """Sales orders with their rows, by ids (chunked, repeated ``ids=``), date and status.

        ``on_page`` as in ``pages`` (only without ``ids``)."""
        params = [("include_deleted", _bool_param(include_deleted))]
        if updated_at_min is not None:
            params.append(("updated_at_min", format_datetime(updated_at_min)))
        if status is not None:
            params.append(("status", status))
        if ids is None:
            async for page in self.pages(
                "/sales_orders", params, priority=priority, on_page=on_page
            ):
                yield _parse_rows(page, parse_sales_order, "/sales_orders")
            return
        async for rows in self._by_ids(
            "/sales_orders", params, "ids", ids, parse_sales_order, _id_of, priority=priority
        ):
            yield rows

    async def sales_order_rows(
        self,
        *,
        updated_at_min: datetime,
        include_deleted: bool = True,
        priority: Priority = Priority.POLL,
        on_page: PageHook | None = None,
    ) -> AsyncIterator[list[SalesOrderRowChange]]:
        """Sales-order rows updated since ``updated_at_min`` (soft-deleted ones too: nested rows
        never show deletions), page by page; ``on_page`` as in ``pages``."""
        params = [
            ("include_deleted", _bool_param(include_deleted)),
            ("updated_at_min", format_datetime(updated_at_min)),
        ]
        async for page in self.pages(
            "/sales_order_rows", params, priority=priority, on_page=on_page
        ):
            yield _parse_rows(page, parse_sales_order_row_change, "/sales_order_rows")

    async def inventory_movements(
        self, *, updated_at_min: datetime, priority: Priority = Priority.POLL
    ) -> AsyncIterator[list[Movement]]:
        """Inventory movements updated since ``updated_at_min``, page by page."""
        params = [("updated_at_min", format_datetime(updated_at_min))]
        async for page in self.pages("/inventory_movements", params, priority=priority):
            yield _parse_rows(page, parse_movement, "/inventory_movements")

    async def locations(self, *, priority: Priority = Priority.POLL) -> list[KatanaLocation]:
        """Every (non-deleted) location."""
        result: list[KatanaLocation] = []
        async for page in self.pages("/locations", [], priority=priority):
            result.extend(_parse_rows(page, parse_location, "/locations"))
        return result

    # -- webhook registration (rare administrative calls, sent at LIVE priority) ---------------

    async def list_webhooks(self) -> list[dict[str, Any]]:
        """Every registered webhook, as Katana returns it (including its signing token)."""
        result: list[dict[str, Any]] = []
        async for page in self.pages("/webhooks", [], priority=Priority.LIVE):
            result.extend(page)
        return result

    async def create_webhook(
        self, url: str, events: Sequence[str], *, description: str = "katsyncd"
    ) -> dict[str, Any]:
        """Register a webhook. Not retried after an ambiguous failure (it could duplicate)."""
        body = {
            "url": url,
            "subscribed_events": list(events),
            "enabled": True,
            "description": description,
        }
        reply = await self._call(
            "POST",
            "/webhooks",
            endpoint="/webhooks",
            json_body=body,
            shape=JSON_OBJECT,
            idempotent=False,
        )
        result: dict[str, Any] = reply.body
        return result

    async def update_webhook(self, webhook_id: int, **fields: Any) -> dict[str, Any]:
        """Change only the given fields of a webhook (PATCH)."""
        path = f"/webhooks/{webhook_id}"
        reply = await self._call(
            "PATCH", path, endpoint="/webhooks/{id}", json_body=fields, shape=JSON_OBJECT
        )
        result: dict[str, Any] = reply.body
        return result

    async def delete_webhook(self, webhook_id: int) -> None:
        """Delete a webhook; one that is already gone counts as deleted."""
        try:
            await self._call("DELETE", f"/webhooks/{webhook_id}", endpoint="/webhooks/{id}")
        except KatanaAuthError:
            raise
        except KatanaError as exc:
            if exc.status != 404:
                raise

    # -- one logical call ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        endpoint: str,
        priority: Priority = Priority.LIVE,
        params: Params = (),
        json_body: Any = None,
        shape: Shape = ANY_BODY,
        idempotent: bool = True,
    ) -> Reply:
        """Send until success, retrying per the policy in the module docstring."""
        request = Request(
            method,
            self._base_url + path,
            endpoint,
            params=params,
            json_body=json_body,
            headers=self._headers,
            shape=shape,
            idempotent=idempotent,
        )
        return await self._core.call(request, self._hooks[priority])


class _KatanaHooks:
    """Katana's part in each attempt: the shared limiter at one priority, the X-Ratelimit-*
    headers, Retry-After, metrics, and ``KatanaError``/``KatanaAuthError``."""

    def __init__(self, limiter: KatanaLimiter, metrics: Metrics | None, priority: Priority) -> None:
        self.on_wire = 0
        self._limiter = limiter
        self._metrics = metrics
        self._priority = priority

    async def gate(self) -> None:
        waited = await self._limiter.acquire(self._priority)
        if self._metrics is not None and waited > 0:
            label = self._priority.name.lower()
            self._metrics.katana_limiter_wait_seconds.labels(priority=label).inc(waited)

    def answered(self, request: Request, status: str, headers: Mapping[str, str] | None) -> None:
        if self._metrics is not None:
            self._metrics.katana_requests.labels(endpoint=request.endpoint, status=status).inc()
        if headers is None:
            return
        self._limiter.observe(
            limit=_header_int(headers, "X-Ratelimit-Limit"),
            remaining=_header_int(headers, "X-Ratelimit-Remaining"),
            reset=_header_float(headers, "X-Ratelimit-Reset"),
        )
        if self._metrics is not None:
            self._metrics.katana_budget_remaining.set(self._limiter.available())

    def rate_limited(self, request: Request, outcome: RateLimited) -> None:
        seconds = outcome.retry_after
        if seconds is None:
            seconds = DEFAULT_RETRY_AFTER_SECONDS
        self._limiter.pause_for(seconds)
        if self._metrics is not None:
            self._metrics.katana_rate_limited.inc()
            self._metrics.katana_budget_remaining.set(self._limiter.available())
        log.warning("katana_rate_limited", retry_after_seconds=seconds)

    def failed(self, request: Request, outcome: Transient) -> None:
        pass  # counted by status in ``answered``

    def succeeded(self, request: Request, reply: Reply) -> None:
        pass

    def refused(self, request: Request, outcome: Refused) -> KatanaError:
        status, endpoint, body = outcome.status, request.endpoint, outcome.text
        if status in (401, 403):
            message = f"Katana refused the API key ({status})"
            return KatanaAuthError(message, status=status, endpoint=endpoint, body=body)
        return KatanaError(f"HTTP {status}", status=status, endpoint=endpoint, body=body)

    def gave_up(self, request: Request, message: str, status: int | None, body: str) -> KatanaError:
        return KatanaError(message, status=status, endpoint=request.endpoint, body=body)


# -- pure helpers ------------------------------------------------------------------------------


def extract_rows(body: Any) -> list[dict[str, Any]] | None:
    """The rows of a list response (``{"data": [...]}`` or a bare list); None if malformed."""
    data = body.get("data") if isinstance(body, dict) else body
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        return None
    return data


def parse_pagination(header: str | None) -> dict[str, int | bool | None]:
    """X-Pagination as typed values; strings ("150", "false") and numbers/bools both accepted."""
    try:
        raw = json.loads(header) if header else {}
    except ValueError:
        raw = {}
    if not isinstance(raw, dict):
        raw = {}
    return {
        "total_records": lenient_int(raw.get("total_records")),
        "total_pages": lenient_int(raw.get("total_pages")),
        "page": lenient_int(raw.get("page")),
        "first_page": lenient_bool(raw.get("first_page")),
        "last_page": lenient_bool(raw.get("last_page")),
    }


def is_last_page(header: str | None, rows: int, limit: int) -> bool:
    """Whether a page is the last: X-Pagination if it says, else a short (or empty) page."""
    if rows == 0:
        return True
    info = parse_pagination(header)
    last, page, total = info["last_page"], info["page"], info["total_pages"]
    if isinstance(last, bool):
        return last
    if isinstance(page, int) and isinstance(total, int):
        return page >= total
    return rows < limit


def lenient_int(value: Any) -> int | None:
    """An int from an int, an integral float or a numeric string; None otherwise."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return int(number) if number.is_finite() and number == number.to_integral_value() else None


def lenient_bool(value: Any) -> bool | None:
    """A bool from a bool, 0/1 or "true"/"false" (any case); None otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
    return None


def parse_decimal(value: Any) -> Decimal:
    """A quantity from a decimal string or a JSON number; null counts as zero."""
    if value is None:
        return Decimal(0)
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a quantity: {value!r}") from exc
    if not number.is_finite():
        raise ValueError(f"not a quantity: {value!r}")
    return number


def parse_datetime(value: Any) -> datetime:
    """An aware UTC datetime from ISO 8601 with "Z" or an offset, with or without fraction."""
    if not isinstance(value, str):
        raise ValueError(f"not a datetime: {value!r}")
    parsed = datetime.fromisoformat(value.strip())
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_optional_datetime(value: Any) -> datetime | None:
    """Like ``parse_datetime``, with null or "" meaning None."""
    return None if value is None or value == "" else parse_datetime(value)


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and "Z", as Katana's filters expect (naive = UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_retry_after(value: str | None) -> float:
    """Retry-After as seconds (delta-seconds or an HTTP date); 60 when absent or garbage."""
    seconds = retry_after_seconds(value)
    return DEFAULT_RETRY_AFTER_SECONDS if seconds is None else seconds


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_decimal(value: Any) -> Decimal | None:
    """A hint's quantity (``balance_after``): None when missing or not a number."""
    try:
        return None if value is None else parse_decimal(value)
    except ValueError:
        return None


def _hint_datetime(value: Any) -> datetime | None:
    """A hint's time (an order's ``created_at``): None when missing or not a datetime."""
    try:
        return parse_optional_datetime(value)
    except ValueError:
        return None


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def parse_inventory_row(row: Mapping[str, Any]) -> InventoryRow:
    """One ``/inventory`` row."""
    return InventoryRow(
        variant_id=int(row["variant_id"]),
        location_id=int(row["location_id"]),
        in_stock=parse_decimal(row.get("quantity_in_stock")),
        committed=parse_decimal(row.get("quantity_committed")),
    )


def parse_variant(row: Mapping[str, Any]) -> KatanaVariant:
    """One ``/variants`` row; a missing ``type`` is inferred from product_id/material_id."""
    product_id = _optional_int(row.get("product_id"))
    kind = row.get("type") or ("product" if product_id is not None else "material")
    return KatanaVariant(
        id=int(row["id"]),
        sku=_optional_str(row.get("sku")),
        type=str(kind),
        created_at=parse_datetime(row["created_at"]),
        updated_at=parse_datetime(row["updated_at"]),
        deleted_at=parse_optional_datetime(row.get("deleted_at")),
        product_id=product_id,
    )


def parse_sales_order_row(row: Mapping[str, Any]) -> SalesOrderRow:
    """One row nested in a sales order."""
    return SalesOrderRow(
        id=int(row["id"]),
        variant_id=int(row["variant_id"]),
        quantity=parse_decimal(row.get("quantity")),
        location_id=_optional_int(row.get("location_id")),
    )


def parse_sales_order_row_change(row: Mapping[str, Any]) -> SalesOrderRowChange:
    """One ``/sales_order_rows`` row (its order id, update and soft-delete times included)."""
    return SalesOrderRowChange(
        id=int(row["id"]),
        sales_order_id=int(row["sales_order_id"]),
        variant_id=int(row["variant_id"]),
        quantity=parse_decimal(row.get("quantity")),
        location_id=_optional_int(row.get("location_id")),
        updated_at=parse_datetime(row["updated_at"]),
        deleted_at=parse_optional_datetime(row.get("deleted_at")),
    )


def parse_sales_order(row: Mapping[str, Any]) -> SalesOrder:
    """One ``/sales_orders`` row with its nested ``sales_order_rows``."""
    return SalesOrder(
        id=int(row["id"]),
        status=str(row["status"]),
        location_id=_optional_int(row.get("location_id")),
        ecommerce_order_type=_optional_str(row.get("ecommerce_order_type")),
        source=_optional_str(row.get("source")),
        updated_at=parse_datetime(row["updated_at"]),
        deleted_at=parse_optional_datetime(row.get("deleted_at")),
        rows=tuple(parse_sales_order_row(r) for r in row.get("sales_order_rows") or ()),
        order_no=_optional_str(row.get("order_no")),
        created_at=_hint_datetime(row.get("created_at")),
    )


def parse_movement(row: Mapping[str, Any]) -> Movement:
    """One ``/inventory_movements`` row."""
    return Movement(
        id=int(row["id"]),
        variant_id=int(row["variant_id"]),
        location_id=int(row["location_id"]),
        updated_at=parse_datetime(row["updated_at"]),
        balance_after=_optional_decimal(row.get("balance_after")),
    )


def parse_location(row: Mapping[str, Any]) -> KatanaLocation:
    """One ``/locations`` row."""
    return KatanaLocation(id=int(row["id"]), name=str(row.get("name") or ""))


def _parse_rows(
    page: Sequence[Mapping[str, Any]], parse: Callable[[Mapping[str, Any]], T], endpoint: str
) -> list[T]:
    """Parse a page; a malformed row fails the call (silently skipping could zero stock)."""
    try:
        return [parse(row) for row in page]
    except (KeyError, TypeError, ValueError) as exc:
        raise KatanaError(
            f"malformed row: {type(exc).__name__}: {exc}", status=200, endpoint=endpoint
        ) from exc


@dataclass(frozen=True, slots=True)
class InventoryPage:
    """One page of ``/inventory?extend=variant``: its rows, the variant each embeds (None
    where it embeds none) and the read's ``total_records`` (None if X-Pagination is silent)."""

    rows: list[InventoryRow]
    variants: list[KatanaVariant | None]
    total_records: int | None

    @property
    def extended(self) -> bool:
        """Every row embedded its variant."""
        return all(v is not None for v in self.variants)


def _inventory_page(raw: Sequence[Mapping[str, Any]], total: int | bool | None) -> InventoryPage:
    rows = _parse_rows(raw, parse_inventory_row, "/inventory")
    variants = _parse_rows(raw, _embedded_variant, "/inventory")
    return InventoryPage(rows, variants, total if isinstance(total, int) else None)


def _embedded_variant(row: Mapping[str, Any]) -> KatanaVariant | None:
    """The ``variant`` an ``extend=variant`` row embeds, or None when it embeds none."""
    embedded = row.get("variant")
    return parse_variant(embedded) if isinstance(embedded, Mapping) else None


def _id_of(row: KatanaVariant | SalesOrder) -> int:
    return row.id


def _variant_of(row: InventoryRow) -> int:
    return row.variant_id


def _filtered(params: Params) -> bool:
    """Whether a read has any filter (paging and ``extend`` aside)."""
    return any(k not in ("page", "limit", "extend") for k, _ in params)


def _about_param(exc: KatanaError, param: str) -> bool:
    """A 4xx that refuses the id filter: names the parameter, or says the request is too big.
    (Auth, 404 and 429 never are.)"""
    status = exc.status
    if status is None or not 400 <= status < 500 or status in (401, 403, 404, 429):
        return False
    return status in _TOO_BIG_STATUSES or param in exc.body


def _bool_param(value: bool) -> str:
    return "true" if value else "false"


def _param_int(params: Params, name: str, default: int) -> int:
    for key, value in params:
        if key == name:
            return lenient_int(value) or default
    return default


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    return lenient_int(headers.get(name))


def _header_float(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None

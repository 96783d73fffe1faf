"""BigCommerce client for one store: catalogue and inventory reads, absolute stock writes.

Every attempt first waits on the store's ``BcLimiter`` and feeds the response's X-Rate-Limit-*
headers back to it. A 429 is handed to the limiter (which decides how long to wait) and retried;
500/502/503/504, timeouts, connection errors and garbage bodies back off with full jitter and
retry up to ``max_attempts``; 501/505 and other 5xx are final; 401/403 raise ``BcAuthError``; a
422 raises ``BcRejected``; any other 4xx on a write (400, 404, 409, 413, ...) raises
``BcStoreError``: the request or the store's configuration is wrong, not an item. The loop is
``katsyncd.httpcore``'s; what is BigCommerce's own is in ``_BcHooks``.

``write_isolating`` turns one rejected batch into "these items are bad, the rest are written":
it drops the items a 422 names, and bisects when it names none, within ``ISOLATION_BUDGET``
extra requests per batch (what is left stays unresolved, for the next push). A 422 saying the
location is not found is a store error, never bisected.
"""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import aiohttp
import structlog

from katsyncd import __version__
from katsyncd.httpcore import (
    HttpCore,
    Params,
    RateLimited,
    Refused,
    Reply,
    Request,
    RetryPolicy,
    Shape,
    Transient,
    session_transport,
)
from katsyncd.metrics import Metrics
from katsyncd.models import AbsoluteItem, BcItem, WriteOutcome
from katsyncd.ratelimit import BcLimiter

log = structlog.get_logger(__name__)

T = TypeVar("T")

ABSOLUTE_PATH = "/v3/inventory/adjustments/absolute"
PRODUCTS_PATH = "/v3/catalog/products"
VARIANTS_PATH = "/v3/catalog/variants"
LOCATIONS_PATH = "/v3/inventory/locations"
ITEMS_PATH = "/v3/inventory/items"

MAX_WRITE_ITEMS = 2000
PAGE_SIZE = 250
IDS_PER_REQUEST = 250
RETRY_STATUSES = frozenset({500, 502, 503, 504})
# Extra requests one batch (<= 2,000 items) may spend bisecting 422s that name no item. Two per
# halving, and 2,000 items halve to one in 11 steps: every batch pins at least one item.
ISOLATION_BUDGET = 32
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0
TITLE_CHARS = 500
# Product fields the SKU index needs (the id always comes back). The spec's include_fields
# enum has no entries for embedded variants, so variants come back whole.
# Whether naming fields drops the embedded variants is undocumented: when a product that needs
# them comes back without them, they are read from /v3/catalog/variants (VARIANT_FIELDS).
PRODUCT_FIELDS = "sku,inventory_tracking,base_variant_id"
VARIANT_FIELDS = "sku,product_id"
# What a 2xx must carry: a write its transaction id, a read its rows.
TRANSACTION = Shape(
    "an object with a transaction_id",
    lambda body: isinstance(body, dict) and isinstance(body.get("transaction_id"), str | int),
)
ROWS = Shape(
    "an object with a data list of objects",
    lambda body: (
        isinstance(body, dict)
        and isinstance(body.get("data"), list)
        and all(isinstance(row, dict) for row in body["data"])
    ),
)

FailureReason = Literal[
    "rate_limited", "server_error", "timeout", "rejected", "auth", "request", "location"
]
StoreErrorKind = Literal["auth", "not_found", "location", "request"]
STORE_ERROR_HINTS: dict[StoreErrorKind, str] = {
    "auth": "check the access token and its scopes (store_inventory modify)",
    "not_found": "check store_hash and location_id",
    "location": "check location_id: it must be an enabled location of the store "
    "(GET /v3/inventory/locations)",
    "request": "BigCommerce refused the whole request; see the title, check the store's "
    "settings, and report it if it persists",
}


class BcError(Exception):
    """A BigCommerce call failed for good."""

    def __init__(
        self, message: str, *, status: int | None = None, title: str = "", store: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title[:TITLE_CHARS]
        self.store = store


class BcStoreError(BcError):
    """A store-wide failure no item is to blame for: token or scopes, store hash, location, or
    the request as a whole. Never bisected; the writer keeps the batch and backs off."""

    def __init__(
        self,
        message: str,
        *,
        kind: StoreErrorKind,
        status: int | None = None,
        title: str = "",
        store: str = "",
    ) -> None:
        super().__init__(message, status=status, title=title, store=store)
        self.kind: StoreErrorKind = kind

    @property
    def hint(self) -> str:
        return STORE_ERROR_HINTS[self.kind]


class BcAuthError(BcStoreError):
    """401/403: the access token is wrong, revoked, or lacks a scope. Never retried at once."""

    def __init__(
        self, message: str, *, status: int | None = None, title: str = "", store: str = ""
    ) -> None:
        super().__init__(message, kind="auth", status=status, title=title, store=store)


class BcRejected(BcError):
    """BigCommerce refused the request's content (422).

    ``bad_identities`` holds item keys ("v:106", "p:113") named by the title or errors;
    ``bad_locations`` the location ids of "Location not found, identities: [3,2]"; and
    ``bad_indexes`` positions in the request's ``items`` named by error keys like "items.3".
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        title: str = "",
        store: str = "",
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, status=status, title=title, store=store)
        self.errors: dict[str, Any] = errors or {}
        texts = [title, *(str(v) for v in self.errors.values()), *self.errors]
        self.bad_identities: set[str] = parse_item_identities(texts)
        self.bad_locations: set[int] = parse_location_identities(texts)
        self.bad_indexes: set[int] = parse_item_indexes(self.errors)


class BigCommerceClient:
    """One store's API. The session belongs to the caller; the limiter is the store's own."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        api_base_url: str,
        store_hash: str,
        access_token: str,
        limiter: BcLimiter,
        metrics: Metrics | None = None,
        *,
        store_name: str = "",
        max_attempts: int = 8,
        timeout: float = 30.0,
        rng: random.Random | None = None,
        backoff_base: float = BACKOFF_BASE_SECONDS,
        backoff_cap: float = BACKOFF_CAP_SECONDS,
    ) -> None:
        self._root = f"{api_base_url.rstrip('/')}/stores/{store_hash}"
        self._headers = {
            "X-Auth-Token": access_token,
            "Accept": "application/json",
            "User-Agent": f"katsyncd/{__version__}",
        }
        self._store = store_name or store_hash
        self._core = HttpCore(
            session_transport(session, timeout),
            RetryPolicy(max_attempts, backoff_base, backoff_cap, rng=rng),
            service="bigcommerce",
            retry_statuses=RETRY_STATUSES,
            log_fields={"store": self._store},
            rate_limit_header="X-Rate-Limit-Requests-Left",
            unexpected=None if metrics is None else metrics.unexpected_counter("bigcommerce"),
        )
        self._read_hooks = _BcHooks(limiter, metrics, self._store, write=False)
        self._write_hooks = _BcHooks(limiter, metrics, self._store, write=True)

    def __repr__(self) -> str:  # never show the token
        return f"BigCommerceClient({self._root!r})"

    @property
    def reads_failing(self) -> bool:
        """The last read attempt failed (5xx, timeout, connection) and none succeeded since."""
        return self._read_hooks.failing

    @property
    def writes_in_flight(self) -> int:
        """Write requests on the wire now (shutdown waits for these)."""
        return self._write_hooks.on_wire

    # -- reads ---------------------------------------------------------------------------------

    async def catalog_items(self) -> AsyncIterator[list[BcItem]]:
        """Every product with its variants, flattened to SKU-carrying items, page by page.

        Products whose variants matter (tracked by variant, or untracked) but came back
        without them get them from ``/v3/catalog/variants``, one request per page of products.
        """
        params = [("include", "variants"), ("include_fields", PRODUCT_FIELDS)]
        async for page in self._pages(PRODUCTS_PATH, params):
            missing = [p["id"] for p in page if lacks_variants(p)]
            if missing:
                found = await self._variants_of(missing)
                page = [
                    {**p, "variants": found.get(p["id"], [])} if lacks_variants(p) else p
                    for p in page
                ]
            items = [item for product in page for item in flatten_product(product)]
            if items:
                yield items

    async def _variants_of(self, product_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
        """product id -> its variants (``id``, ``sku``, ``product_id``)."""
        found: dict[int, list[dict[str, Any]]] = {}
        for chunk in _chunks(sorted(set(product_ids)), IDS_PER_REQUEST):
            params = [
                ("product_id:in", ",".join(map(str, chunk))),
                ("include_fields", VARIANT_FIELDS),
            ]
            async for rows in self._pages(VARIANTS_PATH, params):
                for row in rows:
                    product_id = row.get("product_id")
                    if isinstance(product_id, int):
                        found.setdefault(product_id, []).append(row)
        return found

    async def locations(self) -> list[dict[str, Any]]:
        """Every inventory location of the store."""
        result: list[dict[str, Any]] = []
        async for page in self._pages(LOCATIONS_PATH, []):
            result.extend(page)
        return result

    async def inventory_levels(self, items: Collection[BcItem], location_id: int) -> dict[str, int]:
        """item_key -> total_inventory_onhand at ``location_id``, for the tracked items given.

        Items BigCommerce returns nothing for are absent from the result.
        """
        levels: dict[str, int] = {}
        for kind, ids in _ids_by_kind(items).items():
            for chunk in _chunks(ids, IDS_PER_REQUEST):
                await self._read_levels(kind, chunk, location_id, levels)
        return levels

    async def _read_levels(
        self, kind: Literal["v", "p"], ids: Sequence[int], location_id: int, into: dict[str, int]
    ) -> None:
        name = "variant_id" if kind == "v" else "product_id"
        wanted = {f"{kind}:{i}" for i in ids}
        params = [(f"{name}:in", ",".join(map(str, ids))), ("location_id:in", str(location_id))]
        async for page in self._pages(ITEMS_PATH, params):
            for key, level in iter_levels(page, name, location_id):
                if key in wanted:
                    into.setdefault(key, level)

    async def _pages(
        self, path: str, params: Sequence[tuple[str, str]]
    ) -> AsyncIterator[list[dict[str, Any]]]:
        page = 1
        while True:
            query = [*params, ("limit", str(PAGE_SIZE)), ("page", str(page))]
            reply = await self._call("GET", path, params=query)
            rows: list[dict[str, Any]] = reply.body["data"]
            if rows:
                yield rows
            if is_last_page(reply.body, len(rows), PAGE_SIZE):
                return
            page += 1

    # -- writes --------------------------------------------------------------------------------

    async def set_absolute(self, items: Sequence[AbsoluteItem], *, reason: str) -> str:
        """One absolute adjustment (<= 2000 items); returns BigCommerce's transaction id."""
        if not items or len(items) > MAX_WRITE_ITEMS:
            raise ValueError(
                f"an absolute adjustment takes 1..{MAX_WRITE_ITEMS} items, got {len(items)}"
            )
        body = {"reason": reason, "items": [item.to_json() for item in items]}
        reply = await self._call(
            "PUT", ABSOLUTE_PATH, json_body=body, shape=TRANSACTION, write=True
        )
        return str(reply.body["transaction_id"])

    async def write_isolating(self, items: Sequence[AbsoluteItem], *, reason: str) -> WriteOutcome:
        """Write everything that BigCommerce accepts; record each rejected item with the reason.

        Batches of <= 2000. A rejected batch loses the items its error names and is resent;
        if the error names none, it is bisected until single items are rejected. Other errors
        propagate (what was written so far is then lost from the outcome, not from the store).
        """
        outcome = WriteOutcome()
        for batch in _chunks(items, MAX_WRITE_ITEMS):
            await self._write_batch(batch, reason, outcome)
        return outcome

    async def _write_batch(
        self,
        batch: Sequence[AbsoluteItem],
        reason: str,
        outcome: WriteOutcome,
    ) -> None:
        pending: list[Sequence[AbsoluteItem]] = [batch]
        budget = ISOLATION_BUDGET
        while pending:
            part = pending.pop()
            try:
                outcome.transaction_ids.append(await self.set_absolute(part, reason=reason))
            except BcRejected as exc:
                if is_location_error(exc, part):
                    self._write_hooks.count_failure("location")
                    raise BcStoreError(
                        str(exc),
                        kind="location",
                        status=exc.status,
                        title=exc.title,
                        store=self._store,
                    ) from exc
                parts = _isolate(part, exc, outcome)
                if len(parts) > 1 and budget < len(parts):
                    outcome.unresolved.extend(part)  # stays in the backlog for the next push
                    log.warning(
                        "bigcommerce_isolation_budget_spent",
                        store=self._store,
                        endpoint=ABSOLUTE_PATH,
                        unresolved=len(part),
                        title=exc.title,
                    )
                    continue
                if len(parts) > 1:
                    budget -= len(parts)
                pending.extend(reversed(parts))
                continue
            outcome.written.extend(part)

    # -- one logical call ----------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Params = (),
        json_body: Any = None,
        shape: Shape = ROWS,
        write: bool = False,
    ) -> Reply:
        """Send until success, retrying per the policy in the module docstring."""
        headers = self._headers
        if json_body is not None:
            headers = {**headers, "Content-Type": "application/json"}
        request = Request(
            method,
            self._root + path,
            path,
            params=params,
            json_body=json_body,
            headers=headers,
            shape=shape,
        )
        return await self._core.call(request, self._write_hooks if write else self._read_hooks)


class _BcHooks:
    """BigCommerce's part in each attempt: the store's limiter and its X-Rate-Limit-* headers,
    metrics (write failures only for writes), and the ``BcError`` family."""

    def __init__(
        self, limiter: BcLimiter, metrics: Metrics | None, store: str, *, write: bool
    ) -> None:
        self.on_wire = 0
        self.failing = False  # the last attempt failed (5xx, timeout, connection), none since
        self._limiter = limiter
        self._metrics = metrics
        self._store = store
        self._write = write

    async def gate(self) -> None:
        waited = await self._limiter.wait()
        if self._metrics is not None and waited > 0:
            self._metrics.bc_rate_limit_wait_seconds.labels(store=self._store).inc(waited)

    def answered(self, request: Request, status: str, headers: Mapping[str, str] | None) -> None:
        if self._metrics is not None:
            labels = {"store": self._store, "endpoint": request.endpoint, "status": status}
            self._metrics.bc_requests.labels(**labels).inc()
        if headers is not None:
            self._limiter.observe(headers)

    def rate_limited(self, request: Request, outcome: RateLimited) -> None:
        delay = self._limiter.on_429(outcome.headers)
        log.warning("bigcommerce_rate_limited", store=self._store, delay_seconds=round(delay, 3))
        self.count_failure("rate_limited")

    def failed(self, request: Request, outcome: Transient) -> None:
        self.failing = True
        self.count_failure("timeout" if outcome.kind == "timeout" else "server_error")

    def succeeded(self, request: Request, reply: Reply) -> None:
        self.failing = False
        self._limiter.on_success()

    def refused(self, request: Request, outcome: Refused) -> BcError:
        """The final exception for a status that is not retried."""
        status = outcome.status
        title, errors = _problem(outcome.body)
        message = f"HTTP {status}: {title}" if title else f"HTTP {status}"
        store = self._store
        if status in (401, 403):
            self.count_failure("auth")
            return BcAuthError(message, status=status, title=title, store=store)
        if status == 422:
            self.count_failure("rejected")
            return BcRejected(message, status=status, title=title, store=store, errors=errors)
        if self._write and 400 <= status < 500:
            self.count_failure("request")
            kind: StoreErrorKind = "not_found" if status == 404 else "request"
            return BcStoreError(message, kind=kind, status=status, title=title, store=store)
        if status >= 500:
            self.count_failure("server_error")
        return BcError(message, status=status, title=title, store=store)

    def gave_up(self, request: Request, message: str, status: int | None, body: str) -> BcError:
        return BcError(message, status=status, store=self._store)

    def count_failure(self, reason: FailureReason) -> None:
        """One failed write, by reason (reads are not counted)."""
        if self._write and self._metrics is not None:
            self._metrics.bc_write_failures.labels(store=self._store, reason=reason).inc()


# -- isolating rejected items ------------------------------------------------------------------


def _isolate(
    part: Sequence[AbsoluteItem], exc: BcRejected, outcome: WriteOutcome
) -> list[Sequence[AbsoluteItem]]:
    """Record what a rejection pins down; return the parts still to send, in order."""
    named = [i for n, i in enumerate(part) if _is_named(n, i, exc)]
    if named:
        outcome.rejected.extend((item, exc.title) for item in named)
        rest = [i for n, i in enumerate(part) if not _is_named(n, i, exc)]
        return [rest] if rest else []
    if len(part) == 1:
        outcome.rejected.append((part[0], exc.title))
        return []
    middle = len(part) // 2
    return [part[:middle], part[middle:]]


def is_location_error(exc: BcRejected, part: Sequence[AbsoluteItem]) -> bool:
    """A 422 "Location not found" that names no location, or every location of ``part``."""
    if "location not found" not in exc.title.lower():
        return False
    return not exc.bad_locations or all(i.location_id in exc.bad_locations for i in part)


def location_problem(locations: Iterable[Mapping[str, Any]], location_id: int) -> str | None:
    """None when ``location_id`` is an enabled location in ``GET /v3/inventory/locations``
    rows; otherwise what is wrong with it."""
    for row in locations:
        if row.get("id") == location_id:
            if row.get("enabled") is False:
                return f"location {location_id} is disabled"
            return None
    return f"location {location_id} does not exist"


def lacks_variants(product: Mapping[str, Any]) -> bool:
    """Whether a product needs its variants but came without them. Every product has at least
    one variant (its base variant), so an empty list is as good as a missing one."""
    if product.get("inventory_tracking") not in ("variant", "none"):
        return False
    if not isinstance(product.get("id"), int):
        return False
    variants = product.get("variants")
    return not isinstance(variants, list) or not variants


def _is_named(index: int, item: AbsoluteItem, exc: BcRejected) -> bool:
    return (
        item.item_key in exc.bad_identities
        or item.location_id in exc.bad_locations
        or index in exc.bad_indexes
    )


_ITEM_IDENTITY_RE = re.compile(
    r"\b(variant_id|product_id)s?\b\W{0,3}(\d+(?:\s*,\s*\d+)*)", re.IGNORECASE
)
_LOCATION_IDENTITY_RE = re.compile(
    r"\blocations?\b[^\[\]]*?\bidentit(?:y|ies)\b\W{0,3}\[([\d,\s]+)\]", re.IGNORECASE
)
_ITEM_INDEX_RE = re.compile(r"^items?\s*(?:\.|\[)\s*(\d+)\s*\]?")


def parse_item_identities(texts: Iterable[str]) -> set[str]:
    """Item keys named in error texts: "variant_id 106" -> "v:106", "product_id 113" -> "p:113"."""
    found: set[str] = set()
    for text in texts:
        for kind, numbers in _ITEM_IDENTITY_RE.findall(text):
            prefix = "v" if kind.lower() == "variant_id" else "p"
            found.update(f"{prefix}:{n}" for n in re.findall(r"\d+", numbers))
    return found


def parse_location_identities(texts: Iterable[str]) -> set[int]:
    """Location ids of messages like "Location not found, identities: [3,2]"."""
    found: set[int] = set()
    for text in texts:
        for numbers in _LOCATION_IDENTITY_RE.findall(text):
            found.update(int(n) for n in re.findall(r"\d+", numbers))
    return found


def parse_item_indexes(errors: Mapping[str, Any]) -> set[int]:
    """Positions in ``items`` named by error keys such as "items.3" or "items[3].quantity"."""
    found: set[int] = set()
    for key in errors:
        match = _ITEM_INDEX_RE.match(str(key).strip())
        if match:
            found.add(int(match.group(1)))
    return found


# -- pure parsing helpers ----------------------------------------------------------------------


def flatten_product(product: Mapping[str, Any]) -> list[BcItem]:
    """The SKU-carrying items of one product, by its ``inventory_tracking``.

    "product": the product itself; "variant": each variant with a SKU; "none": every distinct
    SKU (so callers can report untracked SKUs). Malformed products are skipped with a warning.
    """
    try:
        product_id = int(product["id"])
    except (KeyError, TypeError, ValueError):
        log.warning("bigcommerce_malformed_product", product=str(product)[:200])
        return []
    tracking = product.get("inventory_tracking")
    sku = _sku(product.get("sku"))
    variants = list(_variant_skus(product))
    if tracking == "product":
        return [BcItem(sku, product_id, None, "product")] if sku else []
    if tracking == "variant":
        return [BcItem(s, product_id, v, "variant") for v, s in variants]
    if tracking == "none":
        return _untracked(product_id, sku, variants)
    log.warning("bigcommerce_unknown_tracking", product_id=product_id, tracking=str(tracking))
    return []


def _untracked(product_id: int, sku: str, variants: list[tuple[int, str]]) -> list[BcItem]:
    items = [BcItem(sku, product_id, None, "none")] if sku else []
    seen = {sku}
    for variant_id, variant_sku in variants:
        if variant_sku not in seen:
            seen.add(variant_sku)
            items.append(BcItem(variant_sku, product_id, variant_id, "none"))
    return items


def _variant_skus(product: Mapping[str, Any]) -> Iterator[tuple[int, str]]:
    """(variant id, sku) of each well-formed variant with a non-empty SKU."""
    variants = product.get("variants")
    for variant in variants if isinstance(variants, list) else ():
        if not isinstance(variant, dict):
            continue
        sku = _sku(variant.get("sku"))
        variant_id = variant.get("id")
        if sku and isinstance(variant_id, int) and not isinstance(variant_id, bool):
            yield variant_id, sku


def _sku(value: Any) -> str:
    """A SKU as sent (case and inner spaces kept); empty when missing or blank."""
    return value if isinstance(value, str) and value.strip() else ""


def iter_levels(
    page: Iterable[Mapping[str, Any]], id_field: str, location_id: int
) -> Iterator[tuple[str, int]]:
    """(item key, total_inventory_onhand at the location) from ``/v3/inventory/items`` rows."""
    prefix = "v" if id_field == "variant_id" else "p"
    for row in page:
        identity = row.get("identity")
        ident = identity.get(id_field) if isinstance(identity, dict) else None
        if not isinstance(ident, int):
            continue
        for place in row.get("locations") or ():
            if isinstance(place, dict) and place.get("location_id") == location_id:
                onhand = place.get("total_inventory_onhand")
                if isinstance(onhand, int):
                    yield f"{prefix}:{ident}", onhand


def is_last_page(body: Mapping[str, Any], rows: int, limit: int) -> bool:
    """Whether a v3 list response is the last page: meta.pagination, else a short page."""
    if rows == 0:
        return True
    meta = body.get("meta")
    pagination = meta.get("pagination") if isinstance(meta, dict) else None
    if isinstance(pagination, dict):
        current, total = pagination.get("current_page"), pagination.get("total_pages")
        if isinstance(current, int) and isinstance(total, int):
            return current >= total
    return rows < limit


def _problem(body: Any) -> tuple[str, dict[str, Any]]:
    """(title, errors) of a problem+json body; tolerant of anything else."""
    if not isinstance(body, dict):
        return "", {}
    title = body.get("title")
    errors = body.get("errors")
    return (str(title) if title is not None else ""), (errors if isinstance(errors, dict) else {})


def _ids_by_kind(items: Iterable[BcItem]) -> dict[Literal["v", "p"], list[int]]:
    """Tracked items' ids, split by how BigCommerce addresses their stock."""
    variants = {i.variant_id for i in items if i.tracking == "variant" and i.variant_id is not None}
    products = {i.product_id for i in items if i.tracking == "product"}
    return {"v": sorted(variants), "p": sorted(products)}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

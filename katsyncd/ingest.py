"""Katana webhook ingestion: verify, parse, map to durable stale marks, group-commit.

A webhook is answered 2xx only after what it implies is committed in Postgres. Handlers do not
open their own transactions: they hand their marks to the :class:`GroupCommitter`, which writes
whatever has queued up in one transaction, so thousands of webhooks a second cost a few
hundred commits.

``current_inventory.*`` events name a variant, a product or a material (Katana does not say
which): :func:`read_href` reads ``object.href`` and :func:`inventory_effects` marks what it
names, or every plausible reading when there is no readable href. A product mark is expanded
to the product's live variants from the mirror inside the same transaction; a product the
mirror does not know yet is kept (``stale_product``) with an early variants poll requested,
and the poller expands it after that poll (docs/ARCHITECTURE.md, "Stock events").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import asyncpg
import structlog

from katsyncd.persistence import stale

log = structlog.get_logger(__name__)

EffectKind = Literal["variant", "product", "sales_order", "poll"]
# What object.id of a current_inventory.* event was read as, from its href (KATANA_API.md §2:
# undocumented; Katana's example shows …/products/{id}, a third-party handler reads a variant).
Reading = Literal["variant", "product", "material", "no_href", "unrecognized"]

# Events whose object is a sales order: its rows say which variants' Committed (and, once
# packed or delivered, In stock) changed (S2).
SALES_ORDER_EVENTS = frozenset(
    f"sales_order.{a}"
    for a in (
        "created",
        "updated",
        "deleted",
        "packed",
        "delivered",
        "approved",
        "availability_updated",
    )
)
# Stock events: object.href says whether object.id is a variant or a product (or material).
INVENTORY_EVENTS = frozenset(
    {"current_inventory.product_updated", "current_inventory.product_out_of_stock"}
)
# Events whose object id is a variant whose stock or identity changed.
VARIANT_EVENTS = frozenset(
    {
        "variant.created",
        "variant.updated",
        "variant.deleted",
    }
)
# Events that move stock of variants the payload does not name (MO completion moves the product
# and its ingredients, PO receipt moves what was received): they ask for an early poll of
# inventory movements, which names the variants.
MOVEMENT_EVENTS = frozenset(
    {
        f"manufacturing_order.{a}"
        for a in ("created", "updated", "deleted", "in_progress", "done", "blocked")
    }
    | {
        f"manufacturing_order_recipe_row.{a}"
        for a in ("created", "updated", "deleted", "ingredients_in_stock")
    }
    | {f"purchase_order.{a}" for a in ("received", "partially_received", "updated", "deleted")}
    | {"purchase_order_row.received", "purchase_order_row.updated", "purchase_order_row.deleted"}
    | {"outsourced_purchase_order.received", "outsourced_purchase_order_row.received"}
)
# Catalogue changes (SKU edits, archive, delete) ask for an early variants poll.
VARIANT_POLL_EVENTS = frozenset(
    {
        "product.created",
        "product.updated",
        "product.deleted",
        "variant.created",
        "variant.updated",
        "variant.deleted",
    }
)

# What katsyncd subscribes to (webhooks register).
SUBSCRIBED_EVENTS = sorted(
    SALES_ORDER_EVENTS | INVENTORY_EVENTS | VARIANT_EVENTS | MOVEMENT_EVENTS | VARIANT_POLL_EVENTS
)

# ``…/variants/123``, ``…/v1/products/123/`` (any base URL, a trailing slash, a query).
_HREF_RE = re.compile(r"/(variants|products|materials)/(\d+)/?$")
_HREF_READINGS: dict[str, Reading] = {
    "variants": "variant",
    "products": "product",
    "materials": "material",
}


class WebhookError(Exception):
    """A webhook we refuse; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Effect:
    kind: EffectKind
    ident: int | str  # variant id, product id, sales-order id, or poll kind


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    event: str
    object_id: int | None
    effects: tuple[Effect, ...]
    reading: Reading | None = None  # current_inventory.* only: what object.id was read as


def verify_signature(body: bytes, header: str | None, token: str) -> bool:
    """HMAC-SHA256 of the raw body with the webhook token, hex, optional ``sha256=`` prefix."""
    if not header or not token:
        return False
    given = header.strip()
    if given.lower().startswith("sha256="):
        given = given[7:]
    expected = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, given.lower())


def _object_id(obj: Any) -> int | None:
    raw = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    return None


def read_href(href: Any) -> tuple[Reading, int | None]:
    """What an ``object.href`` names: ``("variant" | "product" | "material", id)``;
    ``("no_href", None)`` when there is none, ``("unrecognized", None)`` for anything else."""
    if href is None:
        return "no_href", None
    if not isinstance(href, str):
        return "unrecognized", None
    m = _HREF_RE.search(urlsplit(href.strip()).path)
    if m is None:
        return "unrecognized", None
    return _HREF_READINGS[m.group(1)], int(m.group(2))


def inventory_effects(reading: Reading, object_id: int | None) -> tuple[Effect, ...]:
    """Marks for a ``current_inventory.*`` event: a variant href marks that variant, a product
    href every live variant of that product (expanded from the mirror at commit), a material
    href nothing (S10: materials never sync). No href, or one we cannot read, marks every
    plausible reading: the variant ``object.id`` and the product ``object.id``."""
    if object_id is None:
        return ()
    if reading == "variant":
        return (Effect("variant", object_id),)
    if reading == "product":
        return (Effect("product", object_id),)
    if reading == "material":
        return ()
    return (Effect("variant", object_id), Effect("product", object_id))


def effects_for(
    event: str, object_id: int | None, reading: Reading = "no_href"
) -> tuple[Effect, ...]:
    """What an event implies. Unknown events imply nothing (answered 2xx and ignored).
    ``reading`` (from ``object.href``, see :func:`read_href`) matters for stock events only."""
    out: list[Effect] = []
    if event in INVENTORY_EVENTS:
        out.extend(inventory_effects(reading, object_id))
    if object_id is not None and event in SALES_ORDER_EVENTS:
        out.append(Effect("sales_order", object_id))
    if object_id is not None and event in VARIANT_EVENTS:
        out.append(Effect("variant", object_id))
    if event in MOVEMENT_EVENTS:
        out.append(Effect("poll", "movements"))
    if event in VARIANT_POLL_EVENTS:
        out.append(Effect("poll", "variants"))
    if event in ("product.updated", "product.deleted"):  # archiving shows only in a sweep
        out.append(Effect("poll", "variant_sweep"))
    if event in SALES_ORDER_EVENTS and object_id is None:
        out.append(Effect("poll", "sales_orders"))
    return tuple(out)


def parse_event(body: bytes) -> ParsedEvent:
    """Parse a verified body. Malformed JSON or a payload with no action is a 400."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise WebhookError(400, "payload has no 'action'")
    event = data["action"]
    obj = data.get("object")
    object_id = _object_id(obj)
    if event not in INVENTORY_EVENTS:
        return ParsedEvent(event, object_id, effects_for(event, object_id))
    href = obj.get("href") if isinstance(obj, dict) else None
    reading, href_id = read_href(href)
    if reading == "unrecognized":
        log.warning(
            "webhook_href_unrecognized",
            endpoint="POST /webhooks/katana",
            katana_event=event,
            href=str(href)[:200],
            expected="…/variants/{id}, …/products/{id} or …/materials/{id}",
            marking="variant and product readings of object.id",
        )
    elif href_id is not None and href_id != object_id:
        if object_id is not None:
            log.warning(
                "webhook_href_id_mismatch",
                katana_event=event,
                object_id=object_id,
                href=str(href)[:200],
                using="href",
            )
        object_id = href_id
    return ParsedEvent(event, object_id, effects_for(event, object_id, reading), reading)


@dataclass
class _Pending:
    effects: tuple[Effect, ...]
    reason: str
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommitter:
    """Commits the effects of many concurrent webhooks in one transaction.

    ``submit`` returns once its effects are durable; it raises if the commit failed, so the
    handler can answer 503 and Katana retries.
    """

    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        *,
        on_committed: Callable[[list[Effect]], None],
        max_batch: int = 1000,
    ) -> None:
        self._pool_getter = pool_getter
        self._on_committed = on_committed
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self.commits = 0

    async def submit(self, effects: tuple[Effect, ...], reason: str) -> None:
        if not effects:
            return
        item = _Pending(effects, reason)
        self._queue.put_nowait(item)
        await item.done

    async def run(self, stop: asyncio.Event) -> None:
        """The committer loop; returns when ``stop`` is set and the queue is empty."""
        while not (stop.is_set() and self._queue.empty()):
            first = await self._next(stop)
            if first is None:
                continue
            batch = [first]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)

    async def _next(self, stop: asyncio.Event) -> _Pending | None:
        if not self._queue.empty():
            return self._queue.get_nowait()
        getter = asyncio.ensure_future(self._queue.get())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([getter, stopper], return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    async def _commit(self, batch: list[_Pending]) -> None:
        variants: dict[int, str] = {}
        products: dict[int, str] = {}
        orders: dict[int, str] = {}
        polls: set[str] = set()
        for p in batch:
            for e in p.effects:
                if e.kind == "variant":
                    variants.setdefault(int(e.ident), p.reason)
                elif e.kind == "product":
                    products.setdefault(int(e.ident), p.reason)
                elif e.kind == "sales_order":
                    orders.setdefault(int(e.ident), p.reason)
                else:
                    polls.add(str(e.ident))
        try:
            expanded = await self._write(variants, orders, polls, products)
        except Exception as exc:  # any DB failure: every waiter answers 503
            log.warning("group_commit_failed", error=str(exc), webhooks=len(batch))
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        self.commits += 1
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
        self._on_committed([e for p in batch for e in p.effects] + expanded)

    async def _write(
        self,
        variants: dict[int, str],
        orders: dict[int, str],
        polls: set[str],
        products: dict[int, str] | None = None,
    ) -> list[Effect]:
        """One transaction; returns what product marks became: the variants they marked and,
        if the mirror did not know some product yet, the variants poll that will expand it."""
        expanded: list[Effect] = []
        async with self._pool_getter().acquire(timeout=5) as conn, conn.transaction():
            await stale.mark_variants(conn, variants)
            if products:
                marks = await stale.mark_products(conn, products)
                expanded = [Effect("variant", i) for i in sorted(marks.variants)]
                if marks.products:
                    unknown = marks.products
                    log.info("product_marks_deferred", products=unknown[:20], count=len(unknown))
                    polls = polls | {"variants"}
                    expanded.append(Effect("poll", "variants"))
            await stale.mark_sales_orders(conn, orders)
            await stale.request_polls(conn, polls)
        return expanded

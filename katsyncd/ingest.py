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

from katsyncd.persistence import lease, stale

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

# ``…/variants/123``, ``…/v1/products/123/`` (any base URL, a trailing slash, a query). ASCII
# digits only: ``\d`` would take any Unicode digit, which ``int()`` reads as a number.
_HREF_RE = re.compile(r"/(variants|products|materials)/([0-9]+)/?$")
# Ids are Postgres bigints; one outside that range would fail the group commit it joins.
ID_MIN, ID_MAX = -(2**63), 2**63 - 1
_ASCII_ID_RE = re.compile(r"[0-9]+")
_MAX_ID_DIGITS = 20  # longer digit strings are out of range anyway; int() is not asked
# ``x-sha2-signature``: 64 hex digits (HMAC-SHA256), optionally ``sha256=``, nothing else.
_SIGNATURE_RE = re.compile(r"(?:sha256=)?([0-9a-f]{64})", re.IGNORECASE | re.ASCII)
_HREF_READINGS: dict[str, Reading] = {
    "variants": "variant",
    "products": "product",
    "materials": "material",
}


class WebhookError(Exception):
    """A webhook we refuse; ``status`` is the HTTP answer, ``outcome`` the metric label when
    the status alone does not say it."""

    def __init__(self, status: int, message: str, outcome: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome


class CommitterFull(Exception):
    """The group committer's queue is full: the webhook is not recorded (503, Katana retries)."""


def data_fault(exc: BaseException) -> bool:
    """Whether a failed write was the fault of the data written (a value Postgres or the
    driver refuses), not of the database being unavailable."""
    return isinstance(
        exc,
        (
            ValueError,  # asyncpg's client-side DataError (a value it cannot encode) included
            TypeError,
            OverflowError,
            asyncpg.DataError,
            asyncpg.IntegrityConstraintViolationError,
        ),
    )


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


def _signature_hex(header: str | None) -> str | None:
    if not header:
        return None
    m = _SIGNATURE_RE.fullmatch(header.strip())
    return m.group(1).lower() if m else None


def signature_well_formed(header: str | None) -> bool:
    """Whether ``x-sha2-signature`` can be a signature at all (64 hex digits, optional
    ``sha256=``): checked before the body is read, so a request without one costs nothing."""
    return _signature_hex(header) is not None


def verify_signature(body: bytes, header: str | None, token: str) -> bool:
    """HMAC-SHA256 of the raw body with the webhook token, hex, optional ``sha256=`` prefix.
    Never raises: a header of any other shape (non-ASCII included) is simply not a match."""
    given = _signature_hex(header)
    if given is None or not token:
        return False
    expected = hmac.new(token.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode("ascii"), given.encode("ascii"))


def _checked_id(value: int, where: str) -> int:
    if not ID_MIN <= value <= ID_MAX:
        raise WebhookError(400, f"{where} out of range: {str(value)[:40]}")
    return value


def _object_id(obj: Any) -> int | None:
    """``object.id`` as a number (Katana sends a string or a number). Anything that is not an
    integer written in ASCII digits is no id; an integer outside bigint range is a 400."""
    raw = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return _checked_id(raw, "object.id")
    if isinstance(raw, str) and _ASCII_ID_RE.fullmatch(digits := raw.strip()):
        if len(digits) > _MAX_ID_DIGITS:
            raise WebhookError(400, f"object.id out of range: {digits[:40]}")
        return _checked_id(int(digits), "object.id")
    return None


def read_href(href: Any) -> tuple[Reading, int | None]:
    """What an ``object.href`` names: ``("variant" | "product" | "material", id)``;
    ``("no_href", None)`` when there is none, ``("unrecognized", None)`` for anything else."""
    if href is None:
        return "no_href", None
    if not isinstance(href, str):
        return "unrecognized", None
    try:
        path = urlsplit(href.strip()).path
    except ValueError:  # e.g. an unbalanced "[" in the host
        return "unrecognized", None
    m = _HREF_RE.search(path)
    if m is None:
        return "unrecognized", None
    if len(m.group(2)) > _MAX_ID_DIGITS:
        raise WebhookError(400, f"object.href id out of range: {m.group(2)[:40]}")
    return _HREF_READINGS[m.group(1)], _checked_id(int(m.group(2)), "object.href id")


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
        if object_id is not None:
            # ... or in a read of the product's variants (archived ones have no inventory
            # rows, which the engine checks): at once, not after the sweep's spacing
            out.append(Effect("product", object_id))
    if event in SALES_ORDER_EVENTS and object_id is None:
        out.append(Effect("poll", "sales_orders"))
    return tuple(out)


def _shown(value: Any) -> str:
    """A value from a payload for a log line: a string cut short, anything else its type (the
    text of a deeply nested value could itself exceed the recursion limit)."""
    return value[:200] if isinstance(value, str) else type(value).__name__


def parse_event(body: bytes) -> ParsedEvent:
    """Parse a verified body. Malformed JSON (nesting too deep for the parser, a number too
    long to convert included), a payload with no action or an id outside bigint range is a
    400: it concerns this webhook only."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise WebhookError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise WebhookError(400, f"malformed JSON: {str(exc)[:200]}") from None
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
            katana_event=event[:100],
            href=_shown(href),
            expected="…/variants/{id}, …/products/{id} or …/materials/{id}",
            marking="variant and product readings of object.id",
        )
    elif href_id is not None and href_id != object_id:
        if object_id is not None:
            log.warning(
                "webhook_href_id_mismatch",
                katana_event=event[:100],
                object_id=object_id,
                href=_shown(href),
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


# Webhooks waiting for a commit at most; more get CommitterFull (503) instead of memory.
MAX_QUEUED_WEBHOOKS = 10_000
# The NOTIFY payload for a commit's marks: (variant ids, sales order ids, poll kinds).
Notice = Callable[[list[int], list[int], list[str]], str]


class GroupCommitter:
    """Commits the effects of many concurrent webhooks in one transaction.

    ``submit`` returns once its effects are durable; it raises if the commit failed, so the
    handler can answer 503 and Katana retries, and raises :class:`CommitterFull` at once when
    ``max_queue`` webhooks are already waiting. A batch that fails because of what one webhook
    carries (:func:`data_fault`) is split in halves and retried, so only that webhook fails.
    """

    def __init__(
        self,
        pool_getter: Callable[[], asyncpg.Pool],
        *,
        on_committed: Callable[[list[Effect]], None],
        notice: Notice | None = None,
        max_batch: int = 1000,
        max_queue: int = MAX_QUEUED_WEBHOOKS,
    ) -> None:
        self._pool_getter = pool_getter
        self._on_committed = on_committed
        self._notice = notice  # builds the NOTIFY that tells the leader what was marked
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self.commits = 0

    async def submit(self, effects: tuple[Effect, ...], reason: str) -> None:
        if not effects:
            return
        item = _Pending(effects, reason)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            raise CommitterFull(
                f"{self._queue.maxsize} webhooks already wait for a commit"
            ) from None
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
        try:
            expanded = await self._write(*_merged(batch))
        except Exception as exc:
            if len(batch) > 1 and data_fault(exc):  # one webhook's data: find it, commit the rest
                half = len(batch) // 2
                log.warning(
                    "group_commit_split",
                    error=str(exc)[:300],
                    error_type=type(exc).__name__,
                    webhooks=len(batch),
                )
                await self._commit(batch[:half])
                await self._commit(batch[half:])
                return
            # A DB failure (or one webhook's bad data): every waiter answers 503/500
            log.warning(
                "group_commit_failed",
                error=str(exc)[:300],
                error_type=type(exc).__name__,
                webhooks=len(batch),
            )
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
            if self._notice is not None:  # delivered on commit, to the leader wherever it is
                marked = sorted(
                    {*variants, *(int(e.ident) for e in expanded if e.kind == "variant")}
                )
                payload = self._notice(marked, sorted(orders), sorted(polls))
                await lease.notify(conn, lease.MARKS_CHANNEL, payload)
        return expanded


def _merged(
    batch: list[_Pending],
) -> tuple[dict[int, str], dict[int, str], set[str], dict[int, str]]:
    """The marks of a batch, each id once: variants, sales orders, polls, products."""
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
    return variants, orders, polls, products

"""The status pages (issue 13), on the daemon's own listener when ``[server] ui = true``.

Server-rendered (Jinja2, autoescape on), read-only (GET and HEAD), one stylesheet and one
small script from the package (no inline script or style, so the Content-Security-Policy
allows nothing else). Authentication is the app's ``require_token`` middleware: the status
token as a bearer token, or as the Basic password a browser prompts for.

- ``/``: the overview; ``/ui/live``: its live part, fetched every few seconds by ``ui.js``.
- ``/sku/{sku}`` (or ``/sku?sku=``): why the SKU shows its level (``explain``).
- ``/pushes`` (``/pushes.csv``): the push audit log, filtered and paged (streamed as CSV).
- ``/unmatched``: unmatched SKUs of one store and side, searchable and paged.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import quote

import asyncpg
import jinja2
import structlog
from aiohttp import web

from katsyncd.config import Config
from katsyncd.persistence import ui as stored
from katsyncd.ui import overview
from katsyncd.ui.explain import explain, qty
from katsyncd.ui.reads import load_inputs

log = structlog.get_logger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_ROWS = 100  # rows per page of /pushes and /unmatched
MAX_OFFSET = 100_000  # /unmatched pages past this are refused (use the search)
FAILED_LISTED = 20
LIVE_REFRESH_MS = 3000
STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}
CSV_COLUMNS = (
    "at",
    "store",
    "sku",
    "item_key",
    "location_id",
    "old_quantity",
    "new_quantity",
    "reason",
    "transaction_id",
    "outcome",
    "lag_seconds",
)


@dataclass(frozen=True, slots=True)
class UiDeps:
    pool: Callable[[], asyncpg.Pool]
    status: Callable[[], Awaitable[dict[str, Any]]]  # the /status document
    config: Callable[[], Config]


UI_KEY: web.AppKey[UiDeps] = web.AppKey("ui", UiDeps)
ENV_KEY: web.AppKey[jinja2.Environment] = web.AppKey("ui_env", jinja2.Environment)


class BadRequest(Exception):
    """A query parameter the page cannot use: a 400 that says which and why."""


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("katsyncd.ui", "templates"),
        autoescape=True,  # every value is escaped, whatever the template's name
        undefined=jinja2.StrictUndefined,
    )
    env.filters["sku_url"] = sku_url
    env.filters["duration"] = overview.duration
    env.filters["when"] = when
    env.filters["qty"] = qty
    return env


def sku_url(sku: str) -> str:
    """The ``/sku/…`` link of a SKU (every character but unreserved ones percent-encoded)."""
    return "/sku/" + quote(sku, safe="")


def when(at: datetime | str | None) -> str:
    if at is None:
        return "—"
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UNAVAILABLE = (OSError, asyncpg.PostgresError, RuntimeError)


def guarded(handler: Handler) -> Handler:
    """A page whose data cannot be read (Postgres down, the pool closing) is a 503 page that
    says so, not a bare 500; the live refresh keeps the last state, marked stale."""

    async def page(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except UNAVAILABLE as exc:
            log.warning("ui_page_unavailable", path=request.path, error=type(exc).__name__)
            why = f"the database cannot be read right now ({type(exc).__name__}); retry shortly"
            return _render(request, "error.html", 503, title="Unavailable", message=why)

    return page


def setup(app: web.Application, deps: UiDeps) -> None:
    """Register the pages on ``app`` (GET; aiohttp answers HEAD for each GET route)."""
    app[UI_KEY] = deps
    app[ENV_KEY] = environment()
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/", guarded(overview_page))
    app.router.add_get("/ui/live", guarded(live_fragment))
    app.router.add_get("/ui/static/{name}", static)
    app.router.add_get("/sku", guarded(sku_page))
    app.router.add_get("/sku/{sku:.+}", guarded(sku_page))
    app.router.add_get("/pushes", guarded(pushes_page))
    app.router.add_get("/pushes.csv", guarded(pushes_csv))
    app.router.add_get("/unmatched", guarded(unmatched_page))


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def _render(request: web.Request, template: str, status: int = 200, **ctx: Any) -> web.Response:
    html = request.app[ENV_KEY].get_template(template).render(**ctx)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _bad(request: web.Request, exc: BadRequest) -> web.Response:
    return _render(request, "error.html", 400, title="Bad request", message=str(exc))


# ----- overview ------------------------------------------------------------------------------
async def overview_model(deps: UiDeps) -> overview.Overview:
    doc = await deps.status()
    pool = deps.pool()
    lag, agree = await stored.push_lag(pool), await stored.sku_agreement(pool)
    figures = {}
    for s in doc["stores"]:
        name = s["name"]
        failed = await stored.failed_items(pool, name, FAILED_LISTED)
        figures[name] = overview.StoreFigures(
            matched=_get(agree, name, "matched", 0),
            right=_get(agree, name, "right_dry_run" if s["dry_run"] else "right_pushed", 0),
            lag_p50=_get(lag, name, "p50", None),
            lag_p99=_get(lag, name, "p99", None),
            written_recently=_get(lag, name, "recent", 0),
            failed=tuple(overview.Failed(*r) for r in failed),
            unmatched_bigcommerce=await stored.unmatched_bigcommerce_count(pool, name),
        )
    return overview.build(doc, figures, deps.config().sync.poll_interval_seconds)


def _get(rows: Mapping[str, asyncpg.Record], store: str, key: str, default: Any) -> Any:
    row = rows.get(store)
    return default if row is None or row[key] is None else row[key]


async def overview_page(request: web.Request) -> web.Response:
    model = await overview_model(request.app[UI_KEY])
    return _render(request, "overview.html", o=model, refresh_ms=LIVE_REFRESH_MS)


async def live_fragment(request: web.Request) -> web.Response:
    model = await overview_model(request.app[UI_KEY])
    return _render(request, "live.html", o=model)


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = (resources.files("katsyncd.ui") / "static" / name).read_bytes()
    headers = {"Cache-Control": "max-age=300"}
    return web.Response(body=body, content_type=STATIC[name], charset="utf-8", headers=headers)


# ----- one SKU -------------------------------------------------------------------------------
async def sku_page(request: web.Request) -> web.Response:
    sku = request.match_info.get("sku") or request.query.get("sku", "")
    if not sku.strip():
        return _bad(request, BadRequest("give a SKU: /sku/<SKU> or /sku?sku=<SKU>"))
    deps = request.app[UI_KEY]
    inputs = await load_inputs(deps.pool(), deps.config().stores, sku)
    return _render(request, "sku.html", e=explain(inputs))


# ----- push history --------------------------------------------------------------------------
def push_filter(query: Mapping[str, str]) -> stored.PushFilter:
    """``/pushes`` query parameters → a filter; raises BadRequest naming the bad one."""
    return stored.PushFilter(
        store=query.get("store") or None,
        sku=query.get("sku") or None,
        since=_time(query, "since"),
        until=_time(query, "until"),
        before_id=_int(query, "before"),
    )


def _time(query: Mapping[str, str], key: str) -> datetime | None:
    raw = query.get(key, "").strip()
    if not raw:
        return None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{key}: {raw[:40]!r} is not a date/time (2026-01-31T14:00)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _int(query: Mapping[str, str], key: str) -> int | None:
    raw = query.get(key, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"{key}: {raw[:40]!r} is not a whole number")
    return int(raw)


async def pushes_page(request: web.Request) -> web.StreamResponse:
    if request.query.get("format") == "csv":
        return await pushes_csv(request)
    try:
        f = push_filter(request.query)
    except BadRequest as exc:
        return _bad(request, exc)
    deps = request.app[UI_KEY]
    rows = await stored.push_page(deps.pool(), f, PAGE_ROWS)
    older = rows[-1]["id"] if len(rows) == PAGE_ROWS else None
    stores = deps.config().store_names
    return _render(request, "pushes.html", rows=rows, f=f, older=older, stores=stores)


async def pushes_csv(request: web.Request) -> web.StreamResponse:
    try:
        f = push_filter(request.query)
    except BadRequest as exc:
        return _bad(request, exc)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": 'attachment; filename="katsyncd-pushes.csv"',
        }
    )
    await response.prepare(request)
    await response.write(_csv_line(CSV_COLUMNS))
    async for row in stored.stream_pushes(request.app[UI_KEY].pool(), f):
        await response.write(_csv_line(_csv_cells(row)))
    await response.write_eof()
    return response


def _csv_cells(row: asyncpg.Record) -> list[Any]:
    cells: list[Any] = [row["at"].isoformat()]
    cells += [csv_safe(row[c]) for c in CSV_COLUMNS[1:]]
    return cells


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR
    first) gets a leading ``'``; numbers and None pass unchanged."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_line(cells: Any) -> bytes:
    buf = io.StringIO()
    csv.writer(buf).writerow(cells)
    return buf.getvalue().encode("utf-8")


# ----- unmatched SKUs ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UnmatchedQuery:
    store: str
    side: str  # katana | bigcommerce
    q: str
    page: int


def unmatched_query(query: Mapping[str, str], stores: list[str]) -> UnmatchedQuery:
    store = query.get("store") or (stores[0] if stores else "")
    if store not in stores:
        raise BadRequest(f"store: {store[:40]!r} is not a configured store")
    side = query.get("side", "katana")
    if side not in ("katana", "bigcommerce"):
        raise BadRequest("side: katana or bigcommerce")
    page = _int(query, "page") or 0
    if page * PAGE_ROWS > MAX_OFFSET:
        raise BadRequest(f"page: at most {MAX_OFFSET // PAGE_ROWS}; narrow the search instead")
    return UnmatchedQuery(store, side, query.get("q", "")[:200], page)


async def unmatched_page(request: web.Request) -> web.Response:
    deps = request.app[UI_KEY]
    stores = deps.config().store_names
    try:
        uq = unmatched_query(request.query, stores)
    except BadRequest as exc:
        return _bad(request, exc)
    skus = await stored.unmatched_page(
        deps.pool(), uq.store, uq.side, uq.q, PAGE_ROWS + 1, uq.page * PAGE_ROWS
    )
    more = len(skus) > PAGE_ROWS
    return _render(
        request, "unmatched.html", skus=skus[:PAGE_ROWS], uq=uq, more=more, stores=stores
    )

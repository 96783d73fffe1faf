"""The status pages' pure parts (issue 13): the auth decision, the security headers, the
explanation model on crafted inputs, escaping in the page and the terminal, query parsing."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from rich.console import Console

from katsyncd.httpapp import authorized
from katsyncd.models import KatanaVariant
from katsyncd.rules import CommitRow, LevelRules
from katsyncd.ui import overview
from katsyncd.ui.explain import Inputs, ItemState, OrderRow, StockAt, StoreInput, explain, qty
from katsyncd.ui.terminal import render
from katsyncd.ui.web import (
    CSP,
    ENV_KEY,
    BadRequest,
    _security_headers,
    csv_safe,
    environment,
    guarded,
    push_filter,
    sku_url,
    unmatched_query,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TOKEN = "s3cret-token"
WEST, EAST = 1, 2


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ----- auth ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN} ", True),
        (f"Basic {b64('anyone:' + TOKEN)}", True),
        (f"Basic {b64(':' + TOKEN)}", True),
        (f"Basic {b64('a:b:' + TOKEN)}", False),  # the password is everything after the first ':'
        (f"Basic {b64(TOKEN + ':x')}", False),  # the token as the user name is not enough
        (f"Basic {b64(TOKEN)}", False),  # no ':' at all
        ("Basic not-base64!!", False),
        ("Basic " + base64.b64encode(b"u:\xff").decode(), False),  # not UTF-8
        ("Bearer wrong", False),
        (f"Digest {TOKEN}", False),
        ("", False),
    ],
)
def test_auth_decision(header: str, ok: bool) -> None:
    assert authorized(header, TOKEN) is ok


async def test_security_headers_on_every_response() -> None:
    response = web.Response(text="x")
    await _security_headers(make_mocked_request("GET", "/"), response)
    assert response.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self'" in CSP and "'unsafe-inline'" not in CSP
    assert "frame-ancestors 'none'" in CSP and "default-src 'none'" in CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


# ----- the explanation model ---------------------------------------------------------------
def variant(vid: int, days_ago: int, **kw: Any) -> KatanaVariant:
    at = NOW - timedelta(days=days_ago)
    return KatanaVariant(vid, kw.pop("sku", "A"), kw.pop("type", "product"), at, at, **kw)


def order(so: int, qty: int, loc: int, status: str = "NOT_SHIPPED", shop: bool = True) -> OrderRow:
    return OrderRow(so, f"SO-{so}", CommitRow(9, loc, Decimal(qty), status, shop))


def store(name: str, rules: LevelRules, *items: ItemState, **kw: Any) -> StoreInput:
    return StoreInput(name, rules, 1, kw.get("stock_sync", True), kw.get("dry_run", False), items)


def inputs(*stores: StoreInput, **kw: Any) -> Inputs:
    return Inputs(
        sku=kw.get("sku", "A"),
        variants=kw.get(
            "variants",
            (
                variant(7, 5),
                variant(9, 1),
                variant(11, 0, deleted_at=NOW),
                variant(12, 0, type="material"),
            ),
        ),
        stock=kw.get(
            "stock", (StockAt(WEST, Decimal(10), NOW), StockAt(EAST, Decimal("50.5"), NOW))
        ),
        orders=kw.get(
            "orders",
            (
                order(1, 4, EAST),  # from the shop, open
                order(2, 6, EAST, shop=False),  # typed into Katana
                order(3, 5, WEST, status="DELIVERED"),  # closed
            ),
        ),
        locations={WEST: "West", EAST: "East"},
        stores=stores,
    )


def test_s8_winner_is_the_live_product_created_latest_and_each_loser_says_why() -> None:
    e = explain(inputs(store("s", LevelRules())))
    assert e.winner is not None and e.winner.id == 9
    why = {line.variant.id: (line.winner, line.why) for line in e.variants}
    assert why[9][0] and "created latest" in why[9][1]
    assert why[7] == (False, "created earlier than the winner (S8)")
    assert "deleted or archived" in why[11][1] and "not a product variant" in why[12][1]


def test_level_counts_locations_and_orders_per_store() -> None:
    everything = store("all", LevelRules())
    east_only = store(
        "east", LevelRules(locations=frozenset({EAST}), count_katana_orders=False, buffer=2)
    )
    e = explain(inputs(everything, east_only))
    a, b = e.stores
    assert (a.in_stock, a.committed, a.level) == (Decimal("60.5"), Decimal(10), 50)
    assert [(o.order, o.counts) for o in a.orders] == [
        ("SO-1", True),
        ("SO-2", True),
        ("SO-3", False),
    ]
    assert "not open (S4)" in a.orders[2].why
    assert [(ln.location, ln.counts) for ln in b.locations] == [("West", False), ("East", True)]
    assert (b.in_stock, b.committed, b.level) == (Decimal("50.5"), Decimal(4), 44)  # floor
    assert "ignores such orders (S5)" in b.orders[1].why
    assert b.steps[-2] == "- buffer: 2" and b.steps[-1].startswith("= 44")


def test_cap_and_in_stock_mode() -> None:
    capped = store("cap", LevelRules(quantity="in_stock", max_quantity=25))
    s = explain(inputs(capped)).stores[0]
    assert s.committed == 0 and s.level == 25
    assert all(not o.counts and "(S3)" in o.why for o in s.orders)
    assert "capped at max_quantity: 25" in s.steps


def test_s12_location_outside_the_store_excludes_its_orders() -> None:
    west = store("west", LevelRules(locations=frozenset({WEST})))
    s = explain(inputs(west)).stores[0]
    assert s.level == 10 and s.committed == 0
    assert "does not count (S12)" in s.orders[0].why


def test_items_say_what_bigcommerce_has_and_where_that_comes_from() -> None:
    items = (
        ItemState("p:1", "product", desired=5, pushed=5, pushed_at=NOW),
        ItemState("p:2", "product", desired=5, pushed=3),
        ItemState("v:3", "variant", desired=5, pushed=3, failed_desired=5, failed_reason="nope"),
        ItemState("p:4", "none"),
        ItemState("p:5", "product"),
    )
    lines = explain(inputs(store("s", LevelRules(), *items))).stores[0].items
    assert [ln.state for ln in lines] == [
        "in sync",
        "pending",
        "failed",
        "untracked",
        "not computed yet",
    ]
    assert "as katsyncd last wrote it" in lines[0].source
    assert lines[1].source == "as a reconcile read it from BigCommerce"
    assert lines[4].bigcommerce is None and "never written" in lines[4].source
    dry = explain(inputs(store("d", LevelRules(), items[1], dry_run=True))).stores[0]
    assert dry.mode == "dry-run" and dry.items[0].state == "dry-run"
    off = explain(inputs(store("o", LevelRules(), items[1], stock_sync=False))).stores[0]
    assert off.mode == "off" and off.items[0].state == "off"


def test_no_variant_no_winner_no_item() -> None:
    e = explain(inputs(store("s", LevelRules()), variants=(), stock=(), orders=()))
    assert e.winner is None and e.stores[0].level is None
    assert any("No Katana variant" in n for n in e.notes)
    assert any("written nowhere" in n for n in e.notes)
    dead = explain(inputs(store("s", LevelRules()), variants=(variant(1, 0, deleted_at=NOW),)))
    assert any("No live product variant" in n for n in dead.notes)


# ----- escaping -----------------------------------------------------------------------------
XSS = "<script>alert(1)</script>"


def test_the_sku_page_escapes_every_string() -> None:
    items = (ItemState('p:"><img src=x>', "product", desired=1, pushed=1, failed_reason=XSS),)
    e = explain(inputs(store("<b>s</b>", LevelRules(), *items), sku=XSS))
    html = environment().get_template("sku.html").render(e=e)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS not in html and "<img" not in html and "<b>s</b>" not in html
    assert sku_url(XSS) == "/sku/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"


def test_the_terminal_prints_markup_as_text() -> None:
    console = Console(record=True, width=200, color_system=None)
    render(explain(inputs(store("s", LevelRules()), sku="[red]X[/red]")), console)
    text = console.export_text()
    assert "[red]X[/red]" in text and "= 50" in text and "SO-2" in text


# ----- query parsing ------------------------------------------------------------------------
def test_push_filter_parses_and_refuses_bad_values() -> None:
    f = push_filter({"store": "main", "since": "2026-11-30T10:00", "before": "42"})
    assert f.store == "main" and f.since == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert f.before_id == 42 and f.sku is None
    for bad in ({"since": "yesterday"}, {"until": "2026-13-01"}, {"before": "x"}):
        with pytest.raises(BadRequest, match=next(iter(bad))):
            push_filter(bad)


def test_unmatched_query_refuses_unknown_store_side_and_deep_pages() -> None:
    q = unmatched_query({}, ["a", "b"])
    assert (q.store, q.side, q.q, q.page) == ("a", "katana", "", 0)
    for bad, why in (
        ({"store": "c"}, "not a configured store"),
        ({"side": "x"}, "katana or bigcommerce"),
        ({"page": "9999999"}, "narrow the search"),
    ):
        with pytest.raises(BadRequest, match=why):
            unmatched_query(bad, ["a", "b"])


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised() -> None:
    assert csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)" and csv_safe("@x") == "'@x"
    assert csv_safe("SKU-1") == "SKU-1" and csv_safe(-3) == -3 and csv_safe(None) is None


# ----- the overview's states ----------------------------------------------------------------
def status_store(**kw: Any) -> dict[str, Any]:
    base = {"name": "s", "stock_sync": True, "dry_run": False, "state": "ok", "error": None}
    return {**base, "backlog": 0, "last_push": None, **kw}


@pytest.mark.parametrize(
    ("store_doc", "figures", "state", "headline"),
    [
        (status_store(), overview.StoreFigures(), "in-sync", "In sync"),
        (status_store(stock_sync=False), overview.StoreFigures(), "off", "Sync is off"),
        (status_store(dry_run=True, backlog=3), overview.StoreFigures(), "dry-run", "Dry run"),
        (
            status_store(backlog=600),
            overview.StoreFigures(written_recently=300),
            "catching-up",
            "600 levels to write, about 10 min left",
        ),
        (status_store(backlog=5), overview.StoreFigures(), "catching-up", "5 levels to write"),
    ],
)
def test_store_state(
    store_doc: dict[str, Any], figures: overview.StoreFigures, state: str, headline: str
) -> None:
    c = overview.card(store_doc, figures)
    assert c.state == state and headline in c.headline


def test_store_error_says_what_to_do() -> None:
    err = {"kind": "auth", "message": "401 from BigCommerce", "hint": "check the access token"}
    c = overview.card(status_store(state="error", error=err), overview.StoreFigures())
    assert (c.state, c.advice) == ("error", "check the access token")
    assert "401 from BigCommerce" in c.headline


def test_durations() -> None:
    assert [overview.duration(s) for s in (None, 0.25, 3.21, 45, 600, 9000)] == [
        "—",
        "250 ms",
        "3.2 s",
        "45 s",
        "10 min",
        "2.5 h",
    ]


def test_quantities_print_as_katana_shows_them() -> None:
    assert [qty(Decimal(x)) for x in ("1E+1", "60.00000", "2.50", "0")] == ["10", "60", "2.5", "0"]


def test_changes_not_read_yet_mean_catching_up() -> None:
    c = overview.card(status_store(), overview.StoreFigures(), to_read=34)
    assert (c.state, c.headline) == ("catching-up", "Catching up: 34 Katana changes to read")
    assert overview.card(status_store(stock_sync=False), overview.StoreFigures(), 34).state == "off"


async def test_a_page_without_its_database_is_a_503_that_says_so() -> None:
    async def down(request: web.Request) -> web.StreamResponse:
        raise ConnectionRefusedError("no Postgres")

    app = web.Application()
    app[ENV_KEY] = environment()
    response = await guarded(down)(make_mocked_request("GET", "/", app=app))
    assert isinstance(response, web.Response) and response.status == 503
    assert response.text is not None and "ConnectionRefusedError" in response.text

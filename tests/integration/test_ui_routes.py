"""The status pages (issue 13) against a daemon syncing the simulators: real Postgres, real
HTTP. The browser tests (tests/e2e/test_ui_browser.py) check the same pages in Chromium."""

from __future__ import annotations

import csv
import io
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from markupsafe import escape
from multidict import CIMultiDict

from katsyncd.config import ConfigError, load_config
from katsyncd.daemon import Daemon
from katsyncd.sim.world import World
from katsyncd.ui.web import CSP
from tests.support.cli_helpers import run_cli
from tests.support.harness import converge, eventually, settled, write_config
from tests.support.ui import (
    TOKEN,
    XSS_SKU,
    UiWorld,
    basic,
    build_world,
    running,
    token_file,
    ui_config,
)

pytestmark = pytest.mark.timeout(90)


def config_of(tmp: Path) -> Path:  # where the `ui` fixture writes its config
    return tmp / "k.toml"


@pytest.fixture
async def ui(world: World, db_url: str, tmp_path: Path) -> AsyncIterator[tuple[UiWorld, Daemon]]:
    w = build_world(world)
    async with running(ui_config(world, db_url, config_of(tmp_path)), subscribe=world) as d:
        await converge(world, 30)
        await eventually(lambda: settled(d), 30)
        yield w, d


async def fetch(
    d: Daemon, path: str, auth: str | None = None, method: str = "GET"
) -> tuple[int, CIMultiDict[str], str]:
    headers = {} if auth is None else {"Authorization": auth}
    url = f"http://127.0.0.1:{d.http_port}{path}"
    async with aiohttp.ClientSession() as s, s.request(method, url, headers=headers) as r:
        return r.status, CIMultiDict(r.headers), await r.text()


async def test_overview_shows_each_store_with_strict_headers(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui

    async def both_in_sync() -> bool:  # nothing to write, no Katana change left to read
        html = (await fetch(d, "/"))[2]
        return all(f'data-store="{s}" data-state="in-sync"' in html for s in ("main", "east"))

    await eventually(both_in_sync, 30)
    status, headers, html = await fetch(d, "/")
    assert status == 200, html
    assert headers["Content-Security-Policy"] == CSP
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert 'data-store="main" data-state="in-sync"' in html
    assert 'data-store="east" data-state="in-sync"' in html
    assert '<meta name="viewport"' in html
    assert "<script>" not in html and "style=" not in html  # nothing inline: CSP holds
    status, _, live = await fetch(d, "/ui/live")
    assert status == 200 and 'data-store="main"' in live and "<html" not in live


async def test_static_files_are_served_with_their_types(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    status, headers, body = await fetch(d, "/ui/static/ui.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and ".store" in body
    status, headers, body = await fetch(d, "/ui/static/ui.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert (await fetch(d, "/ui/static/..%2Fweb.py"))[0] == 404


async def test_pages_are_read_only(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    for path in ("/", "/sku/S7-A", "/pushes", "/unmatched"):
        assert (await fetch(d, path, method="POST"))[0] == 405
        assert (await fetch(d, path, method="HEAD"))[0] == 200


async def test_sku_page_s7_lists_every_bigcommerce_item(ui: tuple[UiWorld, Daemon]) -> None:
    w, d = ui
    status, _, html = await fetch(d, "/sku/S7-A")
    assert status == 200
    main = _section(html, "main")
    assert main.count("<tr data-item=") == w.s7_items == 3
    assert 'data-level="7"' in main  # 8 in stock - buffer 1
    assert main.count("in sync") == 3


async def test_sku_page_s8_names_the_winner(ui: tuple[UiWorld, Daemon]) -> None:
    w, d = ui
    _, _, html = await fetch(d, "/sku/S8-A")
    winner_row = html.split('<tr class="winner">')[1].split("</tr>")[0]
    assert f"<td>{w.s8_winner}</td>" in winner_row and "created latest" in winner_row
    assert f"<td>{w.s8_loser}</td>" in html and "created earlier than the winner" in html
    assert 'data-level="6"' in _section(html, "main")  # the winner's 7 - buffer 1


async def test_sku_page_s12_shows_which_locations_and_orders_count(
    ui: tuple[UiWorld, Daemon],
) -> None:
    _, d = ui
    _, _, html = await fetch(d, "/sku/S12-A")
    main, east = _section(html, "main"), _section(html, "east")
    assert 'data-level="49"' in main  # 10 + 50 - 4 - 6 - buffer 1
    assert 'data-level="46"' in east  # East only: 50 - 4 (the Katana-typed order ignored)
    assert '<tr class="ignored"><td>West</td>' in east
    assert '<tr class="counts"><td>East</td>' in east
    assert "SO-" in east and "ignores such orders (S5)" in east
    assert east.count("<td>yes</td>") == 2  # East stock, the shop's order


async def test_xss_sku_renders_as_text(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    status, _, html = await fetch(d, "/sku/" + quote(XSS_SKU, safe=""))
    assert status == 200
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert XSS_SKU not in html
    _, _, pushes = await fetch(d, "/pushes?sku=" + quote(XSS_SKU, safe=""))
    assert "&lt;script&gt;" in pushes and XSS_SKU not in pushes
    status, _, same = await fetch(d, "/sku?sku=" + quote(XSS_SKU, safe=""))
    assert status == 200 and 'data-level="2"' in same


async def test_pushes_filter_page_and_csv(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    _, _, html = await fetch(d, "/pushes?store=east")
    assert html.count("<td>east</td>") == 2 and "<td>main</td>" not in html
    _, _, html = await fetch(d, "/pushes?sku=S7-A")
    assert html.count("S7-A</a></td>") == 3
    last = await d.db.pool.fetchval("SELECT max(id) FROM push_log")
    _, _, older = await fetch(d, f"/pushes?before={last}")
    assert older.count("<tr><td>") == last - 1
    _, _, none = await fetch(d, "/pushes?since=2999-01-01T00:00")
    assert "no push matches" in none
    status, headers, body = await fetch(d, "/pushes.csv?store=main")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert {r["store"] for r in rows} == {"main"} and len(rows) == 6
    assert all(r["outcome"] == "written" and r["reason"] for r in rows)
    assert (await fetch(d, "/pushes?store=main&format=csv"))[2] == body


@pytest.mark.parametrize(
    ("query", "why"),
    [("since=yesterday", "since: 'yesterday' is not a date"), ("before=-3", "before: '-3'")],
)
async def test_pushes_bad_filters_are_400(ui: tuple[UiWorld, Daemon], query: str, why: str) -> None:
    _, d = ui
    for path in ("/pushes", "/pushes.csv"):
        status, _, html = await fetch(d, f"{path}?{query}")
        assert status == 400 and why.replace("'", "&#39;") in html


async def test_unmatched_both_sides_searchable(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    _, _, html = await fetch(d, "/unmatched?store=main&side=katana")
    assert ">KATANA-ONLY</a>" in html
    _, _, html = await fetch(d, "/unmatched?store=main&side=bigcommerce")
    assert ">BC-ONLY</a>" in html and "S7-G" not in html
    _, _, html = await fetch(d, "/unmatched?store=main&side=katana&q=nothing-like-it")
    assert "<li>none</li>" in html
    status, _, html = await fetch(d, "/unmatched?store=nope")
    assert status == 400 and "not a configured store" in html


async def test_items_bigcommerce_rejects_show_with_its_reason(ui: tuple[UiWorld, Daemon]) -> None:
    w, d = ui
    w.main.sim.reject_skus(["S8-A"])
    w.world.katana.adjust_stock(w.s8_winner, w.east_location, 5)
    w.world.katana.emit("current_inventory.product_updated", w.s8_winner)

    async def failed_shown() -> bool:
        return "Items BigCommerce rejected" in (await fetch(d, "/"))[2]

    await eventually(failed_shown, 30)
    html = (await fetch(d, "/"))[2]
    card = html.split('data-store="main"')[1].split("</article>")[0]
    assert "<dt>Failed items</dt><dd>1</dd>" in card
    assert '<td><a href="/sku/S8-A">S8-A</a></td>' in card
    reason = await d.db.pool.fetchval(
        "SELECT failed_reason FROM item_level WHERE sku = 'S8-A' AND store = 'main'"
    )
    assert reason and str(escape(reason)) in card
    sku = _section((await fetch(d, "/sku/S8-A"))[2], "main")
    assert "failed: " in sku and 'data-level="11"' in sku  # 7 + 5 - buffer 1


async def test_lag_is_recorded_per_push(ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    lags = await d.db.pool.fetch("SELECT at - stale_since AS lag FROM push_log")
    assert lags and all(r["lag"] is not None and r["lag"].total_seconds() >= 0 for r in lags)
    _, _, html = await fetch(d, "/")
    assert "Lag p50 / p99 (1 h)</dt><dd>—" not in html  # a figure, not the placeholder


async def test_ui_off_by_default(world: World, db_url: str, tmp_path: Path) -> None:
    build_world(world)
    path = ui_config(world, db_url, tmp_path / "k.toml", ui=False)
    async with running(path) as d:
        assert (await fetch(d, "/"))[0] == 404
        assert (await fetch(d, "/sku/S7-A"))[0] == 404


async def test_off_loopback_the_ui_needs_the_token(
    world: World, db_url: str, tmp_path: Path
) -> None:
    build_world(world)
    secret = token_file(tmp_path)
    path = ui_config(
        world, db_url, tmp_path / "k.toml", host="0.0.0.0", status_token_file=str(secret)
    )
    async with running(path) as d:
        status, headers, body = await fetch(d, "/")
        assert status == 401 and TOKEN not in body
        challenges = headers.getall("WWW-Authenticate")
        assert 'Basic realm="katsyncd", charset="UTF-8"' in challenges  # the browser prompts
        assert 'Bearer realm="katsyncd"' in challenges
        for wrong in (basic("wrong"), "Bearer wrong", "Basic !!!", basic(TOKEN)[:-4]):
            assert (await fetch(d, "/sku/S7-A", wrong))[0] == 401
        assert (await fetch(d, "/", basic(TOKEN)))[0] == 200
        assert (await fetch(d, "/ui/static/ui.js", basic(TOKEN, user="")))[0] == 200
        assert (await fetch(d, "/pushes", f"Bearer {TOKEN}"))[0] == 200
        assert (await fetch(d, "/healthz"))[0] == 200
        _, _, page = await fetch(d, "/", basic(TOKEN))
        assert TOKEN not in page


async def test_a_reload_that_drops_the_secret_is_refused(
    world: World, db_url: str, tmp_path: Path
) -> None:
    build_world(world)
    secret = token_file(tmp_path)
    path = ui_config(
        world, db_url, tmp_path / "k.toml", host="0.0.0.0", status_token_file=str(secret)
    )
    async with running(path) as d:
        listen = d.config.server.listen
        data = tomllib.loads(path.read_text())
        data["server"] = {"listen": listen, "ui": True}  # the token file left out
        write_config(path, data)
        assert await d.reload() is False
        assert any("status pages" in p for p in d.life.reload.problems)
        assert (await fetch(d, "/"))[0] == 401  # the old config, token and all, still runs
        assert (await fetch(d, "/", basic(TOKEN)))[0] == 200


async def test_off_loopback_without_a_secret_the_ui_refuses_to_start(
    world: World, db_url: str, tmp_path: Path
) -> None:
    path = ui_config(world, db_url, tmp_path / "k.toml", host="0.0.0.0")
    daemon = Daemon(load_config(path), config_path=path)
    with pytest.raises(ConfigError, match=r"status_token_file: required .*status pages"):
        await daemon.run(install_signals=False)


def _section(html: str, store: str) -> str:
    return html.split(f'<section class="store-explain" data-store="{store}">')[1].split(
        "</section>"
    )[0]


async def test_explain_cli_prints_the_same_explanation(
    ui: tuple[UiWorld, Daemon],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # rich wraps at 80 columns when not on a terminal
    config = str(config_of(tmp_path))
    assert await run_cli(["explain", "S12-A", "--config", config, "--store", "east"]) == 0
    out = capsys.readouterr().out
    assert "Store east" in out and "Store main" not in out
    assert "Level for east: 46" in out and "ignores such orders (S5)" in out and "SO-1" in out
    assert "West     │ 10       │ no" in out
    assert await run_cli(["--config", config, "explain", XSS_SKU]) == 0
    out = capsys.readouterr().out
    assert XSS_SKU in out and "= 2" in out  # main: 3 - buffer 1
    assert await run_cli(["explain", "S7-A", "--config", config, "--store", "nope"]) == 2
    assert "unknown store 'nope' (stores: main, east)" in capsys.readouterr().err
    assert await run_cli(["explain", "NO-SUCH-SKU", "--config", config]) == 0
    assert "No Katana variant carries this SKU" in capsys.readouterr().out

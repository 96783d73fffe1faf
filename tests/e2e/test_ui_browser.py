"""The status pages in a real browser (issue 13): Debian's headless Chromium driven by
Playwright, against a daemon syncing the simulators. Screenshots are saved as artifacts in
``$KATSYNCD_SCREENSHOTS`` (default ``.artifacts/screenshots``).

Chromium cannot be downloaded here, so Playwright launches ``/usr/bin/chromium``
(``$KATSYNCD_CHROMIUM`` overrides). Without it these tests fail, saying how to install it
(``.ci/run`` does); ``pytest -m "not browser"`` leaves them out on a machine without one."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from katsyncd.daemon import Daemon
from katsyncd.sim.world import World
from tests.support.harness import converge
from tests.support.ui import (
    TOKEN,
    XSS_SKU,
    UiWorld,
    build_world,
    running,
    token_file,
    ui_config,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.browser]

LIVE_TIMEOUT_MS = 30_000


def chromium() -> str:
    path = os.environ.get("KATSYNCD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            f"no Chromium at {path}: apt-get install chromium (.ci/run does), set "
            'KATSYNCD_CHROMIUM, or leave these tests out with -m "not browser"'
        )
    return path


def shots() -> Path:
    folder = Path(os.environ.get("KATSYNCD_SCREENSHOTS", ".artifacts/screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def ui(world: World, db_url: str, tmp_path: Path) -> AsyncIterator[tuple[UiWorld, Daemon]]:
    w = build_world(world)
    async with running(ui_config(world, db_url, tmp_path / "k.toml"), subscribe=world) as d:
        await converge(world, 30)
        yield w, d


async def page_of(browser: Browser, *, phone: bool = False, **kw: object) -> Page:
    size = {"width": 390, "height": 844} if phone else {"width": 1280, "height": 900}
    context = await browser.new_context(viewport=size, **kw)  # type: ignore[arg-type]
    page = await context.new_page()
    page.on("console", lambda m: _csp_violations(page).append(m) if _blocked(m) else None)
    return page


def _blocked(m: ConsoleMessage) -> bool:
    return "Content Security Policy" in m.text or "Refused to" in m.text


def _csp_violations(page: Page) -> list[ConsoleMessage]:
    found: list[ConsoleMessage] = page.__dict__.setdefault("_csp", [])
    return found


async def refused(page: Page, to: str) -> bool:
    """The browser got a 401 for ``to``: as a page, or (headless Chromium with no way to
    prompt, or credentials the server refused) as ``net::ERR_INVALID_AUTH_CREDENTIALS``."""
    try:
        response = await page.goto(to)
    except PlaywrightError as exc:
        return "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
    return response is not None and response.status == 401


def url(d: Daemon, path: str) -> str:
    return f"http://127.0.0.1:{d.http_port}{path}"


async def test_overview_shows_each_store_and_updates_live(
    browser: Browser, ui: tuple[UiWorld, Daemon]
) -> None:
    w, d = ui
    page = await page_of(browser)
    await page.goto(url(d, "/"))
    for name in ("main", "east"):
        await page.wait_for_selector(f'[data-store="{name}"][data-state="in-sync"]')
    await page.evaluate("window.notReloaded = true")
    # BigCommerce refuses east's writes: the page turns east to error, with what to do.
    w.east.sim.answer_writes(403)
    w.world.katana.adjust_stock(w.s12, w.east_location, 7)
    w.world.katana.emit("current_inventory.product_updated", w.s12)
    await page.wait_for_selector('[data-store="east"][data-state="error"]', timeout=LIVE_TIMEOUT_MS)
    assert "What to do" in await page.inner_text('[data-store="east"]')
    assert await page.get_attribute('[data-store="main"]', "data-state") == "in-sync"
    await page.screenshot(path=str(shots() / "overview-error.png"), full_page=True)
    # Writes work again: east converges and the page says so, without a reload.
    w.east.sim.answer_writes(None)
    d.stores["east"].writer.retry_now.set()  # as a reload would: skip the error backoff
    await converge(w.world, 30)
    await page.wait_for_selector(
        '[data-store="east"][data-state="in-sync"]', timeout=LIVE_TIMEOUT_MS
    )
    assert await page.evaluate("window.notReloaded") is True
    await page.screenshot(path=str(shots() / "overview.png"), full_page=True)
    assert _csp_violations(page) == []


async def test_sku_pages_explain_s7_s8_s12(browser: Browser, ui: tuple[UiWorld, Daemon]) -> None:
    w, d = ui
    page = await page_of(browser)
    await page.goto(url(d, "/sku/S7-A"))
    main = page.locator('[data-store="main"]')
    assert await main.locator("tr[data-item]").count() == 3
    assert await main.locator("[data-level]").inner_text() == "7"
    await page.screenshot(path=str(shots() / "sku-s7.png"), full_page=True)
    await page.goto(url(d, "/sku/S8-A"))
    assert str(w.s8_winner) in await page.locator("tr.winner").inner_text()
    await page.goto(url(d, "/sku/S12-A"))
    east = page.locator('[data-store="east"]')
    assert await east.locator("[data-level]").inner_text() == "46"
    assert await east.locator("tr.ignored td").first.inner_text() == "West"
    await page.screenshot(path=str(shots() / "sku-s12.png"), full_page=True)
    assert _csp_violations(page) == []


async def test_xss_sku_renders_as_text(browser: Browser, ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    page = await page_of(browser)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await page.goto(url(d, "/sku/" + quote(XSS_SKU, safe="")))
    assert await page.locator("code.sku").inner_text() == XSS_SKU
    await page.goto(url(d, "/pushes?sku=" + quote(XSS_SKU, safe="")))
    assert XSS_SKU in await page.locator("table.pushes").inner_text()
    await page.goto(url(d, "/"))
    await page.fill("input[name=sku]", XSS_SKU)
    await page.click("form.find button")
    await page.wait_for_selector("code.sku")
    assert await page.locator("code.sku").inner_text() == XSS_SKU
    assert dialogs == []
    await page.screenshot(path=str(shots() / "sku-xss.png"), full_page=True)


async def test_readable_on_a_phone(browser: Browser, ui: tuple[UiWorld, Daemon]) -> None:
    _, d = ui
    page = await page_of(browser, phone=True)
    for path, name in (
        ("/", "overview-phone"),
        ("/sku/S12-A", "sku-phone"),
        ("/pushes", "pushes-phone"),
    ):
        await page.goto(url(d, path))
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways on a phone by {overflow} px"
        await page.screenshot(path=str(shots() / f"{name}.png"), full_page=True)


async def test_off_loopback_the_browser_needs_the_password(
    browser: Browser, world: World, db_url: str, tmp_path: Path
) -> None:
    build_world(world)
    secret = token_file(tmp_path)
    path = ui_config(
        world, db_url, tmp_path / "k.toml", host="0.0.0.0", status_token_file=str(secret)
    )
    async with running(path) as d:
        for creds in (None, {"username": "shop", "password": "no"}):
            page = await page_of(browser, http_credentials=creds)
            assert await refused(page, url(d, "/"))
            answer = await page.request.get(url(d, "/sku/S7-A"))
            assert answer.status == 401 and TOKEN not in await answer.text()
        right = await page_of(browser, http_credentials={"username": "shop", "password": TOKEN})
        response = await right.goto(url(d, "/"))
        assert response is not None and response.status == 200
        await right.wait_for_selector('[data-store="main"]')
        assert TOKEN not in await right.content()

"""``katsyncd webhooks register|list|delete`` against the Katana simulator's /webhooks API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.sim.katana import KatanaSim
from katsyncd.subscription import mismatch
from tests.support.cli_helpers import run_cli
from tests.support.harness import write_config

API_KEY = "webhooks-test-key-0123456789"
URL = "https://katsyncd.example.com/webhooks/katana"  # the simulator stores any https URL
LOOPBACK = "http://127.0.0.1:8080/webhooks/katana"

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def katana() -> AsyncIterator[KatanaSim]:
    sim = KatanaSim(api_key=API_KEY)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
def config(katana: KatanaSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "200")  # rich's width off a terminal: one table row a line
    data = {
        # The config needs some webhook_token before one is registered (a placeholder here).
        "katana": {"base_url": katana.base_url, "api_key": API_KEY, "webhook_token": "0" * 16},
        "log": {"level": "warning"},
    }
    return write_config(tmp_path / "katsyncd.toml", data)


async def webhooks(
    config: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    code = await run_cli(["--config", str(config), "webhooks", *args])
    out, err = capsys.readouterr()
    assert API_KEY not in out + err
    return code, out, err


def test_mismatch_names_what_is_wrong() -> None:
    assert mismatch({"enabled": True, "subscribed_events": list(SUBSCRIBED_EVENTS)}) is None
    wrong = {"enabled": False, "subscribed_events": ["sales_order.created", "product.created"]}
    assert mismatch(wrong) == f"disabled, {len(SUBSCRIBED_EVENTS) - 2} events missing"
    extra = {"enabled": True, "subscribed_events": [*SUBSCRIBED_EVENTS, "material.created"]}
    assert mismatch(extra) == "1 events extra"


async def test_register_twice_is_idempotent(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await webhooks(config, capsys, "register", "--url", URL)
    assert code == 0
    (hook,) = katana.webhooks.values()
    assert hook.url == URL and hook.enabled
    assert hook.subscribed_events == list(SUBSCRIBED_EVENTS)
    assert f"Registered webhook {hook.id}" in out
    assert f'webhook_token = "{hook.token}"' in out

    code, out, _ = await webhooks(config, capsys, "register", "--url", URL)
    assert code == 0
    assert list(katana.webhooks.values()) == [hook]
    assert "already exists and is up to date" in out
    assert f"Token: {hook.token}" in out and f'webhook_token = "{hook.token}"' in out
    assert katana.request_count("/webhooks") == 3  # list, create, list: nothing changed


async def test_register_brings_an_existing_subscription_up_to_date(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    webhook_id = katana.subscribe(URL, ["sales_order.created", "material.created"])
    katana.webhooks[webhook_id].enabled = False
    token = katana.webhooks[webhook_id].token

    code, out, _ = await webhooks(config, capsys, "register", "--url", URL)
    assert code == 0
    (hook,) = katana.webhooks.values()
    assert hook.id == webhook_id and hook.token == token and hook.enabled
    assert sorted(hook.subscribed_events) == sorted(SUBSCRIBED_EVENTS)
    assert "already existed (disabled," in out and "updated" in out
    assert f'webhook_token = "{token}"' in out


async def test_list_and_delete(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours = katana.subscribe(URL, list(SUBSCRIBED_EVENTS))
    other = katana.subscribe("https://example.com/hook", ["product.created"])

    code, out, _ = await webhooks(config, capsys, "list")
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[1:2]}
    assert str(ours) in lines and str(other) in lines
    assert URL in lines[str(ours)] and f"{len(SUBSCRIBED_EVENTS)}" in lines[str(ours)]
    assert lines[str(ours)].split()[-2] == "yes"  # matches what katsyncd needs
    assert "no (" in lines[str(other)]

    code, out, _ = await webhooks(config, capsys, "delete", str(other))
    assert code == 0 and f"Webhook {other} deleted" in out
    assert list(katana.webhooks) == [ours]


async def test_katana_refusal_is_reported_without_secrets(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    katana.fail_next(1, 422, path_prefix="/webhooks")
    code, _, err = await webhooks(config, capsys, "register", "--url", URL)
    assert code == 1
    assert "Katana answered 422" in err
    assert katana.webhooks == {}


@pytest.mark.parametrize(
    "url", ["http://example.com/webhooks/katana", LOOPBACK, "example.com/webhooks/katana"]
)
async def test_register_refuses_a_non_https_url_before_asking_katana(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, _, err = await webhooks(config, capsys, "register", "--url", url)
    assert code == 2
    assert "https" in err and url in err
    assert katana.request_count() == 0 and katana.webhooks == {}


async def test_loopback_http_needs_the_explicit_escape_hatch(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = await webhooks(config, capsys, "register", "--url", LOOPBACK)
    assert code == 2 and "--allow-loopback-http" in err
    code, _, _ = await webhooks(
        config, capsys, "register", "--url", LOOPBACK, "--allow-loopback-http"
    )
    assert code == 0
    assert [h.url for h in katana.webhooks.values()] == [LOOPBACK]
    remote = "http://example.com/webhooks/katana"  # the hatch is for loopback only
    code, _, _ = await webhooks(
        config, capsys, "register", "--url", remote, "--allow-loopback-http"
    )
    assert code == 2


async def test_global_options_after_nested_subcommands(
    katana: KatanaSim, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's example: ``webhooks register --url … --config FILE`` (and --log-level)."""
    argv = ["webhooks", "register", "--url", URL, "--config", str(config), "--log-level", "error"]
    assert await run_cli(argv) == 0
    (hook,) = katana.webhooks.values()
    assert await run_cli(["webhooks", "list", "--log-level", "debug", "--config", str(config)]) == 0
    assert await run_cli(["webhooks", "delete", str(hook.id), "--config", str(config)]) == 0
    assert katana.webhooks == {}
    out, err = capsys.readouterr()
    assert API_KEY not in out + err

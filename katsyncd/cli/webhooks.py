"""``katsyncd webhooks register|list|delete``: katsyncd's subscription to Katana webhooks.

``register`` is idempotent: a subscription with the URL already there is brought to exactly
the events katsyncd needs (``katsyncd.ingest.SUBSCRIBED_EVENTS``) and enabled, never
duplicated. The webhook token it prints is what ``[katana] webhook_token`` must hold for
katsyncd to accept the deliveries; the API key is never printed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from urllib.parse import urlsplit

from rich.console import Console

from katsyncd.cli.exit_codes import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from katsyncd.cli.render import stdout_console, webhooks_table
from katsyncd.cli.wiring import katana_client
from katsyncd.config import Config
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.katana import KatanaClient, KatanaError
from katsyncd.subscription import Webhook, mismatch

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def url_problem(url: str, *, allow_loopback_http: bool = False) -> str | None:
    """Pure: why Katana would not deliver to ``url`` (None: it is a usable https URL).

    Katana's API accepts only https webhook URLs. ``allow_loopback_http`` also lets plain
    http to a loopback host through, for the simulators and local tests only."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if allow_loopback_http and parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return None
    if parts.scheme == "http" and parts.hostname:
        hint = (
            " (--allow-loopback-http accepts http to 127.0.0.1/::1/localhost for simulators)"
            if parts.hostname in LOOPBACK_HOSTS
            else ""
        )
        return f"Katana delivers webhooks only to https URLs, not {url!r}{hint}"
    return f"not an absolute https URL: {url!r}"


async def run_webhooks_cli(cfg: Config, args: argparse.Namespace) -> int:
    """Dispatch ``webhooks register --url URL``, ``webhooks list`` and ``webhooks delete ID``."""
    if args.webhooks_command == "register":
        problem = url_problem(args.url, allow_loopback_http=args.allow_loopback_http)
        if problem is not None:
            print(f"katsyncd: webhooks register --url: {problem}", file=sys.stderr)
            return EXIT_CONFIG
    console = stdout_console()
    async with katana_client(cfg) as katana:
        try:
            return await _run(katana, args, console)
        except KatanaError as exc:
            detail = f" {exc.body}" if exc.body else ""
            print(f"katsyncd: Katana answered {exc.status}: {exc}{detail}", file=sys.stderr)
            return EXIT_FAILURE


async def _run(katana: KatanaClient, args: argparse.Namespace, console: Console) -> int:
    command = args.webhooks_command
    if command == "register":
        await register(katana, args.url, console)
    elif command == "list":
        console.print(webhooks_table(await katana.list_webhooks()))
    elif command == "delete":
        await katana.delete_webhook(args.id)
        console.print(f"Webhook {args.id} deleted (or it was already gone).")
    else:
        raise AssertionError(command)
    return EXIT_OK


async def register(katana: KatanaClient, url: str, console: Console) -> Webhook:
    """Create katsyncd's subscription for ``url``, or bring the existing one up to date."""
    same_url = sorted(
        (w for w in await katana.list_webhooks() if w.get("url") == url), key=lambda w: w["id"]
    )
    hook: Webhook
    if not same_url:
        hook = await katana.create_webhook(url, SUBSCRIBED_EVENTS)
        console.print(f"Registered webhook {hook['id']} for {url}.")
    else:
        hook = await _update(katana, same_url[0], console)
        _warn_duplicates(console, same_url[1:])
    _print_token(console, hook)
    return hook


async def _update(katana: KatanaClient, hook: Webhook, console: Console) -> Webhook:
    why = mismatch(hook)
    if why is None:
        console.print(f"Webhook {hook['id']} for {hook['url']} already exists and is up to date.")
        return hook
    fresh = await katana.update_webhook(
        int(hook["id"]), subscribed_events=list(SUBSCRIBED_EVENTS), enabled=True
    )
    console.print(f"Webhook {hook['id']} for {hook['url']} already existed ({why}); updated.")
    return {**hook, **fresh}


def _warn_duplicates(console: Console, others: Sequence[Webhook]) -> None:
    if others:
        ids = ", ".join(str(w["id"]) for w in others)
        console.print(
            f"Other subscriptions with this URL: {ids} (each delivery would arrive twice); "
            "remove them with `katsyncd webhooks delete ID`.",
            markup=False,
        )


def _print_token(console: Console, hook: Webhook) -> None:
    token = str(hook.get("token") or "")
    console.print(f"Webhook id: {hook['id']}", markup=False)
    console.print(f"Token: {token}", markup=False)
    console.print("Use it in the [katana] section of the config file:", markup=False)
    console.print(f'webhook_token = "{token}"', markup=False)

"""The ``katsyncd`` argument parser: every command and option, the global ones defined once."""

from __future__ import annotations

import argparse
from typing import Any

from katsyncd import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")


def global_options() -> argparse.ArgumentParser:
    """The options accepted before or after any subcommand (defined once, attached to the
    top-level parser and to every subcommand and nested subcommand as a parent). The
    defaults are suppressed so an option given before the subcommand is not reset after it."""
    g = argparse.ArgumentParser(add_help=False)
    g.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="config file (default: $KATSYNCD_CONFIG or /etc/katsyncd/katsyncd.toml)",
    )
    g.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="override [log] level for this command",
    )
    return g


def build_parser() -> argparse.ArgumentParser:
    common = global_options()
    p = argparse.ArgumentParser(
        prog="katsyncd", description="Katana → BigCommerce stock sync", parents=[common]
    )
    p.add_argument("--version", action="version", version=f"katsyncd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(parent: Any, name: str, help_: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_, parents=[common])
        return parser

    command(sub, "run", "run the daemon")
    demo = command(sub, "demo", "everything local: embedded Postgres, simulators, live view")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds (exit 0)")
    demo.add_argument("--products", type=int, default=300, help="Katana products to simulate")
    demo.add_argument(
        "--state-dir",
        default=None,
        help="where the embedded Postgres lives (default: a temporary folder)",
    )
    demo.add_argument("--events-per-second", type=float, default=5.0)
    demo.add_argument("--plain", action="store_true", help="plain lines instead of a live view")
    demo.add_argument(
        "--pessimistic",
        action="store_true",
        help="simulators play every loosely documented API behaviour the unhelpful way",
    )
    command(sub, "check-config", "validate the config file and exit")
    command(sub, "migrate", "apply database migrations and exit")
    rec = command(sub, "reconcile", "full re-sync of the whole catalogue")
    rec.add_argument("--store", action="append", help="only this store (repeatable)")
    rec.add_argument("--dry-run", action="store_true", help="write nothing; show the diff")
    rec.add_argument("--output", help="write the diff as CSV to this file")
    doc = command(sub, "doctor", "read-only checks of the configuration against the live APIs")
    doc.add_argument("--store", help="check only this store (default: every store)")
    doc.add_argument(
        "--url",
        help="public URL of /webhooks/katana to look for (default: [katana] webhook_url)",
    )
    exp = command(sub, "explain", "why a SKU shows the level it shows, per store")
    exp.add_argument("sku", help="the SKU, exactly as in Katana (case-sensitive)")
    exp.add_argument("--store", help="only this store (default: every store)")
    wh = command(sub, "webhooks", "manage the Katana webhook subscription")
    whs = wh.add_subparsers(dest="webhooks_command", required=True)
    reg = command(whs, "register", "create or update katsyncd's subscription")
    reg.add_argument("--url", required=True, help="public https URL of /webhooks/katana")
    reg.add_argument(
        "--allow-loopback-http",
        action="store_true",
        help="also accept http:// to 127.0.0.1/::1/localhost (simulators and local tests only)",
    )
    command(whs, "list", "list subscriptions")
    dele = command(whs, "delete", "delete a subscription")
    dele.add_argument("id", type=int)
    return p

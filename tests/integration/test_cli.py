"""The command line: check-config, migrate, and run's refusal to start half-configured."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from katsyncd.db import load_migrations
from tests.support.cli_helpers import run_cli
from tests.support.pg import empty_database

GOOD = """
[database]
url = "{url}"
[katana]
api_key = "k"
webhook_token = "0123456789abcdef"
[[stores]]
name = "main"
store_hash = "abc"
access_token = "secret-bc-token"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "katsyncd.toml"
    path.write_text(text)
    return path


async def test_check_config_ok_prints_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.format(url="postgresql://u:pw@h/db"))
    assert await run_cli(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "secret-bc-token" not in out and "0123456789abcdef" not in out and ":pw@" not in out


async def test_check_config_errors_name_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, GOOD.format(url="postgresql://h/db").replace("store_hash", "store_hsh"))
    assert await run_cli(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: stores[0].store_hsh: unknown key" in err


async def test_migrate_applies_every_migration(tmp_path: Path, pg_server_url: str) -> None:
    async with empty_database(pg_server_url) as url:
        conn = await asyncpg.connect(url)
        try:
            first = load_migrations()[0]  # a database from the first release: 0002+ never ran
            await conn.execute(first.sql)
            await conn.execute(
                "CREATE TABLE schema_migrations (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                first.version,
                first.name,
            )
            path = write(tmp_path, GOOD.format(url=url))
            assert await run_cli(["migrate", "--config", str(path)]) == 0
            versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
            assert sorted(versions) == [m.version for m in load_migrations()]
            cols = {
                r[0]
                for r in await conn.fetch(
                    "SELECT column_name FROM information_schema.columns"
                    " WHERE table_name = 'item_level'"
                )
            }
            assert {"increase_since", "guard_checked_at"} <= cols  # from 0002
        finally:
            await conn.close()


async def test_run_refuses_without_webhook_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.format(url="postgresql://h/db").replace('webhook_token = "0123456789abcdef"\n', "")
    path = write(tmp_path, text)
    assert await run_cli(["run", "--config", str(path)]) == 2
    assert "katana.webhook_token: required to run" in capsys.readouterr().err


COMMANDS = [
    ["run"],
    ["demo"],
    ["check-config"],
    ["migrate"],
    ["reconcile", "--store", "main"],
    ["doctor", "--store", "main"],
    ["webhooks", "register", "--url", "https://x.example/webhooks/katana"],
    ["webhooks", "list"],
    ["webhooks", "delete", "7"],
    ["explain", "SKU-1", "--store", "main"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_global_options_before_or_after_every_subcommand(command: list[str]) -> None:
    from katsyncd.cli.parser import build_parser

    opts = ["--config", "/tmp/k.toml", "--log-level", "debug"]
    for argv in ([*opts, *command], [*command, *opts], [opts[0], opts[1], *command, *opts[2:]]):
        args = build_parser().parse_args(argv)
        assert (args.config, args.log_level) == ("/tmp/k.toml", "debug"), argv
    args = build_parser().parse_args(command)
    assert getattr(args, "config", None) is None and getattr(args, "log_level", None) is None


async def test_log_level_option_overrides_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from katsyncd import logsetup

    seen: list[str] = []
    monkeypatch.setattr(logsetup, "configure", lambda level, fmt: seen.append(level))
    path = write(tmp_path, GOOD.format(url="postgresql://h/db") + '[log]\nlevel = "error"\n')
    assert await run_cli(["check-config", "--config", str(path), "--log-level", "debug"]) == 0
    assert await run_cli(["--config", str(path), "check-config"]) == 0
    assert seen == ["debug", "error"]


async def test_check_config_deeply_nested_array_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 11 finding 4: was a RecursionError traceback; now exit 2 and one line."""
    deep = "[" * 5000 + "]" * 5000
    path = write(tmp_path, GOOD.format(url="postgresql://h/db") + f"[sync]\nbuffer = {deep}\n")
    assert await run_cli(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: invalid TOML (arrays or inline tables nested" in err
    assert "Traceback" not in err and "RecursionError" not in err


async def test_run_refuses_an_exposed_status_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[server]\nlisten = "0.0.0.0:8080"\n' + GOOD.format(url="postgresql://h/db")
    path = write(tmp_path, text)
    assert await run_cli(["run", "--config", str(path)]) == 2
    assert "server.status_token_file: required when listen is not a loopback address" in (
        capsys.readouterr().err
    )

"""Unit tests for katsyncd.config: loading, validation messages, secrets, reload diffs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from katsyncd import config as cfgmod
from katsyncd.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    build_config,
    diff_config,
    expand_env,
    load_config,
    parse_listen,
    redact_url,
    resolve_config_path,
)

KATANA_OK = '[katana]\napi_key = "kat-key"\nwebhook_token = "hook-token"\n'
STORE_OK = '[[stores]]\nname = "main"\nstore_hash = "abc123"\naccess_token = "bc-token"\n'

FULL = """
[server]
listen = "0.0.0.0:9090"
max_body_bytes = 2048
shutdown_timeout_seconds = 5.5
header_timeout_seconds = 4.0
body_timeout_seconds = 3.0

[database]
url = "postgresql://sync:pw@db.internal/katsync"
state_dir = "/srv/katsyncd"
pool_min_size = 1
pool_max_size = 4

[katana]
base_url = "http://127.0.0.1:7001/v1/"
api_key = "${KATANA_API_KEY}"
webhook_token_file = "secrets/webhook"
requests_per_minute = 120
timeout_seconds = 12.5

[sync]
debounce_seconds = 0.5
max_delay_seconds = 3.0
poll_interval_seconds = 15.0
catalog_refresh_seconds = 60.0
reconcile_interval_seconds = 0
catch_up_max_gap_seconds = 3600.0
push_log_retention_days = 7

[log]
level = "debug"
format = "json"

[[stores]]
name = "main"
store_hash = "abc123"
access_token = "${BC_MAIN_TOKEN}"
api_base_url = "http://127.0.0.1:7002"
stock_sync = true
dry_run = true
quantity = "in_stock"
katana_sales_orders_count = false
katana_locations = ["Main warehouse", 7]
location_id = 3
buffer = 2
max_quantity = 500
oversell_guard = true
increase_delay_seconds = 0.0
write_timeout_seconds = 9.0

[[stores]]
name = "eu.shop-2"
store_hash = "def456"
access_token_file = "/ABS/bc-eu"
"""

FULL_ENV = {"KATANA_API_KEY": "kat-secret-1", "BC_MAIN_TOKEN": "bc-secret-main"}


def write(tmp_path: Path, text: str, name: str = "katsyncd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """Load ``text`` as katsyncd.toml and return the ConfigError's problem lines."""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env=env or {})
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def single_problem(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    problems = problems_of(tmp_path, text, env)
    assert len(problems) == 1, problems
    return problems[0]


@pytest.fixture
def full_config(tmp_path: Path) -> Config:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "webhook").write_text("  hook-secret\n", encoding="utf-8")
    (tmp_path / "bc-eu").write_text("bc-secret-eu\n", encoding="utf-8")
    text = FULL.replace("/ABS/bc-eu", str(tmp_path / "bc-eu"))
    return load_config(write(tmp_path, text), env=FULL_ENV)


def minimal(**stores: Any) -> Config:
    """A valid config built in code, like ``katsyncd demo`` does."""
    data: dict[str, Any] = {"katana": {"api_key": "k", "webhook_token": "t"}}
    data["stores"] = [
        {"name": name, "store_hash": f"h{i}", "access_token": "a", **settings}
        for i, (name, settings) in enumerate(stores.items())
    ]
    return build_config(data, env={})


# --- Loading --------------------------------------------------------------------------------


def test_full_file_round_trip(full_config: Config, tmp_path: Path) -> None:
    c = full_config
    assert c.server.host_port == ("0.0.0.0", 9090)
    assert (c.server.max_body_bytes, c.server.shutdown_timeout_seconds) == (2048, 5.5)
    assert (c.server.header_timeout_seconds, c.server.body_timeout_seconds) == (4.0, 3.0)
    assert c.database.url == "postgresql://sync:pw@db.internal/katsync"
    assert c.database.state_dir == Path("/srv/katsyncd")
    assert (c.database.pool_min_size, c.database.pool_max_size) == (1, 4)
    assert c.katana.base_url == "http://127.0.0.1:7001/v1"  # trailing slash dropped
    assert c.katana.api_key_value() == "kat-secret-1"
    assert c.katana.webhook_token_value() == "hook-secret"
    assert c.katana.webhook_token_file is not None
    assert c.katana.webhook_token_file.path == tmp_path / "secrets" / "webhook"
    assert (c.katana.requests_per_minute, c.katana.timeout_seconds) == (120, 12.5)
    assert c.sync.model_dump() == {
        "debounce_seconds": 0.5,
        "max_delay_seconds": 3.0,
        "poll_interval_seconds": 15.0,
        "catalog_refresh_seconds": 60.0,
        "reconcile_interval_seconds": 0.0,
        "catch_up_max_gap_seconds": 3600.0,
        "push_log_retention_days": 7,
    }
    assert (c.log.level, c.log.format) == ("debug", "json")
    assert c.store_names == ["main", "eu.shop-2"]
    main = c.store("main")
    assert main.access_token_value() == "bc-secret-main"
    assert main.api_base_url == "http://127.0.0.1:7002"
    assert (main.stock_sync, main.dry_run, main.writes_enabled) == (True, True, False)
    assert (main.quantity, main.katana_sales_orders_count) == ("in_stock", False)
    assert main.katana_locations == ("Main warehouse", 7)
    assert (main.location_id, main.buffer, main.max_quantity) == (3, 2, 500)
    assert (main.oversell_guard, main.increase_delay_seconds) == (True, 0.0)
    assert main.write_timeout_seconds == 9.0
    assert c.store("eu.shop-2").access_token_value() == "bc-secret-eu"
    # A dump validates back to an equal config.
    assert Config.model_validate(c.model_dump()) == c


def test_defaults_are_the_named_constants() -> None:
    c = minimal(main={})
    assert c.server.listen == cfgmod.DEFAULT_LISTEN_ADDRESS
    assert c.server.host_port == ("127.0.0.1", 8080)
    assert c.server.max_body_bytes == cfgmod.DEFAULT_MAX_BODY_BYTES == 1_048_576
    assert c.server.shutdown_timeout_seconds == cfgmod.DEFAULT_SHUTDOWN_TIMEOUT_SECONDS == 20.0
    assert c.server.header_timeout_seconds == cfgmod.DEFAULT_HEADER_TIMEOUT_SECONDS == 10.0
    assert c.server.body_timeout_seconds == cfgmod.DEFAULT_BODY_TIMEOUT_SECONDS == 10.0
    assert c.database.url is None
    assert c.database.state_dir == cfgmod.DEFAULT_STATE_DIR == Path("/var/lib/katsyncd")
    assert (c.database.pool_min_size, c.database.pool_max_size) == (2, 10)
    assert c.katana.base_url == cfgmod.DEFAULT_KATANA_BASE_URL == "https://api.katanamrp.com/v1"
    assert (c.katana.requests_per_minute, c.katana.timeout_seconds) == (60, 30.0)
    assert c.sync.debounce_seconds == cfgmod.DEFAULT_DEBOUNCE_SECONDS == 2.0
    assert c.sync.max_delay_seconds == 10.0
    assert c.sync.poll_interval_seconds == 30.0
    assert c.sync.catalog_refresh_seconds == 900.0
    assert c.sync.reconcile_interval_seconds == 14_400.0
    assert c.sync.catch_up_max_gap_seconds == 604_800.0
    assert c.sync.push_log_retention_days == 30
    assert (c.log.level, c.log.format) == ("info", "auto")
    store = c.store("main")
    assert store.api_base_url == "https://api.bigcommerce.com"
    assert (store.stock_sync, store.dry_run, store.writes_enabled) == (True, False, True)
    assert store.quantity == "in_stock_minus_committed"
    assert store.katana_sales_orders_count is True
    assert (store.katana_locations, store.location_id) == ((), 1)
    assert (store.buffer, store.max_quantity, store.oversell_guard) == (0, None, False)
    assert (store.increase_delay_seconds, store.write_timeout_seconds) == (60.0, 30.0)


def test_minimal_file_needs_only_katana_secrets(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, KATANA_OK), env={})
    assert c.stores == ()
    assert c.katana.api_key_value() == "kat-key"


def test_config_is_frozen() -> None:
    c = minimal(main={})
    with pytest.raises(ValueError, match="frozen"):
        c.server.__setattr__("listen", "0.0.0.0:1")


def test_store_lookup_and_writes_enabled() -> None:
    c = minimal(a={}, b={"stock_sync": False}, c={"dry_run": True})
    assert [c.store(n).writes_enabled for n in ("a", "b", "c")] == [True, False, False]
    with pytest.raises(KeyError, match="nope"):
        c.store("nope")


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:8080", ("::1", 8080)),
        ("[::]:0", ("::", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_parse_listen(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


# --- Paths ----------------------------------------------------------------------------------


def test_resolve_config_path_precedence() -> None:
    env = {"KATSYNCD_CONFIG": "/from/env.toml"}
    assert resolve_config_path("/from/cli.toml", env) == Path("/from/cli.toml")
    assert resolve_config_path(None, env) == Path("/from/env.toml")
    assert resolve_config_path(None, {}) == DEFAULT_CONFIG_PATH
    assert Path("/etc/katsyncd/katsyncd.toml") == DEFAULT_CONFIG_PATH


def test_missing_config_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert caught.value.problems == [f"{path}: config file not found"]


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    text = KATANA_OK + "[sync]\ndebounce_seconds = = 2\n"
    problem = single_problem(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'katsyncd.toml'}: line 5: invalid TOML (")


def test_secret_file_relative_to_config_folder(tmp_path: Path, monkeypatch: Any) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "katana.key").write_text("\n  from-file  \n\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    text = '[katana]\napi_key_file = "katana.key"\nwebhook_token = "t"\n'
    c = load_config(write(conf_dir, text), env={})
    assert c.katana.api_key_value() == "from-file"
    assert c.katana.api_key_file is not None
    assert c.katana.api_key_file.path == conf_dir / "katana.key"


def test_build_config_base_dir_for_secret_files(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("tok-value", encoding="utf-8")
    data = {"katana": {"api_key": "k", "webhook_token_file": "tok"}}
    c = build_config(data, env={}, base_dir=tmp_path)
    assert c.katana.webhook_token_value() == "tok-value"


# --- ${VAR} -------------------------------------------------------------------------------


def test_env_expansion_and_escape(tmp_path: Path) -> None:
    text = (
        '[katana]\napi_key = "pre-${KEY}-post"\nwebhook_token = "$${LITERAL}"\n'
        'base_url = "https://${HOST}/v1"\n' + STORE_OK + 'katana_locations = ["${LOC}", 3]\n'
    )
    env = {"KEY": "k1", "HOST": "katana.test", "LOC": "Main"}
    c = load_config(write(tmp_path, text), env=env)
    assert c.katana.api_key_value() == "pre-k1-post"
    assert c.katana.webhook_token_value() == "${LITERAL}"
    assert c.katana.base_url == "https://katana.test/v1"
    assert c.store("main").katana_locations == ("Main", 3)


def test_env_expansion_converts_numbers(tmp_path: Path) -> None:
    text = KATANA_OK + 'requests_per_minute = "${RPM}"\n'
    c = load_config(write(tmp_path, text), env={"RPM": "90"})
    assert c.katana.requests_per_minute == 90


def test_env_expansion_is_not_recursive() -> None:
    assert expand_env("${A}", {"A": "${B}", "B": "no"}) == "${B}"
    assert expand_env("cost $5 and $$ and $${X} ${Y}", {"Y": "y"}) == "cost $5 and $$ and ${X} y"


def test_env_expansion_defaults_to_os_environ(monkeypatch: Any) -> None:
    monkeypatch.setenv("KATSYNCD_TEST_KEY", "from-environ")
    c = build_config({"katana": {"api_key": "${KATSYNCD_TEST_KEY}", "webhook_token": "t"}})
    assert c.katana.api_key_value() == "from-environ"


def test_missing_env_var_names_key_and_variable(tmp_path: Path) -> None:
    text = '[katana]\napi_key = "${KATANA_API_KEY}"\nwebhook_token = "t"\n'
    assert single_problem(tmp_path, text) == (
        f"{tmp_path / 'katsyncd.toml'}: katana.api_key: "
        "environment variable KATANA_API_KEY is not set"
    )


def test_missing_env_var_in_store_list(tmp_path: Path) -> None:
    text = KATANA_OK + STORE_OK + 'katana_locations = ["ok", "${WHERE}"]\n'
    problem = single_problem(tmp_path, text)
    assert problem.endswith(
        "katsyncd.toml: stores[0].katana_locations[1]: environment variable WHERE is not set"
    )


def test_malformed_reference_is_an_error(tmp_path: Path) -> None:
    text = '[katana]\napi_key = "${oops"\nwebhook_token = "t"\n'
    assert "katsyncd.toml: katana.api_key: invalid" in single_problem(tmp_path, text)


# --- Error messages name the file and the key -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KATANA_OK + 'api_kye = "x"\n', "katana.api_kye: unknown key (did you mean api_key?)"),
        ("colour = 1\n" + KATANA_OK, "colour: unknown key"),
        ("[stores_x]\n" + KATANA_OK, "stores_x: unknown key (did you mean stores?)"),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert single_problem(tmp_path, text) == f"{tmp_path / 'katsyncd.toml'}: {expected}"


def test_unknown_key_in_nth_store(tmp_path: Path) -> None:
    second = STORE_OK.replace("main", "second").replace("abc123", "h2")
    text = KATANA_OK + STORE_OK + second + "quantit = 1\n"
    assert single_problem(tmp_path, text).endswith(
        "katsyncd.toml: stores[1].quantit: unknown key (did you mean quantity?)"
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            '[server]\nmax_body_bytes = "big"\n',
            "server.max_body_bytes: must be an integer, not a string",
        ),
        (
            '[sync]\ndebounce_seconds = "soon"\n',
            "sync.debounce_seconds: must be a number, not a string",
        ),
        ("[log]\nlevel = 3\n", 'log.level: must be "debug", "info", "warning" or "error"'),
        ('[log]\nformat = "xml"\n', 'log.format: must be "auto", "json" or "console"'),
        ("[server]\nlisten = 8080\n", "server.listen: must be a string, not an integer"),
        (
            "[server]\nshutdown_timeout_seconds = 30\n",
            "server.shutdown_timeout_seconds: must be < 30",
        ),
        ("[server]\nbody_timeout_seconds = 0\n", "server.body_timeout_seconds: must be > 0"),
        ('[database]\nurl = "mysql://u:pw@h/db"\n', "database.url: must be a postgresql://"),
        (
            "[database]\npool_min_size = 5\npool_max_size = 4\n",
            "database.pool_max_size: must be >=",
        ),
        ("server = 1\n", "server: must be a table, not an integer"),
    ],
)
def test_wrong_values_name_file_and_key(tmp_path: Path, section: str, expected: str) -> None:
    problem = single_problem(tmp_path, section + KATANA_OK)
    assert problem.startswith(f"{tmp_path / 'katsyncd.toml'}: {expected}")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            'quantity = "instock"',
            'stores[1].quantity: must be "in_stock" or "in_stock_minus_committed"',
        ),
        ('stock_sync = "maybe"', "stores[1].stock_sync: must be true or false, not a string"),
        ("location_id = 0", "stores[1].location_id: must be >= 1"),
        ("buffer = -1", "stores[1].buffer: must be >= 0"),
        ("max_quantity = -5", "stores[1].max_quantity: must be >= 0"),
        ("increase_delay_seconds = -1.0", "stores[1].increase_delay_seconds: must be >= 0"),
        ("katana_locations = [1.5]", "stores[1].katana_locations[0]: must be a location name"),
        ('katana_locations = "Main"', "stores[1].katana_locations: must be an array, not a string"),
        ('api_base_url = "ftp://x"', "stores[1].api_base_url: must be an http:// or https:// URL"),
    ],
)
def test_store_values_name_file_and_index(tmp_path: Path, setting: str, expected: str) -> None:
    second = STORE_OK.replace("main", "second").replace("abc123", "h2")
    text = KATANA_OK + STORE_OK + second + setting + "\n"
    assert single_problem(tmp_path, text).startswith(f"{tmp_path / 'katsyncd.toml'}: {expected}")


@pytest.mark.parametrize(
    "listen", ["8080", "localhost", ":8080", "::1:8080", "[::1]", "[nope]:80", "h:99999", "h:8x"]
)
def test_bad_listen(tmp_path: Path, listen: str) -> None:
    problem = single_problem(tmp_path, f'[server]\nlisten = "{listen}"\n' + KATANA_OK)
    assert problem.startswith(f"{tmp_path / 'katsyncd.toml'}: server.listen: ")


def test_debounce_above_max_delay(tmp_path: Path) -> None:
    text = KATANA_OK + "[sync]\ndebounce_seconds = 20.0\n"
    assert single_problem(tmp_path, text).endswith(
        "katsyncd.toml: sync.max_delay_seconds: must be >= debounce_seconds"
    )


def test_duplicate_store_names(tmp_path: Path) -> None:
    second = STORE_OK.replace("abc123", "other")
    assert single_problem(tmp_path, KATANA_OK + STORE_OK + second).endswith(
        "katsyncd.toml: stores[1].name: duplicate store name (also stores[0])"
    )


def test_duplicate_store_hashes(tmp_path: Path) -> None:
    second = STORE_OK.replace("main", "other")
    assert single_problem(tmp_path, KATANA_OK + STORE_OK + second).endswith(
        "katsyncd.toml: stores[1].store_hash: duplicate store_hash (also stores[0])"
    )


def test_bad_store_name(tmp_path: Path) -> None:
    text = KATANA_OK + STORE_OK.replace('"main"', '"my store"')
    assert "katsyncd.toml: stores[0].name: must be text matching" in single_problem(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[katana]\nwebhook_token = "t"\n',
            "katana.api_key: required: set api_key or api_key_file",
        ),
        ('[katana]\napi_key = ""\nwebhook_token = "t"\n', "katana.api_key: must be non-empty"),
        ("[server]\n", "katana: required"),
        (
            KATANA_OK + STORE_OK.replace('access_token = "bc-token"\n', ""),
            "stores[0].access_token: required: set access_token or access_token_file",
        ),
        (
            KATANA_OK + '[[stores]]\nname = "x"\naccess_token = "a"\n',
            "stores[0].store_hash: required",
        ),
    ],
)
def test_missing_values(tmp_path: Path, text: str, expected: str) -> None:
    assert single_problem(tmp_path, text).startswith(f"{tmp_path / 'katsyncd.toml'}: {expected}")


def test_both_secret_and_secret_file(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k2", encoding="utf-8")
    text = '[katana]\napi_key = "k"\napi_key_file = "key"\nwebhook_token = "t"\n'
    assert single_problem(tmp_path, text).endswith(
        "katsyncd.toml: katana.api_key: set either api_key or api_key_file, not both"
    )


def test_secret_file_missing(tmp_path: Path) -> None:
    text = '[katana]\napi_key_file = "missing.key"\nwebhook_token = "t"\n'
    assert single_problem(tmp_path, text) == (
        f"{tmp_path / 'katsyncd.toml'}: katana.api_key_file: cannot read the secret file it "
        f"names (No such file or directory; relative paths start at {tmp_path})"
    )


def test_secret_file_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text(" \n\n", encoding="utf-8")
    text = KATANA_OK + STORE_OK.replace('access_token = "bc-token"', 'access_token_file = "empty"')
    assert single_problem(tmp_path, text).endswith(
        "katsyncd.toml: stores[0].access_token_file: the secret file it names is empty"
    )


def test_secret_file_is_a_directory(tmp_path: Path) -> None:
    text = '[katana]\napi_key_file = "."\nwebhook_token = "t"\n'
    assert "katana.api_key_file: cannot read the secret file" in single_problem(tmp_path, text)


def test_all_problems_in_one_error(tmp_path: Path) -> None:
    text = (
        '[server]\nlisten = "nowhere"\n[katana]\napi_key = "${UNSET}"\nwebhook_token = "t"\n'
        'requests_per_minute = 0\nbogus = 1\n[log]\nlevel = "loud"\n'
        + STORE_OK
        + 'quantity = "all"\n'
    )
    problems = problems_of(tmp_path, text)
    keys = [p.split(": ")[1] for p in problems]
    assert sorted(keys) == sorted(
        [
            "katana.api_key",
            "server.listen",
            "katana.requests_per_minute",
            "katana.bogus",
            "log.level",
            "stores[0].quantity",
        ]
    )
    assert all(p.startswith(f"{tmp_path / 'katsyncd.toml'}: ") for p in problems)


def test_unset_variable_hides_knock_on_type_error(tmp_path: Path) -> None:
    text = KATANA_OK + 'requests_per_minute = "${RPM}"\n'
    assert single_problem(tmp_path, text).endswith(
        "katana.requests_per_minute: environment variable RPM is not set"
    )


def test_build_config_source_defaults_to_memory() -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"katana": {"api_key": "k", "webhook_token": "t", "x": 1}}, env={})
    assert caught.value.problems == ["<memory>: katana.x: unknown key"]


# --- Secrets stay secret --------------------------------------------------------------------

SECRETS = ("kat-secret-1", "hook-secret", "bc-secret-main", "bc-secret-eu", ":pw@")


def test_secrets_not_in_repr_str_or_dumps(full_config: Config) -> None:
    texts = [
        repr(full_config),
        str(full_config),
        repr(full_config.katana),
        str(full_config.stores),
        str(full_config.model_dump(exclude={"database": {"url"}})),
        full_config.model_dump_json(),
        json.dumps(full_config.redacted()),
    ]
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_redacted_shape(full_config: Config, tmp_path: Path) -> None:
    redacted = full_config.redacted()
    json.dumps(redacted)  # JSON-ready
    assert redacted["katana"]["api_key"] == "***"
    assert redacted["katana"]["webhook_token_file"] == {
        "path": str(tmp_path / "secrets" / "webhook"),
        "value": "***",
    }
    assert redacted["stores"][0]["access_token"] == "***"
    assert redacted["stores"][0]["katana_locations"] == ["Main warehouse", 7]
    assert redacted["database"]["url"] == "postgresql://sync:***@db.internal/katsync"
    assert redacted["server"]["listen"] == "0.0.0.0:9090"


def test_secret_not_echoed_in_errors(tmp_path: Path) -> None:
    text = '[katana]\napi_key = ["top-secret-value"]\nwebhook_token = "t"\n'
    problem = single_problem(tmp_path, text)
    assert problem.endswith("katana.api_key: must be a string")
    assert "top-secret" not in problem
    db = '[database]\nurl = "mysql://u:hunter2@h/db"\n' + KATANA_OK
    assert "hunter2" not in single_problem(tmp_path, db)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgres://h/db?sslmode=require&password=pw",
            "postgres://h/db?sslmode=require&password=***",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# --- Reload diff --------------------------------------------------------------------------


def test_diff_identical_is_empty() -> None:
    diff = diff_config(minimal(a={}), minimal(a={}))
    assert diff.empty
    assert diff.restart_required == []


def test_diff_restart_required_keys() -> None:
    old = minimal(a={})
    new = build_config(
        {
            "katana": {"api_key": "k", "webhook_token": "t"},
            "server": {"listen": "0.0.0.0:9000"},
            "database": {"url": "postgres://h/db", "pool_max_size": 20},
            "stores": [{"name": "a", "store_hash": "h0", "access_token": "a"}],
        },
        env={},
    )
    diff = diff_config(old, new)
    assert diff.restart_required == ["server.listen", "database.url", "database.pool_max_size"]
    assert not diff.empty
    assert not (diff.katana_changed or diff.sync_changed or diff.log_changed)
    assert diff.stores_changed == []


def test_diff_stores_added_removed_changed() -> None:
    old = minimal(a={}, b={}, c={})
    new = minimal(a={}, c={"write_timeout_seconds": 5.0}, d={})
    diff = diff_config(old, new)
    assert (diff.stores_added, diff.stores_removed) == (["d"], ["b"])
    assert diff.stores_changed == ["c"]
    assert diff.stores_rules_changed == []  # a timeout does not change levels
    assert diff.stores_switched_on == []


@pytest.mark.parametrize(
    "change",
    [
        {"quantity": "in_stock"},
        {"katana_sales_orders_count": False},
        {"katana_locations": ["Main"]},
        {"location_id": 2},
        {"buffer": 3},
        {"max_quantity": 100},
    ],
)
def test_diff_rules_changed(change: dict[str, Any]) -> None:
    diff = diff_config(minimal(a={}, b={}), minimal(a={}, b=change))
    assert (diff.stores_changed, diff.stores_rules_changed) == (["b"], ["b"])


@pytest.mark.parametrize(
    ("old", "new", "switched_on"),
    [
        ({"stock_sync": False}, {"stock_sync": True}, ["a"]),
        ({"dry_run": True}, {"dry_run": False}, ["a"]),
        ({}, {"stock_sync": False}, []),
        ({}, {"dry_run": True}, []),
    ],
)
def test_diff_switched_on(old: dict[str, Any], new: dict[str, Any], switched_on: list[str]) -> None:
    diff = diff_config(minimal(a=old), minimal(a=new))
    assert diff.stores_switched_on == switched_on
    assert diff.stores_changed == ["a"]


def test_diff_sections_changed() -> None:
    base = {"katana": {"api_key": "k", "webhook_token": "t"}}
    old = build_config(base, env={})
    new = build_config(
        {
            "katana": {"api_key": "k2", "webhook_token": "t"},
            "sync": {"debounce_seconds": 1.0},
            "log": {"level": "debug"},
        },
        env={},
    )
    diff = diff_config(old, new)
    assert (diff.katana_changed, diff.sync_changed, diff.log_changed) == (True, True, True)
    assert diff.restart_required == []
    assert not diff.empty


def test_webhook_token_optional_in_file_but_required_to_run(tmp_path: Path) -> None:
    path = tmp_path / "katsyncd.toml"
    path.write_text('[katana]\napi_key = "k"\n')
    cfg = load_config(path, env={})
    assert cfg.katana.webhook_token_value() == ""
    with pytest.raises(ConfigError) as caught:
        cfg.check_runnable(str(path))
    assert f"{path}: katana.webhook_token: required to run" in str(caught.value)


# --- Hostile files (issue 11) -------------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_array_is_a_config_error(tmp_path: Path, depth: int) -> None:
    """Finding 4: a deeply nested array was a RecursionError out of tomllib (5000) or of the
    validation after it; now one problem naming the file and the key."""
    text = KATANA_OK + "[sync]\ndebounce_seconds = " + "[" * depth + "]" * depth + "\n"
    problem = single_problem(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'katsyncd.toml'}: ")
    assert "nested" in problem


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ('buffer = "{secret}"', "stores[0].buffer"),
        ('quantity = "{secret}"', "stores[0].quantity"),
        ('katana_locations = [["{secret}"]]', "stores[0].katana_locations[0]"),
        ('api_base_url = "{secret}"', "stores[0].api_base_url"),
    ],
)
def test_no_input_value_is_echoed_in_errors(tmp_path: Path, setting: str, key: str) -> None:
    """Finding 8: a secret pasted into a non-secret key is not echoed by validation."""
    secret = "sk_live_0123456789"
    text = KATANA_OK + STORE_OK + setting.format(secret=secret) + "\n"
    problem = single_problem(tmp_path, text)
    assert f"katsyncd.toml: {key}: must be" in problem
    assert secret not in problem


@pytest.mark.parametrize(
    "section", ['[server]\nlisten = "{secret}"\n', '[log]\nlevel = "{secret}"\n']
)
def test_no_input_value_is_echoed_outside_stores(tmp_path: Path, section: str) -> None:
    secret = "sk_live_0123456789"
    problem = single_problem(tmp_path, section.format(secret=secret) + KATANA_OK)
    assert secret not in problem


def test_bad_store_name_is_not_echoed(tmp_path: Path) -> None:
    text = KATANA_OK + STORE_OK.replace('"main"', '"sk_live_0123456789 x"')
    problem = single_problem(tmp_path, text)
    assert "stores[0].name: must be text matching" in problem and "sk_live" not in problem


def test_duplicate_store_names_are_not_echoed(tmp_path: Path) -> None:
    second = STORE_OK.replace("abc123", "other")
    problem = single_problem(tmp_path, KATANA_OK + STORE_OK + second)
    assert '"main"' not in problem


# --- Exposure (issue 11 §3) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [
        ("127.0.0.1:8080", True),
        ("127.0.0.2:8080", True),
        ("[::1]:8080", True),
        ("localhost:8080", True),
        ("0.0.0.0:8080", False),
        ("[::]:8080", False),
        ("10.1.2.3:8080", False),
        ("katsyncd.internal:8080", False),
    ],
)
def test_is_loopback(listen: str, loopback: bool) -> None:
    assert cfgmod.is_loopback(listen) is loopback


def test_status_token_required_to_run_off_loopback(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[server]\nlisten = "0.0.0.0:8080"\n' + KATANA_OK))
    with pytest.raises(ConfigError) as caught:
        config.check_runnable("k.toml")
    assert caught.value.problems == [
        "k.toml: server.status_token_file: required when listen is not a loopback address "
        "(/status shows business data): point it at a file holding a long random token, "
        "or listen on 127.0.0.1"
    ]
    load_config(write(tmp_path, KATANA_OK)).check_runnable()  # loopback: no token needed
    # A reload is checked against the listener bound at start, not the file's new listen.
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, KATANA_OK)).check_runnable(listen="0.0.0.0:8080")


def test_status_token_from_file(tmp_path: Path) -> None:
    (tmp_path / "status-token").write_text("s3cret-status-token\n", encoding="utf-8")
    text = '[server]\nlisten = "0.0.0.0:8080"\nstatus_token_file = "status-token"\n' + KATANA_OK
    config = load_config(write(tmp_path, text))
    config.check_runnable()
    assert config.server.status_token_value() == "s3cret-status-token"
    assert "s3cret" not in json.dumps(config.redacted()) and "s3cret" not in repr(config)


def test_world_readable_config_with_secrets_is_warned(tmp_path: Path) -> None:
    path = write(tmp_path, KATANA_OK + STORE_OK)
    path.chmod(0o644)
    with capture_logs() as logs:
        load_config(path)
    (warning,) = [e for e in logs if e["event"] == "config_file_readable_by_others"]
    assert warning["keys"] == ["katana.api_key", "katana.webhook_token", "stores[0].access_token"]
    assert warning["mode"] == "0644" and warning["log_level"] == "warning"
    assert "kat-key" not in str(warning) and "bc-token" not in str(warning)
    path.chmod(0o640)
    with capture_logs() as logs:
        load_config(path)
    assert not [e for e in logs if e["event"] == "config_file_readable_by_others"]


def test_readable_config_without_inline_secrets_is_not_warned(tmp_path: Path) -> None:
    text = '[katana]\napi_key = "${K}"\nwebhook_token = "${W}"\n[database]\nurl = "postgresql://u@h/d"\n'
    path = write(tmp_path, text)
    path.chmod(0o644)
    with capture_logs() as logs:
        load_config(path, env={"K": "k", "W": "w"})
    assert not [e for e in logs if e["event"] == "config_file_readable_by_others"]
    assert cfgmod.inline_secrets({"database": {"url": "postgresql://u:pw@h/d"}}) == ["database.url"]

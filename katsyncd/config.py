"""The daemon's configuration: one frozen, typed value built from a TOML file + the environment.

``load_config`` reads the file and hands the parsed table to ``build_config``, the single
function that turns raw data into a ``Config``: it expands ``${VAR}`` references, validates
with pydantic (unknown keys rejected), reads ``*_file`` secrets relative to the config
file's folder and turns every problem into one line ``<file>: <dotted.key>: <what is wrong>``
of a single ``ConfigError``. ``diff_config`` compares two configs for SIGHUP reloads.

Secrets are ``SecretStr`` so ``repr``/``str``/``model_dump`` never show them, error messages
never echo a secret's value, and ``Config.redacted()`` is the form to log or serve.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import structlog
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_serializer,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from katsyncd.models import QuantityMode

__all__ = [
    "CONFIG_PATH_ENV",
    "DEFAULT_CONFIG_PATH",
    "RESTART_REQUIRED_KEYS",
    "RULE_KEYS",
    "Config",
    "ConfigDiff",
    "ConfigError",
    "DatabaseConfig",
    "HaConfig",
    "KatanaConfig",
    "LogConfig",
    "SecretFile",
    "ServerConfig",
    "StoreConfig",
    "SyncConfig",
    "build_config",
    "diff_config",
    "expand_env",
    "format_key",
    "inline_secrets",
    "is_loopback",
    "load_config",
    "parse_listen",
    "redact_url",
    "resolve_config_path",
]

log = structlog.get_logger(__name__)

# --- Where the file is -------------------------------------------------------------------

DEFAULT_CONFIG_PATH = Path("/etc/katsyncd/katsyncd.toml")
CONFIG_PATH_ENV = "KATSYNCD_CONFIG"

# --- Defaults (units in the names) ------------------------------------------------------------

DEFAULT_LISTEN_ADDRESS = "127.0.0.1:8080"
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 20.0
# A connection that sends no complete request header within this (of opening, or of its last
# answer) is closed; a webhook body not received within this is a 408. Katana sends both at
# once, in well under a second.
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0
DEFAULT_BODY_TIMEOUT_SECONDS = 10.0
# Kubernetes' default termination grace period; shutdown must finish before it sends SIGKILL.
SHUTDOWN_TIMEOUT_LIMIT_SECONDS = 30.0

DEFAULT_STATE_DIR = Path("/var/lib/katsyncd")
DEFAULT_POOL_MIN_CONNECTIONS = 2
DEFAULT_POOL_MAX_CONNECTIONS = 10

DEFAULT_KATANA_BASE_URL = "https://api.katanamrp.com/v1"
DEFAULT_KATANA_REQUESTS_PER_MINUTE = 60
MAX_KATANA_REQUESTS_PER_MINUTE = 10_000
# Fraction of the account's Katana quota katsyncd may use: the rest is left to other apps.
DEFAULT_KATANA_MAX_SHARE = 0.8
DEFAULT_KATANA_TIMEOUT_SECONDS = 30.0
DEFAULT_KATANA_IDS_PER_REQUEST = 250  # repeated ids per filtered read (Katana pages by 250)

DEFAULT_DEBOUNCE_SECONDS = 2.0
DEFAULT_MAX_DELAY_SECONDS = 10.0
DEFAULT_POLL_INTERVAL_SECONDS = 30.0
DEFAULT_CATALOG_REFRESH_SECONDS = 900.0
DEFAULT_RECONCILE_INTERVAL_SECONDS = 14_400.0  # 4 h; 0 disables the scheduled reconcile
DEFAULT_CATCH_UP_MAX_GAP_SECONDS = 604_800.0  # 7 days
DEFAULT_PUSH_LOG_RETENTION_DAYS = 30

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["auto", "json", "console"]
DEFAULT_LOG_LEVEL: LogLevel = "info"
DEFAULT_LOG_FORMAT: LogFormat = "auto"

DEFAULT_BIGCOMMERCE_API_BASE_URL = "https://api.bigcommerce.com"
DEFAULT_QUANTITY_MODE: QuantityMode = "in_stock_minus_committed"
DEFAULT_BC_LOCATION_ID = 1
DEFAULT_BUFFER_UNITS = 0
DEFAULT_INCREASE_DELAY_SECONDS = 60.0
DEFAULT_WRITE_TIMEOUT_SECONDS = 30.0
# The leader lease: renewed every third of it; a dead leader is replaced within about this.
DEFAULT_LEASE_SECONDS = 10.0

# --- What diff_config looks at ---------------------------------------------------------------

# Everything in [server] and [database] is bound when the listener and the pool are created
# (aiohttp's client_max_size and shutdown timeout included), so a change needs a restart.
RESTART_REQUIRED_KEYS = (
    "server.listen",
    "server.max_body_bytes",
    "server.shutdown_timeout_seconds",
    "server.header_timeout_seconds",
    "server.body_timeout_seconds",
    "server.ui",
    "database.url",
    "database.state_dir",
    "database.pool_min_size",
    "database.pool_max_size",
    "ha.lease_seconds",
)
# Store settings that change the level computed for a variant: a change means "re-sync all".
RULE_KEYS = (
    "quantity",
    "katana_sales_orders_count",
    "katana_locations",
    "location_id",
    "buffer",
    "max_quantity",
)

# No valid config nests deeper than 4 levels (stores[0].katana_locations[0]); a deeper file
# is refused before anything recursive (expansion, validation) walks it.
MAX_NESTING_DEPTH = 32

Loc = tuple[str | int, ...]  # a key path as pydantic reports it: ("stores", 1, "quantity")

_MASK = "***"
_SENSITIVE_KEYS = frozenset({"api_key", "webhook_token", "access_token", "url", "value"})


class ConfigError(Exception):
    """The config is unusable; ``problems`` holds one ``<file>: <key>: <why>`` line each."""

    def __init__(self, problems: Iterable[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        return "\n".join(self.problems)


# --- Small validators ------------------------------------------------------------------------


def _show(value: object) -> str:
    """What kind of TOML value ``value`` is ("a string", "an array"…), never the value itself:
    an operator may paste a secret into the wrong key, and errors are logged."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _key_error(loc: Loc, message: str) -> PydanticCustomError:
    """An error for a model validator that names the key (``loc``) inside the model."""
    return PydanticCustomError("config", "{message}", {"message": message, "loc": loc})


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``"host:port"`` or ``"[v6]:port"`` into ``(host, port)``; port 0 = any free port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not (port_text.isascii() and port_text.isdigit()):
        raise ValueError('must be "host:port" like "127.0.0.1:8080" or "[::1]:8080"')
    if host.startswith("[") and host.endswith("]"):
        host = _ipv6_host(host[1:-1])
    elif "[" in host or "]" in host or ":" in host:
        raise ValueError('IPv6 addresses need brackets, like "[::1]:8080"')
    port = int(port_text)
    if port > 65_535:
        raise ValueError("port must be 0..65535")
    return host, port


def _ipv6_host(host: str) -> str:
    """Check the bracketed part of a listen address is an IPv6 address."""
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        raise ValueError("the part in brackets is not an IPv6 address") from None
    return host


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


def _check_http_url(value: str) -> str:
    """An http(s) base URL; a trailing slash is dropped so paths can be appended."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _check_postgres_url(value: str) -> str:
    # The URL may hold a password: the message must not echo it.
    if not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// or postgres:// URL")
    return value


def _check_location_ref(value: object) -> str | int:
    """A Katana location: its name (non-empty string) or its id (integer >= 1)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError("must be a location name (non-empty text) or an id >= 1")


def redact_url(url: str) -> str:
    """Mask the password of a URL (userinfo and a ``password=`` query parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{_MASK}@{hostinfo}"
    query = re.sub(r"(^|&)(password=)[^&]*", rf"\1\2{_MASK}", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
PostgresUrl = Annotated[str, AfterValidator(_check_postgres_url)]
ListenAddress = Annotated[str, AfterValidator(_check_listen)]
LocationRef = Annotated[str | int, PlainValidator(_check_location_ref)]
Secret = Annotated[SecretStr, Field(min_length=1)]


# --- Secrets from files -------------------------------------------------------------------


class _Frozen(BaseModel):
    """Base of every config model: immutable, unknown keys rejected, inputs kept out of str()."""

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


class SecretFile(_Frozen):
    """A secret read from a file: where it came from and its (stripped) content."""

    path: Path
    value: SecretStr


def _read_secret(path: Path, relative_to: Path | None = None) -> str:
    """The stripped content of a secret file. Errors name neither the content nor the path
    (the key's own value: a secret pasted there by mistake must not reach a log); for a
    relative path they say which folder it starts at."""
    where = "" if relative_to is None else f"; relative paths start at {relative_to}"
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ValueError(f"cannot read the secret file it names ({reason}{where})") from None
    except UnicodeDecodeError:
        raise ValueError("the secret file it names is not UTF-8 text") from None
    if not text:
        raise ValueError("the secret file it names is empty")
    return text


def _load_secret_file(value: Any, info: ValidationInfo) -> Any:
    """Turn a ``*_file`` path (relative to the config file's folder) into a SecretFile."""
    if not isinstance(value, str | os.PathLike):
        return value  # a SecretFile or its dump: validated as a model
    if not str(value):
        raise ValueError("must be a file path, not an empty string")
    context = info.context if isinstance(info.context, Mapping) else {}
    base = Path(context.get("base_dir") or Path.cwd())
    path = base / value
    relative_to = None if Path(value).is_absolute() else base
    return SecretFile(path=path, value=SecretStr(_read_secret(path, relative_to)))


SecretFilePath = Annotated[SecretFile, BeforeValidator(_load_secret_file)]


def _check_secret_source(model: BaseModel, name: str, *, required: bool = True) -> None:
    """Exactly one of ``name`` and ``name_file`` must be set (at most one if not required)."""
    direct, from_file = getattr(model, name), getattr(model, f"{name}_file")
    if direct is not None and from_file is not None:
        raise _key_error((name,), f"set either {name} or {name}_file, not both")
    if required and direct is None and from_file is None:
        raise _key_error((name,), f"required: set {name} or {name}_file")


def _secret_value(direct: SecretStr | None, from_file: SecretFile | None) -> str:
    """The plain secret, wherever it came from."""
    if direct is not None:
        return direct.get_secret_value()
    if from_file is not None:
        return from_file.value.get_secret_value()
    raise RuntimeError("secret is not set (model built without validation?)")


# --- The model ------------------------------------------------------------------------------


class ServerConfig(_Frozen):
    """``[server]``: the HTTP listener (webhooks, health, metrics, status).

    ``/status`` (and any page) shows business data: with a ``status_token_file`` it needs
    ``Authorization: Bearer <token>``; ``katsyncd run`` refuses a listener off loopback
    without one. ``/healthz``, ``/readyz`` and ``/metrics`` stay open for probes and scrapers.
    """

    listen: ListenAddress = DEFAULT_LISTEN_ADDRESS
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    shutdown_timeout_seconds: float = Field(
        default=DEFAULT_SHUTDOWN_TIMEOUT_SECONDS, gt=0, lt=SHUTDOWN_TIMEOUT_LIMIT_SECONDS
    )
    status_token_file: SecretFilePath | None = None
    ui: bool = False  # the status pages (/, /sku/{sku}, /pushes) on this listener
    header_timeout_seconds: float = Field(default=DEFAULT_HEADER_TIMEOUT_SECONDS, gt=0)
    body_timeout_seconds: float = Field(default=DEFAULT_BODY_TIMEOUT_SECONDS, gt=0)

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` as ``(host, port)``; IPv6 hosts come without brackets."""
        return parse_listen(self.listen)

    def status_token_value(self) -> str | None:
        """The bearer token ``/status`` requires (None: no token configured)."""
        if self.status_token_file is None:
            return None
        return self.status_token_file.value.get_secret_value()


def is_loopback(listen: str) -> bool:
    """Whether a ``listen`` address only accepts connections from this host."""
    host, _ = parse_listen(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


class DatabaseConfig(_Frozen):
    """``[database]``: Postgres (``url`` omitted: embedded Postgres under ``state_dir``)."""

    url: PostgresUrl | None = Field(default=None, repr=False)  # may hold a password
    state_dir: Path = DEFAULT_STATE_DIR
    pool_min_size: int = Field(default=DEFAULT_POOL_MIN_CONNECTIONS, ge=0)
    pool_max_size: int = Field(default=DEFAULT_POOL_MAX_CONNECTIONS, ge=1)

    @field_serializer("url", when_used="json")
    def _mask_url_password(self, url: str | None) -> str | None:
        """JSON dumps mask the password, as they do for SecretStr; Python dumps keep it."""
        return None if url is None else redact_url(url)

    @model_validator(mode="after")
    def _pool_sizes_ordered(self) -> Self:
        if self.pool_max_size < self.pool_min_size:
            message = "must be >= pool_min_size"
            raise _key_error(("pool_max_size",), message)
        return self


class KatanaConfig(_Frozen):
    """``[katana]``: the Katana API and its webhooks.

    The API key is required. The webhook token may be left out until ``katsyncd webhooks
    register`` has created the subscription that issues it; ``katsyncd run`` refuses to start
    without one (see :meth:`Config.check_runnable`)."""

    base_url: HttpUrl = DEFAULT_KATANA_BASE_URL
    api_key: Secret | None = None
    api_key_file: SecretFilePath | None = None
    webhook_token: Secret | None = None
    webhook_token_file: SecretFilePath | None = None
    webhook_url: HttpUrl | None = None  # public URL of /webhooks/katana (`katsyncd doctor`)
    requests_per_minute: int = Field(
        default=DEFAULT_KATANA_REQUESTS_PER_MINUTE, ge=1, le=MAX_KATANA_REQUESTS_PER_MINUTE
    )
    max_share: float = Field(default=DEFAULT_KATANA_MAX_SHARE, gt=0, le=1)
    timeout_seconds: float = Field(default=DEFAULT_KATANA_TIMEOUT_SECONDS, gt=0)
    ids_per_request: int = Field(
        default=DEFAULT_KATANA_IDS_PER_REQUEST, ge=1, le=DEFAULT_KATANA_IDS_PER_REQUEST
    )

    @model_validator(mode="after")
    def _one_source_per_secret(self) -> Self:
        _check_secret_source(self, "api_key")
        _check_secret_source(self, "webhook_token", required=False)
        return self

    def api_key_value(self) -> str:
        """The plain Katana API key (for the Authorization header only)."""
        return _secret_value(self.api_key, self.api_key_file)

    def webhook_token_value(self) -> str:
        """The plain webhook token (the HMAC key for ``x-sha2-signature``); "" when unset."""
        if self.webhook_token is None and self.webhook_token_file is None:
            return ""
        return _secret_value(self.webhook_token, self.webhook_token_file)


class SyncConfig(_Frozen):
    """``[sync]``: debounce, polling, reconcile and retention timings."""

    debounce_seconds: float = Field(default=DEFAULT_DEBOUNCE_SECONDS, ge=0)
    max_delay_seconds: float = Field(default=DEFAULT_MAX_DELAY_SECONDS, ge=0)
    poll_interval_seconds: float = Field(default=DEFAULT_POLL_INTERVAL_SECONDS, gt=0)
    catalog_refresh_seconds: float = Field(default=DEFAULT_CATALOG_REFRESH_SECONDS, gt=0)
    reconcile_interval_seconds: float = Field(default=DEFAULT_RECONCILE_INTERVAL_SECONDS, ge=0)
    catch_up_max_gap_seconds: float = Field(default=DEFAULT_CATCH_UP_MAX_GAP_SECONDS, gt=0)
    push_log_retention_days: int = Field(default=DEFAULT_PUSH_LOG_RETENTION_DAYS, ge=1)

    @model_validator(mode="after")
    def _max_delay_covers_debounce(self) -> Self:
        if self.max_delay_seconds < self.debounce_seconds:
            message = "must be >= debounce_seconds"
            raise _key_error(("max_delay_seconds",), message)
        return self


class HaConfig(_Frozen):
    """``[ha]``: the leader lease that lets several replicas share one database."""

    lease_seconds: float = Field(default=DEFAULT_LEASE_SECONDS, ge=3, le=300)


class LogConfig(_Frozen):
    """``[log]``: level and format (``auto``: JSON when stderr is not a TTY)."""

    level: LogLevel = DEFAULT_LOG_LEVEL
    format: LogFormat = DEFAULT_LOG_FORMAT


class StoreConfig(_Frozen):
    """One ``[[stores]]`` entry: a BigCommerce store and its sync rules (S1, S3, S5, S12)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    store_hash: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    access_token: Secret | None = None
    access_token_file: SecretFilePath | None = None
    api_base_url: HttpUrl = DEFAULT_BIGCOMMERCE_API_BASE_URL
    stock_sync: bool = True
    dry_run: bool = False
    quantity: QuantityMode = DEFAULT_QUANTITY_MODE
    katana_sales_orders_count: bool = True
    katana_locations: tuple[LocationRef, ...] = ()
    location_id: int = Field(default=DEFAULT_BC_LOCATION_ID, ge=1)
    buffer: int = Field(default=DEFAULT_BUFFER_UNITS, ge=0)
    max_quantity: int | None = Field(default=None, ge=0)
    oversell_guard: bool = False
    increase_delay_seconds: float = Field(default=DEFAULT_INCREASE_DELAY_SECONDS, ge=0)
    write_timeout_seconds: float = Field(default=DEFAULT_WRITE_TIMEOUT_SECONDS, gt=0)

    @model_validator(mode="after")
    def _one_token_source(self) -> Self:
        _check_secret_source(self, "access_token")
        return self

    @property
    def writes_enabled(self) -> bool:
        """True when levels are written to BigCommerce (S1: sync on and not dry-run)."""
        return self.stock_sync and not self.dry_run

    def access_token_value(self) -> str:
        """The plain ``X-Auth-Token`` for this store."""
        return _secret_value(self.access_token, self.access_token_file)


class Config(_Frozen):
    """The whole daemon configuration. Build it with ``build_config`` or ``load_config``."""

    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    katana: KatanaConfig
    sync: SyncConfig = SyncConfig()
    log: LogConfig = LogConfig()
    ha: HaConfig = HaConfig()
    stores: tuple[StoreConfig, ...] = ()

    @model_validator(mode="after")
    def _stores_unique(self) -> Self:
        _check_unique(self.stores, "name", "store name")
        _check_unique(self.stores, "store_hash", "store_hash")
        return self

    def store(self, name: str) -> StoreConfig:
        """The store called ``name``; KeyError if there is none."""
        for store in self.stores:
            if store.name == name:
                return store
        raise KeyError(f"unknown store {name!r}")

    @property
    def store_names(self) -> list[str]:
        """Store names in config order."""
        return [store.name for store in self.stores]

    def check_runnable(self, source: str = "<config>", *, listen: str | None = None) -> None:
        """What ``katsyncd run`` needs beyond a valid file: a webhook token to verify with,
        and a status token when the listener (``listen``: the one bound at start, default
        this config's) is not loopback."""
        problems = []
        if not self.katana.webhook_token_value():
            problems.append(
                f"{source}: katana.webhook_token: required to run: set webhook_token or "
                "webhook_token_file (`katsyncd webhooks register --url URL` prints it)"
            )
        problem = self.exposure_problem(listen)
        if problem is not None:
            problems.append(f"{source}: {problem}")
        if problems:
            raise ConfigError(problems)

    def exposure_problem(self, listen: str | None = None) -> str | None:
        """``server.status_token_file: …`` when ``/status`` would be open off loopback."""
        listen = self.server.listen if listen is None else listen
        if is_loopback(listen) or self.server.status_token_value() is not None:
            return None
        pages = (
            "/status and the status pages (ui = true) show" if self.server.ui else "/status shows"
        )
        return (
            "server.status_token_file: required when listen is not a loopback address "
            f"({pages} business data): point it at a file holding a long random token, "
            "or listen on 127.0.0.1"
        )

    def redacted(self) -> dict[str, Any]:
        """A JSON-ready dump for logs and ``/status``: secrets are ``"***"``."""
        data: dict[str, Any] = _redact(self.model_dump())
        if self.database.url is not None:
            data["database"]["url"] = redact_url(self.database.url)
        return data


def _check_unique(stores: tuple[StoreConfig, ...], attr: str, what: str) -> None:
    """Raise for the first store whose ``attr`` repeats an earlier store's."""
    seen: dict[str, int] = {}
    for index, store in enumerate(stores):
        value = getattr(store, attr)
        if value in seen:
            message = f"duplicate {what} (also stores[{seen[value]}])"
            raise _key_error(("stores", index, attr), message)
        seen[value] = index


def _redact(value: Any) -> Any:
    """Recursively replace secrets with ``***`` and make the dump JSON-ready."""
    if isinstance(value, SecretStr):
        return _MASK
    if isinstance(value, dict):
        return {key: _redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


# --- ${VAR} expansion --------------------------------------------------------------------

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")


class _ExpansionError(Exception):
    pass


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """Replace ``${VAR}`` with ``env[VAR]`` and ``$${`` with ``${``; results are not rescanned."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if name is None:
            raise _ExpansionError('invalid "${" reference (write "$${" for a literal "${")')
        if name not in env:
            raise _ExpansionError(f"environment variable {name} is not set")
        return env[name]

    return _REFERENCE.sub(replace, value)


def _expand_tree(
    value: Any, env: Mapping[str, str], loc: Loc, problems: list[tuple[Loc, str]]
) -> Any:
    """Expand every string inside ``value``; a failure is recorded and the string kept as is."""
    if isinstance(value, str):
        try:
            return expand_env(value, env)
        except _ExpansionError as exc:
            problems.append((loc, str(exc)))
            return value
    if isinstance(value, Mapping):
        return {key: _expand_tree(item, env, (*loc, key), problems) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [
            _expand_tree(item, env, (*loc, index), problems) for index, item in enumerate(value)
        ]
    return value


# --- Error messages ------------------------------------------------------------------------

_TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "list": "an array",
    "tuple": "an array",
    "model": "a table",
    "dict": "a table",
    "model_attributes": "a table",
}
_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_BOUNDS_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def format_key(loc: Loc) -> str:
    """``("stores", 1, "quantity")`` -> ``stores[1].quantity``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def _error_loc(error: ErrorDetails) -> Loc:
    """The full key path of an error, including the key a model validator named."""
    ctx = error.get("ctx") or {}
    return (*error["loc"], *ctx.get("loc", ())) if error["type"] == "config" else error["loc"]


def _describe(error: ErrorDetails, loc: Loc) -> str:
    """What is wrong, in words an operator can act on; never echoes a secret."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))  # katsyncd's own words: no input in them
    if kind == "config":
        return error["msg"]
    wanted = _wanted(kind, ctx)
    if wanted is None:
        return _without_input(error["msg"], error.get("input"))
    if kind.endswith(("_type", "_parsing")) and not _is_sensitive(loc):
        return f"must be {wanted}, not {_show(error['input'])}"  # the kind, never the value
    return f"must be {wanted}"


def _without_input(message: str, value: object) -> str:
    """``message`` unless it quotes the input (a secret may sit in the wrong key)."""
    text = value if isinstance(value, str) else None
    if text and text in message:
        return "has a value that is not valid here"
    return message


def _wanted(kind: str, ctx: Mapping[str, Any]) -> str | None:
    """The "must be ..." part for type, enum, range and pattern errors."""
    if kind == "literal_error":
        return re.sub(r"'([^']*)'", r'"\1"', str(ctx["expected"]))
    if kind in _BOUNDS_ERRORS:
        bound = next(key for key in _BOUNDS if key in ctx)
        return f"{_BOUNDS[bound]} {ctx[bound]}"
    if kind == "string_pattern_mismatch":
        return f"text matching {ctx['pattern']}"
    if kind in ("too_short", "string_too_short"):
        return "non-empty"
    base = kind.removesuffix("_type").removesuffix("_parsing").removesuffix("_from_float")
    return _TYPE_NAMES.get(base)


def _is_sensitive(loc: Loc) -> bool:
    return bool(loc) and loc[-1] in _SENSITIVE_KEYS


def _unknown_key(loc: Loc) -> str:
    """``unknown key``, with a suggestion when the key looks like a typo of a known one."""
    parent = tuple(part for part in loc[:-1] if isinstance(part, str))
    model = _SECTION_MODELS.get(parent)
    if model is None or not loc:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


_SECTION_MODELS: dict[tuple[str, ...], type[BaseModel]] = {
    (): Config,
    ("server",): ServerConfig,
    ("database",): DatabaseConfig,
    ("katana",): KatanaConfig,
    ("sync",): SyncConfig,
    ("log",): LogConfig,
    ("ha",): HaConfig,
    ("stores",): StoreConfig,
}


def _validation_problems(exc: ValidationError, skip: set[Loc]) -> list[tuple[Loc, str]]:
    """Pydantic's errors as ``(loc, message)``; ``skip`` drops knock-on errors of bad ``${}``."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = _error_loc(error)
        if error["type"] != "extra_forbidden" and any(loc[: len(s)] == s for s in skip):
            continue
        problems.append((loc, _describe(error, loc)))
    return problems


# --- Building and loading --------------------------------------------------------------------


def build_config(
    data: Mapping[str, Any],
    *,
    source: str = "<memory>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Expand ``${VAR}``, validate and return the Config, or raise one ConfigError for all.

    ``source`` names the file in messages; ``base_dir`` is where relative ``*_file`` paths
    start (default: the working directory).
    """
    env = os.environ if env is None else env
    too_deep = _too_deep(data)
    if too_deep is not None:
        raise ConfigError(
            f"{source}: {format_key(too_deep)}: nested more than {MAX_NESTING_DEPTH} levels deep"
        )
    problems: list[tuple[Loc, str]] = []
    expanded = _expand_tree(data, env, (), problems)
    context = {"base_dir": base_dir or Path.cwd()}
    try:
        config = Config.model_validate(expanded, context=context)
    except ValidationError as exc:
        problems += _validation_problems(exc, {loc for loc, _ in problems})
    if problems:
        # `from None`: pydantic's own message may quote inputs, secrets included.
        raise ConfigError(f"{source}: {format_key(loc)}: {why}" for loc, why in problems) from None
    return config


def _too_deep(data: Mapping[str, Any]) -> Loc | None:
    """The first key path nested deeper than ``MAX_NESTING_DEPTH`` (checked without recursion,
    before anything recursive walks the data), or None."""
    stack: list[tuple[Loc, Any]] = [((), data)]
    while stack:
        loc, value = stack.pop()
        if len(loc) > MAX_NESTING_DEPTH:
            return loc[:MAX_NESTING_DEPTH]
        if isinstance(value, Mapping):
            stack += [((*loc, key), item) for key, item in value.items()]
        elif isinstance(value, list | tuple):
            stack += [((*loc, index), item) for index, item in enumerate(value)]
    return None


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file at ``path`` and build the Config (``*_file`` relative to its folder)."""
    path = Path(path)
    data = _read_toml(path)
    _warn_if_readable_by_others(path, data)
    return build_config(data, source=str(path), env=env, base_dir=path.absolute().parent)


_INLINE_SECRET_KEYS = ("api_key", "webhook_token", "access_token")


def inline_secrets(data: Mapping[str, Any]) -> list[str]:
    """Keys of the raw file that hold a secret itself (not a ``${VAR}`` reference or a
    ``*_file`` path): the database URL's password and the API keys and tokens."""
    found = []
    katana = data.get("katana")
    if isinstance(katana, Mapping):
        found += [f"katana.{k}" for k in _INLINE_SECRET_KEYS if _literal(katana.get(k))]
    stores = data.get("stores")
    for index, store in enumerate(stores if isinstance(stores, list) else []):
        if isinstance(store, Mapping) and _literal(store.get("access_token")):
            found.append(f"stores[{index}].access_token")
    database = data.get("database")
    url = database.get("url") if isinstance(database, Mapping) else None
    if isinstance(url, str) and "${" not in url and _has_password(url):
        found.append("database.url")
    return found


def _literal(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "${" not in value


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None or "password=" in urlsplit(url).query
    except ValueError:
        return False


def _warn_if_readable_by_others(path: Path, data: Mapping[str, Any]) -> None:
    """A config file holding secrets that any local user can read gets a warning."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    keys = inline_secrets(data) if mode & stat.S_IROTH else []
    if keys:
        log.warning(
            "config_file_readable_by_others",
            path=str(path),
            mode=f"{stat.S_IMODE(mode):04o}",
            keys=keys,
            fix=f"chmod o-r {path} (or move the secrets to ${{VAR}} or *_file)",
        )


def _read_toml(path: Path) -> dict[str, Any]:
    """Parse the config file; every failure is a ConfigError naming the file (and line)."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {_toml_problem(str(exc))}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(
            f"{path}: invalid TOML (arrays or inline tables nested more than "
            f"{MAX_NESTING_DEPTH} levels deep)"
        ) from None


def _toml_problem(message: str) -> str:
    """``Invalid value (at line 4, column 9)`` -> ``line 4: invalid TOML (invalid value, ...)``."""
    match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message)
    if match:
        reason, line, column = match.groups()
        return f"line {line}: invalid TOML ({reason[:1].lower()}{reason[1:]}, column {column})"
    reason = message.replace(" (at end of document)", "")
    return f"end of file: invalid TOML ({reason[:1].lower()}{reason[1:]})"


def resolve_config_path(cli_value: str | None, env: Mapping[str, str]) -> Path:
    """``--config`` wins, then ``$KATSYNCD_CONFIG``, else ``DEFAULT_CONFIG_PATH``."""
    if cli_value:
        return Path(cli_value)
    if env.get(CONFIG_PATH_ENV):
        return Path(env[CONFIG_PATH_ENV])
    return DEFAULT_CONFIG_PATH


# --- Reload -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What a reload changes. Lists hold dotted keys or store names, in config order."""

    restart_required: list[str] = field(default_factory=list)
    stores_added: list[str] = field(default_factory=list)
    stores_removed: list[str] = field(default_factory=list)
    stores_changed: list[str] = field(default_factory=list)
    stores_rules_changed: list[str] = field(default_factory=list)
    stores_switched_on: list[str] = field(default_factory=list)
    katana_changed: bool = False
    sync_changed: bool = False
    log_changed: bool = False

    @property
    def empty(self) -> bool:
        """True when the new config is equivalent to the old one."""
        lists = (self.restart_required, self.stores_added, self.stores_removed, self.stores_changed)
        return not any(lists) and not (self.katana_changed or self.sync_changed or self.log_changed)


def diff_config(old: Config, new: Config) -> ConfigDiff:
    """Compare two configs (pure): what needs a restart, which stores to start/stop/re-sync."""
    old_stores = {store.name: store for store in old.stores}
    new_stores = {store.name: store for store in new.stores}
    both = [(old_stores[name], store) for name, store in new_stores.items() if name in old_stores]
    return ConfigDiff(
        restart_required=[key for key in RESTART_REQUIRED_KEYS if _get(old, key) != _get(new, key)],
        stores_added=[name for name in new_stores if name not in old_stores],
        stores_removed=[name for name in old_stores if name not in new_stores],
        stores_changed=[b.name for a, b in both if a != b],
        stores_rules_changed=[b.name for a, b in both if _rules(a) != _rules(b)],
        stores_switched_on=[b.name for a, b in both if _switched_on(a, b)],
        katana_changed=old.katana != new.katana,
        sync_changed=old.sync != new.sync,
        log_changed=old.log != new.log,
    )


def _get(config: Config, dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    return getattr(getattr(config, section), key)


def _rules(store: StoreConfig) -> tuple[Any, ...]:
    return tuple(getattr(store, key) for key in RULE_KEYS)


def _switched_on(old: StoreConfig, new: StoreConfig) -> bool:
    return (new.stock_sync and not old.stock_sync) or (old.dry_run and not new.dry_run)

"""HTTP surface: the Katana webhook receiver, health, readiness, metrics and status.

The app gets narrow dependencies (``HttpDeps``): the committer webhooks are submitted to, a
readiness probe, a status provider, the metrics, and the few settings it reads per request.

The webhook endpoint is public, so what an unauthenticated client can cost is bounded: a
request without a well-formed ``x-sha2-signature`` or with a ``Content-Length`` over the limit
is refused before its body is read; bodies are read at most ``UNVERIFIED_BODY_SLOTS`` at a
time and within ``body_timeout_seconds``; and :class:`ConnectionGuard` closes a connection
that has not sent a complete request header within ``header_timeout_seconds`` (of opening,
or of its previous answer).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from katsyncd.ingest import (
    SUBSCRIBED_EVENTS,
    CommitterFull,
    Effect,
    WebhookError,
    data_fault,
    parse_event,
    signature_well_formed,
    verify_signature,
)
from katsyncd.metrics import Metrics
from katsyncd.waiting import wait_stop

log = structlog.get_logger(__name__)

ACK_TIMEOUT_SECONDS = 8.0  # Katana waits 10 s; answer 503 before that so it retries
# Bodies read at once before their signature is known: at most this many times max_body_bytes
# for unauthenticated clients (Katana's payloads are under 1 KiB, read in milliseconds).
UNVERIFIED_BODY_SLOTS = 16
# After an answer given without reading the whole body (401, 413, 408), aiohttp reads and
# discards what is still arriving for at most this long, then closes the connection.
LINGER_SECONDS = 1.0
# aiohttp's read buffer per connection. With its default (64 KiB) a body nobody reads yet is
# buffered almost whole (150 stalled 900 kB bodies: +117 MB RSS); at 16 KiB, +20 MB.
READ_BUFSIZE = 16_384
ENDPOINT = "POST /webhooks/katana"
# What each refusal counts as in katsyncd_webhooks_received_total{outcome}.
OUTCOMES = {400: "malformed", 401: "bad_signature", 408: "body_timeout", 413: "too_large"}
# Refusals after which the body may be unread: the connection is not kept alive.
CLOSE_AFTER = frozenset({"bad_signature", "too_large", "body_timeout", "busy"})


class ClientGone(Exception):
    """The client closed the connection before its body was complete."""


class Committer(Protocol):
    """Where a webhook's effects are made durable (``ingest.GroupCommitter``)."""

    async def submit(self, effects: tuple[Effect, ...], reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class HttpDeps:
    committer: Committer
    ready: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]  # ok, and the checks made
    status: Callable[[], Awaitable[dict[str, Any]]]  # the /status document
    metrics: Metrics
    draining: Callable[[], bool]  # a stop was asked for: webhooks get 503
    webhook_token: Callable[[], str]  # the current signing secret (a reload may change it)
    max_body_bytes: Callable[[], int]
    body_timeout_seconds: float  # a webhook body not received within this is a 408
    # The bearer token every path outside OPEN_PATHS needs (None: none configured; only
    # allowed on a loopback listener). A reload may rotate it.
    status_token: Callable[[], str | None] = lambda: None
    # Registers more routes on the app (the status pages, when ``[server] ui`` is on).
    pages: Callable[[web.Application], None] | None = None


@dataclass
class _Limits:
    """Per-app state of the body reads: the slots of unverified reads."""

    slots: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(UNVERIFIED_BODY_SLOTS)
    )


DEPS_KEY: web.AppKey[HttpDeps] = web.AppKey("deps", HttpDeps)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LIMITS_KEY: web.AppKey[_Limits] = web.AppKey("limits", _Limits)


class ConnectionGuard:
    """Closes connections that hold the server without asking anything: no request in
    progress and no complete request header for ``header_timeout`` seconds since the
    connection opened or since its last answer (slow or stalled headers, idle keep-alives).

    aiohttp has no header read timeout of its own. A middleware tells which connections have a
    request in progress; :meth:`run` sweeps the server's connections a few times per timeout,
    so a connection is closed at most two sweeps (of ``min(1 s, header_timeout / 4)``) after
    ``header_timeout``."""

    def __init__(self, header_timeout: float) -> None:
        self.header_timeout = header_timeout
        self._busy: dict[object, int] = {}  # connection → requests in progress
        self._idle_since: dict[object, float] = {}  # connection → when it was last busy or seen
        self.closed = 0

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        conn = request.protocol
        self._busy[conn] = self._busy.get(conn, 0) + 1
        try:
            return await handler(request)
        finally:
            left = self._busy.pop(conn, 1) - 1
            if left > 0:
                self._busy[conn] = left
            self._idle_since[conn] = time.monotonic()

    def sweep(self, connections: Iterable[Any], now: float) -> int:
        """Close the connections idle for ``header_timeout``; returns how many."""
        live = list(connections)
        known = set(live)
        for conn in [c for c in self._idle_since if c not in known]:
            del self._idle_since[conn]
        closed = 0
        for conn in live:
            if conn in self._busy:
                continue
            since = self._idle_since.setdefault(conn, now)
            if now - since >= self.header_timeout:
                conn.force_close()
                del self._idle_since[conn]
                closed += 1
        self.closed += closed
        return closed

    async def run(self, server: web.Server, stop: asyncio.Event) -> None:
        period = min(1.0, self.header_timeout / 4)
        while not await wait_stop(stop, period):
            closed = self.sweep(server.connections, time.monotonic())
            if closed:
                log.info(
                    "http_connections_closed",
                    count=closed,
                    why=f"no request header within {self.header_timeout} s",
                )


@dataclass
class HttpServer:
    """The listening HTTP server: ``port`` is the bound port; run :meth:`guard` as a loop;
    :meth:`close` stops listening and finishes what is in flight."""

    runner: web.AppRunner
    port: int
    connection_guard: ConnectionGuard

    async def guard(self, stop: asyncio.Event) -> None:
        server = self.runner.server
        if server is not None:
            await self.connection_guard.run(server, stop)

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_server(
    deps: HttpDeps, *, host: str, port: int, header_timeout: float, shutdown_timeout: float
) -> HttpServer:
    guard = ConnectionGuard(header_timeout)
    runner = web.AppRunner(
        build_app(deps, middlewares=[guard.middleware]),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        # Where aiohttp closes idle connections itself, the same bound applies.
        keepalive_timeout=header_timeout,
        lingering_time=LINGER_SECONDS,
        read_bufsize=READ_BUFSIZE,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server  # aiohttp exposes the bound port only here
    sockets = getattr(server, "sockets", None) or []
    bound = sockets[0].getsockname()[1] if sockets else port
    return HttpServer(runner, bound, guard)


def build_app(deps: HttpDeps, middlewares: Iterable[Any] = ()) -> web.Application:
    app = web.Application(
        client_max_size=deps.max_body_bytes(), middlewares=[*middlewares, require_token]
    )
    app[DEPS_KEY] = deps
    app[LIMITS_KEY] = _Limits()
    app.router.add_post("/webhooks/katana", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    if deps.pages is not None:
        deps.pages(app)
    return app


# Open to anyone who can reach the listener: probes, scrapers, and Katana (the webhook is
# authenticated by its HMAC signature). Every other path (/status, any page added later)
# shows business data and needs the status token when one is configured.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/webhooks/katana"})


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Authorization: Bearer <status token>`` on every path outside ``OPEN_PATHS``."""
    token = request.app[DEPS_KEY].status_token()
    if token is None or request.path in OPEN_PATHS:
        return await handler(request)
    if authorized(request.headers.get("Authorization", ""), token):
        return await handler(request)
    log.info("http_unauthorized", path=request.path, remote=request.remote)
    response = _problem(
        401,
        "this page needs Authorization: Bearer <server.status_token_file> "
        "(or, in a browser, any user name and that token as the password)",
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="katsyncd"'
    # Browsers cannot send a bearer token by themselves: they prompt for Basic credentials.
    response.headers.add("WWW-Authenticate", 'Basic realm="katsyncd", charset="UTF-8"')
    return response


def authorized(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, or ``Basic`` with any user name and the token as the
    password (what a browser sends), compared in constant time."""
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer":
        secret = given.strip()
    elif scheme.lower() == "basic":
        secret = _basic_password(given.strip())
    else:
        return False
    return hmac.compare_digest(secret.encode(), token.encode())


def _basic_password(encoded: str) -> str:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return ""
    return decoded.partition(":")[2]


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "error": message}, status=status)


async def _read_body(request: web.Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body.extend(chunk)
        if len(body) > limit:
            raise WebhookError(413, f"body over {limit} bytes")
    return bytes(body)


async def _read_unverified(request: web.Request, d: HttpDeps) -> bytes:
    """The body of a request whose signature is not checked yet: in one of the
    ``UNVERIFIED_BODY_SLOTS``, all of it within ``body_timeout_seconds``."""
    timeout = d.body_timeout_seconds
    slots = request.app[LIMITS_KEY].slots
    reading = False
    try:
        async with asyncio.timeout(timeout):
            async with slots:
                reading = True
                return await _read_body(request, d.max_body_bytes())
    except TimeoutError:
        if not reading:
            raise WebhookError(
                503, f"busy: no body read slot free within {timeout} s; retry later", "busy"
            ) from None
        raise WebhookError(408, f"body not received within {timeout} s") from None
    except (ConnectionError, aiohttp.ClientPayloadError, web.RequestPayloadError) as exc:
        raise ClientGone(type(exc).__name__) from None


async def webhook(request: web.Request) -> web.Response:
    d = request.app[DEPS_KEY]
    started = time.monotonic()
    event, outcome = "unknown", "error"
    try:
        if d.draining():
            raise WebhookError(503, "shutting down; retry later", "draining")
        # Refused before the body is read: no client without a signature, and no body over
        # the limit, costs more than its headers.
        if not signature_well_formed(request.headers.get("x-sha2-signature")):
            raise WebhookError(401, "bad or missing x-sha2-signature")
        limit = d.max_body_bytes()
        if request.content_length is not None and request.content_length > limit:
            raise WebhookError(413, f"body over {limit} bytes")
        body = await _read_unverified(request, d)
        if not verify_signature(body, request.headers.get("x-sha2-signature"), d.webhook_token()):
            raise WebhookError(401, "bad or missing x-sha2-signature")
        parsed = parse_event(body)
        event = parsed.event
        if parsed.reading is not None:
            d.metrics.webhook_inventory_refs.labels(parsed.reading).inc()
        retry = request.headers.get("X-Katana-Retry-Num", "0")
        await asyncio.wait_for(
            d.committer.submit(parsed.effects, f"webhook:{event}"), ACK_TIMEOUT_SECONDS
        )
        outcome = "accepted" if parsed.effects else "ignored"
        return web.json_response({"ok": True, "effects": len(parsed.effects), "retry": retry})
    except WebhookError as exc:
        outcome = exc.outcome or OUTCOMES.get(exc.status, "rejected")
        log.info(
            "webhook_rejected",
            endpoint=ENDPOINT,
            status=exc.status,
            outcome=outcome,
            why=str(exc),
            katana_event=event[:100],
        )
        response = _problem(exc.status, str(exc))
        if outcome in CLOSE_AFTER:
            response.force_close()
        return response
    except ClientGone as exc:  # not a database problem: nobody is left to answer
        outcome = "client_gone"
        log.info("webhook_rejected", endpoint=ENDPOINT, outcome=outcome, why=str(exc))
        response = _problem(400, "connection closed before the body was complete")
        response.force_close()
        return response
    except CommitterFull as exc:
        outcome = "queue_full"
        log.warning("webhook_not_durable", endpoint=ENDPOINT, outcome=outcome, error=str(exc))
        return _problem(503, "too many webhooks waiting for a commit; retry later")
    except Exception as exc:  # whatever kept the commit from happening: not durable
        outcome = "error" if data_fault(exc) else "db_unavailable"
        log.warning(
            "webhook_not_durable",
            endpoint=ENDPOINT,
            outcome=outcome,
            katana_event=event[:100],
            error=str(exc)[:300] or type(exc).__name__,
            error_type=type(exc).__name__,
        )
        if outcome == "error":
            return _problem(500, "could not record the event; retry later")
        return _problem(503, "could not record the event durably; retry later")
    finally:
        d.metrics.webhooks_received.labels(_event_label(event), outcome).inc()
        d.metrics.webhook_ack_seconds.observe(time.monotonic() - started)


def _event_label(event: str) -> str:
    """Bound the label set: unknown event names are grouped."""
    return event if event in SUBSCRIBED_EVENTS or event == "unknown" else "other"


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: config loaded, Postgres reachable, migrations applied, not draining."""
    ok, checks = await request.app[DEPS_KEY].ready()
    return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    d = request.app[DEPS_KEY]
    body = d.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    d = request.app[DEPS_KEY]
    try:
        return web.json_response(await d.status())
    except (OSError, asyncpg.PostgresError, RuntimeError) as exc:
        return _problem(503, f"status unavailable: {type(exc).__name__}")

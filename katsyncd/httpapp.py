"""HTTP surface: the Katana webhook receiver, health, readiness, metrics and status.

The app gets narrow dependencies (``HttpDeps``): the committer webhooks are submitted to, a
readiness probe, a status provider, the metrics, and the few settings it reads per request.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from katsyncd.ingest import (
    SUBSCRIBED_EVENTS,
    Effect,
    WebhookError,
    parse_event,
    verify_signature,
)
from katsyncd.metrics import Metrics

log = structlog.get_logger(__name__)

ACK_TIMEOUT_SECONDS = 8.0  # Katana waits 10 s; answer 503 before that so it retries


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
    # The bearer token every path outside OPEN_PATHS needs (None: none configured; only
    # allowed on a loopback listener). A reload may rotate it.
    status_token: Callable[[], str | None] = lambda: None


DEPS_KEY: web.AppKey[HttpDeps] = web.AppKey("deps", HttpDeps)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(deps: HttpDeps) -> web.Application:
    app = web.Application(client_max_size=deps.max_body_bytes(), middlewares=[require_token])
    app[DEPS_KEY] = deps
    app.router.add_post("/webhooks/katana", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
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
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
        return await handler(request)
    log.info("http_unauthorized", path=request.path, remote=request.remote)
    response = _problem(401, "this page needs Authorization: Bearer <server.status_token_file>")
    response.headers["WWW-Authenticate"] = 'Bearer realm="katsyncd"'
    return response


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"status": status, "error": message}, status=status)


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise WebhookError(413, f"body over {limit} bytes")
    body = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        body.extend(chunk)
        if len(body) > limit:
            raise WebhookError(413, f"body over {limit} bytes")
    return bytes(body)


async def webhook(request: web.Request) -> web.Response:
    d = request.app[DEPS_KEY]
    started = time.monotonic()
    event, outcome = "unknown", "error"
    try:
        if d.draining():
            raise WebhookError(503, "shutting down; retry later")
        body = await _read_body(request, d.max_body_bytes())
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
        outcome = {401: "bad_signature", 400: "malformed", 413: "too_large", 503: "draining"}.get(
            exc.status, "rejected"
        )
        log.info("webhook_rejected", status=exc.status, why=str(exc), katana_event=event)
        return _problem(exc.status, str(exc))
    except Exception as exc:  # whatever kept the commit from happening: not durable, so 503
        outcome = "db_unavailable"
        log.warning("webhook_not_durable", katana_event=event, error=str(exc) or type(exc).__name__)
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

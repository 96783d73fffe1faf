"""The request core both API clients share: send, classify, retry with backoff, obey a limiter.

One logical call is a ``Request``; ``HttpCore.call`` sends it until it succeeds or fails for
good. Each attempt first passes the client's gate (its rate limiter), then its answer is
classified (``classify``, pure):

* ``Reply``: a 2xx whose JSON body has the ``Shape`` the endpoint promises;
* ``Transient``: a status in ``retry_statuses``, a timeout, a connection error, or a 2xx whose
  body is not JSON or not of the promised shape (``expected`` then says what was promised):
  retried after a full-jitter backoff, up to ``RetryPolicy.max_attempts`` attempts (one for a
  request that is not idempotent);
* ``RateLimited``: a 429, with its ``Retry-After`` in seconds; retried at once (the client's
  limiter holds the next attempt back), at most ``max_consecutive_429`` times in a row, and
  never counted against ``max_attempts``;
* ``Refused``: any other status: the client turns it into its own exception, raised at once.

What is specific to an API stays in its client, in a ``CallHooks``: the limiter and its
headers, metrics, what a 429 does, and the exceptions raised.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol

import aiohttp
import structlog

from katsyncd.backoff import backoff_delay

log = structlog.get_logger(__name__)

Params = Sequence[tuple[str, str]]
Sleep = Callable[[float], Awaitable[None]]
# What came back for one attempt: (status, headers, raw body).
Answer = tuple[int, Mapping[str, str], bytes]
Transport = Callable[["Request"], Awaitable[Answer]]
Unexpected = Callable[[str, str], None]  # (endpoint, what) of an answer not as documented
TransientKind = Literal["status", "timeout", "connection", "body"]

MAX_CONSECUTIVE_429 = 20


@dataclass(frozen=True, slots=True)
class Shape:
    """What a 2xx body must look like (``expected`` is logged when it does not)."""

    expected: str
    check: Callable[[Any], bool]


ANY_BODY = Shape("anything", lambda _body: True)
JSON_OBJECT = Shape("a JSON object", lambda body: isinstance(body, dict))


@dataclass(frozen=True, slots=True)
class Request:
    """One logical call. ``endpoint`` labels it in metrics, logs and errors."""

    method: str
    url: str
    endpoint: str
    params: Params = ()
    json_body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    shape: Shape = ANY_BODY
    idempotent: bool = True


@dataclass(frozen=True, slots=True)
class Reply:
    """A success: the parsed JSON body (None for an empty one)."""

    status: int
    headers: Mapping[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class Transient:
    """An attempt that may succeed if repeated. ``detail`` is for humans."""

    kind: TransientKind
    detail: str
    status: int | None = None
    body: str = ""
    expected: str | None = None  # a 2xx of the wrong shape: what the endpoint promises


@dataclass(frozen=True, slots=True)
class RateLimited:
    """A 429. ``retry_after`` is its Retry-After in seconds (None when absent or garbage)."""

    headers: Mapping[str, str]
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class Refused:
    """A final answer that is no success: ``body`` parsed if JSON (else None), ``text`` raw."""

    status: int
    headers: Mapping[str, str]
    body: Any
    text: str


Outcome = Reply | Transient | RateLimited | Refused


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    backoff_base: float
    backoff_cap: float
    max_consecutive_429: int = MAX_CONSECUTIVE_429
    rng: random.Random | None = None


class CallHooks(Protocol):
    """A client's part in each attempt of a call.

    ``on_wire`` counts this hooks object's requests on the wire right now (the core keeps it).
    """

    on_wire: int

    async def gate(self) -> None:
        """Wait until an attempt may be sent (the client's rate limiter)."""

    def answered(self, request: Request, status: str, headers: Mapping[str, str] | None) -> None:
        """Every attempt: its status ("error" when nothing came back) and headers."""

    def rate_limited(self, request: Request, outcome: RateLimited) -> None:
        """A 429: make the limiter hold the next attempt back."""

    def failed(self, request: Request, outcome: Transient) -> None:
        """An attempt that will be retried if attempts are left."""

    def succeeded(self, request: Request, reply: Reply) -> None:
        """The call succeeded."""

    def refused(self, request: Request, outcome: Refused) -> Exception:
        """The exception for a final non-success answer."""

    def gave_up(self, request: Request, message: str, status: int | None, body: str) -> Exception:
        """The exception once retrying stops (attempts used up, or too many 429s)."""


class HttpCore:
    """Sends requests through a transport per ``RetryPolicy``; logs as ``<service>_retry``."""

    def __init__(
        self,
        transport: Transport,
        policy: RetryPolicy,
        *,
        service: str,
        retry_statuses: Container[int],
        log_fields: Mapping[str, Any] | None = None,
        sleep: Sleep = asyncio.sleep,
        rate_limit_header: str | None = None,
        unexpected: Unexpected | None = None,
    ) -> None:
        """``rate_limit_header``: a header every 2xx should carry (its absence is an unexpected
        answer, logged once per endpoint); ``unexpected(endpoint, what)`` counts each
        unexpected answer (``what``: ``body`` or ``no_rate_limit_headers``)."""
        self._rate_limit_header = rate_limit_header
        self._unexpected = unexpected
        self._headers_missing_logged: set[str] = set()
        self._transport = transport
        self._policy = policy
        self._service = service
        self._retry_statuses = retry_statuses
        self._log_fields = dict(log_fields or {})
        self._sleep = sleep

    async def call(self, request: Request, hooks: CallHooks) -> Reply:
        """Send until success; raise ``hooks.refused(...)`` or ``hooks.gave_up(...)``."""
        failures = 0
        rate_limited = 0
        while True:
            outcome = await self.attempt(request, hooks)
            if isinstance(outcome, Reply):
                return outcome
            if isinstance(outcome, RateLimited):
                rate_limited += 1
                if rate_limited >= self._policy.max_consecutive_429:
                    raise hooks.gave_up(request, "rate limited too often", 429, "")
                continue
            rate_limited = 0  # the cap is on consecutive 429s
            failures += 1
            if failures >= max(1, self._policy.max_attempts) or not request.idempotent:
                message = f"{outcome.detail} after {failures} attempt(s)"
                raise hooks.gave_up(request, message, outcome.status, outcome.body)
            await self._back_off(request, failures, outcome)

    async def attempt(self, request: Request, hooks: CallHooks) -> Reply | Transient | RateLimited:
        """One attempt: gate, send, classify, tell the hooks; raises on a refusal."""
        await hooks.gate()
        hooks.on_wire += 1
        try:
            status, headers, raw = await self._transport(request)
        except (aiohttp.ClientError, TimeoutError) as exc:
            hooks.answered(request, "error", None)
            outcome: Outcome = transport_failure(exc)
        else:
            hooks.answered(request, str(status), headers)
            outcome = classify(
                status, headers, raw, shape=request.shape, retry_statuses=self._retry_statuses
            )
            self._check_answer(request, status, headers, outcome)
        finally:
            hooks.on_wire -= 1
        if isinstance(outcome, Refused):
            raise hooks.refused(request, outcome)
        if isinstance(outcome, RateLimited):
            hooks.rate_limited(request, outcome)
        elif isinstance(outcome, Transient):
            hooks.failed(request, outcome)
        else:
            hooks.succeeded(request, outcome)
        return outcome

    def _check_answer(
        self, request: Request, status: int, headers: Mapping[str, str], outcome: Outcome
    ) -> None:
        """Log and count what the API documents otherwise: a 2xx body of the wrong shape (every
        time: it is retried, and no stale mark is cleared by it) and a 2xx without the
        rate-limit header (once per endpoint: the limiter then counts on its own)."""
        if isinstance(outcome, Transient) and outcome.kind == "body":
            log.warning(
                f"{self._service}_unexpected_response",
                **self._log_fields,
                endpoint=request.endpoint,
                status=status,
                expected=outcome.expected,
                got=outcome.body[:200],
            )
            self._count_unexpected(request.endpoint, "body")
        header = self._rate_limit_header
        if header is None or not 200 <= status < 300 or header in headers:
            return
        self._count_unexpected(request.endpoint, "no_rate_limit_headers")
        if request.endpoint not in self._headers_missing_logged:
            self._headers_missing_logged.add(request.endpoint)
            log.warning(
                f"{self._service}_rate_limit_headers_missing",
                **self._log_fields,
                endpoint=request.endpoint,
                expected=header,
            )

    def _count_unexpected(self, endpoint: str, what: str) -> None:
        if self._unexpected is not None:
            self._unexpected(endpoint, what)

    async def _back_off(self, request: Request, failures: int, outcome: Transient) -> None:
        policy = self._policy
        delay = backoff_delay(
            failures - 1, base=policy.backoff_base, cap=policy.backoff_cap, rng=policy.rng
        )
        shape = {} if outcome.expected is None else {"expected": outcome.expected}
        log.warning(
            f"{self._service}_retry",
            **self._log_fields,
            endpoint=request.endpoint,
            reason=outcome.detail,
            **shape,
            attempt=failures,
            delay_seconds=round(delay, 3),
        )
        await self._sleep(delay)


def session_transport(session: aiohttp.ClientSession, timeout: float) -> Transport:
    """A transport over an aiohttp session (owned by the caller) with a total timeout."""
    limit = aiohttp.ClientTimeout(total=timeout)

    async def send(request: Request) -> Answer:
        async with session.request(
            request.method,
            request.url,
            params=list(request.params),
            json=request.json_body,
            headers=dict(request.headers),
            timeout=limit,
        ) as resp:
            return resp.status, resp.headers, await resp.read()

    return send


# -- pure classification -------------------------------------------------------------------------


def classify(
    status: int,
    headers: Mapping[str, str],
    raw: bytes,
    *,
    shape: Shape,
    retry_statuses: Container[int],
) -> Outcome:
    """What one answer means (see the module docstring)."""
    text = raw.decode("utf-8", "replace")
    if status == 429:
        return RateLimited(headers, retry_after_seconds(headers.get("Retry-After")))
    if 200 <= status < 300:
        return _success(status, headers, raw, text, shape)
    if status in retry_statuses:
        return Transient("status", f"HTTP {status}", status, text)
    return Refused(status, headers, _json_or_none(text), text)


def _success(
    status: int, headers: Mapping[str, str], raw: bytes, text: str, shape: Shape
) -> Reply | Transient:
    try:
        body = json.loads(text) if raw.strip() else None
    except ValueError:
        return Transient("body", "unparseable body", status, text, shape.expected)
    if not shape.check(body):
        return Transient("body", f"body is not {shape.expected}", status, text, shape.expected)
    return Reply(status, headers, body)


def transport_failure(exc: BaseException) -> Transient:
    """A timeout or a connection error (no answer came back)."""
    kind: TransientKind = "timeout" if isinstance(exc, TimeoutError) else "connection"
    return Transient(kind, type(exc).__name__)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date; never negative), None if absent
    or garbage."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else None
    except ValueError:
        return None

"""katsyncd.httpcore: what an answer means (pure), and the retry loop driven by a scripted
transport and a recorded sleep (no network, no clock)."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import structlog

from katsyncd.httpcore import (
    ANY_BODY,
    JSON_OBJECT,
    Answer,
    HttpCore,
    RateLimited,
    Refused,
    Reply,
    Request,
    RetryPolicy,
    Shape,
    Transient,
    classify,
    retry_after_seconds,
    transport_failure,
)

ROWS = Shape("a data list", lambda body: isinstance(body, dict) and "data" in body)
SERVER_ERRORS = frozenset({500, 502, 503, 504})


def answer(status: int, headers: Mapping[str, str], raw: bytes, shape: Shape = ROWS) -> Any:
    return classify(status, headers, raw, shape=shape, retry_statuses=SERVER_ERRORS)


# -- classification -----------------------------------------------------------------------------


def test_a_2xx_of_the_promised_shape_is_a_reply() -> None:
    assert answer(200, {}, b'{"data": []}') == Reply(200, {}, {"data": []})
    assert answer(204, {}, b"", ANY_BODY) == Reply(204, {}, None)


@pytest.mark.parametrize(
    ("raw", "shape", "detail"),
    [
        (b'{"data": [', ROWS, "unparseable body"),
        (b"<html>proxy error</html>", ROWS, "unparseable body"),
        (b'{"unexpected": true}', ROWS, "body is not a data list"),
        (b"", ROWS, "body is not a data list"),
        (b"[1, 2]", JSON_OBJECT, "body is not a JSON object"),
    ],
    ids=["truncated", "html", "wrong-shape", "empty", "list-for-object"],
)
def test_a_2xx_that_breaks_its_promise_is_transient_and_says_what_was_expected(
    raw: bytes, shape: Shape, detail: str
) -> None:
    outcome = answer(200, {}, raw, shape)
    assert outcome == Transient("body", detail, 200, raw.decode(), shape.expected)


def test_a_429_carries_its_retry_after_in_seconds() -> None:
    headers = {"Retry-After": "7"}
    assert answer(429, headers, b"") == RateLimited(headers, 7.0)
    assert answer(429, {}, b"") == RateLimited({}, None)
    assert answer(429, {"Retry-After": "soon"}, b"") == RateLimited({"Retry-After": "soon"}, None)


def test_only_the_retry_statuses_are_transient() -> None:
    assert answer(503, {}, b"down") == Transient("status", "HTTP 503", 503, "down")
    problem = {"title": "Not implemented"}
    raw = json.dumps(problem).encode()
    assert answer(501, {}, raw) == Refused(501, {}, problem, raw.decode())


@pytest.mark.parametrize("status", [301, 400, 401, 404, 422])
def test_other_statuses_are_refusals_with_the_body_parsed_when_it_is_json(status: int) -> None:
    assert answer(status, {}, b'{"code": "X"}') == Refused(
        status, {}, {"code": "X"}, '{"code": "X"}'
    )
    assert answer(status, {}, b"<html>") == Refused(status, {}, None, "<html>")


def test_no_answer_is_a_timeout_or_a_connection_failure() -> None:
    assert transport_failure(TimeoutError()) == Transient("timeout", "TimeoutError")
    assert transport_failure(aiohttp.ServerTimeoutError()).kind == "timeout"
    failure = transport_failure(aiohttp.ClientConnectionError("reset"))
    assert failure == Transient("connection", "ClientConnectionError")


def test_retry_after_seconds() -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert retry_after_seconds("5") == 5.0
    assert retry_after_seconds(" 2.5 ") == 2.5
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", now=now) == 30.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
    for garbage in (None, "", "  ", "soon"):
        assert retry_after_seconds(garbage) is None


# -- the retry loop -----------------------------------------------------------------------------


class Scripted:
    """A transport answering from a script: (status, headers, body) or an exception."""

    def __init__(self, hooks: Hooks, *script: Answer | BaseException) -> None:
        self.hooks = hooks
        self.script = list(script)
        self.sent = 0

    async def __call__(self, request: Request) -> Answer:
        self.sent += 1
        assert self.hooks.on_wire == 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return step


class Failed(Exception):
    pass


class Hooks:
    def __init__(self) -> None:
        self.on_wire = 0
        self.events: list[str] = []

    async def gate(self) -> None:
        assert self.on_wire == 0
        self.events.append("gate")

    def answered(self, request: Request, status: str, headers: Mapping[str, str] | None) -> None:
        self.events.append(status)

    def rate_limited(self, request: Request, outcome: RateLimited) -> None:
        self.events.append("rate_limited")

    def failed(self, request: Request, outcome: Transient) -> None:
        self.events.append(f"failed:{outcome.kind}")

    def succeeded(self, request: Request, reply: Reply) -> None:
        self.events.append("ok")

    def refused(self, request: Request, outcome: Refused) -> Exception:
        return Failed(f"refused {outcome.status}")

    def gave_up(self, request: Request, message: str, status: int | None, body: str) -> Exception:
        return Failed(f"{message} [{status}] {body}")


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


OK: Answer = (200, {}, b'{"data": []}')
DOWN: Answer = (503, {}, b"down")
LIMITED: Answer = (429, {"Retry-After": "1"}, b"")


def core(transport: Scripted, sleeps: Sleeps, *, attempts: int = 3, max_429: int = 5) -> HttpCore:
    policy = RetryPolicy(attempts, 1.0, 8.0, max_consecutive_429=max_429, rng=random.Random(7))
    return HttpCore(transport, policy, service="test", retry_statuses=SERVER_ERRORS, sleep=sleeps)


def request(idempotent: bool = True) -> Request:
    return Request("GET", "http://x.test/rows", "/rows", shape=ROWS, idempotent=idempotent)


async def test_transient_failures_back_off_with_jitter_then_succeed() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    timeout = TimeoutError()
    transport = Scripted(hooks, DOWN, timeout, OK)
    reply = await core(transport, sleeps).call(request(), hooks)
    assert reply.body == {"data": []}
    assert hooks.events == [
        *("gate", "503", "failed:status"),
        *("gate", "error", "failed:timeout"),
        *("gate", "200", "ok"),
    ]
    assert len(sleeps.delays) == 2
    assert 0.0 <= sleeps.delays[0] <= 1.0 and 0.0 <= sleeps.delays[1] <= 2.0
    assert hooks.on_wire == 0


async def test_persistent_failures_give_up_after_max_attempts() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    transport = Scripted(hooks, DOWN)
    with pytest.raises(Failed, match=r"HTTP 503 after 3 attempt\(s\) \[503\] down"):
        await core(transport, sleeps).call(request(), hooks)
    assert transport.sent == 3 and len(sleeps.delays) == 2


async def test_a_request_that_is_not_idempotent_is_never_repeated() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    transport = Scripted(hooks, aiohttp.ClientConnectionError("reset"), OK)
    with pytest.raises(Failed, match="after 1 attempt"):
        await core(transport, sleeps).call(request(idempotent=False), hooks)
    assert transport.sent == 1 and sleeps.delays == []


async def test_429s_are_not_attempts_but_are_capped_in_a_row() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    transport = Scripted(hooks, LIMITED, LIMITED, LIMITED, LIMITED, DOWN, LIMITED, OK)
    await core(transport, sleeps, attempts=2, max_429=5).call(request(), hooks)
    assert hooks.events.count("rate_limited") == 5
    assert len(sleeps.delays) == 1  # only the 503 backs off here; the limiter paces 429s

    hooks, sleeps = Hooks(), Sleeps()
    transport = Scripted(hooks, LIMITED)
    with pytest.raises(Failed, match=r"rate limited too often \[429\]"):
        await core(transport, sleeps, max_429=5).call(request(), hooks)
    assert transport.sent == 5


async def test_a_refusal_is_raised_at_once() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    transport = Scripted(hooks, (404, {}, b"{}"), OK)
    with pytest.raises(Failed, match="refused 404"):
        await core(transport, sleeps).call(request(), hooks)
    assert transport.sent == 1 and hooks.on_wire == 0


async def test_a_retry_of_a_bad_body_logs_the_endpoint_and_what_was_expected() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    transport = Scripted(hooks, (200, {}, b'{"rows": []}'), OK)
    with structlog.testing.capture_logs() as logs:
        await core(transport, sleeps).call(request(), hooks)
    unexpected, entry = logs
    assert unexpected["event"] == "test_unexpected_response"
    assert unexpected["endpoint"] == "/rows" and unexpected["status"] == 200
    assert unexpected["expected"] == "a data list" and unexpected["got"] == '{"rows": []}'
    assert entry["event"] == "test_retry"
    assert entry["endpoint"] == "/rows"
    assert entry["expected"] == "a data list"
    assert entry["reason"] == "body is not a data list"


async def test_unexpected_answers_are_counted_and_missing_headers_logged_once() -> None:
    hooks, sleeps = Hooks(), Sleeps()
    counted: list[tuple[str, str]] = []
    transport = Scripted(hooks, (200, {}, b"<html>"), OK, OK, (200, {"X-Left": "9"}, OK[2]))
    policy = RetryPolicy(3, 1.0, 8.0, rng=random.Random(7))
    http = HttpCore(
        transport,
        policy,
        service="test",
        retry_statuses=SERVER_ERRORS,
        sleep=sleeps,
        rate_limit_header="X-Left",
        unexpected=lambda endpoint, what: counted.append((endpoint, what)),
    )
    with structlog.testing.capture_logs() as logs:
        await http.call(request(), hooks)  # garbage, then a good answer without the header
        await http.call(request(), hooks)  # without the header again: counted, not logged
        await http.call(request(), hooks)  # with the header: nothing
    assert counted == [
        ("/rows", "body"),
        ("/rows", "no_rate_limit_headers"),
        ("/rows", "no_rate_limit_headers"),
        ("/rows", "no_rate_limit_headers"),
    ]
    missing = [e for e in logs if e["event"] == "test_rate_limit_headers_missing"]
    assert missing == [
        {
            "event": "test_rate_limit_headers_missing",
            "endpoint": "/rows",
            "expected": "X-Left",
            "log_level": "warning",
        }
    ]

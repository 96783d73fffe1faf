"""HTTP plumbing of the Katana simulator: errors, rate limit, faults, query parsing, paging.

Nothing here knows about Katana's resources; ``katana_api.py`` builds the routes on top.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiMapping

from katsyncd.sim.katana_model import parse_time_us

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 250
WINDOW_SECONDS = 60.0

_ERROR_NAMES = {
    400: ("BadRequest", "Bad Request"),
    401: ("UnauthorizedError", "Unauthorized"),
    403: ("ForbiddenError", "Forbidden"),
    404: ("NotFoundError", "Not found"),
    405: ("MethodNotAllowedError", "Method Not Allowed"),
    422: (
        "UnprocessableEntityError",
        "The request body is invalid. See error object `details` property for more info.",
    ),
    429: ("TooManyRequests", "Too Many Requests"),
    500: ("InternalServerError", "Internal Server Error"),
    502: ("BadGatewayError", "Bad Gateway"),
    503: ("ServiceUnavailableError", "Service Unavailable"),
    504: ("GatewayTimeoutError", "Gateway Timeout"),
}

Json = dict[str, Any]


def error_body(
    status: int,
    message: str | None = None,
    *,
    code: str | None = None,
    details: list[Json] | None = None,
) -> Json:
    """Katana's error body: ``{"statusCode", "name", "message"[, "code", "details"]}``."""
    name, default_message = _ERROR_NAMES.get(status, ("Error", "Error"))
    body: Json = {"statusCode": status, "name": name, "message": message or default_message}
    if code is not None:
        body["code"] = code
    if details is not None:
        body["details"] = details
    return body


def error_response(status: int, message: str | None = None, **kwargs: Any) -> web.Response:
    """A JSON error response with Katana's body."""
    return web.json_response(error_body(status, message, **kwargs), status=status)


class ApiError(Exception):
    """Raised by handlers; the middleware turns it into a Katana error response."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        details: list[Json] | None = None,
    ) -> None:
        super().__init__(message or str(status))
        self.status, self.message, self.code, self.details = status, message, code, details

    def response(self) -> web.Response:
        """The error as an HTTP response."""
        return error_response(self.status, self.message, code=self.code, details=self.details)


def validation_error(details: list[Json]) -> ApiError:
    """422 ``VALIDATION_FAILED`` with Ajv-style details."""
    return ApiError(422, code="VALIDATION_FAILED", details=details)


def detail(path: str, code: str, message: str, **info: Any) -> Json:
    """One Ajv-style validation detail."""
    item: Json = {"path": path, "code": code, "message": message}
    if info:
        item["info"] = info
    return item


def path_matches(path: str, prefix: str) -> bool:
    """Whether ``path`` is under ``prefix``, by whole segments: ``/inventory`` matches
    ``/inventory`` and ``/inventory/1`` but not ``/inventory_movements``."""
    if not prefix or prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


class RateWindow:
    """The 60-second window of admitted requests (one per simulated account): sliding (a
    request counts for 60 s after it was made) or, with ``fixed()``, fixed (it starts at its
    first request and every count ends together 60 s later).

    Rejected requests do not enter the window, so a client retrying too early is told to
    wait the same time again rather than locked out forever."""

    def __init__(self, clock: Callable[[], float], fixed: Callable[[], bool] = lambda: False):
        self._clock = clock
        self._fixed = fixed
        self._hits: deque[float] = deque()
        self._start: float | None = None  # a fixed window's first request

    def _evict(self, now: float) -> None:
        if self._fixed():
            if self._start is not None and now >= self._start + WINDOW_SECONDS:
                self._hits.clear()
                self._start = None
            return
        while self._hits and self._hits[0] <= now - WINDOW_SECONDS:
            self._hits.popleft()

    def _frees_at(self, limit: int) -> float:
        """When the window has room again (it is full now)."""
        if self._fixed() and self._start is not None:
            return self._start + WINDOW_SECONDS
        return self._hits[len(self._hits) - limit] + WINDOW_SECONDS

    def admit(self, limit: int) -> bool:
        """Record a request if the window has room; False means answer 429."""
        now = self._clock()
        self._evict(now)
        if len(self._hits) >= limit:
            return False
        if self._start is None:
            self._start = now
        self._hits.append(now)
        return True

    def spend(self, n: int, seconds_ago: float) -> None:
        """Record ``n`` hits made ``seconds_ago`` (kept in time order)."""
        at = self._clock() - seconds_ago
        self._hits = deque(sorted([*self._hits, *([at] * n)]))
        self._start = at if self._start is None else min(self._start, at)
        self._evict(self._clock())

    def retry_after(self, limit: int) -> int:
        """Whole seconds until the window has room again (at least 1)."""
        now = self._clock()
        self._evict(now)
        if limit <= 0:
            return math.ceil(WINDOW_SECONDS)
        if len(self._hits) < limit:
            return 1
        return max(1, math.ceil(self._frees_at(limit) - now))

    def headers(self, limit: int) -> dict[str, str]:
        """``X-Ratelimit-*`` headers; the reset is epoch ms when the oldest hit leaves (the
        fixed window's end)."""
        now = self._clock()
        self._evict(now)
        if self._fixed() and self._start is not None:
            reset = self._start + WINDOW_SECONDS
        else:
            reset = self._hits[0] + WINDOW_SECONDS if self._hits else now
        return {
            "X-Ratelimit-Limit": str(limit),
            "X-Ratelimit-Remaining": str(max(0, limit - len(self._hits))),
            "X-Ratelimit-Reset": str(math.ceil(reset * 1000)),
        }


@dataclass(slots=True)
class Fault:
    """An injected failure for the next ``remaining`` requests under ``prefix``."""

    remaining: int
    status: int  # 200 means "garbage body"
    prefix: str


class FaultPlan:
    """Queue of injected failures, consumed in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, n: int, status: int, prefix: str) -> None:
        """Fail the next ``n`` requests under ``prefix`` with ``status`` (200: garbage)."""
        if n > 0:
            self._faults.append(Fault(n, status, prefix))

    def clear(self) -> None:
        """Drop every injected failure not yet used."""
        self._faults.clear()

    def take(self, path: str) -> Fault | None:
        """The fault that applies to this request, if any (one use is consumed)."""
        for fault in self._faults:
            if path_matches(path, fault.prefix):
                fault.remaining -= 1
                if not fault.remaining:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def response(fault: Fault) -> web.Response:
        """The injected answer: a Katana error, or a 200 whose body is not JSON."""
        if fault.status == 200:
            return web.Response(
                status=200,
                body=b'{"data": [{"id": 1, "sku": "trunc',
                content_type="application/json",
            )
        response = error_response(fault.status)
        if fault.status == 429:
            response.headers["Retry-After"] = "1"
        return response


class Params:
    """Query parameters the way Katana reads them: arrays as ``k=1&k=2`` or ``k[]=1&k[]=2``,
    unknown keys ignored, bad values of known keys answered with 422.

    ``array_limit`` plays a gateway that honours at most that many values per array filter
    (``KatanaQuirks.array_filter_limit``): above it the filter is dropped (``ignore``) or the
    request answered 400 naming the parameter (``reject``)."""

    def __init__(
        self,
        query: MultiMapping[str],
        *,
        dates: Iterable[str] = (),
        array_limit: int | None = None,
        over_limit: str = "ignore",
    ) -> None:
        """``dates`` names the date filters the endpoint knows (``"updated_at"`` means
        ``updated_at_min`` and ``updated_at_max``); they are parsed, and rejected, up front."""
        self._query = query
        self._array_limit = array_limit
        self._over_limit = over_limit
        self._times = {
            name: self._parse_time(name)
            for field in dates
            for name in (f"{field}_min", f"{field}_max")
        }

    def values(self, name: str) -> list[str]:
        """Every value given for ``name`` or ``name[]``."""
        return [*self._query.getall(name, []), *self._query.getall(name + "[]", [])]

    def first(self, name: str) -> str | None:
        """The first value given for ``name``, if any."""
        values = self.values(name)
        return values[0] if values else None

    def strs(self, name: str) -> set[str] | None:
        """An array filter of strings, or None when absent (or dropped above the limit)."""
        values = self._array(name)
        return set(values) if values else None

    def ints(self, name: str) -> set[int] | None:
        """An array filter of integers, or None when absent (or dropped above the limit)."""
        values = self._array(name)
        return {self._to_int(name, value) for value in values} if values else None

    def _array(self, name: str) -> list[str]:
        values = self.values(name)
        limit = self._array_limit
        if limit is None or len(values) <= limit:
            return values
        if self._over_limit == "reject":
            raise ApiError(
                400,
                f"Too many values for query parameter '{name}': {len(values)} (at most {limit})",
                details=[
                    detail(f".{name}", "maxItems", f"should NOT have more than {limit} items")
                ],
            )
        return []  # ignore: like qs past its arrayLimit, the filter silently disappears

    def integer(self, name: str) -> int | None:
        """A single integer, or None when absent."""
        value = self.first(name)
        return None if value is None else self._to_int(name, value)

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean (``true``/``false``/``1``/``0``)."""
        value = self.first(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered not in {"true", "false", "1", "0"}:
            raise validation_error([detail(f".{name}", "type", "should be boolean")])
        return lowered in {"true", "1"}

    def time_ok(self, field: str, ms: int | None) -> bool:
        """Whether ``ms`` passes ``<field>_min``/``<field>_max`` (inclusive)."""
        low, high = self._times.get(f"{field}_min"), self._times.get(f"{field}_max")
        if low is None and high is None:
            return True
        if ms is None:
            return False
        return (low is None or ms * 1000 >= low) and (high is None or ms * 1000 <= high)

    def _parse_time(self, name: str) -> int | None:
        value = self.first(name)
        if value is None:
            return None
        try:
            return parse_time_us(value)
        except ValueError:
            raise validation_error(
                [detail(f".{name}", "format", 'should match format "date-time"')]
            ) from None

    @staticmethod
    def _to_int(name: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise validation_error([detail(f".{name}", "type", "should be integer")]) from None

    def paging(self) -> tuple[int, int]:
        """(limit, page): limit defaults to 50 and is silently lowered to 250."""
        limit = self.integer("limit")
        page = self.integer("page")
        limit = DEFAULT_LIMIT if limit is None else min(limit, MAX_LIMIT)
        page = 1 if page is None else page
        if limit < 1 or page < 1:
            field = "limit" if limit < 1 else "page"
            raise validation_error([detail(f".{field}", "minimum", "should be >= 1")])
        return limit, page


def paginated(params: Params, items: Sequence[T], render: Callable[[T], Json]) -> web.Response:
    """``{"data": [...]}`` for the requested page, with the ``X-Pagination`` header."""
    limit, page = params.paging()
    total = len(items)
    pages = math.ceil(total / limit)
    offset = (page - 1) * limit
    meta = {
        "total_records": str(total),
        "total_pages": str(pages),
        "offset": str(offset),
        "page": str(page),
        "first_page": str(page == 1).lower(),
        "last_page": str(page >= pages).lower(),
    }
    data = [render(item) for item in items[offset : offset + limit]]
    return web.json_response({"data": data}, headers={"X-Pagination": json.dumps(meta)})


def find(items: Iterable[T], predicate: Callable[[T], bool]) -> list[T]:
    """The items that pass ``predicate``, as a list."""
    return [item for item in items if predicate(item)]

"""aioresponses, made to work with aiohttp >= 3.14, plus helpers to read what was sent.

aiohttp 3.14 added a required ``stream_writer`` argument to ``ClientResponse``; aioresponses
0.7.x does not pass it (https://github.com/pnuckowski/aioresponses/issues/289). The mocked
response has already been "sent", so a stub reporting zero bytes written is all it needs.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aioresponses import CallbackResult, aioresponses
from yarl import URL


class _SentStreamWriter:
    """Stands in for the request writer of a response that was never really sent."""

    output_size = 0


class CompatResponse(aiohttp.ClientResponse):
    """A ``ClientResponse`` that tolerates a missing ``stream_writer``."""

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", _SentStreamWriter())
        super().__init__(method, url, **kwargs)


class HttpMock(aioresponses):
    """aioresponses whose mocked responses default to ``CompatResponse``."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", CompatResponse)
        super().add(url, method, *args, **kwargs)

    def sent(self) -> list[tuple[str, URL, dict[str, Any]]]:
        """Every request made, as (method, URL with query, request kwargs), grouped by URL."""
        return [
            (method, url, call.kwargs)
            for (method, url), calls in self.requests.items()
            for call in calls
        ]


def reply(status: int = 200, **kwargs: Any) -> CallbackResult:
    """A callback's answer (callbacks do not inherit the match's response class)."""
    return CallbackResult(status=status, response_class=CompatResponse, **kwargs)

"""Check HTTP requests against BigCommerce's official OpenAPI files.

The files are read where they lie (``specs_dir()``), never copied into the repository. They
are parsed once per process: the catalogue spec alone is 10,000 lines.

How a request is checked (``make_validator()``):

1. The URL must be ``<anything>/stores/{store_hash}/v3/<path>``; it is mapped onto the specs'
   server ``https://api.bigcommerce.com/stores/{store_hash}/v3``.
2. ``<path>`` picks the spec file that defines it (literal paths win over templated ones).
   An unknown path, or a method the path does not define, is a violation.
3. Required ``Accept`` / ``Content-Type`` header parameters are checked here: the OpenAPI
   3.0 standard tells tools to ignore header parameters with those names, and openapi-core
   does, yet BigCommerce's specs mark both required.
4. openapi-core validates the rest: the ``X-Auth-Token`` security scheme, query and path
   parameters (types, enums, maxima), the body's media type and the JSON body's schema.

Workaround for a spec bug: several comma-separated list filters (``variant_id:in``,
``product_id:in``, ``location_id:in`` in the inventory and locations specs) declare
``type: integer``, so the documented ``variant_id:in=1,2`` fails to cast. Those parameters
are rewritten in memory, never on disk, to ``style: form, explode: false`` arrays of
integers, which is what the catalogue spec already does for ``id:in``.

``make_response_checker()`` checks a response body against the schema the spec gives for
that operation and status (statuses the spec does not list are not checked). Two more
in-memory fixes serve it: properties the spec documents as "``null`` for ..." but types
without ``nullable`` (``base_variant_id``, ``sku_id``) and the variants spec's Swagger-2
``x-nullable`` become ``nullable: true``; and ``application/problem+json`` bodies are
parsed as JSON.

Not checked: unknown query parameters (OpenAPI allows them, e.g. the undocumented but
widely used ``sku:in`` on ``/catalog/variants``), semantic limits the specs state only in
prose (2,000 items per adjustment, quantity range), the ``Accept`` header's value (only its
presence), and response headers (the specs declare none).
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from katsyncd.sim.bigcommerce import BigCommerceSim

SPEC_FILES = (
    "inventory.v3.yml",
    "locations.v3.yml",
    "products_catalog.v3.yml",
    "product-variants_catalog.v3.yml",
)
SPEC_HOST = "https://api.bigcommerce.com"
OAS_IGNORED_HEADERS = frozenset({"accept", "content-type"})
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})
MAX_DETAILS = 6
MAX_MESSAGE = 240
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 7x faster when present
_STORE_PATH = re.compile(r"^/stores/(?P<hash>[^/]+)/v3(?P<rest>/.*)$")

_DOCUMENTED_NULL = re.compile(r"\bnull\b", re.IGNORECASE)
_CONFIG = Config(extra_media_type_deserializers={"application/problem+json": json.loads})

RequestValidator = Callable[[str, str, Mapping[str, str], bytes], None]
ResponseChecker = Callable[[str, str, Mapping[str, str], int, Mapping[str, str], bytes], None]


class SpecViolation(AssertionError):
    """A request that BigCommerce's OpenAPI files do not allow."""


def specs_dir() -> Path:
    """Spec folder: ``$KATSYNCD_BC_SPECS_DIR``, else ``<repo root>/../shared/specs/bigcommerce``."""
    configured = os.environ.get("KATSYNCD_BC_SPECS_DIR")
    if configured:
        return Path(configured)
    repo_root = Path(__file__).resolve().parents[2]
    return (repo_root.parent / "shared" / "specs" / "bigcommerce").resolve()


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    template: str
    item: Mapping[str, Any]  # the path item: operations and path-level parameters


@dataclass(frozen=True)
class _Spec:
    name: str
    app: OpenAPI
    document: Mapping[str, Any]
    routes: tuple[_Route, ...]


def make_validator() -> RequestValidator:
    """A ``(method, url, headers, body)`` checker raising ``SpecViolation`` on a bad request."""
    specs = load_specs(specs_dir())

    def validate(method: str, url: str, headers: Mapping[str, str], body: bytes) -> None:
        validate_request(specs, method, url, headers, body)

    return validate


@functools.cache
def load_specs(directory: Path) -> tuple[_Spec, ...]:
    """Parse and prepare every spec file in ``directory`` (once per process)."""
    return tuple(_load_spec(directory / name) for name in SPEC_FILES)


def _load_spec(path: Path) -> _Spec:
    with path.open(encoding="utf-8") as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=_YAML_LOADER)
    _fix_list_params(document)
    _fix_documented_nulls(document)
    routes = sorted(
        (_route(template, item) for template, item in document["paths"].items()),
        key=lambda r: r.template.count("{"),
    )
    return _Spec(path.name, OpenAPI.from_dict(document, config=_CONFIG), document, tuple(routes))


def _route(template: str, item: Mapping[str, Any]) -> _Route:
    regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
    return _Route(re.compile(f"^{regex}$"), template, item)


def _fix_list_params(document: dict[str, Any]) -> list[str]:
    """Turn scalar-integer ``*:in`` query filters into comma-separated integer arrays."""
    fixed = []
    for param in _all_parameters(document):
        schema = param.get("schema", {})
        is_list = str(param.get("name", "")).endswith((":in", ":not_in"))
        if param.get("in") == "query" and is_list and schema.get("type") == "integer":
            param.update(style="form", explode=False)
            param["schema"] = {"type": "array", "items": {"type": "integer"}}
            fixed.append(param["name"])
    return fixed


def _fix_documented_nulls(node: Any) -> None:
    """Make ``x-nullable`` and "``null`` if ..." properties nullable, as documented."""
    if isinstance(node, list):
        for child in node:
            _fix_documented_nulls(child)
        return
    if not isinstance(node, dict):
        return
    if node.get("x-nullable") is True:
        node["nullable"] = True
    for prop in (node.get("properties") or {}).values():
        typed = isinstance(prop, dict) and "type" in prop
        if typed and _DOCUMENTED_NULL.search(str(prop.get("description", ""))):
            prop["nullable"] = True
    for child in node.values():
        _fix_documented_nulls(child)


def _all_parameters(document: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    yield from document.get("components", {}).get("parameters", {}).values()
    for item in document["paths"].values():
        yield from item.get("parameters", [])
        for method, operation in item.items():
            if method in METHODS:
                yield from operation.get("parameters", [])


def validate_request(
    specs: Iterable[_Spec], method: str, url: str, headers: Mapping[str, str], body: bytes
) -> None:
    """Raise ``SpecViolation`` naming the spec and the problem if the request is off-spec."""
    parts = urlsplit(url)
    match = _STORE_PATH.match(parts.path)
    if match is None:
        raise SpecViolation(f"{method} {url}: not a BigCommerce /stores/{{hash}}/v3 URL")
    rest = match["rest"]
    spec, route = _find_route(specs, method, rest)
    where = f"{spec.name}: {method.upper()} {route.template}"
    problems = _missing_ignored_headers(spec, route, method.lower(), headers, body)
    problems += _openapi_core_problems(spec, method, parts.path, parts.query, headers, body)
    if problems:
        raise SpecViolation(f"{where}: " + " | ".join(problems))


def _find_route(specs: Iterable[_Spec], method: str, rest: str) -> tuple[_Spec, _Route]:
    candidates = [(s, r) for s in specs for r in s.routes if r.pattern.match(rest)]
    if not candidates:
        raise SpecViolation(f"{method.upper()} {rest}: no path in {', '.join(SPEC_FILES)} matches")
    candidates.sort(key=lambda sr: sr[1].template.count("{"))
    for spec, route in candidates:
        if method.lower() in route.item:
            return spec, route
    spec, route = candidates[0]
    allowed = sorted(m.upper() for m in route.item if m in METHODS)
    raise SpecViolation(f"{spec.name}: {route.template} has no {method.upper()} (only {allowed})")


def _missing_ignored_headers(
    spec: _Spec, route: _Route, method: str, headers: Mapping[str, str], body: bytes
) -> list[str]:
    """Required Accept / Content-Type parameters, which openapi-core skips by the standard."""
    present = {name.lower() for name in headers}
    operation = route.item[method]
    params = [*route.item.get("parameters", []), *operation.get("parameters", [])]
    problems = []
    for param in (_deref(spec.document, p) for p in params):
        name = str(param.get("name", "")).lower()
        ignored = param.get("in") == "header" and name in OAS_IGNORED_HEADERS
        if ignored and param.get("required") and name not in present:
            problems.append(f"missing required header {param['name']}")
    return problems


def _deref(document: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Any = document
    for key in ref.removeprefix("#/").split("/"):
        target = target[key]
    return _deref(document, target)


class _SpecRequest:
    """An ``openapi_core.protocols.Request`` for a request addressed to the spec server."""

    def __init__(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> None:
        self.host_url = SPEC_HOST
        self.path = path
        self.method = method.lower()
        self.body: bytes | None = body or None
        self.content_type = _header(headers, "content-type").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(query, keep_blank_values=True)),
            header=Headers(list(headers.items())),
            cookie=ImmutableMultiDict(),
            path={},
        )


def _header(headers: Mapping[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name), "")


def _openapi_core_problems(
    spec: _Spec, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
) -> list[str]:
    request = _SpecRequest(method, path, query, headers, body)
    return [_describe(error) for error in spec.app.iter_request_errors(request)]


def _describe(error: BaseException) -> str:
    """A short, readable account of an openapi-core error (its own text can be huge)."""
    cause = error.__cause__
    schema_errors = list(getattr(cause, "schema_errors", None) or [])
    head = type(error).__name__
    name = getattr(error, "name", None)
    if name:
        head += f" ({getattr(error, 'location', '')} parameter {name})"
    if schema_errors:
        details = [_schema_error_text(e) for e in schema_errors[:MAX_DETAILS]]
        return f"{head}: " + "; ".join(details)
    text = str(cause) if cause is not None else str(error)
    return f"{head}: {_truncate(text)}"


def _schema_error_text(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "value"
    if error.validator in ("oneOf", "anyOf"):
        subs = list(dict.fromkeys(_sub_error_text(sub) for sub in error.context or []))
        if not subs:
            return f"{where}: matches more than one {error.validator} alternative"
        reasons = "; ".join(subs[:MAX_DETAILS])
        return f"{where}: matches no {error.validator} alternative ({reasons})"
    return f"{where}: {_truncate(error.message)}"


def _sub_error_text(error: Any) -> str:
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {_truncate(error.message)}"


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def make_response_checker() -> ResponseChecker:
    """A ``(method, url, request headers, status, response headers, body)`` checker.

    Raises ``SpecViolation`` when the body does not match the schema the spec documents
    for that operation and status; statuses the spec does not document pass unchecked.
    """
    specs = load_specs(specs_dir())

    def check(
        method: str,
        url: str,
        request_headers: Mapping[str, str],
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> None:
        check_response(specs, method, url, request_headers, status, headers, body)

    return check


def check_response(
    specs: Iterable[_Spec],
    method: str,
    url: str,
    request_headers: Mapping[str, str],
    status: int,
    headers: Mapping[str, str],
    body: bytes,
) -> None:
    """Raise ``SpecViolation`` if a documented response's body breaks its schema."""
    parts = urlsplit(url)
    match = _STORE_PATH.match(parts.path)
    if match is None:
        raise SpecViolation(f"{method} {url}: not a BigCommerce /stores/{{hash}}/v3 URL")
    spec, route = _find_route(specs, method, match["rest"])
    documented = route.item[method.lower()].get("responses", {})
    if str(status) not in documented and "default" not in documented:
        return
    request = _SpecRequest(method, parts.path, parts.query, request_headers, b"")
    response = _SpecResponse(status, headers, body)
    problems = [_describe(e) for e in spec.app.iter_response_errors(request, response)]
    if problems:
        where = f"{spec.name}: {method.upper()} {route.template} -> {status}"
        raise SpecViolation(f"{where}: " + " | ".join(problems))


class _SpecResponse:
    """An ``openapi_core.protocols.Response``."""

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status_code = status
        self.headers = Headers(list(headers.items()))
        self.content_type = _header(headers, "content-type").split(";")[0].strip().lower()
        self.data: bytes | None = body or None


@asynccontextmanager
async def spec_checked(
    sim: BigCommerceSim, validator: RequestValidator | None = None
) -> AsyncIterator[BigCommerceSim]:
    """``sim`` serving, every request it gets checked against the specs; at the end it is
    stopped and must have seen no off-spec request."""
    sim.request_validator = validator or make_validator()
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
    assert sim.spec_violations == []

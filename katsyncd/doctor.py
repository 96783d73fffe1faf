"""``katsyncd doctor [--store NAME] [--url URL]``: read-only checks of a real configuration
against the live Katana and BigCommerce APIs (a merchant's first day, support).

Three layers, so each merges and tests on its own:

- the verdicts are pure functions of what was read (``*_check``), returning :class:`Check`
  values (✓ pass, ✗ fail with what to do next, - skipped because an earlier check failed);
- :func:`diagnose` reads, with GET requests only, through the clients' existing read methods
  (and ``KatanaClient.get_page`` for the filter probe) on one aiohttp session whose trace
  counts every request per API, so the number of requests is known and printed;
- ``katsyncd.cli.render.render_doctor`` prints the report (the command is
  ``katsyncd.cli.doctor``).

The number of requests is bounded by the catalogue size. Katana: ``1 + ceil(V/250) + 3 + W``
(locations, live product variants, three filter probes, webhook pages), plus at most 8 probes
when one fails (a bisection for the largest honoured id count). BigCommerce, per store:
``ceil(P/250) + L + 1`` (products, location pages, one inventory read). Plus a retry per
failed request (doctor's clients try twice) and the waits after a 429.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import aiohttp

from katsyncd import __version__
from katsyncd.bigcommerce import BcAuthError, BcError, BigCommerceClient
from katsyncd.config import Config, StoreConfig
from katsyncd.ingest import SUBSCRIBED_EVENTS
from katsyncd.katana import KatanaAuthError, KatanaClient, KatanaError, lenient_int
from katsyncd.models import BcItem, KatanaLocation, KatanaVariant, Priority
from katsyncd.ratelimit import BcLimiter, KatanaLimiter
from katsyncd.rules import is_syncable, pick_winner, resolve_locations
from katsyncd.subscription import events_of

Status = Literal["pass", "fail", "skip"]

PROBE_SIZES = (1, 21, 250)  # one id, just above a 20-value gateway limit, a full chunk
PROBE_PAGE_SIZE = 250
RATE_HEADERS = ("X-Ratelimit-Limit", "X-Ratelimit-Remaining", "X-Ratelimit-Reset")
SHOWN = 5  # SKUs / names shown per list in a check's detail
ATTEMPTS = 2  # doctor reports a failure rather than retrying for minutes
KATANA = "Katana"


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict: ``name`` is stable (``katana.key``, ``store.main.location``…)."""

    name: str
    title: str
    status: Status
    detail: str
    fix: str = ""  # what to do next (for a failure)

    @property
    def ok(self) -> bool:
        return self.status == "pass"


def passed(name: str, title: str, detail: str) -> Check:
    return Check(name, title, "pass", detail)


def failed(name: str, title: str, detail: str, fix: str) -> Check:
    return Check(name, title, "fail", detail, fix)


def skipped(name: str, title: str, why: str) -> Check:
    return Check(name, title, "skip", why)


@dataclass
class Report:
    checks: list[Check]
    requests: dict[str, Counter[str]]  # API label -> method -> requests sent

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def failing(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]


# ----- pure verdicts ---------------------------------------------------------------------------


def _some(items: Iterable[Any], n: int = SHOWN) -> str:
    shown = [str(i) for i in items]
    more = f", … ({len(shown)} in all)" if len(shown) > n else ""
    return ", ".join(shown[:n]) + more


def key_check(locations: Sequence[KatanaLocation] | None, error: KatanaError | None) -> Check:
    title = "Katana API key"
    if error is None:
        return passed("katana.key", title, f"accepted ({len(locations or ())} locations)")
    if isinstance(error, KatanaAuthError):
        return failed(
            "katana.key",
            title,
            f"Katana refused the API key (HTTP {error.status} on {error.endpoint})",
            "put a valid key in [katana] api_key or api_key_file "
            "(Katana: Settings → API → create an API key)",
        )
    return failed(
        "katana.key",
        title,
        f"could not read /locations: {error} (HTTP {error.status})",
        "check [katana] base_url and that Katana is reachable from this host",
    )


def rate_limit_check(headers: Mapping[str, str] | None, configured: int) -> Check:
    """The ``X-Ratelimit-*`` headers of a Katana reply, against ``requests_per_minute``."""
    name, title = "katana.rate_limit", "Katana rate-limit headers"
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    missing = [h for h in RATE_HEADERS if h.lower() not in lowered]
    if missing:
        return failed(
            name,
            title,
            f"Katana's reply has no {', '.join(missing)}: katsyncd can only pace itself by "
            f"[katana] requests_per_minute ({configured})",
            "keep [katana] requests_per_minute at or below your Katana plan's quota "
            "(60 by default) and report the missing headers to Katana support",
        )
    limit = lenient_int(lowered[RATE_HEADERS[0].lower()])
    left = lenient_int(lowered[RATE_HEADERS[1].lower()])
    if limit is None:
        return failed(
            name,
            title,
            f"X-Ratelimit-Limit is not a number: {lowered[RATE_HEADERS[0].lower()]!r}",
            "keep [katana] requests_per_minute at or below your Katana plan's quota",
        )
    if configured > limit:
        return failed(
            name,
            title,
            f"Katana allows {limit} requests a minute, [katana] requests_per_minute is "
            f"{configured}",
            f"set [katana] requests_per_minute = {limit} (or lower)",
        )
    return passed(
        name, title, f"quota {limit}/min, {left} left now; katsyncd is set to {configured}/min"
    )


def locations_check(stores: Sequence[StoreConfig], known: Sequence[KatanaLocation] | None) -> Check:
    """S12: every store's ``katana_locations`` name or id exists in Katana."""
    name, title = "katana.locations", "Configured Katana locations"
    if known is None:
        return skipped(name, title, "needs a valid Katana API key")
    names = _some(sorted(loc.name for loc in known), 20)
    problems, counted = [], []
    for store in stores:
        _, missing = resolve_locations(store.katana_locations, known)
        if missing:
            problems.append(f"store {store.name}: {', '.join(map(repr, missing))}")
        shown = ", ".join(str(w) for w in store.katana_locations) or "all"
        counted.append(f"{store.name} counts {shown}")
    if problems:
        return failed(
            name,
            title,
            f"not in Katana: {'; '.join(problems)} (Katana has: {names})",
            "fix [[stores]] katana_locations: exact Katana location names or ids",
        )
    return passed(name, title, f"{len(known)} locations ({names}); {'; '.join(counted)}")


def catalogue_check(variants: Sequence[KatanaVariant] | None, error: KatanaError | None) -> Check:
    name, title = "katana.catalogue", "Katana product variants"
    if error is not None:
        return failed(
            name,
            title,
            f"could not read /variants: {error} (HTTP {error.status})",
            "run doctor again; if it persists, report it with this output",
        )
    if variants is None:
        return skipped(name, title, "needs a valid Katana API key")
    live = [v for v in variants if is_syncable(v)]
    skus = {v.sku for v in live}
    return passed(name, title, f"{len(live)} live product variants with {len(skus)} SKUs")


@dataclass(frozen=True, slots=True)
class Probe:
    """One ``/inventory?variant_id=…`` read: how many ids were asked, what came back."""

    asked: int
    rows: int = 0
    asked_ids_back: int = 0  # distinct asked ids in the rows
    foreign_ids: int = 0  # distinct ids in the rows that were not asked for
    error: str | None = None

    @property
    def bad(self) -> bool:
        """Refused, or rows for ids not asked for came back (the filter was ignored)."""
        return self.error is not None or self.foreign_ids > 0


def filter_check(probes: Sequence[Probe] | None, available: int) -> Check:
    """Whether Katana honours the repeated ``variant_id`` filter at each probed size."""
    name, title = "katana.bulk_filter", "Katana bulk filter (/inventory variant_id)"
    if probes is None:
        return skipped(name, title, "needs the Katana product variants")
    if not probes:
        return skipped(name, title, "no live product variants to ask for")
    seen = "; ".join(
        f"{p.asked} ids → {p.asked_ids_back} variants in {p.rows} rows (first page)"
        for p in probes
        if not p.bad and p.asked in PROBE_SIZES
    )
    bad = [p for p in probes if p.bad]
    if not bad:
        small = "" if available >= PROBE_SIZES[-1] else f" (only {available} variants to ask)"
        return passed(name, title, f"honoured: {seen}{small}")
    first = min(bad, key=lambda p: p.asked)
    honoured = max((p.asked for p in probes if not p.bad and p.asked < first.asked), default=0)
    if first.error is not None:
        what = f"Katana refused {first.asked} ids: {first.error}"
    else:
        what = (
            f"with {first.asked} ids Katana ignored the filter: rows for {first.foreign_ids} "
            "variants not asked for came back"
        )
    return failed(
        name,
        title,
        f"{what}; the filter holds for at most {honoured} ids" + (f" ({seen})" if seen else ""),
        "levels stay right (katsyncd drops rows it did not ask for), but every bulk read of "
        f"more than {honoured} ids costs extra requests: report this output to the katsyncd "
        "maintainers so the client asks for fewer ids at a time",
    )


def webhook_check(url: str | None, hooks: Sequence[Mapping[str, Any]] | None, token: str) -> Check:
    """A subscription for ``url`` exists, is enabled, has every needed event, signs with our
    webhook token, and is the only one for that URL."""
    name, title = "katana.webhook", "Katana webhook subscription"
    if url is None:
        return failed(
            name,
            title,
            "no webhook URL to look for",
            "pass --url https://…/webhooks/katana or set [katana] webhook_url",
        )
    if hooks is None:
        return skipped(name, title, "needs a valid Katana API key")
    register = f"run: katsyncd webhooks register --url {url}"
    same = sorted((h for h in hooks if h.get("url") == url), key=lambda h: h.get("id") or 0)
    if not same:
        others = _some(str(h.get("url")) for h in hooks) or "none"
        return failed(name, title, f"no subscription for {url} (others: {others})", register)
    hook = same[0]
    problems = []
    if hook.get("enabled") is not True:
        problems.append("disabled")
    missing = sorted(set(SUBSCRIBED_EVENTS) - set(events_of(hook)))
    if missing:
        problems.append(f"{len(missing)} events missing ({_some(missing)})")
    if len(same) > 1:
        ids = ", ".join(str(h.get("id")) for h in same[1:])
        problems.append(f"also subscriptions {ids} for this URL (each delivery twice)")
    if problems:
        fix = register if missing or hook.get("enabled") is not True else ""
        if len(same) > 1:
            fix = "; ".join(filter(None, [fix, "katsyncd webhooks delete ID for the extra ones"]))
        return failed(name, title, f"subscription {hook.get('id')}: {'; '.join(problems)}", fix)
    if not token or hook.get("token") != token:
        what = "is not set" if not token else "differs from the subscription's token"
        return failed(
            name,
            title,
            f"subscription {hook.get('id')} is right, but [katana] webhook_token {what}: "
            "deliveries would be refused",
            f"{register} (it prints the token) and put it in [katana] webhook_token",
        )
    return passed(
        name,
        title,
        f"subscription {hook.get('id')} for {url}: enabled, all {len(SUBSCRIBED_EVENTS)} "
        "events, token matches",
    )


def token_check(store: str, problems: Sequence[str]) -> Check:
    """``problems`` from :func:`_bc_problem`: refusals (401/403) or other failures."""
    name, title = f"store.{store}.token", f"Store {store}: access token"
    if not problems:
        return passed(
            name,
            title,
            "reads products, locations and inventory; write access (Inventory modify) cannot "
            "be checked without writing",
        )
    if any("HTTP 401" in p or "HTTP 403" in p for p in problems):
        fix = (
            f"put a valid token in [[stores]] access_token (store {store}): a BigCommerce "
            "API account with Products read-only, Information & settings (locations) "
            "read-only and Inventory modify"
        )
    else:
        fix = (
            f"check [[stores]] store_hash and api_base_url (store {store}) and that "
            "BigCommerce is reachable from this host"
        )
    return failed(name, title, "; ".join(problems), fix)


def bc_location_check(store: StoreConfig, locations: Sequence[Mapping[str, Any]] | None) -> Check:
    name, title = f"store.{store.name}.location", f"Store {store.name}: location"
    if locations is None:
        return skipped(name, title, "needs the store's token to read locations")
    wanted = store.location_id
    found = next((loc for loc in locations if lenient_int(loc.get("id")) == wanted), None)
    known = _some(
        f"{loc.get('id')} {loc.get('label') or loc.get('code') or ''}".strip() for loc in locations
    )
    fix = f"set [[stores]] location_id (store {store.name}) to an enabled location: {known}"
    if found is None:
        return failed(name, title, f"location {wanted} does not exist", fix)
    label = found.get("label") or found.get("code") or ""
    if found.get("enabled") is not True:
        return failed(
            name,
            title,
            f"location {wanted} ({label}) is disabled: BigCommerce refuses stock written there",
            f"enable it in BigCommerce (Settings → Locations), or {fix}",
        )
    return passed(name, title, f"location {wanted} ({label}) exists and is enabled")


@dataclass(frozen=True, slots=True)
class SkuSummary:
    """How one store's catalogue matches Katana's live product SKUs (S6-S8)."""

    matched: list[str]
    unmatched_katana: list[str]  # live Katana SKUs with no BigCommerce item at all
    unmatched_bigcommerce: list[str]  # tracked BigCommerce SKUs with no live Katana variant
    duplicates: dict[str, list[int]]  # S8: matched SKU -> its live Katana variant ids
    winners: dict[str, int]  # S8: the variant that wins each duplicated SKU
    fan_out: dict[str, int]  # S7: matched SKU -> number of tracked BigCommerce items
    tracking_off: list[str]  # Katana SKUs on BigCommerce items that do not track stock
    tracked_items: int = 0


def summarize_skus(variants: Iterable[KatanaVariant], items: Iterable[BcItem]) -> SkuSummary:
    """Pure: the SKU matching summary of one store."""
    by_sku: dict[str, list[KatanaVariant]] = defaultdict(list)
    for v in variants:
        if is_syncable(v) and v.sku:
            by_sku[v.sku].append(v)
    tracked: Counter[str] = Counter()
    untracked: set[str] = set()
    for item in items:
        if item.tracking == "none":
            untracked.add(item.sku)
        else:
            tracked[item.sku] += 1
    matched = sorted(by_sku.keys() & tracked.keys())
    duplicates = {s: sorted(v.id for v in by_sku[s]) for s in matched if len(by_sku[s]) > 1}
    winners = {}
    for sku in duplicates:
        winner = pick_winner(by_sku[sku])
        if winner is not None:
            winners[sku] = winner.id
    return SkuSummary(
        matched=matched,
        unmatched_katana=sorted(by_sku.keys() - tracked.keys() - untracked),
        unmatched_bigcommerce=sorted(tracked.keys() - by_sku.keys()),
        duplicates=duplicates,
        winners=winners,
        fan_out={s: tracked[s] for s in matched if tracked[s] > 1},
        tracking_off=sorted(untracked & by_sku.keys()),
        tracked_items=sum(tracked.values()),
    )


def skus_check(store: str, s: SkuSummary | None) -> Check:
    """✗ when nothing matches or tracked BigCommerce items have no Katana variant (they would
    never be kept in sync); Katana SKUs a store does not sell, S7 and S8 are reported."""
    name, title = f"store.{store}.skus", f"Store {store}: SKU matching"
    if s is None:
        return skipped(name, title, "needs the Katana variants and the store's catalogue")
    parts = [
        f"{len(s.matched)} SKUs matched ({s.tracked_items} tracked items)",
        f"{len(s.unmatched_katana)} Katana SKUs not in the store",
        f"{len(s.unmatched_bigcommerce)} tracked store SKUs not in Katana",
        f"S8: {len(s.duplicates)} SKUs on several Katana variants"
        + (
            " (" + _some(f"{k} → {s.winners.get(k)} wins" for k in s.duplicates) + ")"
            if s.duplicates
            else ""
        ),
        f"S7: {len(s.fan_out)} SKUs on several store items",
    ]
    detail = "; ".join(parts)
    if s.unmatched_bigcommerce:
        return failed(
            name,
            f"{title}",
            f"{detail}. Not in Katana: {_some(s.unmatched_bigcommerce)}",
            "these store items will never be updated: give the SKU to a Katana product "
            "variant, correct the SKU in BigCommerce, or turn stock tracking off for them",
        )
    if not s.matched:
        return failed(
            name,
            title,
            detail,
            "no SKU is the same on both sides: compare SKUs in Katana and BigCommerce "
            "(case and spaces count)",
        )
    return passed(name, title, detail)


def tracking_check(store: str, s: SkuSummary | None) -> Check:
    name, title = f"store.{store}.tracking", f"Store {store}: inventory tracking"
    if s is None:
        return skipped(name, title, "needs the Katana variants and the store's catalogue")
    if s.tracking_off:
        return failed(
            name,
            title,
            f"{len(s.tracking_off)} Katana SKUs are on store items that do not track "
            f"stock: {_some(s.tracking_off)}",
            "turn on inventory tracking for them in BigCommerce (or leave them untracked on "
            "purpose: katsyncd never writes their stock)",
        )
    return passed(name, title, "every store item with a Katana SKU tracks stock")


# ----- reading ---------------------------------------------------------------------------------


@dataclass
class RequestTally:
    """Every request doctor's session sends, counted per API by URL prefix (an aiohttp trace).

    It also keeps the headers of the first successful reply of each API."""

    prefixes: list[tuple[str, str]]  # (url prefix, API label), longest prefix first
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    first_ok_headers: dict[str, Mapping[str, str]] = field(default_factory=dict)

    def label(self, url: str) -> str:
        return next((label for prefix, label in self.prefixes if url.startswith(prefix)), "other")

    def count(self, method: str, url: str) -> str:
        label = self.label(url)
        self.counts.setdefault(label, Counter())[method.upper()] += 1
        return label

    def trace(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def on_end(
            _: aiohttp.ClientSession, __: SimpleNamespace, params: aiohttp.TraceRequestEndParams
        ) -> None:
            label = self.count(params.method, str(params.url))
            if 200 <= params.response.status < 300:
                self.first_ok_headers.setdefault(label, dict(params.response.headers))

        async def on_error(
            _: aiohttp.ClientSession,
            __: SimpleNamespace,
            params: aiohttp.TraceRequestExceptionParams,
        ) -> None:
            self.count(params.method, str(params.url))

        trace.on_request_end.append(on_end)
        trace.on_request_exception.append(on_error)
        return trace


def _store_root(store: StoreConfig) -> str:
    return f"{store.api_base_url.rstrip('/')}/stores/{store.store_hash}"


async def diagnose(cfg: Config, stores: Sequence[StoreConfig], webhook_url: str | None) -> Report:
    """Every check, with GET requests only; the report counts the requests per API."""
    prefixes = [(cfg.katana.base_url.rstrip("/"), KATANA)]
    prefixes += [(_store_root(s), f"BigCommerce {s.name}") for s in stores]
    prefixes.sort(key=lambda p: len(p[0]), reverse=True)
    tally = RequestTally(prefixes)
    headers = {"User-Agent": f"katsyncd/{__version__} doctor"}
    async with aiohttp.ClientSession(headers=headers, trace_configs=[tally.trace()]) as session:
        k = cfg.katana
        katana = KatanaClient(
            session,
            k.base_url,
            k.api_key_value(),
            KatanaLimiter(k.requests_per_minute, share=k.max_share),
            max_attempts=ATTEMPTS,
            timeout=k.timeout_seconds,
        )
        checks, variants = await _katana_checks(cfg, katana, stores, webhook_url, tally)
        for store in stores:
            checks += await _store_checks(session, store, variants)
    return Report(checks, tally.counts)


async def _katana_checks(
    cfg: Config,
    katana: KatanaClient,
    stores: Sequence[StoreConfig],
    webhook_url: str | None,
    tally: RequestTally,
) -> tuple[list[Check], list[KatanaVariant] | None]:
    locations: list[KatanaLocation] | None = None
    try:
        locations = await katana.locations()
        error = None
    except KatanaError as exc:
        error = exc
    checks = [key_check(locations, error)]
    if locations is None:
        return [
            *checks,
            skipped("katana.rate_limit", "Katana rate-limit headers", "needs a valid API key"),
            locations_check(stores, None),
            catalogue_check(None, None),
            filter_check(None, 0),
            webhook_check(webhook_url, None, ""),
        ], None
    checks.append(
        rate_limit_check(tally.first_ok_headers.get(KATANA), cfg.katana.requests_per_minute)
    )
    checks.append(locations_check(stores, locations))
    variants: list[KatanaVariant] | None = None
    try:
        read: list[KatanaVariant] = []
        async for page in katana.variants(include_deleted=False, product_only=True):
            read.extend(page)
        variants = read
        checks.append(catalogue_check(variants, None))
    except KatanaError as exc:
        checks.append(catalogue_check(None, exc))
    if variants is None:
        checks.append(filter_check(None, 0))
    else:
        ids = sorted({v.id for v in variants if is_syncable(v)}, reverse=True)
        checks.append(filter_check(await probe_filter(katana, ids), len(ids)))
    try:
        hooks: list[dict[str, Any]] | None = await katana.list_webhooks()
        checks.append(webhook_check(webhook_url, hooks, cfg.katana.webhook_token_value()))
    except KatanaError as exc:
        checks.append(
            failed(
                "katana.webhook",
                "Katana webhook subscription",
                f"could not list webhooks: {exc} (HTTP {exc.status})",
                "run doctor again; if it persists, report it with this output",
            )
        )
    return checks, variants


async def probe_filter(katana: KatanaClient, ids: Sequence[int]) -> list[Probe]:
    """Ask ``/inventory`` for the first ``n`` of ``ids`` (newest first: Katana lists the oldest
    variants first, so an ignored filter shows on the first page) for each probe size; at the
    first size that fails, bisect down to the largest honoured count (at most 8 more reads)."""
    probes: list[Probe] = []
    for size in PROBE_SIZES:
        n = min(size, len(ids))
        if n == 0 or (probes and n <= probes[-1].asked):
            break
        probe = await _probe(katana, ids[:n])
        probes.append(probe)
        if probe.bad:
            low = max((p.asked for p in probes if not p.bad), default=0)
            high = n
            while high - low > 1:
                mid = (low + high) // 2
                between = await _probe(katana, ids[:mid])
                probes.append(between)
                low, high = (low, mid) if between.bad else (mid, high)
            break
    return probes


async def _probe(katana: KatanaClient, ids: Sequence[int]) -> Probe:
    """One first page of ``/inventory?variant_id=…`` for these ids."""
    asked = set(ids)
    params = [("variant_id", str(i)) for i in sorted(asked)]
    params += [("limit", str(PROBE_PAGE_SIZE)), ("page", "1")]
    try:
        rows, _ = await katana.get_page("/inventory", params, priority=Priority.LIVE)
    except KatanaError as exc:
        return Probe(len(asked), error=f"HTTP {exc.status} {exc.body or exc}"[:200])
    back = {lenient_int(r.get("variant_id")) for r in rows}  # rows are dicts (extract_rows)
    return Probe(len(asked), len(rows), len(back & asked), len(back - asked))


async def _store_checks(
    session: aiohttp.ClientSession, store: StoreConfig, variants: list[KatanaVariant] | None
) -> list[Check]:
    client = BigCommerceClient(
        session,
        store.api_base_url,
        store.store_hash,
        store.access_token_value(),
        BcLimiter(),
        store_name=store.name,
        max_attempts=ATTEMPTS,
    )
    problems: list[str] = []
    items: list[BcItem] | None = None
    try:
        read: list[BcItem] = []
        async for page in client.catalog_items():
            read.extend(page)
        items = read
    except BcError as exc:
        problems.append(_bc_problem(exc, "products", "Products read-only"))
    locations: list[dict[str, Any]] | None = None
    if not _refused(problems):
        try:
            locations = await client.locations()
        except BcError as exc:
            problems.append(_bc_problem(exc, "locations", "Information & settings read-only"))
        tracked = [i for i in items or () if i.tracking != "none"]
        if tracked:
            try:
                await client.inventory_levels(tracked[:1], store.location_id)
            except BcError as exc:
                problems.append(_bc_problem(exc, "inventory items", "Inventory read-only"))
    summary = None if items is None or variants is None else summarize_skus(variants, items)
    return [
        token_check(store.name, problems),
        bc_location_check(store, locations),
        skus_check(store.name, summary),
        tracking_check(store.name, summary),
    ]


def _refused(problems: Collection[str]) -> bool:
    return any("refused the token" in p for p in problems)


def _bc_problem(exc: BcError, what: str, scope: str) -> str:
    if isinstance(exc, BcAuthError) and exc.status == 401:
        return f"BigCommerce refused the token (HTTP 401 reading {what})"
    if isinstance(exc, BcAuthError):
        return f"the token may not read {what} (HTTP 403): it needs the {scope} scope"
    return f"reading {what} failed: {exc}"

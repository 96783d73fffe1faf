"""Fuzzed webhook bodies with valid and invalid signatures; and fuzzed configs.

Webhooks: the daemon runs with a 10 min debounce and 10 min polls, so every mark a webhook
writes stays in Postgres for the suite to count. Invalid-signature bodies go first: the
stale-mark tables must not change (0 state change); then the same bodies validly signed. No
body may get a 5xx. Configs: mutations of a valid config loaded in-process (only
``ConfigError`` may come out), a few through ``katsyncd check-config`` (exit 0 or 2, no
traceback) and sent to the running daemon by SIGHUP (it must keep running)."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
from collections import Counter
from typing import Any

import aiohttp

from bench.systems import to_toml
from faults.common import Context, Daemon, make_world, signature, wait_right
from faults.report import Expect, Row, zero
from katsyncd.config import ConfigError, load_config
from katsyncd.ingest import SUBSCRIBED_EVENTS

HOLD = {"debounce_seconds": 600.0, "max_delay_seconds": 600.0, "poll_interval_seconds": 600.0}
WEIRD: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    2**80,
    -(2**70),
    1.5,
    float("inf"),
    "",
    "x" * 5000,
    "\uff11\uff12",  # full-width digits
    "12",
    "\u0000",
    "\ud7ff",
    [],
    [1],
    {},
    {"id": 1},
    "https://evil.example/v1/variants/1",
]


def _event(rng: random.Random, ids: list[int]) -> dict[str, Any]:
    action = rng.choice([*SUBSCRIBED_EVENTS, "unknown.event", ""])
    kind = action.partition(".")[0]
    vid = rng.choice(ids)
    obj: dict[str, Any] = {"id": vid, "href": f"https://api.katanamrp.com/v1/variants/{vid}"}
    if kind == "sales_order":
        obj = {"id": rng.randint(1, 10**6), "status": "NOT_SHIPPED", "href": "x"}
    return {"resource_type": kind, "action": action, "webhook_id": 1, "object": obj}


def _mutate(rng: random.Random, doc: dict[str, Any]) -> Any:
    r = rng.random()
    if r < 0.3:  # a field replaced by something odd
        path = rng.choice(
            [
                ("action",),
                ("resource_type",),
                ("object",),
                ("object", "id"),
                ("object", "href"),
                ("object", "status"),
                ("webhook_id",),
            ]
        )
        target = doc
        for key in path[:-1]:
            target = target.setdefault(key, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target[path[-1]] = rng.choice(WEIRD)
        return doc
    if r < 0.4:  # a field dropped
        doc.pop(rng.choice(list(doc)), None)
        return doc
    if r < 0.5:
        return rng.choice([[], [doc], 1, "event", None, {"object": doc}])
    if r < 0.55:  # deep nesting
        deep: Any = 1
        for _ in range(rng.choice([50, 500, 5000])):
            deep = [deep]
        doc["object"] = deep
        return doc
    return doc


def bodies(rng: random.Random, ids: list[int], n: int) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(n):
        doc = _event(rng, ids)
        r = rng.random()
        if r < 0.6:
            try:
                body = json.dumps(_mutate(rng, doc)).encode()
            except (ValueError, RecursionError):
                body = b"[" * 10_000
        elif r < 0.7:  # truncated
            body = json.dumps(doc).encode()
            body = body[: rng.randrange(len(body))]
        elif r < 0.8:  # random bytes
            body = rng.randbytes(rng.choice([0, 1, 17, 300, 4096]))
        elif r < 0.85:  # not UTF-8 / odd encodings
            body = json.dumps(doc).encode("utf-16")
        elif r < 0.9:  # large (over the default body limit sometimes)
            doc["pad"] = "x" * rng.choice([10_000, 300_000, 2_000_000])
            body = json.dumps(doc).encode()
        else:  # well formed
            body = json.dumps(doc).encode()
        out.append(body)
    return out


def _bad_signature(rng: random.Random, body: bytes) -> dict[str, str]:
    r = rng.random()
    if r < 0.2:
        return {}
    if r < 0.4:
        return {"x-sha2-signature": ""}
    if r < 0.6:
        return {"x-sha2-signature": signature(body + b" ")}
    if r < 0.8:
        return {"x-sha2-signature": "sha256=" + rng.randbytes(32).hex()}
    return {"x-sha2-signature": signature(body)[:-1] + "Ω"}


async def _post_all(port: int, items: list[tuple[bytes, dict[str, str]]]) -> Counter[str]:
    url = f"http://127.0.0.1:{port}/webhooks/katana"
    seen: Counter[str] = Counter()
    sem = asyncio.Semaphore(16)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def one(body: bytes, headers: dict[str, str]) -> None:
            async with sem:
                try:
                    async with s.post(url, data=body, headers=headers) as r:
                        seen[f"{r.status}"] += 1
                        await r.read()
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    seen[f"error:{type(exc).__name__}"] += 1

        await asyncio.gather(*(one(b, h) for b, h in items))
    return seen


def _fivexx(seen: Counter[str]) -> int:
    return sum(n for k, n in seen.items() if k.startswith("5"))


async def webhooks(ctx: Context) -> list[Row]:
    p = ctx.profile
    name = "fuzzed webhooks"
    world = await make_world(ctx, stores=1)
    daemon = Daemon(ctx, world, "fuzz", sync=HOLD, subscribe=False)
    rng = random.Random(51)
    ids = list(world.katana.variants)
    half = p.fuzz_bodies // 2
    try:
        await daemon.start()
        if await wait_right(world, p.converge_cap) is None:
            raise RuntimeError(f"initial sync did not converge:\n{daemon.log_tail()}")
        before = await daemon.counts()
        bad = [(b, _bad_signature(rng, b)) for b in bodies(rng, ids, half)]
        bad_seen = await _post_all(daemon.port, bad)
        after_bad = await daemon.counts()
        good = [(b, {"x-sha2-signature": signature(b)}) for b in bodies(rng, ids, half)]
        good_seen = await _post_all(daemon.port, good)
        after_good = await daemon.counts()
        alive = daemon.alive() and await daemon.healthy()
        ctx.say(
            name,
            f"invalid: {dict(bad_seen)}; valid: {dict(good_seen)}; "
            f"marks {before} → {after_bad} → {after_good}",
        )
    finally:
        await daemon.stop()
        await world.stop()
    changed = sum(abs(after_bad[t] - before[t]) for t in before)
    marked = sum(after_good[t] - after_bad[t] for t in before)
    errors = sum(n for k, n in (bad_seen + good_seen).items() if k.startswith("error"))
    return [
        Row(
            name,
            "bodies sent (invalid + valid signature)",
            len(bad) + len(good),
            "",
            Expect(p.fuzz_bodies, at_least=True),
        ),
        zero("5xx answers", name, _fivexx(bad_seen) + _fivexx(good_seen)),
        zero("connection errors (no answer)", name, errors),
        zero("state change from invalid signatures (mark rows)", name, changed),
        Row(
            name,
            "2xx for invalid signatures",
            sum(n for k, n in bad_seen.items() if k.startswith("2")),
            "",
            Expect(0, equal=True),
            True,
        ),
        Row(
            name,
            "mark rows written by valid ones",
            marked,
            "",
            note=f"answers {dict(sorted(good_seen.items()))}",
        ),
        Row(name, "daemon still healthy", float(alive), "", Expect(1, equal=True), True),
    ]


# ----- config fuzz -----------------------------------------------------------------------------


def _mutate_config(rng: random.Random, data: dict[str, Any]) -> str:
    doc = json.loads(json.dumps(data))  # a deep copy
    for _ in range(rng.randint(1, 3)):
        section = rng.choice(list(doc))
        table = doc[section][0] if isinstance(doc[section], list) and doc[section] else doc[section]
        r = rng.random()
        if r < 0.15:
            doc.pop(section, None)
            continue
        if not isinstance(table, dict) or not table:
            continue
        key = rng.choice(list(table))
        if r < 0.35:
            table.pop(key)
        elif r < 0.45:
            table[f"{key}_typo"] = table[key]
        elif r < 0.55 and section == "stores":
            doc["stores"].append(dict(doc["stores"][0]))  # a duplicate store
        else:
            table[key] = rng.choice(
                [
                    None,
                    True,
                    -1,
                    0,
                    2**63,
                    -0.5,
                    1e308,
                    "",
                    "x" * 300,
                    "${NOPE_NOT_SET}",
                    "127.0.0.1:99999",
                    "[::1]:80",
                    "postgresql://",
                    "http://",
                    [],
                    [1, "a"],
                    {"nested": 1},
                    "\u202e",
                    "/nonexistent/file",
                ]
            )
    try:
        text = to_toml({k: v for k, v in doc.items() if v is not None})
    except TypeError:
        text = "[broken\n= ="
    if rng.random() < 0.1:
        cut = rng.randrange(len(text) + 1)
        text = text[:cut]
    return text


def _clean(data: dict[str, Any]) -> dict[str, Any]:
    """Drop Nones inside tables (TOML has no null)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict):
            out[k] = {a: b for a, b in v.items() if b is not None}
        elif isinstance(v, list):
            out[k] = [{a: b for a, b in t.items() if b is not None} for t in v]
    return out


async def configs(ctx: Context) -> list[Row]:
    p = ctx.profile
    name = "config fuzz"
    world = await make_world(ctx, stores=1)
    daemon = Daemon(ctx, world, "cfgfuzz", subscribe=False)
    rng = random.Random(61)
    outcome: Counter[str] = Counter()
    crashes: list[str] = []
    cli_bad = 0
    try:
        await daemon.start()
        base = _clean(daemon.config_data())
        texts: list[str] = []
        for i in range(p.config_fuzz):
            text = _mutate_config(rng, base)
            texts.append(text)
            path = ctx.workdir / "cfgfuzz-one.toml"
            path.write_text(text)
            try:
                load_config(path, env={})
                outcome["valid"] += 1
            except ConfigError:
                outcome["ConfigError"] += 1
            except Exception as exc:  # the finding: anything else is a crash
                outcome[f"crash:{type(exc).__name__}"] += 1
                if len(crashes) < 5:
                    crashes.append(f"{type(exc).__name__}: {exc!s:.120}")
            if i % 100 == 0:
                await asyncio.sleep(0)
        for text in texts[: p.config_fuzz_cli]:
            path = ctx.workdir / "cfgfuzz-cli.toml"
            path.write_text(text)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "katsyncd",
                "--config",
                str(path),
                "check-config",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate()
            if proc.returncode not in (0, 2) or b"Traceback" in out:
                cli_bad += 1
            daemon.write_config(text=text)
            daemon.send(signal.SIGHUP)
            await asyncio.sleep(0.5)
        daemon.write_config()
        daemon.send(signal.SIGHUP)
        await asyncio.sleep(0.5)
        alive = daemon.alive() and await daemon.healthy()
        ctx.say(name, f"{dict(outcome)}; check-config bad exits {cli_bad}; alive {alive}")
    finally:
        await daemon.stop()
        await world.stop()
    crashed = sum(n for k, n in outcome.items() if k.startswith("crash"))
    return [
        Row(
            name,
            "configs loaded (valid / refused)",
            p.config_fuzz,
            note=f"{outcome['valid']} valid, {outcome['ConfigError']} refused",
        ),
        zero("crashes (anything but ConfigError)", name, crashed),
        Row(
            name,
            "check-config runs: exit not 0/2 or traceback",
            cli_bad,
            "",
            Expect(0, equal=True),
            True,
            note=f"of {p.config_fuzz_cli}",
        ),
        Row(
            name,
            "daemon alive after SIGHUP with fuzzed configs",
            float(alive),
            "",
            Expect(1, equal=True),
            True,
        ),
    ] + ([] if not crashes else [Row(name, "first crash", None, note=crashes[0])])

"""Webhook load generator, run in its own process so it never shares a CPU budget with the
system under test's event loop.

``python -m bench.loadgen --url URL --token T --bodies FILE --seconds S --connections C
[--tool python|wrk]`` reads one JSON body per line, signs each with the webhook token
(HMAC-SHA256, hex, ``x-sha2-signature``, computed before the clock starts), sends them round
robin over C keep-alive connections for S seconds, and prints one JSON line: requests, 2xx,
non-2xx, errors, acknowledged per second and ack-time percentiles in ms.

``--tool wrk`` drives Debian's ``wrk`` (C, far lighter than any Python client) with a Lua
script that replays the pre-signed requests; ``python`` is an aiohttp client.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp


@dataclass(frozen=True, slots=True)
class LoadResult:
    tool: str
    seconds: float
    connections: int
    requests: int
    ok: int  # 2xx
    non_2xx: int
    errors: int  # connection errors, timeouts
    ok_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def sign(token: str, body: bytes) -> str:
    return hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# ----- the Python client --------------------------------------------------------------------


async def _worker(
    session: aiohttp.ClientSession,
    url: str,
    requests: Sequence[tuple[bytes, str]],
    start_at: int,
    stride: int,
    deadline: float,
    latencies: list[float],
    statuses: Counter[int],
) -> None:
    k = start_at
    while time.monotonic() < deadline:
        body, signature = requests[k % len(requests)]
        k += stride
        headers = {"Content-Type": "application/json", "x-sha2-signature": signature}
        t0 = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            status = 0
        latencies.append(time.perf_counter() - t0)
        statuses[status] += 1


async def run_python(
    url: str, requests: Sequence[tuple[bytes, str]], seconds: float, connections: int
) -> LoadResult:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(
            *(
                _worker(session, url, requests, i, connections, deadline, latencies, statuses)
                for i in range(connections)
            )
        )
        elapsed = time.monotonic() - started
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    lat = sorted(latencies)
    return LoadResult(
        tool="python",
        seconds=round(elapsed, 3),
        connections=connections,
        requests=len(lat),
        ok=ok,
        non_2xx=sum(n for s, n in statuses.items() if s and not 200 <= s < 300),
        errors=statuses.get(0, 0),
        ok_per_second=round(ok / elapsed, 1),
        p50_ms=round(percentile(lat, 50) * 1000, 2),
        p99_ms=round(percentile(lat, 99) * 1000, 2),
        max_ms=round((lat[-1] if lat else float("nan")) * 1000, 2),
    )


# ----- wrk ------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
local reqs = {}
local n = 0
init = function(args)
  for line in io.lines(args[2]) do
    local tab = string.find(line, "\t", 1, true)
    n = n + 1
    reqs[n] = wrk.format("POST", args[1], {
      ["Content-Type"] = "application/json",
      ["x-sha2-signature"] = string.sub(line, 1, tab - 1),
    }, string.sub(line, tab + 1))
  end
end
local i = 0
request = function()
  i = i % n + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"non_2xx":%d,"errors":%d,' ..
    '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def run_wrk(
    url: str, requests: Sequence[tuple[bytes, str]], seconds: float, connections: int
) -> LoadResult:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with tempfile.TemporaryDirectory(prefix="katsyncd-wrk-") as tmp:
        data = Path(tmp) / "requests.tsv"
        data.write_bytes(b"".join(sig.encode() + b"\t" + body + b"\n" for body, sig in requests))
        script = Path(tmp) / "signed.lua"
        script.write_text(WRK_SCRIPT)
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{parts.scheme}://{parts.netloc}",
            "--",
            parts.path,
            str(data),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(li for li in out.splitlines() if li.startswith("WRKJSON "))
    w = json.loads(line[len("WRKJSON ") :])
    elapsed = w["duration_us"] / 1e6
    ok = w["requests"] - w["non_2xx"]
    return LoadResult(
        tool="wrk",
        seconds=round(elapsed, 3),
        connections=connections,
        requests=w["requests"],
        ok=ok,
        non_2xx=w["non_2xx"],
        errors=w["errors"],
        ok_per_second=round(ok / elapsed, 1),
        p50_ms=round(w["p50_us"] / 1000, 2),
        p99_ms=round(w["p99_us"] / 1000, 2),
        max_ms=round(w["max_us"] / 1000, 2),
    )


def pick_tool(tool: str) -> str:
    if tool == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    return tool


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True, help="Katana webhook token (HMAC key)")
    p.add_argument("--bodies", required=True, help="file with one JSON body per line")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--tool", choices=("auto", "python", "wrk"), default="auto")
    args = p.parse_args(argv)
    bodies = [line for line in Path(args.bodies).read_bytes().splitlines() if line.strip()]
    requests = [(b, sign(args.token, b)) for b in bodies]
    tool = pick_tool(args.tool)
    if tool == "wrk":
        result = run_wrk(args.url, requests, args.seconds, args.connections)
    else:
        result = asyncio.run(run_python(args.url, requests, args.seconds, args.connections))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

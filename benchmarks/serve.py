"""``aft serve`` overhead and memory: the same graph through HTTP vs called directly.

Width 4, depth 1 against our fixed-latency fault server. 64 concurrent clients send
requests through ``aft serve`` (default settings) with the real ``openai`` client; the
baseline is 64 concurrent ``AggregateGraph.ainvoke`` calls in one process. The two are
alternated; p50 and p99 latency per request are compared (goal: p50 ratio <= 1.05, no
errors). Then 1,000 requests in a row measure the server's RSS growth (goal < 50 MB).

    python benchmarks/serve.py [--delay 0.2] [--rounds 4] [--sequential 1000]

Results go to ``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import psutil

from aft_sdk import AggregateGraph
from aft_sdk.testing import LocalServer

RESULTS = Path(__file__).parent / "results"
CLIENTS = 64
QUESTION = [{"role": "user", "content": "Explain why the sky is blue."}]


@contextmanager
def fault_process(delay: float, **attrs: object) -> Iterator[str]:
    """Our fault server in a process of its own (its threads must not share the GIL
    with the clients or the in-process baseline), with ``attrs`` set on it (``fail_rate``,
    ...); yields its base URL."""
    code = ("import sys, time\nfrom aft_sdk.testing import FaultServer\n"
            f"srv = FaultServer(delay_s={delay})\n"
            + "".join(f"srv.{k} = {v!r}\n" for k, v in attrs.items())
            + "srv.start()\nprint(srv.base_url, flush=True)\ntime.sleep(10**6)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.kill()
        proc.wait()


def write_config(folder: Path, base_url: str, name: str = "bench", width: int = 4) -> Path:
    """A graph config (``width`` x 1, backend defaults) on the fault server at ``base_url``."""
    path = folder / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nwidth: {width}\ndepth: 1\n"
        f"proposers:\n  - {{type: openai, model: p, base_url: '{base_url}'}}\n"
        f"aggregator:\n  - {{type: openai, model: a, base_url: '{base_url}'}}\n")
    return path


def machine() -> dict:
    """Where and when a benchmark ran (every result file carries it)."""
    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": psutil.cpu_count(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}


async def timed_many(call, rounds: int, failures: list[str] | None = None
                     ) -> tuple[list[float], int]:
    """``CLIENTS`` workers, each making ``rounds`` calls in a row; latencies and errors
    (what each failure said goes to ``failures`` where given)."""
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in range(rounds):
            t0 = time.perf_counter()
            try:
                await call()
            except Exception as e:  # noqa: BLE001 - any failure counts as an error here
                errors += 1
                if failures is not None:
                    failures.append(f"{type(e).__name__}: {e}"[:200])
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return latencies, errors


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def overhead(server: LocalServer, graph: AggregateGraph, rounds: int) -> dict:
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="none")

    async def via_http() -> None:
        await client.chat.completions.create(model="bench", messages=QUESTION)

    async def direct() -> None:
        await graph.ainvoke(QUESTION)

    await timed_many(via_http, 1)  # warm both paths
    await timed_many(direct, 1)
    served, base, errors = [], [], {"serve": 0, "direct": 0}
    for _ in range(2):  # alternate so drift hits both alike
        lat, err = await timed_many(via_http, rounds)
        served += lat
        errors["serve"] += err
        lat, err = await timed_many(direct, rounds)
        base += lat
        errors["direct"] += err
    await client.close()
    return {
        "requests_each": len(served) + errors["serve"], "errors": errors,
        "serve_p50_s": round(statistics.median(served), 4), "serve_p99_s": round(pct(served, 0.99), 4),
        "direct_p50_s": round(statistics.median(base), 4), "direct_p99_s": round(pct(base, 0.99), 4),
        "p50_ratio": round(statistics.median(served) / statistics.median(base), 4),
        "p99_ratio": round(pct(served, 0.99) / pct(base, 0.99), 4),
        "target_p50_ratio": 1.05,
    }


def memory(server: LocalServer, count: int) -> dict:
    proc = psutil.Process(server.proc.pid)
    client = openai.OpenAI(base_url=server.base_url, api_key="none")
    for _ in range(20):  # warm-up: imports, pools, caches
        client.chat.completions.create(model="bench", messages=QUESTION)
    before = proc.memory_info().rss
    errors = 0
    for _ in range(count):
        try:
            client.chat.completions.create(model="bench", messages=QUESTION)
        except openai.OpenAIError:
            errors += 1
    after = proc.memory_info().rss
    return {"requests": count, "errors": errors, "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "rss_growth_mb": round((after - before) / 2**20, 1), "target_growth_mb": 50}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--delay", type=float, default=0.2, help="fault server delay per call (s)")
    ap.add_argument("--rounds", type=int, default=4, help="requests per client per pass")
    ap.add_argument("--sequential", type=int, default=1000, help="requests for the RSS check")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with fault_process(args.delay) as url, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), url)
        with LocalServer.aft_serve([config]) as server:  # default serve settings
            graph = AggregateGraph.from_config(config)
            res = asyncio.run(overhead(server, graph, args.rounds))
            res["memory"] = memory(server, args.sequential)
    res.update(clients=CLIENTS, width=4, depth=1, server_delay_s=args.delay,
               settings="aft serve defaults",
               env=machine())
    (RESULTS / "serve.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

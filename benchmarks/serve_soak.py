"""``aft serve`` soak: unfriendly clients and a hostile upstream, then nothing may be left over.

``aft serve`` runs with its defaults (a width 3, depth 1 graph, backend defaults) in front of our fault
server, which fails or sends malformed data on a fifth of its calls (500, a non-JSON body,
a numeric ``model``, ``usage.completion_tokens: "x"``, a broken SSE line, a stream with no
finish reason) and streams its answers a word at a time. 32 concurrent clients send
2,000 requests; a third stream, and of those half leave at a random moment (before the
first byte or mid-stream). A third of the requests go to ``/v1/responses`` (the
Responses API), the rest to ``/v1/chat/completions``. Every answer a client reads to the
end is checked: a JSON body (a completion, a response or an OpenAI-style error), or a
stream that ends as its format ends (``[DONE]``; ``response.completed``,
``response.incomplete`` or ``response.failed``).

Goals: ``/health`` reports ``active_runs: 0`` at the end, no 5xx without a JSON error
body, no stream without ``[DONE]``, RSS growth under 10 MB after a warm-up.

    python benchmarks/serve_soak.py [--requests 2000] [--clients 32]

Results: ``benchmarks/results/serve_soak.json`` and ``serve_soak.png`` (RSS over the run).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).parent))
from serve import RESULTS, fault_process, machine, write_config  # noqa: E402

from aft_sdk.testing import LocalServer  # noqa: E402

HOSTILE = ["500", "malformed", "bad-model", "bad-usage", "broken-sse", "no-finish"]
QUESTION = [{"role": "user", "content": "Explain why the sky is blue."}]
CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.bad: list[str] = []  # answers that break the protocol

    def check_json(self, status: int, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if status == 200 and isinstance(data, dict) and (data.get("choices") or data.get("output")):
            self.outcomes["200"] += 1
        elif isinstance(data, dict) and isinstance(data.get("error"), dict):
            self.outcomes[str(status)] += 1
        else:
            self.bad.append(f"{status} without a JSON body: {body[:120]!r}")

    def check_stream(self, status: int, body: bytes, path: str = CHAT) -> None:
        if status != 200:
            return self.check_json(status, body)
        text = body.decode()
        if path == RESPONSES:
            events = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
            last = events[-1] if events else None
            if last not in ("response.completed", "response.incomplete", "response.failed"):
                self.bad.append(f"responses stream ending in {last!r}: {text[-120:]!r}")
            elif last == "response.failed":
                self.outcomes["responses stream failed event"] += 1
            else:
                self.outcomes["responses stream 200"] += 1
            return
        if not text.rstrip().endswith("data: [DONE]"):
            self.bad.append(f"stream without [DONE]: {text[-120:]!r}")
        elif '"error": {' in text:
            self.outcomes["stream error event"] += 1
        else:
            self.outcomes["stream 200"] += 1


async def one(client: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    stream = rng.random() < 1 / 3
    leave = stream and rng.random() < 0.5
    path = RESPONSES if rng.random() < 1 / 3 else CHAT
    body = {"model": "soak", "stream": stream, **(
        {"input": QUESTION[0]["content"]} if path == RESPONSES else {"messages": QUESTION})}
    tally.outcomes[f"sent to {path}"] += 1
    if not leave:
        r = await client.post(path, json=body)
        if stream:
            tally.check_stream(r.status_code, r.content, path)
        else:
            tally.check_json(r.status_code, r.content)
        return
    tally.outcomes["client left"] += 1
    limit = rng.choice([0, 0, rng.randrange(1, 2000)])  # bytes read before leaving
    try:
        async with asyncio.timeout(rng.uniform(0.01, 0.6)):  # and/or time before leaving
            async with client.stream("POST", path, json=body) as r:
                seen = 0
                async for part in r.aiter_raw():
                    seen += len(part)
                    if seen >= limit:
                        break
    except TimeoutError:
        pass


async def soak(server: LocalServer, requests: int, clients: int, samples: list) -> Tally:
    proc = psutil.Process(server.proc.pid)
    tally, rng, done = Tally(), random.Random(0), 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal done
        # A fresh connection per request: a client that leaves closes its socket.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}",
                                     timeout=60, limits=httpx.Limits(max_keepalive_connections=0)
                                     ) as client:
            while not queue.empty():
                queue.get_nowait()
                await one(client, rng, tally)
                done += 1
                if done % 100 == 0:
                    samples.append((done, proc.memory_info().rss / 2**20))
                    print(f"[soak] {done}/{requests} requests, RSS {samples[-1][1]:.1f} MB",
                          file=sys.stderr, flush=True)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return tally


def active_runs(server: LocalServer, settle_s: float = 5.0) -> int:
    """``active_runs`` once cancelled runs had a moment to unwind."""
    t0 = time.monotonic()
    while True:
        active = httpx.get(f"http://127.0.0.1:{server.port}/health").json()["active_runs"]
        if active == 0 or time.monotonic() - t0 > settle_s:
            return active
        time.sleep(0.1)


def plot(samples: list, warm: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([s[0] for s in samples], [s[1] for s in samples], marker=".")
    ax.axvline(warm, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("requests done")
    ax.set_ylabel("aft serve RSS (MB)")
    ax.set_title("aft serve under a hostile soak")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=200, help="requests before the RSS baseline")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    samples: list[tuple[int, float]] = []
    upstream = dict(fail_rate=0.2, fail_actions=HOSTILE, stream_pause_s=0.02)
    with fault_process(0.01, **upstream) as url, tempfile.TemporaryDirectory() as tmp:
        with LocalServer.aft_serve([write_config(Path(tmp), url, name="soak", width=3)]) as server:  # defaults
            t0 = time.perf_counter()
            tally = asyncio.run(soak(server, args.requests, args.clients, samples))
            wall = time.perf_counter() - t0
            active = active_runs(server)
            rss_end = psutil.Process(server.proc.pid).memory_info().rss / 2**20
    base = next(mb for n, mb in samples if n >= args.warmup)
    res = {
        "requests": args.requests, "clients": args.clients, "wall_s": round(wall, 1),
        "outcomes": dict(tally.outcomes), "protocol_violations": len(tally.bad),
        "violations_sample": tally.bad[:5], "active_runs_at_end": active,
        "rss_after_warmup_mb": round(base, 1), "rss_end_mb": round(rss_end, 1),
        "rss_growth_mb": round(rss_end - base, 1),
        "goals": {"active_runs_at_end": 0, "protocol_violations": 0, "rss_growth_mb_below": 10},
        "passed": active == 0 and not tally.bad and rss_end - base < 10,
        "upstream": {"fail_rate": 0.2, "fail_actions": HOSTILE, "stream_pause_s": 0.02},
        "settings": "aft serve and backend defaults; graph width 3, depth 1; a third of "
                    "requests on /v1/responses",
        "env": machine(),
    }
    (RESULTS / "serve_soak.json").write_text(json.dumps(res, indent=2) + "\n")
    plot(samples, args.warmup, RESULTS / "serve_soak.png")
    print(json.dumps(res, indent=2))
    sys.exit(0 if res["passed"] else 1)


if __name__ == "__main__":
    main()

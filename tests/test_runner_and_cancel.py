"""The shared runner, JSONL I/O, cancellation on interrupt, and the sync bridge."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph, ConfigError, OpenAIBackend, run_batch
from aft_sdk.aio import run_sync
from aft_sdk.errors import ServerError
from aft_sdk.jsonl import append_jsonl, read_ids, read_jsonl
from aft_sdk.runner import RunItem, run_resumable

PACKAGE = Path(__file__).resolve().parents[1] / "aft_sdk"


def _interrupt_after(seconds: float) -> threading.Timer:
    """Sends this process a real SIGINT (Ctrl-C) after ``seconds``."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_jsonl_splits_on_newlines_only(tmp_path) -> None:
    path = tmp_path / "rows.jsonl"
    tricky = "line\u2028separator\u0085next\x1cfile\rreturn"
    append_jsonl(path, {"id": "a", "text": tricky})
    append_jsonl(path, {"id": "b", "text": "plain"})
    assert "\u2028" in path.read_text(encoding="utf-8")  # kept readable, not escaped
    assert [r["text"] for r in read_jsonl(path)] == [tricky, "plain"]
    with path.open("a") as f:
        f.write('{"id": "c", "te')  # a write torn by a kill
    assert read_ids(path) == {"a", "b"}
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_a_batch_answer_with_a_line_separator_survives_reruns(fault, tmp_path) -> None:
    fault.script("p", ["say:first\u2028second"] * 2)
    src = tmp_path / "q.jsonl"
    src.write_text('{"id": "1", "question": "a"}\n{"id": "2", "question": "b"}\n')
    out = tmp_path / "out.jsonl"
    graph = AggregateGraph(OpenAIBackend("p", base_url=fault.base_url), width=1, depth=0)
    assert run_batch(graph, src, out, progress=False).written == 2
    again = run_batch(graph, src, out, progress=False)
    assert (again.skipped, again.written) == (2, 0)
    assert [r["answer"] for r in read_jsonl(out)] == ["first\u2028second"] * 2


async def test_an_unexpected_error_cancels_the_siblings(tmp_path) -> None:
    started, finished = [], []

    async def work(item: RunItem) -> dict:
        started.append(item.id)
        if item.id == "boom":
            await asyncio.sleep(0.05)
            raise ValueError("a bug in user code")
        await asyncio.sleep(2)
        finished.append(item.id)
        return {"v": 1}

    items = [RunItem("boom", None)] + [RunItem(str(i), None) for i in range(5)]
    with pytest.raises(ValueError, match="a bug"):
        await run_resumable(items, work, tmp_path / "o.jsonl", max_concurrency=6, progress=False)
    await asyncio.sleep(0.1)
    assert len(started) == 6 and finished == []
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").read_text() == ""


async def test_aft_errors_go_to_the_side_file_and_are_retried(tmp_path) -> None:
    flaky = {"b": 1}  # b fails once, then works

    async def work(item: RunItem) -> dict:
        if flaky.get(item.id):
            flaky[item.id] -= 1
            raise ServerError("flaky", status_code=500)
        return {"ok": True}

    items = [RunItem("a", False), RunItem("b", True), RunItem("a", False)]
    out = tmp_path / "o.jsonl"
    first = await run_resumable(items, work, out, progress=False)
    assert (first.written, first.failed, first.bad_rows) == (1, 1, 1)
    errors = [json.loads(x) for x in Path(first.errors_path).read_text().splitlines()]
    assert {e["id"] for e in errors} == {"a", "b"}  # a: duplicate id, b: the failure
    second = await run_resumable(items, work, out, progress=False)
    assert (second.written, second.skipped, second.failed) == (1, 1, 0)
    assert sorted(read_ids(out)) == ["a", "b"]


@pytest.mark.needs("embedded")
def test_ctrl_c_cancels_a_batch_and_a_rerun_writes_no_id_twice(fault, tmp_path) -> None:
    fault.delay_s = 0.4
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "question": f"q{i}"}) + "\n"
                           for i in range(12)))
    out = tmp_path / "out.jsonl"
    graph = AggregateGraph(OpenAIBackend("p", base_url=fault.base_url), width=2, depth=0)
    timer = _interrupt_after(0.6)
    with pytest.raises(KeyboardInterrupt):
        run_batch(graph, src, out, max_concurrency=3, progress=False)
    timer.join()
    sent = fault.count()
    time.sleep(1.2)
    assert fault.count() == sent, "requests kept going out after Ctrl-C"
    assert sum(fault.in_flight.values()) == 0
    written = len(read_ids(out))
    assert written < 12
    summary = run_batch(graph, src, out, max_concurrency=3, progress=False)
    assert summary.skipped == written and summary.written == 12 - written
    ids = [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 12


def test_a_sync_twin_inside_the_sync_loop_raises_instead_of_hanging(fault) -> None:
    backend = OpenAIBackend("p", base_url=fault.base_url)

    async def verifier() -> None:
        backend.generate_sync("nested call")

    with pytest.raises(ConfigError, match="await its async twin"):
        run_sync(verifier())


def test_graph_and_server_timeouts_run_in_the_callers_task() -> None:
    # asyncio.wait_for runs an async generator's __anext__ in a task of its own; closing
    # the generator after a cancel then fails ("already running") and leaked run slots
    # in aft serve. The graph and the server time out with asyncio.timeout instead.
    offenders = []
    for folder in ("graphs", "serve"):
        for path in (PACKAGE / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Attribute) and node.attr == "wait_for"
                        and isinstance(node.value, ast.Name) and node.value.id == "asyncio"):
                    offenders.append(f"{folder}/{path.name}:{node.lineno}")
    assert offenders == []

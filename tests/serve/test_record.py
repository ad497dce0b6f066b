"""``aft serve --record``: a real server recording the runs it answers, feedback on them,
and the records read back as training rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")

import httpx  # noqa: E402

from aft_sdk.record import Recorder  # noqa: E402
from aft_sdk.testing import LocalServer  # noqa: E402

KEY = "record-test-key-3"
UPSTREAM_KEY = "upstream-planted-key-8"


def _config(folder: Path, base_url: str) -> Path:
    path = folder / "pa.yaml"
    path.write_text("\n".join([
        "name: pa", "width: 2", "depth: 1", "proposers:",
        f"  - {{type: openai, model: p, base_url: '{base_url}', max_retries: 0}}",
        "aggregator:",
        f"  - {{type: openai, model: a, base_url: '{base_url}', api_key: {UPSTREAM_KEY}, "
        "max_retries: 0, price: {input: 1.0, output: 2.0}}"]) + "\n")
    return path


def _rows(folder: Path, pattern: str = "runs-*.jsonl") -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob(pattern))
            for line in p.read_text().splitlines()]


def _wait_rows(folder: Path, count: int, pattern: str = "runs-*.jsonl") -> list[dict]:
    end = time.monotonic() + 15
    while (rows := _rows(folder, pattern)) and len(rows) < count or not rows:
        if time.monotonic() > end:
            raise AssertionError(f"{len(rows)} rows written, wanted {count}")
        time.sleep(0.05)
    return rows


def test_served_runs_are_recorded_and_take_feedback(fault_server, tmp_path) -> None:
    fault_server.reset()
    fault_server.delay_s = 0.0
    records = tmp_path / "records"
    with LocalServer.aft_serve(
            [_config(tmp_path, fault_server.base_url)], env={"AFT_TEST_KEYS": KEY},
            extra_args=["--api-key-env", "AFT_TEST_KEYS", "--record", str(records),
                        "--record-skip-header", "x-no-record"]) as served:
        c = openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0)
        ask = [{"role": "user", "content": "What is the capital of Peru?"}]
        plain = c.chat.completions.create(model="pa", messages=ask)
        two = c.chat.completions.create(model="pa", messages=ask, n=2)
        streamed = c.responses.create(model="pa", input="Name a river.", stream=True)
        events = list(streamed)
        done = next(e for e in events if e.type == "response.completed").response
        # Opted out by the request, and by the header the operator named.
        c.chat.completions.create(model="pa", messages=ask, extra_body={"record": False})
        c.chat.completions.create(model="pa", messages=ask,
                                  extra_headers={"x-no-record": "1"})
        # One writer keeps the order: once a later run's row is in, an opted-out row
        # would be in before it.
        marker = c.chat.completions.create(model="pa", messages=ask)
        rows = _wait_rows(records, 5)
        assert [(r["id"], r["choice"]) for r in rows] == [
            (plain.id, 0), (two.id, 0), (two.id, 1), (done.id, 0), (marker.id, 0)]
        rows = rows[:4]
        first = rows[0]
        assert first["record"] == "aft.record/1" and first["model"] == "pa"
        assert first["route"] == "/v1/chat/completions"
        assert first["answer"] == plain.choices[0].message.content
        assert first["result"]["usage"]["total_tokens"] == plain.usage.total_tokens
        assert [o["backend"] for o in first["result"]["layers"][0]["outputs"]] == \
            [f"openai:p@{fault_server.base_url}"] * 2
        assert first["cost_usd"] is None  # the proposer has no price: unknown, not 0
        assert first["config"]["name"] == "pa" and len(first["config"]["sha256"]) == 64
        assert len({r["config"]["sha256"] for r in rows}) == 1
        assert rows[3]["answer"] == done.output_text and rows[3]["route"] == "/v1/responses"

        feedback = served.base_url + "/feedback"
        auth = {"Authorization": f"Bearer {KEY}"}
        ok = httpx.post(feedback, headers=auth, json={"id": plain.id, "score": 0.5,
                                                      "better_answer": "Lima.",
                                                      "reference": "Lima"})
        assert ok.status_code == 200 and ok.json()["id"] == plain.id
        unknown = httpx.post(feedback, headers=auth, json={"id": "chatcmpl-nope", "score": 1})
        assert unknown.status_code == 404 and "chatcmpl-nope" in unknown.json()["error"]["message"]
        bad = httpx.post(feedback, headers=auth, json={"id": plain.id, "score": "great"})
        assert bad.status_code == 400 and "finite number" in bad.json()["error"]["message"]
        empty = httpx.post(feedback, headers=auth, json={"id": plain.id})
        assert empty.status_code == 400 and "at least one" in empty.json()["error"]["message"]
        assert httpx.post(feedback, json={"id": plain.id, "score": 1}).status_code == 401
        (fb,) = _wait_rows(records, 1, "feedback-*.jsonl")
        assert (fb["id"], fb["score"], fb["better_answer"], fb["reference"]) == \
            (plain.id, 0.5, "Lima.", "Lima")
    # Nothing secret in any file the recording wrote.
    written = "".join(p.read_text() for p in records.iterdir())
    assert KEY not in written and UPSTREAM_KEY not in written
    # The records are training rows as they are (layer 0 the proposals, the answer the
    # target; the user's better answer where feedback gave one).
    out = tmp_path / "rows.jsonl"
    r = subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", "data", "build", "records",
                        str(records), "-o", str(out)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    built = [json.loads(x) for x in out.read_text().splitlines()]
    # Writing the rows over a recorded file is refused, and the file is left as it was.
    recorded = sorted(records.glob("runs-*.jsonl"))[0]
    before = recorded.read_bytes()
    r = subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", "data", "build", "records",
                        str(records), "-o", str(recorded)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "is also the input" in r.stderr
    assert recorded.read_bytes() == before
    assert len(built) == 5 and all(len(b["proposals"]) == 2 for b in built)
    assert built[0]["target"] == "Lima." and built[1]["target"] == two.choices[0].message.content
    fault_server.reset()


def test_a_run_in_flight_at_sigterm_is_recorded(fault_server, tmp_path) -> None:
    fault_server.reset()
    records = tmp_path / "records"
    server = LocalServer.aft_serve([_config(tmp_path, fault_server.base_url)],
                                   extra_args=["--record", str(records)])
    answers = []
    try:
        with server:
            fault_server.delay_s = 1.0
            c = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
            t = threading.Thread(target=lambda: answers.append(c.chat.completions.create(
                model="pa", messages=[{"role": "user", "content": "slow one"}])))
            t.start()
            end = time.monotonic() + 30
            while fault_server.count("p") < 2:  # the request is in its proposal layer now
                assert time.monotonic() < end, "the request never reached the upstream"
                time.sleep(0.02)
            os.killpg(server.proc.pid, signal.SIGTERM)
            t.join(timeout=20)
            server.proc.wait(timeout=20)
    finally:
        fault_server.delay_s = 0.0
    assert answers, "the run in flight was not answered"
    (row,) = _rows(records)
    assert row["id"] == answers[0].id and row["answer"] == answers[0].choices[0].message.content


def test_the_folder_bound_stops_recording_with_a_warning(tmp_path, caplog) -> None:
    rec = Recorder(tmp_path, max_bytes=400, max_file_bytes=200)
    with caplog.at_level("WARNING"):
        for i in range(6):
            rec._put("runs", {"id": f"r{i}", "pad": "x" * 60})
        rec.close()
    assert 1 <= rec.written < 6 and rec.dropped == 6 - rec.written
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 400
    assert len(list(tmp_path.glob("runs-*.jsonl"))) >= 2  # rotated past 200 bytes
    assert "recording paused" in caplog.text and "--record-max-bytes" in caplog.text


def test_results_recorded_from_python_take_feedback_and_become_rows(fault, tmp_path) -> None:
    from aft_sdk import AggregateGraph
    from aft_sdk.trainers import record_rows

    graph = AggregateGraph(fault.backend("p"), fault.backend("a"), width=3)
    rec = Recorder(tmp_path)
    ids = [rec.add(graph.invoke(q), model="qa", config=graph.config)
           for q in ("first question", "second question")]
    rec.feedback(ids[1], score=1.0, better_answer="A better one.")
    with pytest.raises(KeyError):
        rec.feedback("run-unknown", score=0.0)
    rec.close()
    rows = list(record_rows(tmp_path, min_score=0.5, width=2))
    assert [r.id for r in rows] == [ids[1]] and rows[0].target == "A better one."
    assert len(rows[0].proposals) == 2 and rows[0].meta["target_from"] == "feedback"
    everything = list(record_rows(tmp_path))
    assert [r.id for r in everything] == ids and everything[0].meta["config"]["name"] == "qa"
    assert [r.id for r in record_rows(tmp_path, config="other")] == []
    again = Recorder(tmp_path)  # a new process finds the folder's ids
    assert again.knows(ids[0])
    again.close()


def test_a_graph_and_a_batch_record_their_runs(fault, tmp_path) -> None:
    from aft_sdk import AggregateGraph, run_batch
    from aft_sdk.errors import ConfigError
    from aft_sdk.trainers import record_rows

    folder = tmp_path / "graph"
    graph = AggregateGraph(fault.backend("p"), fault.backend("a"), width=2, name="small",
                           record=folder)
    first = graph.invoke("What is two plus two?")
    events = list(graph.with_options(width=3).stream("Name a colour."))  # keeps record=
    streamed = events[-1]["result"]
    both = graph.batch(["One?", "Two?"])
    graph.recorder.feedback(first, score=1.0, reference="4")  # the result names its row
    graph.recorder.flush()
    rows = _rows(folder)
    assert [r["id"] for r in rows[:2]] == [first.record_id, streamed.record_id]
    assert {r["id"] for r in rows[2:]} == {x.record_id for x in both} and len(rows) == 4
    assert rows[0]["answer"] == first.answer and rows[0]["config"]["name"] == "small"
    assert rows[0]["route"] == "python" and len(rows[1]["result"]["layers"][0]["outputs"]) == 3
    assert len({r["config"]["sha256"] for r in rows}) == 2  # width 3 is another setup
    # GRPO rows: the runs with a reference only, the reference their target, the served
    # answer's reward beside it (the fault server's answer is not "4").
    (grpo,) = record_rows(folder, reward="number")
    assert (grpo.id, grpo.target, grpo.meta["reward"]) == (first.record_id, "4", 0.0)
    assert grpo.meta["target_from"] == "reference"
    with pytest.raises(KeyError):
        graph.recorder.feedback("run-unknown", score=1.0)

    batch_dir = tmp_path / "batch"
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "First?"}\n{"id": "b", "question": "Second?"}\n')
    plain = AggregateGraph(fault.backend("p"), fault.backend("a"), width=2)
    summary = run_batch(plain, questions, tmp_path / "out.jsonl", record=batch_dir,
                        progress=False)
    out = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()}
    rows = _rows(batch_dir)  # written when run_batch returns
    assert summary.written == 2 and len(rows) == 2 and {r["route"] for r in rows} == {"batch"}
    assert sorted(r["answer"] for r in rows) == sorted(o["answer"] for o in out.values())
    with pytest.raises(ConfigError, match="records its runs already"):
        run_batch(graph, questions, tmp_path / "again.jsonl", record=batch_dir, progress=False)
    with pytest.raises(ConfigError, match="folder or a Recorder"):
        AggregateGraph(fault.backend("p"), record=3)

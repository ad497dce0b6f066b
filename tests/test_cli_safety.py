"""The CLI never loses a user's file: real ``aft`` processes on real files, our fault
server as the backend. Outputs are checked before anything touches them, a second
writer is refused, failures are not results, user errors are one line and exit 2."""

from __future__ import annotations

import concurrent.futures

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

AFT = [sys.executable, "-m", "aft_sdk.cli.main"]
DATA = Path(__file__).parent / "data" / "multi_response.jsonl"


def aft(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*AFT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def questions(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"question {i}"}) + "\n"
                            for i in range(n)))
    return path


def graph_flags(fault) -> list[str]:
    return ["--width", "2", "--proposer", f"{fault.base_url}#p",
            "--aggregator", f"{fault.base_url}#a", "--no-progress"]


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, one ``error:`` line on stderr, no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def test_the_errors_file_cannot_be_the_output(fault, tmp_path) -> None:
    src, out = questions(tmp_path / "q.jsonl", 3), tmp_path / "out.jsonl"
    assert aft("batch", src, "-o", out, *graph_flags(fault)).returncode == 0
    before = out.read_bytes()
    r = aft("batch", src, "-o", out, "--errors", out, *graph_flags(fault))
    one_line_error(r, "is also the errors file")
    assert out.read_bytes() == before and len(ids(out)) == 3


@pytest.mark.parametrize("content", [b"a\nmy last line", b"my only line", b"notes\n"])
def test_a_file_we_did_not_write_is_refused_untouched(fault, tmp_path, content) -> None:
    src, notes = questions(tmp_path / "q.jsonl", 2), tmp_path / "notes.txt"
    notes.write_bytes(content)
    r = aft("batch", src, "-o", notes, *graph_flags(fault))
    one_line_error(r, "not a result row", "Nothing was changed")
    assert notes.read_bytes() == content and fault.count() == 0


def test_the_input_is_never_the_output(fault, tmp_path) -> None:
    src = questions(tmp_path / "q.jsonl", 3)
    before = src.read_bytes()
    one_line_error(aft("batch", src, "-o", src, *graph_flags(fault)), "is also the input")
    assert src.read_bytes() == before and fault.count() == 0
    data = tmp_path / "src.jsonl"
    data.write_bytes(DATA.read_bytes())
    one_line_error(aft("data", "build", "off-policy", data, "-o", data, "--no-progress"),
                   "is also the input")
    assert data.read_bytes() == DATA.read_bytes()


def test_a_second_writer_on_the_same_output_fails_at_once(fault, tmp_path) -> None:
    # Slow enough answers that the first writer is still writing when the second `aft`
    # has started (about 5 s to import on a loaded 2-core machine).
    fault.delay_s = 1.0
    src, out = questions(tmp_path / "q.jsonl", 20), tmp_path / "out.jsonl"
    cmd = [*AFT, "batch", str(src), "-o", str(out), "--concurrency", "2", *graph_flags(fault)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out.exists() and ids(out)) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    one_line_error(second, "is being written by process", str(first.pid))
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert sorted(ids(out)) == sorted(f"q{i}" for i in range(20))  # each id once


def test_rows_in_the_input_that_cannot_be_run_are_bad_rows(fault, tmp_path) -> None:
    src, out = tmp_path / "q.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b'{"id": null, "question": "a"}\n'
                    b'{"id": 1, "question": "b"}\n'
                    b'{"id": "1", "question": "c"}\n'
                    b'{"id": "u", "question": "caf\xe9"}\n'
                    b'{"id": "ok", "question": "d"}\n')
    r = aft("batch", src, "-o", out, *graph_flags(fault))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert sorted(ids(out)) == ["1", "ok"]
    errors = [json.loads(x) for x in (tmp_path / "out.jsonl.errors.jsonl").read_text().splitlines()]
    by_line = {e["line"]: e["error"] for e in errors}
    assert "'id' must be a non-empty string or an integer" in by_line[1]
    assert "duplicate id '1'" in by_line[3] and "not valid JSON" in by_line[4]


def test_a_resumed_batch_warns_when_the_question_under_an_id_changed(fault, tmp_path) -> None:
    src, out = questions(tmp_path / "q.jsonl", 3), tmp_path / "out.jsonl"
    assert aft("batch", src, "-o", out, *graph_flags(fault)).returncode == 0
    src.write_text(src.read_text().replace("question 1", "another question"))
    r = aft("batch", src, "-o", out, *graph_flags(fault))
    assert r.returncode == 0 and "3 already done" in r.stderr
    assert "warning: 1 ids already in" in r.stderr and "different question" in r.stderr


def test_eval_refuses_bad_method_specs_and_fails_when_a_method_never_worked(
        fault, tmp_path) -> None:
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(x) + "\n" for x in [
        {"id": "a", "question": "1+1?", "answer": "2"},
        {"id": "b", "question": "2+2?", "answer": ""},
        {"id": "c", "question": "3+3?", "answer": None}]))
    flags = ["--proposer", f"{fault.base_url}#p", "--aggregator", f"{fault.base_url}#a",
             "--no-progress"]
    for spec in ("sc:0", "pa:3x", "pa:1000x1"):
        one_line_error(aft("eval", "exact_match", data, "-o", tmp_path / spec.replace(":", "_"),
                           "--methods", spec, *flags), f"bad method spec '{spec}'")
    fault.script("p", ["say:The answer is 2."])
    r = aft("eval", "exact_match", data, "-o", tmp_path / "ok", "--methods", "single", *flags)
    assert r.returncode == 0, r.stderr
    table = json.loads((tmp_path / "ok" / "table.json").read_text())["rows"][0]
    assert table["items"] == 1 and table["score"] == 1.0  # the empty answers are not items
    bad = (tmp_path / "ok" / "runs" / "single.jsonl.errors.jsonl").read_text()
    assert "'answer' is empty" in bad and '"id": "b"' in bad and '"id": "c"' in bad
    fault.script("p", ["500"] * 10)
    r = aft("eval", "exact_match", data, "-o", tmp_path / "failing", "--methods", "single",
            "--proposer", f"{fault.base_url}#p", "--no-progress")
    assert r.returncode == 1 and "single failed on every item" in r.stderr


@pytest.mark.needs("train")
def test_every_documented_user_error_is_one_line_and_exit_2(fault, tmp_path) -> None:
    src = questions(tmp_path / "q.jsonl", 2)
    folder = tmp_path / "folder"
    folder.mkdir()
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"id": "a", "question": "caf\xe9", "answer": "1"}\n')
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "q", "completions": []}\n{oops\n')
    not_a_folder = tmp_path / "table.txt"
    not_a_folder.write_text("mine\n")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("width: [3\n")
    g = graph_flags(fault)
    cases = [
        (["batch", src, "-o", folder, *g], "is a directory"),
        (["batch", src, "-o", tmp_path / "new" / "out.jsonl", "--errors",
          tmp_path / "missing" / "e.jsonl", *g], None),  # folders are made: exit 0
        (["batch", tmp_path / "none.jsonl", "-o", tmp_path / "o.jsonl", *g], "input file not found"),
        (["run", "q", "--template-file", tmp_path / "none.txt", *g[:-1]], "--template-file"),
        (["run", "q", "--config", bad_yaml], "bad.yaml"),
        (["data", "build", "off-policy", broken, "-o", tmp_path / "rows.jsonl"], "line 2"),
        (["data", "build", "traces", broken, "-o", tmp_path / "rows.jsonl"], "trace 1"),
        (["data", "build", "on-policy", src, "-o", tmp_path / "rows.jsonl", "--sft-ratio",
          "0.5", "--proposer", f"{fault.base_url}#p"], "--sft-ratio applies to off-policy"),
        (["eval", "exact_match", src, "-o", not_a_folder, "--proposer", f"{fault.base_url}#p"],
         "is a file"),
        (["eval", "exact_match", latin1, "-o", tmp_path / "ev"], "line 1"),
        (["serve", "--config", bad_yaml, "--port", "99999"], "--port 99999 is not a TCP port"),
        (["generate", "q", "--backend", "nope:x"], "nope:x"),
        (["train", "--config", bad_yaml], "bad.yaml"),
        (["train", "--model_name_or_path", "embedded", "--dataset_path",
          tmp_path / "none.jsonl"], "dataset_path not found"),
    ]
    # Independent commands, two at a time (each start is mostly imports on one core).
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: aft(*case[0]), cases))
    for (argv, needle), r in zip(cases, results):
        if needle is None:
            assert r.returncode == 0, r.stderr
            continue
        one_line_error(r, needle)
    # --skip-bad means the same in every data command: bad lines are counted, not fatal.
    r = aft("data", "build", "traces", broken, "-o", tmp_path / "t.jsonl", "--skip-bad")
    assert r.returncode == 0 and "2 bad records skipped" in r.stderr, r.stderr
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "q", "reference": "r"}\n{oops\n'
                       '{"id": "b", "reference": "no prompt"}\n')
    r = aft("data", "build", "on-policy", prompts, "-o", tmp_path / "op.jsonl", "--skip-bad",
            "--proposer", f"{fault.base_url}#p", "-k", "2", "--no-progress")
    assert r.returncode == 0 and "2 bad records skipped" in r.stderr, r.stderr
    assert ids(tmp_path / "op.jsonl") == ["a"]
    r = aft("--debug", "batch", src, "-o", folder, *g)
    assert r.returncode != 0 and "Traceback" in r.stderr  # --debug keeps the traceback


def test_a_run_that_waits_says_which_layer_it_waits_for(fault) -> None:
    fault.script("a", ["delay:12"])
    r = aft("run", "q", "--width", "1", "--proposer", f"{fault.base_url}#p",
            "--aggregator", f"{fault.base_url}#a", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "[waiting for aggregation layer 1: 10 s so far]" in r.stderr


# -- training: output_dir, resume, Ctrl-C ---------------------------------------------


def test_training_into_an_earlier_run_is_refused_or_replaced(tmp_path) -> None:
    from types import SimpleNamespace

    from aft_sdk.errors import ConfigError
    from aft_sdk.trainers.output_dir import prepare_output_dir

    out = tmp_path / "agg"
    (out / "adapter").mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        (out / name).write_text("x")
    args = SimpleNamespace(output_dir=str(out), resume_from_checkpoint=None,
                           overwrite_output_dir=False)
    with pytest.raises(ConfigError, match="already holds an earlier run"):
        prepare_output_dir(args)
    assert (out / "model.safetensors").exists()
    args.resume_from_checkpoint = "true"
    with pytest.raises(ConfigError, match="there is no checkpoint-N folder"):
        prepare_output_dir(args)
    args.resume_from_checkpoint, args.overwrite_output_dir = None, True
    ckpt, line = prepare_output_dir(args)
    assert ckpt is None and "removed the earlier run's 3 files" in line
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json"]


@pytest.mark.slow
def test_ctrl_c_names_the_checkpoint_and_resume_continues_from_it(gguf_path, tmp_path) -> None:
    rows = tmp_path / "rows.jsonl"
    assert aft("data", "build", "off-policy", DATA, "-o", rows, "-k", "3",
               "--no-progress").returncode == 0
    out = tmp_path / "agg"
    flags = ["--config", Path(__file__).parent.parent / "recipes/configs/train_smollm2_lora.yaml",
             "--dataset_path", rows, "--output_dir", out, "--max_length", "256",
             "--save_strategy", "steps", "--save_steps", "1", "--merge_lora", "false"]
    proc = subprocess.Popen([*AFT, "train", *map(str, flags), "--max_steps", "400"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("checkpoint-2")) and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:  # a run that did not stop is ended, never left training behind the suite
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert "interrupted; the last checkpoint is" in err and "--resume_from_checkpoint true" in err
    # A checkpoint cut off mid-save (no trainer_state.json) is passed over.
    last = max(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*")
               if (p / "trainer_state.json").is_file())
    assert f"the last checkpoint is {out}/checkpoint-{last}:" in err
    first = out / "checkpoint-1" / "trainer_state.json"
    stamp = first.stat().st_mtime_ns
    r = aft("train", *flags, "--max_steps", str(last + 1), "--resume_from_checkpoint", "true",
            timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"aft train: resuming from {out}/checkpoint-{last}" in r.stderr
    state = json.loads((out / f"checkpoint-{last + 1}" / "trainer_state.json").read_text())
    assert state["global_step"] == last + 1 and len(state["log_history"]) >= last + 1
    assert first.stat().st_mtime_ns == stamp  # steps 1..last were not trained again
    assert (out / "adapter").is_dir() and not (out / "model.safetensors").exists()
    r = aft("train", *flags, "--max_steps", "1")  # a fresh run into it: refused
    one_line_error(r, "already holds an earlier run", "--overwrite_output_dir true")


@pytest.mark.slow
def test_a_max_length_below_the_prompt_is_a_clear_error(gguf_path, tmp_path) -> None:
    rows = tmp_path / "rows.jsonl"
    assert aft("data", "build", "off-policy", DATA, "-o", rows, "-k", "3",
               "--no-progress").returncode == 0
    r = aft("train", "--config", Path(__file__).parent.parent / "recipes/configs/train_smollm2_lora.yaml",
            "--dataset_path", rows, "--output_dir", tmp_path / "agg", "--max_length", "24",
            "--max_steps", "1", timeout=600)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]  # after the model's loading progress
    assert last.startswith("error: row fact-0: its prompt alone is about"), last
    assert "not below max_length=24" in last and "raise max_length" in last


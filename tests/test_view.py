"""``aft view``: real runs on our scriptable server, rendered and opened from disk in a
real headless Chromium (no server): every layer, draft, failure and the answer shown,
model text never run as markup, costs never a plain 0 where unknown, and a batch's
index filters, sorts and links to its runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph
from aft_sdk.batch import run_batch
from aft_sdk.errors import ConfigError
from aft_sdk.view import render_run, view
from browser import _browser, severe_logs

AFT = [sys.executable, "-m", "aft_sdk.cli.main"]
HOSTILE = "<script>window.PWNED=1</script> <b>bold</b> claim"
PRICE = {"input": 1.0, "output": 2.0}


@pytest.fixture(scope="module")
def runs(fault_server, tmp_path_factory) -> dict[str, object]:
    """The module's real results and files: a 3x2 run with a failing and a hostile
    draft, an RSA run, and a batch output with one failed row."""
    srv = fault_server
    srv.reset()
    srv.delay_s, srv.honour_n = 0.0, True
    tmp = tmp_path_factory.mktemp("view")
    proposers = [srv.backend(m, price=PRICE) for m in ("p1", "p2", "p3")]
    aggregator = srv.backend("agg", price={"input": 3.0, "output": 6.0})
    srv.script("p2", ["500"])
    srv.script("p3", [f"say:{HOSTILE}"])
    grid = AggregateGraph(proposers, aggregator, width=3, depth=2).invoke("What is 2+2?")
    # RSA: proposals nobody prices, a priced aggregator (the total is a lower bound).
    rsa = AggregateGraph(srv.backend("r"), srv.backend("ragg", price=PRICE), strategy="rsa",
                         width=4, depth=2, rsa={"subset": 2}).invoke("Name a prime.")
    src, out = tmp / "in.jsonl", tmp / "answers.jsonl"
    questions = ["short one", "a much longer question " + "with many more words " * 12,
                 "another short one", "doomed"]
    src.write_text("".join(json.dumps({"id": f"q{i}", "question": q}) + "\n"
                           for i, q in enumerate(questions)))
    graph = AggregateGraph([srv.backend("bp", price=PRICE)], srv.backend("ba", price=PRICE),
                           width=2, depth=1)
    srv.script("bp", ["500", "500"])  # the first row's two drafts: the row fails
    summary = run_batch(graph, src, out, max_concurrency=1, progress=False)
    assert (summary.written, summary.failed) == (3, 1)
    srv.reset()
    return {"grid": grid, "rsa": rsa, "batch": out, "tmp": tmp}


@pytest.fixture(scope="module")
def driver():
    d = _browser(1280, 900)
    yield d
    d.quit()


def _write(result, path: Path) -> Path:
    # What `aft run --json` prints.
    path.write_text(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return view(path)


def _open(driver, page: Path) -> None:
    driver.get(page.resolve().as_uri())
    assert driver.execute_script("return document.readyState") == "complete"


def test_a_run_page_shows_every_layer_draft_failure_and_the_answer(runs, driver) -> None:
    from selenium.webdriver.common.by import By

    grid = runs["grid"]
    page = _write(grid, runs["tmp"] / "grid.json")
    assert page == runs["tmp"] / "grid.html"
    _open(driver, page)
    assert severe_logs(driver) == []
    # Model text is text: the hostile draft did not run and made no element.
    assert driver.execute_script("return window.PWNED === undefined")
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1  # the page's own
    assert driver.find_elements(By.CSS_SELECTOR, ".text b") == []
    answer = driver.find_element(By.ID, "answer-text")
    assert answer.is_displayed() and answer.text == grid.answer
    for layer in grid.layers:
        section = driver.find_element(By.ID, f"layer-{layer.index}")
        assert section.is_displayed()
        for r in layer.outputs:
            card = driver.find_element(By.ID, f"out-{r.layer}-{r.slot}")
            assert card.is_displayed()
            if r.ok:
                text = card.find_element(By.CSS_SELECTOR, ".plain")
                assert text.is_displayed() and text.text == r.text
                assert card.find_element(By.CSS_SELECTOR, ".m-cost").text.startswith("$")
    hostile = driver.find_element(By.ID, "out-0-2").find_element(By.CSS_SELECTOR, ".plain")
    assert hostile.text == HOSTILE
    failed = driver.find_element(By.ID, "out-0-1")
    assert "failed" in failed.get_attribute("class").split()
    error = failed.find_element(By.CSS_SELECTOR, ".error")
    assert error.is_displayed() and "ServerError" in error.text and "500" in error.text
    final = driver.find_element(By.ID, "out-2-0")
    assert "is-answer" in final.get_attribute("class").split()
    facts = driver.find_element(By.ID, "facts").text
    assert "strategy propose-aggregate" in facts and "failures 1" in facts
    assert f"{grid.usage.total_tokens:,}" in facts and "$0" not in facts.replace("$0.", "")
    # The diff view: the hostile draft's words struck, the answer's words added.
    driver.find_element(By.ID, "show-diff").click()
    diff = driver.find_element(By.ID, "out-0-2").find_element(By.CSS_SELECTOR, ".diff")
    assert diff.is_displayed() and not hostile.is_displayed()
    removed = [e.text for e in diff.find_elements(By.CSS_SELECTOR, "del.rm")]
    added = [e.text for e in diff.find_elements(By.CSS_SELECTOR, "ins.add")]
    assert any("<script>" in t for t in removed) and any("answer" in t for t in added)
    assert severe_logs(driver) == []


def test_an_rsa_run_shows_its_populations_reads_and_vote(runs, driver) -> None:
    from selenium.webdriver.common.by import By

    rsa = runs["rsa"]
    assert [layer.kind for layer in rsa.layers][-1] == "majority"
    _open(driver, _write(rsa, runs["tmp"] / "rsa.json"))
    assert severe_logs(driver) == []
    for layer in rsa.layers:
        assert driver.find_element(By.ID, f"layer-{layer.index}").is_displayed()
        for r in layer.outputs:
            assert driver.find_element(By.ID, f"out-{r.layer}-{r.slot}").is_displayed()
    # Each aggregation names the candidates it read; the vote its rule and pick.
    card = driver.find_element(By.ID, "out-1-0")
    reads = rsa.layers[1].outputs[0].prompt["read"]
    assert f"read {', '.join(f'#{s}' for s in reads)}" in card.text
    vote = driver.find_element(By.ID, f"out-{rsa.layers[-1].index}-0")
    assert "rule: majority" in vote.text and "no model call" in vote.text
    assert "is-answer" in vote.get_attribute("class")
    picked = rsa.layers[-1].outputs[0].decision["picked"]
    source = driver.find_element(By.ID, f"out-{rsa.layers[-2].index}-{picked}")
    assert "picked in layer" in source.text
    # Proposals nobody prices: their cost is unknown, the total a lower bound.
    assert driver.find_element(By.ID, "out-0-0").find_element(
        By.CSS_SELECTOR, ".m-cost").text == "unknown"
    facts = driver.find_element(By.ID, "facts").text
    assert "≥ $" in facts and "unknown for: openai:r@" in facts


def test_an_unknown_cost_is_never_shown_as_zero(runs) -> None:
    rsa = runs["rsa"].model_dump(mode="json")
    unpriced = {**rsa, "usage": {**rsa["usage"], "cost_usd": 0.0}}
    html = render_run(unpriced)
    assert "unknown (no price for: openai:r@" in html and "<b>cost</b>$0<" not in html


def test_a_batch_index_filters_sorts_and_links_to_its_runs(runs, driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out = runs["batch"]
    r = subprocess.run([*AFT, "view", str(out), "-o", str(runs["tmp"] / "index.html")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    page = Path(r.stdout.strip())
    assert page == runs["tmp"] / "index.html"
    assert sorted(p.name for p in (runs["tmp"] / "index_runs").iterdir()) == \
        ["0000-q1.html", "0001-q2.html", "0002-q3.html"]
    _open(driver, page)
    assert severe_logs(driver) == []
    rows = driver.find_elements(By.CSS_SELECTOR, "#rows tr")
    assert len(rows) == 4

    def shown() -> list[str]:
        return [row.find_element(By.CSS_SELECTOR, ".id").text
                for row in driver.find_elements(By.CSS_SELECTOR, "#rows tr") if row.is_displayed()]

    failed_row = next(row for row in rows if row.get_attribute("data-status") == "failed")
    assert "InsufficientProposalsError" in failed_row.text
    driver.find_element(By.ID, "failed-only").click()
    assert shown() == ["q0"]
    driver.find_element(By.ID, "failed-only").click()
    # The long question's row costs most; the failed row (no cost) sorts last.
    Select(driver.find_element(By.ID, "sort")).select_by_value("cost")
    assert shown()[0] == "q1" and shown()[-1] == "q0"
    costs = [json.loads(line)["result"]["usage"]["cost_usd"]
             for line in out.read_text().splitlines()]
    assert max(costs) == costs[0] and len(set(costs)) > 1
    driver.find_element(By.ID, "filter").send_keys("another")
    assert shown() == ["q2"]
    driver.find_element(By.ID, "filter").clear()
    driver.find_element(By.ID, "filter").send_keys(" ")  # input event; matches every row
    # A row's link opens its run page, which links back.
    driver.find_element(By.LINK_TEXT, "q1").click()
    assert driver.current_url.endswith("index_runs/0000-q1.html")
    assert driver.find_element(By.ID, "answer-text").is_displayed()
    assert driver.find_element(By.ID, "layer-1").is_displayed()
    assert severe_logs(driver) == []
    driver.find_element(By.ID, "back").click()
    assert driver.current_url.endswith("/index.html")


def test_aft_view_refuses_what_is_not_a_run(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"width": 3}')
    r = subprocess.run([*AFT, "view", str(config)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith(f"error: {config}, line 1: a row with none of 'layers'")
    assert "aft run --json" in r.stderr and "aft batch" in r.stderr
    assert not (tmp_path / "config.html").exists()
    for name, text, says in [("notes.txt", "hello\n", "line 1: not JSON"),
                             ("rows.jsonl", '{"id": 1, "question": "q"}\n', "an input row"),
                             ("list.json", "[1, 2]", "holds JSON that is not a run"),
                             ("bad.json", '{"answer": "a", "layers": 3}', "not a valid run")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError, match=says) as e:
            view(tmp_path / name)
        assert "aft run --json" in str(e.value)
    with pytest.raises(ConfigError, match="not found"):
        view(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="without runs"):
        view(tmp_path)


def test_an_eval_folder_lists_each_method_score_and_failure(fault, tmp_path: Path) -> None:
    pytest.importorskip("math_verify", reason="needs pip install 'aft-sdk[eval]'")
    from aft_sdk.eval import ExactMatchTask, evaluate, parse_method

    items = [{"id": str(i), "question": "What is 2+2?", "answer": "4"} for i in range(3)]
    fault.script("p", ["say:The answer is 4.", "401", "say:The answer is 5."])
    method = parse_method("single", proposers=fault.backend("p"))
    evaluate(ExactMatchTask(items), [method], tmp_path / "ev", progress=False,
             max_concurrency=1, plots=False)
    page = view(tmp_path / "ev")
    assert page == tmp_path / "ev.html"
    html = page.read_text()
    assert 'id="table"' in html and "exact_match" in html  # the comparison table
    assert html.count('class="failed"') == 1 and "AuthenticationError" in html
    assert 'data-score="1.0"' in html and 'data-score="0.0"' in html
    stored = [json.loads(x) for x in (tmp_path / "ev/runs/single.jsonl").read_text().splitlines()]
    linked = (tmp_path / "ev_runs").is_dir()
    assert linked == any("result" in row for row in stored)


def test_tool_calls_and_the_vote_between_them_are_shown(fault) -> None:
    tools = [{"type": "function", "function": {
        "name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]
    fault.script("p", ['call:add:{"a": 1}', 'call:add:{"a": 2}', 'call:add:{"a": 1}'])
    p = fault.backend("p")
    result = AggregateGraph(p, p, width=3, depth=1).invoke("add", call={"tools": tools})
    html = render_run(result.model_dump(mode="json"))
    # Three drafts' calls, the answer's, and the vote's card: each name and its arguments.
    assert html.count('<code class="fn">add</code>') == 5
    assert "&quot;a&quot;: 2" in html and "rule: tool-vote" in html
    assert "picked in layer 1" in html and "finish: tool_calls" in html


def test_an_eval_row_without_its_result_shows_what_it_has() -> None:
    from aft_sdk.view import render_index

    rows = [{"id": "a", "method": "pa", "answer": "4", "score": 1.0, "key": "4", "tokens": 30,
             "generations": 3, "detail": {}, "cost_usd": None},
            {"id": "b", "method": "pa", "answer": "5", "score": 0.0, "key": "5", "tokens": 31,
             "generations": 3, "detail": {}, "cost_usd": 0.0021}]
    html, pages = render_index(rows, title="t", runs_dir_name="t_runs")
    assert pages == {} and "run-link" not in html
    assert ">unknown<" in html and ">$0.0021<" in html and 'data-cost=""' in html


def test_aft_serve_debug_ui_lists_its_recent_runs_in_a_browser(fault_server, driver,
                                                              tmp_path) -> None:
    pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")
    import openai
    from selenium.webdriver.common.by import By

    from aft_sdk.testing import LocalServer

    fault_server.reset()
    fault_server.delay_s = 0.0
    config = tmp_path / "pa.yaml"
    backend = f"{{type: openai, model: MODEL, base_url: '{fault_server.base_url}', " \
              "max_retries: 0, price: {input: 1.0, output: 2.0}}"
    config.write_text("\n".join(["name: pa", "width: 2", "depth: 1", "proposers:",
                                 "  - " + backend.replace("MODEL", "dp"), "aggregator:",
                                 "  - " + backend.replace("MODEL", "da")]) + "\n")
    with LocalServer.aft_serve([config], extra_args=["--debug-ui", "--debug-runs", "3"]) as served:
        client = openai.OpenAI(base_url=served.base_url, api_key="none", max_retries=0)
        for q in ("first question", "second question", "third question", "fourth question"):
            client.chat.completions.create(model="pa", messages=[{"role": "user", "content": q}])
        fault_server.script("da", ["500"])  # the aggregation fails: a 502 for the client
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="pa", messages=[{"role": "user", "content": "doomed question"}])
        streamed = client.chat.completions.create(
            model="pa", stream=True, messages=[{"role": "user", "content": "streamed one"}])
        answer = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        driver.get(served.base_url.removesuffix("/v1") + "/debug/runs")
        rows = driver.find_elements(By.CSS_SELECTOR, "#rows tr")
        text = driver.find_element(By.ID, "rows").text
        # The last three, newest first: the streamed run, the failure, the fourth question.
        assert len(rows) == 3 and "first question" not in driver.page_source
        assert text.index("streamed one") < text.index("502") < text.index("fourth question")
        driver.find_element(By.ID, "failed-only").click()
        shown = [r for r in driver.find_elements(By.CSS_SELECTOR, "#rows tr") if r.is_displayed()]
        assert len(shown) == 1 and "502" in shown[0].text
        driver.find_element(By.ID, "failed-only").click()
        driver.find_element(By.CSS_SELECTOR, "#rows tr a").click()  # the newest run's page
        assert driver.current_url.startswith(served.base_url.removesuffix("/v1") + "/debug/runs/")
        assert answer in driver.find_element(By.TAG_NAME, "body").text
        assert "streamed one" in driver.find_element(By.TAG_NAME, "body").text
        assert severe_logs(driver) == []
        missing = driver.current_url.rsplit("/", 1)[0] + "/0099-gone.html"
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as gone:
            urllib.request.urlopen(missing)
        assert gone.value.code == 404
    fault_server.reset()

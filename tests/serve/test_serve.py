"""``aft serve`` as a real server on 127.0.0.1, driven by the real openai client."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")

from aft_sdk.testing import LocalServer  # noqa: E402

KEY = "serve-test-key-1"
UPSTREAM_KEY = "upstream-secret-key-9"


def _config(folder: Path, name: str, base_url: str, **extra: object) -> Path:
    path = folder / f"{name}.yaml"
    lines = [f"name: {name}", "width: 3", "depth: 1",
             "proposers:", f"  - {{type: openai, model: p, base_url: '{base_url}', max_retries: 0}}",
             "aggregator:", f"  - {{type: openai, model: a, base_url: '{base_url}', "
                            f"api_key: {UPSTREAM_KEY}, max_retries: 0}}"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def served(fault_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    configs = [_config(folder, "pa", fault_server.base_url),
               _config(folder, "strict", fault_server.base_url, min_proposals=3),
               _config(folder, "agree", fault_server.base_url, adaptive="{}")]
    search = folder / "search.yaml"  # a step-level search, its steps continued by chat
    search.write_text(
        "name: search\nstrategy: particle-filtering\nwidth: 2\nproposers:\n"
        f"  - {{type: openai, model: p, base_url: '{fault_server.base_url}', "
        "continuation: chat, max_retries: 0}\n"
        f"aggregator: [{{type: openai, model: a, base_url: '{fault_server.base_url}'}}]\n"
        "particle_filtering: {scorer: 'import:aft_sdk.eval.chain:step_score', max_steps: 3}\n")
    configs.append(search)
    server = LocalServer.aft_serve(
        configs, env={"AFT_TEST_KEYS": f"{KEY},other-key"},
        extra_args=["--api-key-env", "AFT_TEST_KEYS", "--max-concurrent-runs", "2",
                    "--request-timeout", "3", "--max-body-bytes", "20000", "--max-width", "6"])
    with server:
        yield server


def client(served, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0, **kw)


def test_a_config_names_its_strategy(served, fault) -> None:
    # Adaptive propose-and-aggregate: the drafts agree, so no aggregation call is made.
    c = client(served)
    r = c.chat.completions.create(model="agree", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content.startswith("answer 0 from p")
    assert [layer["kind"] for layer in r.model_extra["aft"]["layers"]] == ["propose", "agreement"]
    assert fault.count("a") == 0
    pieces = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="agree", messages=[{"role": "user", "content": "hi"}], stream=True)
        if ch.choices]
    assert "".join(pieces).startswith("answer 0 from p")


def test_a_served_search_answers_streams_and_refuses_tools(served, fault) -> None:
    c = client(served)
    question = [{"role": "user", "content": "Start with 2. Add 1."}]
    r = c.chat.completions.create(model="search", messages=question)
    trace = r.model_extra["aft"]
    assert trace["strategy"] == "particle-filtering"
    assert [layer["usage"]["generations"] for layer in trace["layers"]] == [6, 1]
    assert r.choices[0].message.content.startswith("answer 0 from a")
    pieces = [ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="search", messages=question, stream=True) if ch.choices]
    assert "".join(pieces).startswith("answer 0 from a")
    with pytest.raises(openai.BadRequestError, match="cannot carry tools") as e:
        c.chat.completions.create(model="search", messages=question, tools=[TOOL])
    assert e.value.status_code == 400 and e.value.body["type"] == "invalid_request_error"


def test_models_health_and_a_completion_with_usage_over_every_layer(served, fault) -> None:
    c = client(served)
    assert [m.id for m in c.models.list().data] == ["pa", "strict", "agree", "search"]
    with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/health") as r:
        assert json.loads(r.read())["status"] == "ok"  # no key needed for health
    r = c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "hi"}],
                                  temperature=0.2, max_tokens=33, seed=5)
    assert r.choices[0].message.content.startswith("answer 0 from a")
    trace = r.model_extra["aft"]
    assert [layer["usage"]["generations"] for layer in trace["layers"]] == [3, 1]
    assert r.usage.prompt_tokens == sum(l["usage"]["prompt_tokens"] for l in trace["layers"])
    assert r.usage.completion_tokens == sum(l["usage"]["completion_tokens"]
                                            for l in trace["layers"])
    final = [x for x in fault.requests if x["model"] == "a"][-1]
    assert (final["temperature"], final["max_tokens"], final["seed"]) == (0.2, 33, 5)
    proposals = [x for x in fault.requests if x["model"] == "p"]
    assert all(x["max_tokens"] == 512 for x in proposals)  # request sampling: final only


def test_extra_body_overrides_the_shape_within_the_caps(served, fault) -> None:
    c = client(served)
    r = c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "hi"}],
                                  extra_body={"width": 5, "depth": 2})
    assert (r.model_extra["aft"]["width"], r.model_extra["aft"]["depth"]) == (5, 2)
    assert fault.count("p") == 5
    with pytest.raises(openai.BadRequestError, match="width=7 is above this server's limit of 6"):
        c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "hi"}],
                                  extra_body={"width": 7})


async def test_async_streaming_sends_real_chunks_then_usage(served, fault) -> None:
    c = openai.AsyncOpenAI(base_url=served.base_url, api_key=KEY, max_retries=0)
    fault.script("a", ["say:one two three four five"])
    stream = await c.chat.completions.create(
        model="pa", messages=[{"role": "user", "content": "hi"}], stream=True,
        stream_options={"include_usage": True})
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert len(pieces) == 5 and "".join(pieces).split() == ["one", "two", "three", "four", "five"]
    assert usage is not None and usage.total_tokens > usage.completion_tokens > 0
    await c.close()


def test_n_answers_are_n_runs_each_a_choice(served, fault) -> None:
    c = client(served)
    q = [{"role": "user", "content": "hi"}]
    r = c.chat.completions.create(model="pa", messages=q, n=2, seed=7)
    assert [ch.index for ch in r.choices] == [0, 1]
    assert all(ch.message.content.startswith("answer 0 from a") for ch in r.choices)
    assert fault.count("p") == 6 and fault.count("a") == 2  # two whole runs
    finals = [x for x in fault.requests if x["model"] == "a"]
    assert sorted(x["seed"] for x in finals) == [7, 8]  # seeded answers differ
    runs = r.model_extra["aft"]["choices"]
    assert len(runs) == 2 and r.usage.total_tokens == sum(
        l["usage"]["prompt_tokens"] + l["usage"]["completion_tokens"]
        for run in runs for l in run["layers"])
    with pytest.raises(openai.BadRequestError, match="n=3 is above this server's limit of 2"):
        c.chat.completions.create(model="pa", messages=q, n=3)  # --max-concurrent-runs 2
    with pytest.raises(openai.BadRequestError, match="with stream: true is not supported"):
        c.chat.completions.create(model="pa", messages=q, n=2, stream=True)
    with pytest.raises(openai.BadRequestError, match="at least 1"):
        c.chat.completions.create(model="pa", messages=q, n=0)
    fault.script("a", ["say:fine", "500"])
    with pytest.raises(openai.InternalServerError, match="final aggregation"):
        c.chat.completions.create(model="pa", messages=q, n=2)  # one failed: no answer half-given
    # A client that asks for n answers as LangChain does.
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(base_url=served.base_url, api_key=KEY, model="pa",
                                       n=2, max_retries=0)
    from langchain_core.messages import HumanMessage

    out = chat.generate([[HumanMessage("hi")]])
    assert len(out.generations[0]) == 2


def test_errors_have_openai_status_codes_and_bodies(served, fault) -> None:
    c = client(served)
    q = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError, match="model 'nope' does not exist"):
        c.chat.completions.create(model="nope", messages=q)
    with pytest.raises(openai.BadRequestError, match="legacy form"):
        c.chat.completions.create(model="pa", messages=q, functions=[{"name": "f"}])
    with pytest.raises(openai.BadRequestError, match="role must be one of"):
        c.chat.completions.create(model="pa", messages=[{"role": "robot", "content": "x"}])
    fault.script("p", ["500"])
    with pytest.raises(openai.InternalServerError) as err:  # 502: too few proposals
        c.chat.completions.create(model="strict", messages=q)
    assert err.value.status_code == 502 and "only 2 of 3 proposals" in str(err.value)
    fault.script("a", ["401"])
    with pytest.raises(openai.InternalServerError) as err:
        c.chat.completions.create(model="pa", messages=q)
    assert err.value.status_code == 502 and UPSTREAM_KEY not in err.value.response.text
    fault.script("a", ["hang:6"])
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="pa", messages=q)
    assert err.value.status_code == 504
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "x" * 30000}])
    assert err.value.status_code == 413 and "--max-body-bytes" in err.value.message


def test_keys_are_required_and_checked(served) -> None:
    bad = openai.OpenAI(base_url=served.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert client(served).models.list().data
    other = openai.OpenAI(base_url=served.base_url, api_key="other-key", max_retries=0)
    assert other.models.list().data


def test_beyond_the_run_bound_the_answer_is_429_not_a_queue(served, fault) -> None:
    fault.delay_s = 1.0
    c = client(served)
    results: list[object] = []

    def call() -> None:
        try:
            results.append(c.chat.completions.create(
                model="pa", messages=[{"role": "user", "content": "hi"}]))
        except openai.RateLimitError as e:
            results.append(e)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(limited) == 2 and len(results) == 4
    assert limited[0].response.headers["retry-after"] == "1"


def test_langchain_chat_openai_talks_to_the_server(served) -> None:
    lc = pytest.importorskip("langchain_openai")
    model = lc.ChatOpenAI(model="pa", base_url=served.base_url, api_key=KEY, max_retries=0)
    assert model.invoke("hello").content.startswith("answer 0 from a")
    assert "".join(c.content for c in model.stream("hello")).startswith("answer 0 from a")


def test_graceful_shutdown_lets_a_running_request_finish(fault_server, tmp_path) -> None:
    config = _config(tmp_path, "pa", fault_server.base_url)
    fault_server.delay_s = 1.0
    try:
        with LocalServer.aft_serve([config]) as server:
            c = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
            answers: list[str] = []
            t = threading.Thread(target=lambda: answers.append(c.chat.completions.create(
                model="pa", messages=[{"role": "user", "content": "hi"}]).choices[0]
                .message.content))
            t.start()
            time.sleep(0.5)  # the request is in the proposal layer now
            os.killpg(server.proc.pid, signal.SIGTERM)
            t.join(timeout=15)
            assert answers and answers[0].startswith("answer 0 from a")
            # uvicorn re-raises SIGTERM after its graceful shutdown; `aft` turns it into a
            # clean exit with the conventional status (its engines closed on the way)
            assert server.proc.wait(timeout=15) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
    finally:
        fault_server.delay_s = 0.0


def test_bad_configs_fail_at_start_with_the_reason(tmp_path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.yaml"
    bad.write_text("width: 0\n")
    r = subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", "serve", "--config", str(bad)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "width: Input should be greater than or equal to 1" in r.stderr



@pytest.mark.slow
def test_serving_a_graph_on_the_llama_cpp_server(llama_server, tmp_path) -> None:
    config = tmp_path / "local.yaml"
    url = llama_server.base_url
    config.write_text(
        f"width: 2\ndepth: 1\nproposers:\n  - {{type: openai, model: smollm2, base_url: '{url}'}}\n"
        f"aggregator:\n  - {{type: openai, model: smollm2, base_url: '{url}'}}\n"
        "proposer_sampling: {max_tokens: 24, seed: 1}\n")
    with LocalServer.aft_serve([config]) as server:
        c = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        r = c.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Name a planet."}],
            max_tokens=24, seed=2)
        assert r.choices[0].message.content.strip()
        layers = r.model_extra["aft"]["layers"]
        assert [l["usage"]["generations"] for l in layers] == [2, 1]
        assert r.usage.completion_tokens == sum(l["usage"]["completion_tokens"] for l in layers)
        stream = c.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Name a planet."}],
            max_tokens=24, stream=True)
        pieces = [ch.choices[0].delta.content for ch in stream
                  if ch.choices and ch.choices[0].delta.content]
        assert len(pieces) > 1  # token by token, not one block


TOOL = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}


def test_tool_calls_come_back_in_the_openai_format(served, fault) -> None:
    c = client(served)
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    r = c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "1+2?"}],
                                  tools=[TOOL], tool_choice="auto", parallel_tool_calls=False)
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 1, "b": 2}
    assert fault.count("a") == 0  # three equal calls: a vote, no aggregation
    assert all(req["tools"] == [TOOL] and req["parallel_tool_calls"] is False
               for req in fault.requests)
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    chunks = list(c.chat.completions.create(
        model="pa", messages=[{"role": "user", "content": "1+2?"}], tools=[TOOL], stream=True))
    deltas = [d for ch in chunks if ch.choices for d in ch.choices[0].delta.tool_calls or []]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "add")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # A tool result in the history is taken as it is, and answered.
    history = [{"role": "user", "content": "1+2?"}, r.choices[0].message.model_dump(
        exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "3"}]
    fault.script("a", ["say:It is 3."])
    answer = c.chat.completions.create(model="pa", messages=history, tools=[TOOL])
    assert answer.choices[0].message.content == "It is 3."
    assert fault.requests[-1]["messages"][-1] == {"role": "tool", "tool_call_id": call.id,
                                                  "content": "3"}


@pytest.mark.parametrize("extra, message", [
    ({"tools": [{"type": "function"}]}, "tools.0"),
    ({"functions": [{"name": "f"}]}, "legacy"),
    ({"response_format": {"type": "json_schema"}}, "json_schema.schema"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "not among the tools"),
])
def test_bad_tools_and_formats_are_400s_that_say_what_to_fix(served, fault, extra, message) -> None:
    with pytest.raises(openai.BadRequestError, match=message):
        client(served).chat.completions.create(
            model="pa", messages=[{"role": "user", "content": "x"}], extra_body=extra)
    assert fault.count() == 0


def test_a_structured_answer_that_fails_its_schema_is_a_clear_error(served, fault) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}
    fault.script("a", ['say:{"n": 3}'])
    r = client(served).chat.completions.create(
        model="pa", messages=[{"role": "user", "content": "x"}], response_format=fmt)
    assert json.loads(r.choices[0].message.content) == {"n": 3}
    fault.script("a", ['say:{"n": "x"}', 'say:{"m": 1}'])
    with pytest.raises(openai.APIStatusError, match="does not meet the schema at") as err:
        client(served).chat.completions.create(
            model="pa", messages=[{"role": "user", "content": "x"}], response_format=fmt)
    assert err.value.status_code == 502

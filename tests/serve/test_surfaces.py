"""``aft serve``'s Responses API and Anthropic Messages routes, driven by the official
``openai`` and ``anthropic`` clients against a real server whose graphs call the fault
server (which records every upstream body)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from early import slack

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")
pytest.importorskip("fastapi", reason="needs pip install 'aft-sdk[serve]'")

from aft_sdk.testing import LocalServer  # noqa: E402

KEY = "surface-test-key-3"
ADD = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}


@pytest.fixture(scope="module")
def served(fault_server, tmp_path_factory):
    folder = tmp_path_factory.mktemp("surfaces")
    backend = f"{{type: openai, model: MODEL, base_url: '{fault_server.base_url}', max_retries: 0}}"
    for name, extra in (("pa", []), ("agree", ["adaptive: {}"])):  # agree: stops when drafts agree
        (folder / f"{name}.yaml").write_text("\n".join([
            f"name: {name}", "width: 3", "depth: 1", *extra,
            "proposers:", "  - " + backend.replace("MODEL", "p"),
            "aggregator:", "  - " + backend.replace("MODEL", "a")]) + "\n")
    server = LocalServer.aft_serve([folder / "pa.yaml", folder / "agree.yaml"],
                                   env={"AFT_TEST_KEYS": KEY},
                                   extra_args=["--api-key-env", "AFT_TEST_KEYS"])
    with server:
        yield server


def oai(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key=KEY, max_retries=0)


def claude(served, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=served.base_url.removesuffix("/v1"), api_key=key,
                               max_retries=0)


def chat_usage(served, fault, answer: str, system: str, user: str) -> object:
    """The usage chat completions reports for the same conversation and replies."""
    fault.script("a", [f"say:{answer}"])
    usage = oai(served).chat.completions.create(model="pa", messages=[
        {"role": "system", "content": system}, {"role": "user", "content": user}]).usage
    fault.reset()
    return usage


def test_responses_create_answers_with_usage_over_every_layer(served, fault) -> None:
    usage = chat_usage(served, fault, "Paris is the capital.", "Be brief.", "Capital of France?")
    fault.script("a", ["say:Paris is the capital."])
    r = oai(served).responses.create(model="pa", input="Capital of France?",
                                     instructions="Be brief.", max_output_tokens=40,
                                     temperature=0.2)
    assert r.status == "completed" and r.output_text == "Paris is the capital."
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (
        usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    assert [layer["kind"] for layer in r.model_extra["aft"]["layers"]] == ["propose", "aggregate"]
    final = fault.requests[-1]
    assert final["model"] == "a" and final["max_tokens"] == 40 and final["temperature"] == 0.2
    assert fault.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}


def test_responses_tool_loop_and_json_schema_format(served, fault) -> None:
    c = oai(served)
    tools = [{"type": "function", "name": "add", "description": "adds", "parameters": ADD}]
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    r = c.responses.create(model="pa", input="1+2?", tools=tools, tool_choice="auto")
    (call,) = [item for item in r.output if item.type == "function_call"]
    assert call.name == "add" and json.loads(call.arguments) == {"a": 1, "b": 2}
    sent = fault.requests[0]["tools"]
    assert sent == [{"type": "function", "function": {"name": "add", "description": "adds",
                                                      "parameters": ADD}}]
    history = [{"role": "user", "content": "1+2?"},
               {"type": "function_call", "call_id": call.call_id, "name": "add",
                "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": "3"}]
    fault.script("a", ['say:{"sum": 3}'])
    schema = {"type": "object", "properties": {"sum": {"type": "integer"}}, "required": ["sum"]}
    answer = c.responses.create(model="pa", input=history, tools=tools, text={"format": {
        "type": "json_schema", "name": "sum", "schema": schema}})
    assert json.loads(answer.output_text) == {"sum": 3}
    upstream = fault.requests[-1]
    assert upstream["messages"][-2]["tool_calls"][0]["id"] == call.call_id
    assert upstream["messages"][-1] == {"role": "tool", "tool_call_id": call.call_id,
                                        "content": "3"}
    assert upstream["response_format"]["json_schema"]["schema"] == schema


def test_responses_stream_sends_the_event_sequence(served, fault) -> None:
    fault.script("a", ["say:one two three"])
    with oai(served).responses.stream(model="pa", input="count") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert final.output_text == "one two three" and final.usage.output_tokens > 0
    fault.script("p", ['call:add:{"a": 2}'] * 3)
    events = list(oai(served).responses.create(
        model="pa", input="x", stream=True,
        tools=[{"type": "function", "name": "add", "parameters": ADD}]))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(e.arguments) for e in done] == [{"a": 2}]
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize("extra, named", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"store": True}, "store"), ({"reasoning": {"effort": "low"}}, "reasoning"),
    ({"tools": [{"type": "web_search"}]}, "web_search"), ({"temprature": 1}, "temprature"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "reasoning"),
    ({"include": ["reasoning.encrypted_content"]}, "reasoning.encrypted_content"),
])
def test_responses_refuse_by_name_in_their_error_shape(served, fault, extra, named) -> None:
    body = {"model": "pa", "input": "x", **extra}
    with pytest.raises(openai.BadRequestError, match=named) as err:
        oai(served).post("/responses", body=body, cast_to=object)
    assert err.value.body["type"] == "invalid_request_error" and fault.count() == 0


def test_messages_create_stream_and_tool_loop_with_the_anthropic_client(served, fault) -> None:
    c = claude(served)
    usage = chat_usage(served, fault, "Hello there.", "Be kind.", "Hi")
    fault.script("a", ["say:Hello there."])
    m = c.messages.create(model="pa", max_tokens=50, system="Be kind.",
                          messages=[{"role": "user", "content": "Hi"}])
    assert m.content[0].text == "Hello there." and m.stop_reason == "end_turn"
    assert (m.usage.input_tokens, m.usage.output_tokens) == (usage.prompt_tokens,
                                                             usage.completion_tokens)
    assert fault.requests[0]["messages"][0] == {"role": "system", "content": "Be kind."}
    fault.script("a", ["say:a b c"])
    with c.messages.stream(model="pa", max_tokens=50,
                           messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "a b c" and final.content[0].text == "a b c"
    tools = [{"name": "add", "description": "adds", "input_schema": ADD}]
    fault.reset()
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    m = c.messages.create(model="pa", max_tokens=50, tools=tools,
                          tool_choice={"type": "any"},
                          messages=[{"role": "user", "content": "1+2?"}])
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and use.name == "add" and use.input == {"a": 1, "b": 2}
    assert fault.requests[0]["tool_choice"] == "required"
    fault.script("a", ["say:3"])
    m = c.messages.create(model="pa", max_tokens=50, tools=tools, messages=[
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "3"}]}])
    assert m.content[0].text == "3"
    assert fault.requests[-1]["messages"][-1] == {"role": "tool", "tool_call_id": use.id,
                                                  "content": "3"}


def test_messages_errors_come_in_anthropics_shape(served, fault) -> None:
    with pytest.raises(anthropic.AuthenticationError):
        claude(served, key="wrong").messages.create(
            model="pa", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="top_k") as err:
        claude(served).messages.create(model="pa", max_tokens=5, extra_body={"top_k": 3},
                                       messages=[{"role": "user", "content": "x"}])
    assert err.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": err.value.body["error"]["message"]}}
    fault.script("a", ["500"])
    with pytest.raises(anthropic.APIStatusError) as err:
        claude(served).messages.create(model="pa", max_tokens=5,
                                       messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 502 and err.value.body["type"] == "error"
    assert fault.count("p") == 3  # the drafts were made; the final step failed upstream
    with pytest.raises(anthropic.NotFoundError):
        claude(served).messages.create(model="nope", max_tokens=5,
                                       messages=[{"role": "user", "content": "x"}])


def test_models_retrieve_and_unknown_routes(served) -> None:
    c = oai(served)
    assert c.models.retrieve("pa").id == "pa"
    with pytest.raises(openai.NotFoundError, match="no model 'nope'"):
        c.models.retrieve("nope")
    req = urllib.request.Request(served.base_url + "/messages/batches", data=b"{}",
                                 headers={"x-api-key": KEY, "content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(err.value.read())
    assert err.value.code == 404 and "/v1/responses" in body["error"]["message"]


def wait_idle(served, within: float) -> None:
    within = slack(within)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with urllib.request.urlopen(served.base_url.removesuffix("/v1") + "/health") as r:
            if json.loads(r.read())["active_runs"] == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"runs still active after {within} s")


def test_a_broken_upstream_mid_stream_ends_each_stream_in_its_format(served, fault) -> None:
    fault.script("a", ["broken-sse"])  # one token, then a line that is not JSON
    events = list(oai(served).responses.create(model="pa", input="x", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert "JSONDecodeError" in events[-1].response.error.message
    assert any(e.type == "response.output_text.delta" for e in events)
    fault.script("a", ["broken-sse"])
    with pytest.raises(anthropic.APIStatusError, match="JSONDecodeError"):
        with claude(served).messages.stream(model="pa", max_tokens=20,
                                            messages=[{"role": "user", "content": "x"}]) as s:
            list(s.text_stream)
    wait_idle(served, within=2)


def test_a_client_that_leaves_a_responses_stream_cancels_its_run(served, fault) -> None:
    fault.script("a", ["drip:0.3"])  # a slowly streaming aggregator, 10+ words
    with oai(served).responses.create(model="pa", input="x", stream=True) as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                break  # the client goes away after its first token
    wait_idle(served, within=5)
    deadline = time.monotonic() + 5
    while fault.aborted < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fault.aborted == 1  # the upstream stream was cut


def test_the_openai_agents_sdk_runs_a_tool_loop_on_its_default_responses_model(
        served, fault) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)  # its default exporter would post to api.openai.com

    @agents.function_tool
    def add(a: float, b: float) -> float:
        """Adds two numbers."""
        return a + b

    model = agents.OpenAIResponsesModel(model="pa", openai_client=openai.AsyncOpenAI(
        base_url=served.base_url, api_key=KEY, max_retries=0))
    agent = agents.Agent(name="calc", instructions="Use the tool.", tools=[add], model=model)
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    fault.script("a", ["say:It is 3."])
    result = asyncio.run(agents.Runner.run(agent, "1+2?"))
    assert result.final_output == "It is 3."
    outputs = [m for m in fault.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in outputs] == ["3.0"]  # the tool ran and its result came back


def test_chat_fields_are_honoured_documented_or_refused_by_name(served, fault) -> None:
    """Nothing is accepted and then dropped: sampling extras reach the final aggregation's
    upstream, no-effect fields are taken, the rest are 400s naming the field."""
    c = oai(served)
    c.chat.completions.create(
        model="pa", messages=[{"role": "user", "content": "x"}], frequency_penalty=0.5,
        presence_penalty=-0.5, logit_bias={"42": -100}, reasoning_effort="low",
        metadata={"team": "a"}, user="u1", store=False, modalities=["text"])
    final = fault.requests[-1]
    assert final["model"] == "a" and final["frequency_penalty"] == 0.5
    assert final["presence_penalty"] == -0.5 and final["logit_bias"] == {"42": -100}
    assert final["reasoning_effort"] == "low"
    assert not any("metadata" in q or "user" in q for q in fault.requests)
    assert not any("frequency_penalty" in q for q in fault.requests if q["model"] == "p")
    fault.reset()
    for extra, named in [({"modalities": ["text", "audio"]}, "modalities"),
                         ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
                         ({"web_search_options": {}}, None), ({"temprature": 1}, "temprature"),
                         ({"top_logprobs": 2}, "top_logprobs needs logprobs"),
                         ({"logit_bias": {"x": 1}}, "logit_bias")]:
        if named is None:  # an empty object is off: taken
            c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "x"}],
                                      extra_body=extra)
            continue
        with pytest.raises(openai.BadRequestError, match=named):
            c.chat.completions.create(model="pa", messages=[{"role": "user", "content": "x"}],
                                      extra_body=extra)


def test_sampling_extras_a_backend_does_not_take_are_refused_by_name() -> None:
    from aft_sdk import BadRequestError, SamplingConfig
    from aft_sdk.backends.langchain_backend import LangChainBackend
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    backend = LangChainBackend(FakeListChatModel(responses=["ok"]))
    with pytest.raises(BadRequestError, match="does not take reasoning_effort"):
        backend.generate_sync("hi", sampling=SamplingConfig(reasoning_effort="low"))
    assert backend.generate_sync("hi", sampling=SamplingConfig(temperature=0.1))[0].text == "ok"


def test_the_default_body_limit_admits_an_ordinary_screenshot(served, fault) -> None:
    import base64
    import os

    screenshot = "data:image/png;base64," + base64.b64encode(os.urandom(3_000_000)).decode()
    r = oai(served).chat.completions.create(model="pa", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is on it?"},
        {"type": "image_url", "image_url": {"url": screenshot}}]}])
    assert r.choices[0].message.content
    sent = fault.requests[0]["messages"][0]["content"]
    assert sent[1]["image_url"]["url"] == screenshot  # 4 MB as sent, to the upstream


def test_langchains_chat_anthropic_invokes_streams_and_calls_tools(served, fault) -> None:
    """LangChain's Claude client (``ChatAnthropic``) as its users point it elsewhere:
    ``base_url`` at this server, a key of ours."""
    lc = pytest.importorskip("langchain_anthropic")
    from langchain_core.messages import HumanMessage, ToolMessage

    chat = lc.ChatAnthropic(model="pa", base_url=served.base_url.removesuffix("/v1"),
                            api_key=KEY, max_tokens=50, max_retries=0)
    fault.script("a", ["say:Hello there."])
    m = chat.invoke("Hi")
    assert m.content == "Hello there." and m.usage_metadata["output_tokens"] > 0
    fault.script("a", ["say:a b c"])
    assert "".join(c.text for c in chat.stream("Hi")) == "a b c"

    def add(a: int, b: int) -> int:
        """Adds two numbers."""
        return a + b

    tooled = chat.bind_tools([add], tool_choice="any")
    fault.reset()
    fault.script("p", ['call:add:{"a": 1, "b": 2}'] * 3)
    ask = HumanMessage("1+2?")
    call = tooled.invoke([ask])
    assert [(c["name"], c["args"]) for c in call.tool_calls] == [("add", {"a": 1, "b": 2})]
    fault.script("a", ["say:3"])
    answer = tooled.invoke([ask, call, ToolMessage("3", tool_call_id=call.tool_calls[0]["id"])])
    assert answer.content == "3" or answer.text == "3"
    assert fault.requests[-1]["messages"][-1]["role"] == "tool"


def test_logprobs_are_the_final_aggregations_on_every_openai_surface(served, fault) -> None:
    c, q = oai(served), [{"role": "user", "content": "hi"}]
    fault.script("a", ["say:Paris is big"])
    r = c.chat.completions.create(model="pa", messages=q, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == 3 and all(len(t.top_logprobs) == 2 for t in content)
    assert all(t.logprob <= 0 for t in content)
    final = [x for x in fault.requests if x["model"] == "a"][-1]
    assert final["logprobs"] is True and final["top_logprobs"] == 2
    assert not any("logprobs" in x for x in fault.requests if x["model"] == "p")  # final only
    assert c.chat.completions.create(model="pa", messages=q).choices[0].logprobs is None
    fault.script("a", ["say:a b"])
    chunks = list(c.chat.completions.create(model="pa", messages=q, stream=True,
                                            logprobs=True))
    streamed = [t for ch in chunks if ch.choices and ch.choices[0].logprobs
                for t in ch.choices[0].logprobs.content]
    assert len(streamed) == 2  # whole, with the last chunk
    fault.script("a", ["say:x y"])
    resp = c.responses.create(model="pa", input="hi",
                              include=["message.output_text.logprobs"], top_logprobs=1)
    assert len(resp.output[0].content[0].logprobs) == 2
    # A vote's final step is its drafts (they are asked): the picked draft's own.
    fault.reset()
    fault.script("p", ["say:yes it is"] * 3)
    r = c.chat.completions.create(model="pa", messages=q, logprobs=True,
                                  extra_body={"strategy": "vote"})
    assert len(r.choices[0].logprobs.content) == 3
    # Drafts that agree stand in for the aggregation, which was never asked: said, not
    # answered without them.
    fault.script("p", ["say:same"] * 3)
    with pytest.raises(openai.BadRequestError, match="chosen among drafts"):
        c.chat.completions.create(model="agree", messages=q, logprobs=True)
    assert fault.count("a") == 0


#: A value that turns each refused field on (off values, such as an empty object, pass).
REFUSED_VALUES = {
    "functions": [{"name": "f"}], "function_call": "auto", "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
    "web_search_options": {"search_context_size": "low"}, "verbosity": "low",
    "previous_response_id": "resp_1", "store": True, "conversation": "conv_1",
    "reasoning": {"effort": "low"}, "background": True, "max_tool_calls": 2,
    "prompt": {"id": "pmpt_1"}, "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 64},
    "mcp_servers": [{"type": "url", "url": "http://127.0.0.1:9", "name": "m"}],
    "container": "cntr_1"}
NO_EFFECT_VALUES = {"metadata": {"team": "a"}, "store": False, "user": "u1",
                    "service_tier": "auto", "prompt_cache_key": "k1",
                    "safety_identifier": "s1", "truncation": "disabled"}


def _surfaces():
    from aft_sdk.serve import messages_api, protocol, responses_api

    q = [{"role": "user", "content": "hi"}]
    return [("/v1/chat/completions", {"model": "pa", "messages": q},
             protocol.NO_EFFECT, protocol.REFUSED),
            ("/v1/responses", {"model": "pa", "input": "hi"},
             responses_api.NO_EFFECT, responses_api.REFUSED),
            ("/v1/messages", {"model": "pa", "max_tokens": 20, "messages": q},
             messages_api.NO_EFFECT, messages_api.REFUSED)]


def test_every_listed_field_of_every_surface_does_what_its_list_says(served, fault) -> None:
    """Walks each surface's lists: a refused field is a 400 naming it in the surface's
    own error shape, a field without effect is taken and never reaches an upstream, and
    every one of them is documented on the serving page."""
    import httpx

    root = served.base_url.removesuffix("/v1")
    page = (Path(__file__).resolve().parents[2] / "docs/how-to/serve.md").read_text()
    headers = {"authorization": f"Bearer {KEY}"}
    undocumented = []
    for path, body, no_effect, refused in _surfaces():
        for name in sorted(refused):
            r = httpx.post(root + path, json={**body, name: REFUSED_VALUES[name]},
                           headers=headers, timeout=30)
            error = r.json()["error"]
            assert r.status_code == 400 and name in error["message"], (path, name, r.text)
            if path == "/v1/messages":
                assert r.json()["type"] == "error"
        for name in sorted(set(no_effect) - set(refused)):
            fault.reset()
            r = httpx.post(root + path, json={**body, name: NO_EFFECT_VALUES[name]},
                           headers=headers, timeout=30)
            assert r.status_code == 200, (path, name, r.text)
            assert fault.requests and not any(name in q for q in fault.requests), (path, name)
        undocumented += [f"{path}: {n}" for n in {*refused, *no_effect} if f"`{n}" not in page]
    assert not undocumented, undocumented

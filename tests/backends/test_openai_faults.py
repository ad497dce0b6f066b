"""OpenAIBackend against our fault server: retries, timeouts, errors, n, concurrency."""

from __future__ import annotations

import asyncio
import json

import pytest

from aft_sdk import (
    AuthenticationError,
    BackendConnectionError,
    BackendTimeoutError,
    ConfigError,
    MalformedResponseError,
    OpenAIBackend,
    RateLimitError,
    SamplingConfig,
    ServerError,
)
from aft_sdk.testing import FaultServer, free_port

MSG = [{"role": "user", "content": "hello there"}]


def backend(srv: FaultServer, model: str = "m", **kw) -> OpenAIBackend:
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout", 5)
    return OpenAIBackend(model, base_url=srv.base_url, **kw)


async def test_generation_carries_text_and_usage(fault: FaultServer) -> None:
    (g,) = await backend(fault).generate(MSG, n=1)
    assert g.text.startswith("answer 0 from m")
    assert g.prompt_tokens == 2 and g.completion_tokens == len(g.text.split())
    assert g.finish_reason == "stop" and g.latency_s > 0
    assert g.backend.startswith("openai:m@http://127.0.0.1")


async def test_native_n_is_used_when_the_server_honours_it(fault: FaultServer) -> None:
    b = backend(fault)
    gens = await b.generate(MSG, n=4)
    assert len(gens) == 4 and fault.count() == 1 and b.native_n


async def test_n_is_emulated_with_distinct_seeds_when_ignored(fault: FaultServer) -> None:
    fault.honour_n = False
    b = backend(fault)
    gens = await b.generate(MSG, n=5, sampling=SamplingConfig(seed=10))
    assert len(gens) == 5
    assert not b.native_n
    seeds = sorted(r.get("seed") for r in fault.requests)
    assert seeds == [10, 11, 12, 13, 14]  # the probe (n=5, one answer), then 4 top-ups
    # Once known, later calls go straight to parallel single requests.
    fault.reset()
    gens = await b.generate(MSG, n=3, sampling=SamplingConfig(seed=0))
    assert len(gens) == 3 and fault.count() == 3
    assert all("n" not in r for r in fault.requests)


async def test_greedy_n_is_sent_as_single_calls(fault: FaultServer) -> None:
    # vLLM's server refuses n > 1 at temperature 0: never ask it, on any server.
    b = backend(fault)
    gens = await b.generate(MSG, n=3, sampling=SamplingConfig(temperature=0.0))
    assert len(gens) == 3 and fault.count() == 3
    assert all("n" not in r and r["temperature"] == 0.0 for r in fault.requests)


@pytest.mark.parametrize("fail", ["429:0.05", "500"])
async def test_transient_errors_are_retried_then_succeed(fault: FaultServer, fail: str) -> None:
    fault.script("m", [fail, fail])
    (g,) = await backend(fault, max_retries=2).generate(MSG)
    assert g.text.startswith("answer 0")
    assert fault.count("m") == 3


async def test_rate_limit_after_retries_carries_retry_after(fault: FaultServer) -> None:
    fault.script("m", ["429:0.05"] * 3)
    with pytest.raises(RateLimitError) as info:
        await backend(fault, max_retries=2).generate(MSG)
    assert info.value.retry_after == pytest.approx(0.05)
    assert info.value.status_code == 429
    assert fault.count("m") == 3
    assert "max_concurrency" in str(info.value)


async def test_server_error_after_retries(fault: FaultServer) -> None:
    fault.script("m", ["500"] * 2)
    with pytest.raises(ServerError) as info:
        await backend(fault, max_retries=1).generate(MSG)
    assert info.value.status_code == 500 and fault.count("m") == 2


async def test_auth_errors_are_not_retried(fault: FaultServer) -> None:
    fault.script("m", ["401"])
    with pytest.raises(AuthenticationError, match="API key"):
        await backend(fault, max_retries=5).generate(MSG)
    assert fault.count("m") == 1


async def test_hang_surfaces_as_timeout(fault: FaultServer) -> None:
    fault.script("m", ["hang:10"])
    with pytest.raises(BackendTimeoutError):
        await backend(fault, timeout=0.5, max_retries=0).generate(MSG)


@pytest.mark.parametrize("action", ["malformed", "empty"])
async def test_unusable_bodies_are_reported(fault: FaultServer, action: str) -> None:
    fault.script("m", [action])
    with pytest.raises(MalformedResponseError):
        await backend(fault, max_retries=0).generate(MSG)


async def test_connection_refused_is_a_connection_error() -> None:
    b = OpenAIBackend("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    with pytest.raises(BackendConnectionError, match="cannot reach"):
        await b.generate(MSG)


@pytest.mark.parametrize("bound", [2, 6])
async def test_concurrency_bound_holds_at_the_server(fault: FaultServer, bound: int) -> None:
    fault.honour_n = False
    fault.delay_s = 0.2
    b = backend(fault, "conc", max_concurrency=bound, native_n=False)
    gens = await asyncio.gather(*(b.generate(MSG, n=3) for _ in range(3)))
    assert sum(len(g) for g in gens) == 9
    # 9 requests issued at once; the server never sees more than `bound` together.
    assert fault.max_in_flight("conc") == bound


def test_sync_twin_works_from_plain_code(fault: FaultServer) -> None:
    gens = backend(fault).generate_sync("hi", n=2)
    assert len(gens) == 2


def test_key_stays_out_of_labels_and_reprs(fault: FaultServer) -> None:
    b = OpenAIBackend("m", base_url=fault.base_url, api_key="sk-secret-123")
    assert "sk-secret" not in repr(b) and "sk-secret" not in b.label


def test_missing_key_for_openai_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")


def test_bad_backend_settings_name_the_field(fault: FaultServer) -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        OpenAIBackend("m", base_url=fault.base_url, max_concurrency=0)
    with pytest.raises(ConfigError, match="n must be a positive integer"):
        backend(fault).generate_sync("hi", n=0)


@pytest.mark.parametrize("action, what", [("bad-model", "model is int"),
                                          ("bad-usage", "usage.completion_tokens is str")])
async def test_fields_of_the_wrong_type_are_malformed_not_a_crash(fault, action, what) -> None:
    fault.script("m", [action])
    with pytest.raises(MalformedResponseError, match=what) as err:
        await backend(fault, max_retries=0).generate(MSG)
    assert err.value.backend.startswith("openai:m@")


@pytest.mark.parametrize("action, what", [
    ("broken-sse", "malformed data \\(JSONDecodeError"),
    ("no-finish", "ended without a finish_reason"),
    ("bad-model", "model is int"),
    ("bad-usage", "completion_tokens is str"),
])
async def test_a_hostile_stream_ends_in_a_backend_error(fault, action, what) -> None:
    fault.script("m", [action])
    pieces = []
    with pytest.raises(MalformedResponseError, match=what):
        async for piece in backend(fault, max_retries=0).stream(MSG):
            pieces.append(piece)
    assert all(isinstance(p, str) for p in pieces)  # never a final Generation


async def test_an_echoed_key_never_reaches_the_error_or_its_cause(fault) -> None:
    key = "sk-test-0123456789abcdefWXYZ"
    fault.script("m", ["echo-key"])
    with pytest.raises(AuthenticationError) as err:
        await backend(fault, api_key=key, max_retries=0).generate(MSG)
    seen = [str(err.value), str(err.value.__cause__), repr(err.value.__cause__)]
    assert "Incorrect API key provided" in seen[0]
    for text in seen:
        assert key not in text and key[-4:] not in text and key[:8] not in text


def test_scrub_secrets_catches_exact_masked_and_fragment_forms() -> None:
    from aft_sdk.redact import scrub_secrets

    key = "sk-proj-AbCdEf0123456789xyzW"
    text = (f"Bearer {key}. Incorrect API key provided: sk-p**************xyzW. "
            f"Also {key[:12]}... and plain words like secret and sk stay.")
    out = scrub_secrets(text, [key])
    assert key not in out and "xyzW" not in out and key[:12] not in out
    assert out.count("[redacted]") == 3 and "plain words like secret and sk stay." in out
    assert scrub_secrets(text, [None, ""]) == text


def test_logprobs_come_in_openai_format_whole_and_streamed(fault: FaultServer) -> None:
    import openai

    client = openai.OpenAI(base_url=fault.base_url, api_key="none", max_retries=0)
    ask = {"model": "m", "messages": MSG}
    (plain,) = client.chat.completions.create(**ask).choices
    assert plain.logprobs is None  # not asked: nothing changes
    (choice,) = client.chat.completions.create(**ask, logprobs=True, top_logprobs=3).choices
    entries = choice.logprobs.content
    assert "".join(e.token for e in entries) == choice.message.content
    assert len(entries) == len(choice.message.content.split())
    for e in entries:
        assert e.logprob < 0 and bytes(e.bytes).decode() == e.token
        assert [t.token for t in e.top_logprobs][0] == e.token and len(e.top_logprobs) == 3
        assert sorted((t.logprob for t in e.top_logprobs), reverse=True) == \
            [t.logprob for t in e.top_logprobs]
    again = client.chat.completions.create(**ask, logprobs=True, top_logprobs=3).choices[0]
    assert again.logprobs == choice.logprobs  # deterministic
    chunks = [c.choices[0] for c in client.chat.completions.create(
        **ask, logprobs=True, stream=True) if c.choices and c.choices[0].delta.content]
    assert [c.logprobs.content[0].token for c in chunks] == [c.delta.content for c in chunks]
    assert all(c.logprobs.content[0].top_logprobs == [] for c in chunks)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**ask, logprobs=True, top_logprobs=21)


def test_a_permissive_server_calls_the_tool_then_answers(fault: FaultServer) -> None:
    import openai

    fault.permissive = True
    try:
        client = openai.OpenAI(base_url=fault.base_url, api_key="none", max_retries=0)
        tool = {"type": "function", "function": {"name": "lookup", "parameters": {
            "type": "object", "required": ["who", "n", "mode"], "properties": {
                "who": {"type": "string"}, "n": {"type": "integer", "minimum": 5},
                "mode": {"enum": ["fast", "slow"]}, "extra": {"type": "string"}}}}}
        ask = [{"role": "user", "content": "Look up 'Ann'"}]
        (choice,) = client.chat.completions.create(model="m", messages=ask, tools=[tool]).choices
        (call,) = choice.message.tool_calls
        assert call.function.name == "lookup" and choice.finish_reason == "tool_calls"
        assert json.loads(call.function.arguments) == {"who": "Ann", "n": 5, "mode": "fast"}
        streamed = [c.choices[0].delta.tool_calls[0] for c in client.chat.completions.create(
            model="m", messages=ask, tools=[tool], stream=True)
            if c.choices and c.choices[0].delta.tool_calls]
        assert [bool(d.function.name) for d in streamed] == [True, False]
        history = [*ask, {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {
                "name": "lookup", "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "found"}]
        (after,) = client.chat.completions.create(model="m", messages=history,
                                                  tools=[tool]).choices
        assert after.message.tool_calls is None and after.message.content.startswith("answer 0")
        fmt = {"type": "json_schema", "json_schema": {"name": "t", "schema": tool[
            "function"]["parameters"]}}
        (shaped,) = client.chat.completions.create(model="m", messages=ask,
                                                   response_format=fmt).choices
        assert json.loads(shaped.message.content) == {"who": "Ann", "n": 5, "mode": "fast"}
        fault.script("m", ["say:scripted"])  # a script still wins
        (said,) = client.chat.completions.create(model="m", messages=ask, tools=[tool]).choices
        assert said.message.content == "scripted" and said.message.tool_calls is None
    finally:
        fault.permissive = False

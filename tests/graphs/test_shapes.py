"""Generation counts, trace shape and usage totals against the llama.cpp server."""

from __future__ import annotations

import json

import pytest

from aft_sdk import AggregateGraph, ConfigError, OpenAIBackend

pytestmark = pytest.mark.slow

QUESTION = "Give one tip for sleeping well. Answer in one sentence."


@pytest.fixture(scope="module")
def server_backend(llama_server) -> OpenAIBackend:
    return OpenAIBackend(llama_server.model, base_url=llama_server.base_url, context_window=2048)


@pytest.mark.parametrize(("width", "depth"), [(1, 1), (1, 3), (3, 1), (3, 2), (5, 2)])
async def test_counts_and_trace_shape(server_backend, width: int, depth: int) -> None:
    graph = AggregateGraph(
        server_backend, server_backend, width=width, depth=depth,
        proposer_sampling={"max_tokens": 24, "seed": 1},
        aggregator_sampling={"max_tokens": 32, "seed": 2},
    )
    result = await graph.ainvoke(QUESTION)
    expected = width * depth + 1
    assert graph.num_generations == expected
    assert result.usage.generations == expected and result.usage.failures == 0
    assert [len(layer.outputs) for layer in result.layers] == [width] * depth + [1]
    assert [layer.kind for layer in result.layers] == ["propose"] + ["aggregate"] * depth
    assert result.answer == result.layers[-1].outputs[0].text and result.answer.strip()
    records = [r for layer in result.layers for r in layer.outputs]
    assert result.usage.prompt_tokens == sum(r.prompt_tokens for r in records)
    assert result.usage.completion_tokens == sum(r.completion_tokens for r in records)
    for layer in result.layers:
        assert layer.usage.prompt_tokens == sum(r.prompt_tokens for r in layer.outputs)
        assert sorted(r.slot for r in layer.outputs) == list(range(len(layer.outputs)))
        assert all(r.model and r.backend.startswith("openai:smollm2@") for r in layer.outputs)
    # Aggregators read every output of the layer before: their prompts are longer.
    assert result.layers[1].outputs[0].prompt_tokens > result.layers[0].outputs[0].prompt_tokens
    json.dumps(result.model_dump(mode="json"))  # plain data all the way down


async def test_proposer_cap_never_caps_the_aggregator(server_backend) -> None:
    graph = AggregateGraph(
        server_backend, server_backend, width=2, depth=1,
        proposer_sampling={"max_tokens": 4, "seed": 3},
        aggregator_sampling={"max_tokens": 48, "seed": 3, "temperature": 0.0},
    )
    result = await graph.ainvoke("Describe the ocean in three sentences.")
    assert all(r.completion_tokens <= 4 for r in result.layers[0].outputs)
    assert result.layers[1].outputs[0].completion_tokens > 4


async def test_per_layer_override_changes_model_and_sampling(server_backend, fault) -> None:
    other = OpenAIBackend("override-model", base_url=fault.base_url)
    graph = AggregateGraph(
        server_backend, server_backend, width=2, depth=2,
        proposer_sampling={"max_tokens": 16},
        layers={1: {"backends": [other], "sampling": {"max_tokens": 9, "temperature": 0.1}}},
    )
    result = await graph.ainvoke(QUESTION)
    assert {r.model for r in result.layers[1].outputs} == {"override-model"}
    assert all(r["max_tokens"] == 9 and r["temperature"] == 0.1 for r in fault.requests)
    assert result.layers[2].outputs[0].backend.startswith("openai:smollm2@")


def test_bad_shapes_fail_with_clear_messages() -> None:
    with pytest.raises(ConfigError, match="width: Input should be greater than or equal to 1"):
        AggregateGraph("http://127.0.0.1:9/v1#m", width=0)
    with pytest.raises(ConfigError, match="min_proposals=4 exceeds width=3"):
        AggregateGraph("http://127.0.0.1:9/v1#m", width=3, min_proposals=4)
    with pytest.raises(ConfigError, match="max_tokens"):
        AggregateGraph("http://127.0.0.1:9/v1#m", proposer_sampling={"max_tokens": 0})
    with pytest.raises(ConfigError, match="unknown backend spec"):
        AggregateGraph("nonsense-backend")
    with pytest.raises(ConfigError, match="outside 0..depth"):
        AggregateGraph("http://127.0.0.1:9/v1#m", depth=1, layers={5: {}})

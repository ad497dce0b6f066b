"""A heterogeneous graph: llama.cpp and vLLM servers propose, in-process vLLM aggregates."""

from __future__ import annotations

import pytest

from aft_sdk import AggregateGraph, OpenAIBackend

pytestmark = pytest.mark.slow


async def test_mixed_proposers_with_a_vllm_aggregator(llama_server, vllm_server, vllm_backend):
    llama = OpenAIBackend(llama_server.model, base_url=llama_server.base_url)
    served = OpenAIBackend(vllm_server.model, base_url=vllm_server.base_url)
    graph = AggregateGraph(
        [llama, served], vllm_backend, width=4, depth=2,
        proposer_sampling={"max_tokens": 24, "seed": 11},
        aggregator_sampling={"max_tokens": 32, "seed": 12},
    )
    calls_before = vllm_backend.engine.requests
    result = await graph.ainvoke("Name two fruits that are red. Answer briefly.")
    assert result.usage.generations == 4 * 2 + 1 and result.answer.strip()
    writers = [r.backend for r in result.layers[0].outputs]
    # Round-robin over the proposers: slots 0 and 2 on llama.cpp, 1 and 3 on vLLM.
    assert writers[0] == writers[2] == llama.label and writers[1] == writers[3] == served.label
    assert {r.backend for r in result.layers[1].outputs} == {vllm_backend.label}
    # The intermediate layer's 4 aggregations share one prompt: one request with n=4.
    assert result.layers[1].outputs[0].prompt_tokens > 0
    assert [r.prompt_tokens for r in result.layers[1].outputs[1:]] == [0, 0, 0]
    assert vllm_backend.engine.requests == calls_before + 2  # one request per aggregation layer

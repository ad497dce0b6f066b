"""Dollar cost of a run: priced from a backend's own price or the price database
(genai-prices), unknown (never 0) where nothing prices a model."""

from __future__ import annotations

import pytest

from aft_sdk import AggregateGraph, OpenAIBackend
from aft_sdk.errors import ConfigError

# gpt-4o-mini's published price, dollars per million tokens (input, output).
MINI = (0.15, 0.60)


def _dollars(prompt: int, completion: int, price: tuple[float, float]) -> float:
    return (prompt * price[0] + completion * price[1]) / 1e6


def test_a_known_model_costs_its_priced_tokens(fault) -> None:
    pytest.importorskip("genai_prices")
    # A gateway at our URL that resells OpenAI's model at OpenAI's price.
    api = OpenAIBackend("gpt-4o-mini", base_url=fault.base_url, price_provider="openai")
    result = AggregateGraph(api, api, width=2, depth=1).invoke("What is 2+2?")
    u = result.usage
    assert u.prompt_tokens > 0 and u.unpriced == []
    assert u.cost_usd == pytest.approx(_dollars(u.prompt_tokens, u.completion_tokens, MINI))
    assert sum(layer.usage.cost_usd for layer in result.layers) == pytest.approx(u.cost_usd)
    for r in result.layers[0].outputs:
        assert r.cost_usd == pytest.approx(_dollars(r.prompt_tokens, r.completion_tokens, MINI))


def test_an_unknown_model_has_an_unknown_cost_not_zero(fault) -> None:
    local = OpenAIBackend("p", base_url=fault.base_url)  # a server on 127.0.0.1, no price
    priced = OpenAIBackend("a", base_url=fault.base_url, price={"input": 1.0, "output": 2.0})
    result = AggregateGraph(local, priced, width=2, depth=1).invoke("What is 2+2?")
    assert result.usage.unpriced == [local.label]  # the total is a lower bound, and says so
    final = result.layers[1].outputs[0]
    assert final.cost_usd == pytest.approx(_dollars(final.prompt_tokens, final.completion_tokens,
                                                    (1.0, 2.0)))
    assert result.usage.cost_usd == pytest.approx(final.cost_usd)
    assert all(r.cost_usd is None for r in result.layers[0].outputs)
    assert result.layers[0].usage.unpriced == [local.label]


def test_a_price_is_checked_where_it_is_given(tmp_path) -> None:
    with pytest.raises(ConfigError, match="price"):
        OpenAIBackend("a", base_url="http://127.0.0.1:9/v1", price={"input": -1, "output": 2})
    config = tmp_path / "g.yaml"
    config.write_text("proposers:\n  - {type: openai, model: p, base_url: 'http://127.0.0.1:9/v1',"
                      " price: {input: 0.5, output: 1.5}}\n"
                      "aggregator:\n  - {type: openai, model: a, base_url: 'http://127.0.0.1:9/v1',"
                      " price: {inputs: 1}}\n")
    with pytest.raises(ConfigError, match="inputs"):
        AggregateGraph.from_config(config)

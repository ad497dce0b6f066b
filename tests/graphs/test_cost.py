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


def test_cached_prompt_tokens_cost_the_cached_rate(fault) -> None:
    # The fault server reports, as a provider's prompt cache does, the leading messages
    # an earlier request sent as cached: drafts after the first find the system prompt.
    price = {"input": 2.0, "cached_input": 0.5, "output": 4.0}
    api = fault.backend("p", price=price)
    messages = [{"role": "system", "content": "You are terse and answer in one line."},
                {"role": "user", "content": "What is 2+2?"}]
    result = AggregateGraph(api, width=3, depth=0).invoke(messages)
    drafts = result.layers[0].outputs
    system = len(messages[0]["content"].split())
    assert sorted(r.cached_tokens for r in drafts) == [0, system, system]
    assert result.usage.cached_tokens == 2 * system
    for r in drafts:
        fresh = r.prompt_tokens - r.cached_tokens
        want = (fresh * 2.0 + r.cached_tokens * 0.5 + r.completion_tokens * 4.0) / 1e6
        assert r.cost_usd == pytest.approx(want)
    # The database prices cached tokens at the provider's own rate (gpt-4o-mini: half).
    pytest.importorskip("genai_prices")
    mini = OpenAIBackend("gpt-4o-mini", base_url=fault.base_url, price_provider="openai")
    r = AggregateGraph(mini, width=2, depth=0).invoke(messages).layers[0].outputs
    cached = max(r, key=lambda o: o.cached_tokens)
    assert cached.cached_tokens == system
    fresh = cached.prompt_tokens - cached.cached_tokens
    assert cached.cost_usd == pytest.approx(
        (fresh * 0.15 + cached.cached_tokens * 0.075 + cached.completion_tokens * 0.6) / 1e6)


def _shape(result) -> list[str]:
    return [layer.kind for layer in result.layers]


async def test_a_dollar_budget_stops_a_run_before_it_passes_it(fault) -> None:
    api = fault.backend("p", price={"input": 1000.0, "output": 1000.0})  # $0.001 a token
    free = await AggregateGraph(api, api, width=3, depth=2).ainvoke("What is 2+2?")
    assert _shape(free) == ["propose", "aggregate", "aggregate"]
    drafts = free.layers[0].usage.cost_usd
    total = free.usage.cost_usd
    assert total == pytest.approx(free.usage.total_tokens / 1000)
    # Room for the drafts and little more: no aggregation starts, the drafts vote.
    fault.reset()
    capped = await AggregateGraph(api, api, width=3, depth=2,
                                  budget={"usd": drafts * 1.2}).ainvoke("What is 2+2?")
    assert _shape(capped) == ["propose", "budget"] and fault.count() == 3
    assert capped.layers[1].outputs[0].decision["stopped"] == "budget"
    assert capped.usage.cost_usd <= drafts * 1.2 and capped.answer in capped.proposals
    assert capped.budget["usd"] == pytest.approx(drafts * 1.2)
    # Whatever the cap between the drafts' cost and the whole run's, the run never
    # passes it; with room for the whole run it runs whole.
    for share in (0.5, 0.75, 0.9, 0.97, 0.99):
        cap = drafts + (total - drafts) * share
        fault.reset()
        run = await AggregateGraph(api, api, width=3, depth=2,
                                   budget={"usd": cap}).ainvoke("What is 2+2?")
        assert run.usage.cost_usd <= cap, (share, run.summary())
    fault.reset()
    roomy = await AggregateGraph(api, api, width=3, depth=2,
                                 budget={"usd": total * 1.3}).ainvoke("What is 2+2?")
    assert _shape(roomy) == _shape(free)


def test_a_dollar_budget_needs_a_price_for_every_model(fault) -> None:
    priced = fault.backend("a", price={"input": 1.0, "output": 1.0})
    local = fault.backend("p")  # a server on 127.0.0.1 with no price of its own
    with pytest.raises(ConfigError, match=r"budget.usd needs a price .* openai:p.*layer 0"):
        AggregateGraph(local, priced, width=2, depth=1, budget={"usd": 0.01})
    with pytest.raises(ConfigError, match="usd"):
        AggregateGraph(priced, priced, budget={"usd": -1})
    # Adaptive rounds stop before a round that would pass the dollars too.
    graph = AggregateGraph(priced, priced, strategy="vote", width=6, adaptive={"round_size": 2},
                           budget={"usd": 1e-9})
    result = graph.invoke("hi")
    assert result.usage.generations == 2  # the first round always runs

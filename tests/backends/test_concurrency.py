"""Concurrency with default settings: wide layers go out at once; 429s make it adapt."""

from __future__ import annotations

from aft_sdk import AggregateGraph, OpenAIBackend


async def test_default_settings_never_cap_a_layer_below_its_width(fault) -> None:
    fault.delay_s = 0.3
    prop = OpenAIBackend("p", base_url=fault.base_url, native_n=False)
    graph = AggregateGraph(prop, OpenAIBackend("a", base_url=fault.base_url), width=16, depth=1)
    result = await graph.ainvoke("q")
    assert result.usage.generations == 17
    assert fault.max_in_flight("p") == 16


async def test_an_overloaded_server_makes_the_limit_back_off_and_recover(fault) -> None:
    # The server serves 4 at once and answers 429 (Retry-After 0.05 s) beyond that.
    fault.delay_s = 0.2
    fault.capacity = 4
    fault.capacity_retry_after = 0.05
    # Probing upward after a cut can meet one more 429 (that is how AIMD finds the
    # capacity), so each call gets a few retries; without the limit, retries into the
    # overload would exhaust them.
    prop = OpenAIBackend("p", base_url=fault.base_url, native_n=False, max_retries=4)
    graph = AggregateGraph(prop, OpenAIBackend("a", base_url=fault.base_url), width=16, depth=1)
    result = await graph.ainvoke("q")
    assert result.usage.generations == 17 and result.usage.failures == 0
    assert fault.rejected > 0
    limiter = prop.limiter
    assert limiter.cuts >= 1 and limiter.allowed is not None and limiter.allowed <= 8
    before = limiter.limit
    fault.capacity = None
    for _ in range(3):
        await prop.generate([{"role": "user", "content": "more"}])
    assert limiter.limit > before  # additive increase on success


async def test_max_concurrency_is_a_hard_cap(fault) -> None:
    fault.delay_s = 0.2
    prop = OpenAIBackend("p", base_url=fault.base_url, native_n=False, max_concurrency=3)
    graph = AggregateGraph(prop, OpenAIBackend("a", base_url=fault.base_url), width=8, depth=1)
    await graph.ainvoke("q")
    assert fault.max_in_flight("p") == 3

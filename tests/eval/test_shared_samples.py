"""SharedSamples: a seeded request is generated once and read back, across runs too."""

from __future__ import annotations

import asyncio

import pytest

from aft_sdk.config import SamplingConfig
from aft_sdk.eval import SharedSamples
from aft_sdk.graphs import AggregateGraph


async def test_seeded_requests_are_generated_once_and_read_back(fault, tmp_path) -> None:
    # Unscripted, the fault server answers "answer 0 from p (seed S) to: <question>".
    path = tmp_path / "samples.jsonl"
    shared = SharedSamples(fault.backend("p"), path)
    seeded = SamplingConfig(seed=3)
    (a,) = await shared.generate([{"role": "user", "content": "q"}], sampling=seeded)
    (b,) = await shared.generate([{"role": "user", "content": "q"}], sampling=seeded)
    assert a.text == b.text == "answer 0 from p (seed 3) to: q" and fault.count("p") == 1
    assert (shared.misses, shared.hits) == (1, 1)
    # Another seed, other messages, or no seed at all: the model is asked.
    (c,) = await shared.generate([{"role": "user", "content": "q"}], sampling=SamplingConfig(seed=4))
    (d,) = await shared.generate([{"role": "user", "content": "other"}], sampling=seeded)
    (e,) = await shared.generate([{"role": "user", "content": "q"}], sampling=SamplingConfig())
    assert "(seed 4)" in c.text and d.text.endswith("to: other") and "(seed None)" in e.text
    assert fault.count("p") == 4
    # Concurrent equal requests share one generation; a new instance reads the file.
    again = SharedSamples(fault.backend("p"), path)
    outs = await asyncio.gather(*[again.generate([{"role": "user", "content": "new"}], sampling=seeded)
                                  for _ in range(3)])
    assert len({o[0].text for o in outs}) == 1 and fault.count("p") == 5
    (f,) = await again.generate([{"role": "user", "content": "q"}], sampling=seeded)
    assert f.text == a.text and fault.count("p") == 5 and (again.misses, again.hits) == (1, 1)


async def test_a_graph_and_a_single_sample_share_the_slot_zero_draft(fault, tmp_path) -> None:
    shared = SharedSamples(fault.backend("p"), tmp_path / "s.jsonl")
    drafts = AggregateGraph(shared, width=3, depth=0, proposer_sampling={"seed": 0})
    result = await drafts.ainvoke("q")
    one = await AggregateGraph(shared, width=1, depth=0, proposer_sampling={"seed": 0}).ainvoke("q")
    assert one.answer == result.proposals[0] and fault.count("p") == 3


def test_two_adapters_with_one_name_do_not_share_samples(tmp_path) -> None:
    from aft_sdk import EmbeddedBackend

    pytest.importorskip("llama_cpp")
    one, two = tmp_path / "a" / "x.gguf", tmp_path / "b" / "x.gguf"
    for path, data in ((one, b"first adapter"), (two, b"second adapter")):
        path.parent.mkdir()
        path.write_bytes(data)
    a = SharedSamples(EmbeddedBackend(lora_path=one), tmp_path / "s.jsonl")
    b = SharedSamples(EmbeddedBackend(lora_path=two), tmp_path / "s.jsonl")
    assert a.label == b.label and a.identity != b.identity  # nothing is loaded to tell
    base = SharedSamples(EmbeddedBackend(), tmp_path / "s.jsonl")
    assert base.identity == base.label


async def test_resuming_with_a_method_set_up_differently_is_refused(fault, tmp_path) -> None:
    from aft_sdk import ConfigError
    from aft_sdk.eval import KeywordTask, Method, aevaluate

    task = KeywordTask([{"id": "a", "question": "q", "keywords": ["answer"]}])

    def method(model: str, width: int = 2) -> Method:
        return Method("pa", "propose_aggregate", width=width, depth=1,
                      proposers=fault.backend(model), aggregator=fault.backend("agg"))

    await aevaluate(task, [method("p")], tmp_path, progress=False, plots=False)
    calls = len(fault.requests)
    await aevaluate(task, [method("p")], tmp_path, progress=False, plots=False)  # resumes
    assert len(fault.requests) == calls
    # Same name, other proposer model or width: its rows would stand in for the new setup.
    for changed, other in (("layers", method("other-model")), ("config", method("p", width=3))):
        with pytest.raises(ConfigError, match=rf"set up differently \(changed: .*{changed}"):
            await aevaluate(task, [other], tmp_path, progress=False, plots=False)
    assert len(fault.requests) == calls
    (tmp_path / "runs" / "pa.jsonl").unlink()  # as the message says: then it runs
    await aevaluate(task, [method("other-model")], tmp_path, progress=False, plots=False)
    assert len(fault.requests) > calls

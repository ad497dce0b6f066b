"""Strategies beyond width x depth: vote, adaptive rounds, skipping the aggregation, RSA.

Exact call counts come from our fault server, which records every request. Its canned
reply names the model and the seed, so drafts agree unless their seeds differ.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from aft_sdk.answers import get_extractor, tally
from aft_sdk.config import GraphConfig, validate
from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateGraph
from aft_sdk.testing.fault_server import FaultServer

AFT = [sys.executable, "-m", "aft_sdk.cli.main"]


def cfg(fault: FaultServer, proposers: list[str] = ("p",), **kw) -> dict:
    return {"proposers": [{"type": "openai", "model": m, "base_url": fault.base_url,
                           "max_retries": 0} for m in proposers],
            "aggregator": [{"type": "openai", "model": "a", "base_url": fault.base_url}], **kw}


async def test_vote_answers_with_the_majority_and_records_the_count(fault) -> None:
    graph = AggregateGraph.from_config(cfg(
        fault, ["p1", "p2", "p1", "p1"], strategy="vote", width=4,
        vote={"extractor": r"regex:from (\w+)"}))
    result = await graph.ainvoke("hi")
    assert fault.count() == 4 and fault.count("a") == 0
    assert result.answer.startswith("answer 0 from p1") and result.usage.generations == 4
    vote = result.layers[-1]
    assert vote.kind == "majority" and vote.usage.generations == 0
    decision = vote.outputs[0].decision
    assert decision["votes"] == {"p1": 3, "p2": 1} and decision["picked"] == 0
    assert decision["tie"] is False and decision["share"] == 0.75


async def test_a_tie_goes_to_the_first_answer_and_no_answer_drafts_do_not_vote(fault) -> None:
    graph = AggregateGraph.from_config(cfg(
        fault, ["zz", "p2", "p1"], strategy="vote", width=3,
        vote={"extractor": r"regex:from (p\d)"}))
    decision = (await graph.ainvoke("hi")).layers[-1].outputs[0].decision
    assert decision["no_answer"] == [0] and decision["tie"] is True
    assert decision["top"] == "p2" and decision["picked"] == 1
    none = AggregateGraph.from_config(cfg(fault, strategy="vote", width=2,
                                          vote={"extractor": "regex:nothing-like-this"}))
    result = await none.ainvoke("hi")
    assert result.layers[-1].outputs[0].decision["no_answer"] == [0, 1]
    assert result.answer.startswith("answer 0 from p")  # the first draft


async def test_adaptive_propose_aggregate_skips_the_aggregation_when_drafts_agree(fault) -> None:
    graph = AggregateGraph.from_config(cfg(fault, width=3, adaptive={}))
    result = await graph.ainvoke("hi")
    assert fault.count("p") == 3 and fault.count("a") == 0  # no aggregation call
    assert [layer.kind for layer in result.layers] == ["propose", "agreement"]
    assert result.layers[1].outputs[0].decision["skipped"] == "aggregation"
    assert result.usage.generations == 3
    # Drafts that differ (seeded: the reply names each slot's seed) are aggregated.
    fault.reset()
    seeded = AggregateGraph.from_config(cfg(fault, width=3, adaptive={},
                                            proposer_sampling={"seed": 1}))
    result = await seeded.ainvoke("hi")
    assert fault.count("p") == 3 and fault.count("a") == 1
    assert [layer.kind for layer in result.layers] == ["propose", "aggregate"]


async def test_adaptive_rounds_stop_at_agreement_or_at_width(fault) -> None:
    graph = AggregateGraph.from_config(cfg(fault, strategy="vote", width=6,
                                           adaptive={"round_size": 2}))
    result = await graph.ainvoke("hi")
    assert fault.count() == 2 and len(result.proposals) == 2  # round 1 agreed: stop
    fault.reset()
    # Seeds differ per slot, so no two drafts agree: every round goes out, 6 drafts.
    seeded = AggregateGraph.from_config(cfg(fault, strategy="vote", width=6,
                                            adaptive={"round_size": 2},
                                            proposer_sampling={"seed": 5}))
    events = [e async for e in seeded.astream("hi")]
    assert fault.count() == 6
    result = events[-1]["result"]
    assert sorted(r.slot for r in result.layers[0].outputs) == list(range(6))
    assert len({r["seed"] for r in fault.requests}) == 6  # no seed reused across rounds
    tokens = "".join(e["text"] for e in events if e["event"] == "token")
    assert tokens == result.answer  # the streamed text is the answer


async def test_rsa_makes_n_plus_n_times_t_generations_over_random_subsets(fault) -> None:
    graph = AggregateGraph.from_config(cfg(fault, strategy="rsa", width=4, depth=2,
                                           rsa={"subset": 2}))
    result = await graph.ainvoke("hi")
    assert fault.count() == 12 and result.usage.generations == 12
    assert [layer.kind for layer in result.layers] == ["propose", "aggregate", "aggregate",
                                                       "majority"]
    for layer in result.layers[1:3]:
        for out in layer.outputs:
            assert len(out.prompt["read"]) == 2 and set(out.prompt["read"]) <= set(range(4))
    reads = [tuple(o.prompt["read"]) for o in result.layers[1].outputs]
    assert len(set(reads)) > 1  # each slot draws its own subset (seeded)
    again = await graph.ainvoke("hi")
    assert [tuple(o.prompt["read"]) for o in again.layers[1].outputs] == reads
    fault.reset()
    final = AggregateGraph.from_config(cfg(fault, strategy="rsa", width=4, depth=2,
                                           rsa={"subset": 2, "final": "aggregate"}))
    result = await final.ainvoke("hi")
    assert fault.count() == 13 and len(result.layers[-1].outputs) == 1
    assert len(result.layers[-1].outputs[0].prompt["order"]) == 4  # the whole population


async def test_quorum_goes_on_without_the_straggler_and_cancels_it(fault) -> None:
    # One proposer of four never answers; 3-of-4 goes on with the other three.
    fault.script("slow", ["hang:1.5"])  # never answers while the run lasts
    graph = AggregateGraph.from_config(cfg(fault, ["p", "p", "p", "slow"], width=4,
                                           quorum=3))
    result = await graph.ainvoke("hi")
    proposals = result.layers[0].outputs
    assert [o.ok for o in proposals] == [True, True, True, False]
    assert proposals[3].error["type"] == "QuorumReachedError"
    assert "3 of 4" in proposals[3].error["message"]
    assert fault.count("a") == 1 and result.answer.startswith("answer 0 from a")
    with pytest.raises(ConfigError, match="quorum=5 must be between"):
        AggregateGraph(width=4, quorum=5)


async def test_every_strategy_keeps_to_its_budget(fault) -> None:
    with pytest.raises(ConfigError, match="below the 9 generations this shape needs"):
        AggregateGraph(width=4, depth=2, budget={"generations": 5})
    # Adaptive rounds stop before a round that would pass the generations budget.
    graph = AggregateGraph.from_config(cfg(fault, strategy="vote", width=6,
                                           adaptive={"round_size": 2},
                                           proposer_sampling={"seed": 5},
                                           budget={"generations": 4}))
    result = await graph.ainvoke("hi")
    assert fault.count() == 4 and result.usage.generations == 4
    # A token budget that the drafts fit but the aggregation would pass: no aggregation,
    # the drafts vote instead, and the trace says why.
    fault.reset()
    free = await AggregateGraph.from_config(cfg(fault, width=3)).ainvoke("hi")
    drafts = free.layers[0].usage.total_tokens
    fault.reset()
    capped = AggregateGraph.from_config(cfg(fault, width=3, budget={"tokens": drafts + 1}))
    result = await capped.ainvoke("hi")
    assert fault.count("a") == 0 and result.usage.total_tokens == drafts
    decision = result.layers[1].outputs[0].decision
    assert result.layers[1].kind == "budget" and decision["stopped"] == "budget"
    assert result.answer in result.proposals
    assert result.budget == {"generations": None, "tokens": drafts + 1, "usd": None}
    # Stopped before its second aggregation too: the result ends at the decision, whose
    # record is the answer (no empty layers after it).
    fault.reset()
    deep = AggregateGraph.from_config(cfg(fault, width=3, depth=2,
                                          budget={"tokens": drafts + 1}))
    result = await deep.ainvoke("hi")
    assert [layer.kind for layer in result.layers] == ["propose", "budget"]
    assert result.final_output.text == result.answer and "aggregate" not in result.summary()


@pytest.mark.needs("embedded")
def test_strategy_settings_are_checked_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="rsa.subset=5 exceeds width=4"):
        validate(GraphConfig, {"strategy": "rsa", "width": 4, "rsa": {"subset": 5}})
    with pytest.raises(ConfigError, match="unknown answer extractor"):
        validate(GraphConfig, {"strategy": "vote", "vote": {"extractor": "vibes"}})
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        validate(GraphConfig, {"vote": {"extractor": "regex:("}})
    with pytest.raises(ConfigError, match="cannot import"):
        validate(GraphConfig, {"vote": {"extractor": "import:nowhere.at_all:f"}})
    with pytest.raises(ConfigError, match="agreement"):
        validate(GraphConfig, {"adaptive": {"agreement": 0.4}})
    c = validate(GraphConfig, {"strategy": "rsa", "width": 4, "depth": 2,
                               "rsa": {"subset": 3, "final": "aggregate"}})
    assert GraphConfig.model_validate(c.model_dump()) == c
    assert AggregateGraph.from_config(c).config == c
    assert tally(["The answer is 12.", "12.0", "twelve"], get_extractor("number")).votes == {"12": 2}


def test_aft_run_takes_a_strategy(fault) -> None:
    url = f"{fault.base_url}#p"
    r = subprocess.run([*AFT, "run", "hi", "--strategy", "vote", "--width", "3", "--proposer",
                        url, "--extractor", "regex:from (\\w+)", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["strategy"] == "vote" and out["layers"][-1]["kind"] == "majority"
    assert out["layers"][-1]["outputs"][0]["decision"]["votes"] == {"p": 3}
    r = subprocess.run([*AFT, "run", "hi", "--strategy", "rsa", "--width", "2", "--rsa-subset",
                        "3", "--proposer", url], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "rsa.subset=3 exceeds width=2" in r.stderr


async def test_vote_on_the_llama_cpp_server(llama_server) -> None:
    graph = AggregateGraph(f"{llama_server.base_url}#{llama_server.model}", strategy="vote",
                           width=3,
                           vote={"extractor": "number"},
                           proposer_sampling={"max_tokens": 24, "seed": 0})
    result = await graph.ainvoke("What is 2 + 2? Answer with a number.")
    assert result.usage.generations == 3 and result.layers[-1].kind == "majority"
    assert result.answer in result.proposals


async def test_eval_and_the_chat_model_run_a_strategy_from_config(fault, tmp_path) -> None:
    from aft_sdk.eval import KeywordTask
    from aft_sdk.eval.methods import parse_method
    from aft_sdk.eval.runner import aevaluate
    from aft_sdk.integrations.langchain import AggregateChatModel

    path = tmp_path / "vote.yaml"
    path.write_text(f"strategy: vote\nwidth: 3\nproposers:\n  - {{type: openai, model: p, "
                    f"base_url: '{fault.base_url}'}}\n")
    task = KeywordTask([{"id": f"q{i}", "question": f"q{i}", "keywords": ["answer"]}
                        for i in range(3)])
    table = await aevaluate(task, [parse_method(f"config:{path}")], tmp_path / "eval",
                            progress=False, plots=False)
    assert table[0]["score"] == 1.0 and table[0]["generations_per_item"] == 3
    assert fault.count("p") == 9 and fault.count("a") == 0
    model = AggregateChatModel(graph=AggregateGraph.from_config(path))
    reply = await model.ainvoke("hi")
    assert reply.content.startswith("answer 0 from p")


async def test_best_of_n_by_a_verifier_or_a_judge(fault, tmp_path, monkeypatch) -> None:
    (tmp_path / "my_checks.py").write_text(
        "def prefers_p2(question, draft):\n"
        "    assert question == 'pick one'\n"
        "    return 1.0 if 'from p2' in draft else 0.0\n"
        "def broken(question, draft):\n"
        "    raise RuntimeError('nope')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = AggregateGraph.from_config(cfg(fault, ["p1", "p2", "p3"], strategy="best-of-n",
                                           width=3, vote={"verifier": "import:my_checks:prefers_p2"}))
    result = await graph.ainvoke("pick one")
    assert fault.count() == 3 and result.answer.startswith("answer 0 from p2")
    decision = result.layers[-1].outputs[0].decision
    assert decision["rule"] == "verifier" and decision["scores"] == [0.0, 1.0, 0.0]
    broken = AggregateGraph.from_config(cfg(fault, ["p1", "p2"], strategy="best-of-n", width=2,
                                            vote={"verifier": "import:my_checks:broken"}))
    result = await broken.ainvoke("pick one")  # a failing verifier loses, never crashes
    assert result.layers[-1].outputs[0].decision["scores"] == [None, None]
    # Without a verifier a judge model picks, with the select-v1 preset.
    fault.reset()
    fault.script("a", ["say:2"])
    judged = AggregateGraph.from_config(cfg(fault, ["p1", "p2", "p3"], strategy="best-of-n",
                                            width=3))
    result = await judged.ainvoke("pick one")
    assert judged.plan.template.name == "select-v1" and fault.count("a") == 1
    assert result.answer.startswith("answer 0 from p2")


async def test_strategies_checkpoint_and_resume(fault) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    graph = AggregateGraph.from_config(cfg(fault, strategy="rsa", width=3, depth=1,
                                           rsa={"subset": 2, "final": "aggregate"}),
                                       checkpointer=InMemorySaver())
    # The step's three aggregations answer; the final one fails (3 tries): the run stops.
    fault.script("a", ["ok"] * 3 + ["500"] * 3)
    with pytest.raises(Exception, match="the final aggregation"):
        await graph.ainvoke("hi", thread_id="t1")
    assert (fault.count("p"), fault.count("a")) == (3, 6)
    result = await graph.aresume("t1")  # drafts and the step are kept; only the end is redone
    assert (fault.count("p"), fault.count("a")) == (3, 7)
    assert [layer.kind for layer in result.layers] == ["propose", "aggregate", "aggregate"]


def test_results_written_before_decisions_had_a_field_still_load() -> None:
    """Older traces kept a vote's decision inside ``prompt``: they load with it moved to
    ``decision``, the prompt's own keys left where they were."""
    from aft_sdk.graphs import AggregateResult

    old = {"answer": "p", "messages": [{"role": "user", "content": "hi"}], "width": 3,
           "depth": 0, "preset": "aft-v1", "strategy": "vote",
           "usage": {"generations": 3},
           "layers": [{"index": 0, "kind": "propose", "usage": {"generations": 1},
                       "outputs": [{"layer": 0, "slot": 0, "ok": True, "text": "p",
                                    "prompt": {"order": [0]}}]},
                      {"index": 1, "kind": "majority", "usage": {},
                       "outputs": [{"layer": 1, "slot": 0, "ok": True, "text": "p",
                                    "derived": True, "prompt": {
                                        "rule": "majority", "votes": {"p": 3}, "picked": 0}}]}]}
    result = AggregateResult.model_validate_json(json.dumps(old))
    vote = result.layers[1].outputs[0]
    assert vote.decision == {"rule": "majority", "votes": {"p": 3}, "picked": 0}
    assert vote.prompt == {} and result.layers[0].outputs[0].prompt == {"order": [0]}
    assert result.layers[0].outputs[0].decision is None

"""Step-level search (beam, particle filtering) pinned on the fault server: exact call
counts, the kept paths, resampling, finished paths carried, the budget, refusals, and the
tree in the trace against the requests the server saw."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph, ConfigError
from aft_sdk.aio import run_sync
from aft_sdk.errors import GraphError
from aft_sdk.graphs.strategies.particle_filtering import ParticleFiltering, weights
from aft_sdk.graphs.search import Node
from aft_sdk.graphs.trace import OutputRecord
from aft_sdk.trainers.traces import trace_rows

SCORERS = Path(__file__).parent / "search_scorers"


@pytest.fixture(autouse=True)
def _scorers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SCORERS))


def search(fault, strategy: str, width: int, *, final: str = "aggregate", **own):
    key = strategy.replace("-", "_")
    return AggregateGraph(strategy=strategy, width=width,
                          proposers=[fault.backend("p", continuation="chat")],
                          aggregator=[fault.backend("a")], proposer_sampling={"seed": 0},
                          **{key: {"scorer": "import:seed_scores:by_seed", "final": final, **own}})


def steps_seen(fault) -> dict[int, str]:
    """The seed of each step request the server saw, and the partial answer it continued."""
    seen = {}
    for body in fault.requests:
        if body.get("model") == "p":
            last = body["messages"][-1]
            prefix = last["content"] if body.get("continue_final_message") else ""
            seen[body["seed"]] = prefix
    return seen


def test_beam_2x2x3_makes_12_steps_keeps_the_two_best_and_the_tree_is_what_the_server_saw(
        fault) -> None:
    fault.steps_to_finish = 9  # no path ends before max_steps
    graph = search(fault, "beam", 2, expansions=2, max_steps=3)
    result = graph.invoke("What is 2+2?")
    steps = result.layers[0].outputs
    assert len(steps) == 12 and all(r.ok for r in steps)
    assert fault.count("p") == 12 and fault.count("a") == 1
    assert result.usage.generations == 13
    # Scores rise with the seed (seed = node id here): step 1 keeps nodes 3 and 2, step 2
    # extends them into 4..7 and keeps 7 and 6, step 3 extends those into 8..11, and the
    # two best (11 and 10) are both 6's children.
    kept = {r.slot for r in steps if r.decision["kept"]}
    assert kept == {2, 3, 6, 7, 10, 11}
    assert [r.prompt["parent"] for r in steps] == [None] * 4 + [3, 3, 2, 2, 7, 7, 6, 6]
    answer = result.layers[1].outputs[0]
    assert answer.decision["candidates"] == [11, 10] and answer.decision["stopped"] == "max_steps"
    # The tree is the calls: each step continued exactly its parent's path.
    seen = steps_seen(fault)
    by_id = {r.slot: r for r in steps}
    for r in steps:
        parent, path = r.prompt["parent"], []
        while parent is not None:
            path.insert(0, by_id[parent].text)
            parent = by_id[parent].prompt["parent"]
        assert seen[r.slot] == "".join(s + "\n\n" for s in path)
        assert r.text == f"step {r.prompt['step']} seed {r.slot}"
    # The aggregator read the two kept paths whole; they are the result's drafts.
    assert result.proposals == ["step 1 seed 2\n\nstep 2 seed 6\n\nstep 3 seed 11",
                                "step 1 seed 2\n\nstep 2 seed 6\n\nstep 3 seed 10"]
    prompt = str(next(b for b in fault.requests if b["model"] == "a")["messages"])
    prompt = prompt.replace("\\n", "\n")
    assert all(p in prompt for p in result.proposals)
    (row,) = trace_rows([result])
    assert row.proposals == result.proposals and row.target == result.answer


def test_a_search_stops_when_every_kept_path_has_finished(fault) -> None:
    fault.steps_to_finish = 2
    result = search(fault, "beam", 2, expansions=2, max_steps=6, final="best").invoke("q?")
    steps = result.layers[0].outputs
    assert fault.count("p") == 8 and max(r.prompt["step"] for r in steps) == 2
    assert all(r.decision["finished"] for r in steps if r.prompt["step"] == 2)
    answer = result.layers[1].outputs[0]
    assert answer.derived and answer.decision["rule"] == "best-path"
    assert answer.decision["stopped"] == "finished"
    assert result.answer == "step 1 seed 2\n\nstep 2 seed 7 Answer: 7"  # 7's parent is 2
    assert result.usage.generations == 8  # a pick is no model call


def test_particle_filtering_resamples_in_proportion_to_the_scores(fault) -> None:
    rule = ParticleFiltering()
    scores = [0.2, 0.5, 0.8]
    nodes = {i: Node(i, None, 1, OutputRecord(layer=0, slot=i, ok=True,
                                               decision={"path_score": s}))
             for i, s in enumerate(scores)}
    settings = rule.settings(temperature=1.0)
    picks: Counter[int] = Counter()
    rng = random.Random(7)
    for _ in range(4000):
        picks.update(rule.select([], [0, 1, 2], nodes, 4, settings, rng))
    expected = weights(scores, 1.0)  # the odds: 0.25 : 1 : 4
    assert expected == pytest.approx([0.25 / 5.25, 1 / 5.25, 4 / 5.25])
    for i in range(3):
        assert abs(picks[i] / 16000 - expected[i]) < 0.015
    # A lower temperature keeps the best more often; weights: score is gentler.
    assert weights(scores, 0.25)[2] > expected[2] > weights(scores, 1.0, "score")[2]
    with pytest.raises(GraphError, match="logit needs path scores in"):
        weights([0.5, 2.0], 1.0)
    # Seeded by prompt.shuffle_seed and the step: the same run resamples the same way.
    fault.steps_to_finish = 9
    kept = []
    for _ in range(2):
        result = search(fault, "particle-filtering", 4, final="best", max_steps=3).invoke("q?")
        kept.append([(r.slot, r.decision["kept"]) for r in result.layers[0].outputs])
    assert kept[0] == kept[1] and sum(k for _, k in kept[0][:4]) == 4


def test_a_finished_particle_is_carried_not_extended(fault) -> None:
    fault.steps_to_finish = 9
    graph = search(fault, "particle-filtering", 4, final="vote", max_steps=3,
                   done=r"seed [02468]$")
    result = graph.invoke("q?")
    steps = {r.slot: r for r in result.layers[0].outputs}
    finished = {i for i, r in steps.items() if r.decision["finished"]}
    assert finished and all(r.prompt["parent"] not in finished for r in steps.values())
    last = max(r.prompt["step"] for r in steps.values())
    for k in range(1, last + 1):  # each step extends the unfinished particles kept before it
        made = [r for r in steps.values() if r.prompt["step"] == k]
        before = [r for r in steps.values() if r.prompt["step"] == k - 1]
        unfinished = sum(r.decision["kept"] for r in before if not r.decision["finished"])
        assert len(made) == (4 if k == 1 else unfinished)
        assert sum(r.decision["kept"] for r in made) <= 4
    # Only unfinished particles were extended: requests = the steps recorded.
    assert fault.count("p") == len(steps) and fault.count("a") == 0
    answer = result.layers[1].outputs[0]
    assert answer.decision["rule"] == "majority"
    assert set(answer.decision["candidates"]) <= set(steps)


def test_the_budget_stops_the_search_before_it_is_passed(fault) -> None:
    fault.steps_to_finish = 9
    graph = AggregateGraph(strategy="beam", width=2, budget={"generations": 7},
                           proposers=[fault.backend("p", continuation="chat")],
                           aggregator=[fault.backend("a")],
                           beam={"scorer": "import:seed_scores:by_seed", "max_steps": 5})
    result = graph.invoke("q?")
    assert result.usage.generations <= 7 and fault.count() == result.usage.generations == 5
    assert result.layers[1].outputs[0].decision["stopped"] == "budget"
    with pytest.raises(ConfigError, match="budget.generations=4 is below the 5"):
        graph.with_options(budget={"generations": 4})


def test_a_token_budget_stops_the_search_before_it_is_passed(fault) -> None:
    fault.steps_to_finish = 9
    free = search(fault, "beam", 2, max_steps=4).invoke("q?")
    cap = free.usage.total_tokens // 2
    fault.reset()
    fault.steps_to_finish = 9
    graph = AggregateGraph(strategy="beam", width=2, budget={"tokens": cap},
                           proposers=[fault.backend("p", continuation="chat")],
                           aggregator=[fault.backend("a")], proposer_sampling={"seed": 0},
                           beam={"scorer": "import:seed_scores:by_seed", "max_steps": 4})
    capped = graph.invoke("q?")
    assert capped.usage.total_tokens <= cap < free.usage.total_tokens
    assert capped.layers[1].outputs[0].decision["stopped"] == "budget"
    assert capped.layers[1].outputs[0].ok  # the aggregation still fitted


def test_a_backend_that_cannot_continue_is_refused_when_the_graph_is_built(fault) -> None:
    with pytest.raises(ConfigError, match="cannot continue a partial answer.*continuation: chat"):
        AggregateGraph(strategy="beam", proposers=[fault.backend("p")],
                       aggregator=[fault.backend("a")])
    assert fault.count() == 0
    with pytest.raises(ConfigError, match="set chat_template"):
        fault.backend("p", continuation="completions")
    bad = fault.backend("p", continuation="completions", chat_template="/nowhere/t.jinja")
    with pytest.raises(ConfigError, match="neither a template nor a file"):
        AggregateGraph(strategy="beam", proposers=[bad], aggregator=[fault.backend("a")])
    with pytest.raises(ConfigError, match="read: logprobs applies to a judge"):
        AggregateGraph(strategy="beam", beam={"scorer": "import:m:f", "read": "logprobs"})


def test_tools_are_refused_by_a_search_and_a_bad_scorer_is_named(fault) -> None:
    graph = search(fault, "beam", 2, max_steps=2)
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(ConfigError, match="cannot carry tools"):
        graph.invoke("q?", call={"tools": [tool]})
    bad = graph.with_options(beam={"scorer": "import:seed_scores:broken", "max_steps": 2})
    with pytest.raises(GraphError, match=r"step scorer seed_scores:broken returned 'high'"):
        bad.invoke("q?")
    with pytest.raises(ConfigError, match="scorer 'magic' is none of"):
        graph.with_options(beam={"scorer": "magic"})


@pytest.mark.needs("embedded")  # jinja2 renders the template
def test_completions_continuation_renders_the_template_and_continues_it(fault) -> None:
    template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}assistant: "
    backend = fault.backend("p", continuation="completions", chat_template=template)
    question = [{"role": "user", "content": "hi"}]
    (first,) = run_sync(backend.continue_text(question, "", separator="\n\n"))
    (second,) = run_sync(backend.continue_text(question, first.text + "\n\n", separator="\n\n"))
    assert (first.text, first.finish_reason) == ("step 1 seed None", "step")
    assert fault.requests[-1]["prompt"] == "user: hi\nassistant: step 1 seed None\n\n"
    assert fault.requests[-1]["stop"] == ["\n\n"] and second.text == "step 2 seed None"


async def test_a_judge_scores_steps_from_its_answer_or_its_logprobs(fault) -> None:
    from aft_sdk.backends.base import Generation
    from aft_sdk.graphs.steps import JudgeScorer

    fault.script("j", ["say:8", "say:I think 3", "say:no idea"])
    judge = JudgeScorer(fault.backend("j"))
    scores = sorted(await judge.score("q?", [["a"], ["a", "b"], ["c"]]))
    assert scores == [0.0, 0.3, 0.8] and judge.unread == 1
    asked = next(b for b in fault.requests if b["model"] == "j")
    assert "Question: q?" in asked["messages"][0]["content"] and asked["temperature"] == 0
    fault.script("j", ["say:7"])
    by_logprobs = JudgeScorer(fault.backend("j"), read="logprobs")
    assert await by_logprobs.score("q?", [["a"]]) == [0.7]
    assert fault.requests[-1]["logprobs"] is True and fault.requests[-1]["top_logprobs"] == 10
    weighted = Generation(text="6", logprobs=[{"token": "6", "logprob": -0.693, "top_logprobs": [
        {"token": "6", "logprob": -0.693}, {"token": "9", "logprob": -0.693},
        {"token": "x", "logprob": -3.0}]}])
    assert by_logprobs._rating(weighted) == pytest.approx(0.75, abs=1e-3)
    # As a search's scorer, named by spec: the judge is another backend of the server.
    fault.script("j", ["say:5"] * 8)
    before = fault.count("j")
    graph = AggregateGraph(strategy="beam", width=2, proposers=[fault.backend(
        "p", continuation="chat")], beam={"scorer": f"judge:{fault.base_url}#j",
                                         "max_steps": 1, "final": "best"})
    result = await graph.ainvoke("q?")
    assert fault.count("j") - before == 4  # one rating per step
    steps = [r for r in result.layers[0].outputs if "parent" in r.prompt]
    ratings = [r for r in result.layers[0].outputs if "scorer" in r.prompt]
    assert {r.decision["score"] for r in steps} == {0.5} and len(ratings) == 4
    assert sorted(r.prompt["scorer"] for r in ratings) == sorted(r.slot for r in steps)
    assert result.usage.generations == 8  # the judge's calls count, and cost, too
    assert all(r.text == "5" for r in ratings)


async def test_a_search_streams_its_steps_and_the_answers_tokens(fault) -> None:
    fault.steps_to_finish = 2
    graph = search(fault, "particle-filtering", 2, max_steps=4)
    events = [e async for e in graph.astream("q?")]
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == [1, 2] and steps[0]["ok"] == 2
    result = events[-1]["result"]
    tokens = "".join(e["text"] for e in events if e["event"] == "token")
    assert tokens == result.answer and result.answer.startswith("answer 0 from a")


async def test_a_search_resumes_from_its_last_step(fault) -> None:
    from langgraph.checkpoint.memory import InMemorySaver

    fault.steps_to_finish = 9
    graph = AggregateGraph(strategy="beam", width=2, checkpointer=InMemorySaver(),
                           proposers=[fault.backend("p", continuation="chat")],
                           aggregator=[fault.backend("a")],
                           beam={"scorer": "import:seed_scores:by_seed", "max_steps": 2})
    fault.script("a", ["500"])
    with pytest.raises(Exception, match="the final aggregation"):
        await graph.ainvoke("q?", thread_id="s1")
    assert fault.count("p") == 8
    result = await graph.aresume("s1")  # the steps are kept; only the answer is redone
    assert fault.count("p") == 8 and result.usage.generations == 9
    assert len(result.layers[0].outputs) == 8


async def test_a_search_past_its_deadline_answers_from_the_paths_it_has(fault) -> None:
    fault.steps_to_finish = 9
    graph = AggregateGraph(strategy="beam", width=1, deadline_s=1.5,
                           proposers=[fault.backend("p", continuation="chat")],
                           beam={"scorer": "import:seed_scores:by_seed", "expansions": 1,
                                 "max_steps": 20, "final": "best"})
    fault.script("p", ["ok", "ok", "delay:5"])
    result = await graph.ainvoke("q?")
    answer = result.layers[1].outputs[0]
    assert answer.decision["stopped"] == "deadline" and result.elapsed_s < 5
    assert result.answer == "step 1 seed None\n\nstep 2 seed None"
    assert [r.ok for r in result.layers[0].outputs] == [True, True, False]


def test_searches_run_from_the_command_line_yaml_eval_and_the_chat_model(fault, tmp_path) -> None:
    import json
    import subprocess

    from aft_sdk.integrations.langchain import AggregateChatModel

    fault.steps_to_finish = 2
    path = tmp_path / "beam.yaml"
    path.write_text(
        "strategy: beam\nwidth: 2\nproposers:\n"
        f"  - {{type: openai, model: p, base_url: '{fault.base_url}', continuation: chat}}\n"
        "beam: {scorer: 'import:aft_sdk.eval.chain:step_score', final: best}\n")
    r = subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", "run", "q?", "--config",
                        str(path), "--beam-expansions", "1", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["strategy"] == "beam" and len(out["layers"][0]["outputs"]) == 4
    assert out["layers"][1]["outputs"][0]["decision"]["rule"] == "best-path"
    r = subprocess.run([sys.executable, "-m", "aft_sdk.cli.main", "run", "q?", "--strategy",
                        "particle-filtering", "--proposer", f"{fault.base_url}#p",
                        "--aggregator", f"{fault.base_url}#a"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "cannot continue a partial answer" in r.stderr
    model = AggregateChatModel(graph=AggregateGraph.from_config(path))
    assert model.invoke("q?").content.endswith("Answer: None")  # unseeded: seed None
    from aft_sdk.aio import run_sync
    from aft_sdk.eval.chain import ChainTask
    from aft_sdk.eval.methods import parse_method
    from aft_sdk.eval.runner import aevaluate

    task = ChainTask([{"id": "c1", "question": "Start with 2. Add 1.", "answer": "3"}])
    table = run_sync(aevaluate(task, [parse_method(f"config:{path}")], tmp_path / "eval",
                               progress=False, plots=False))
    assert table[0]["generations_per_item"] == 8 and table[0]["score"] == 0.0

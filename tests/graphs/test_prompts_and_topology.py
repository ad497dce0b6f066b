"""Prompt bytes are pinned, custom templates render exactly, shuffles repeat, and the
compiled graph's drawing is pinned per depth."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aft_sdk import AggregateGraph, ConfigError, OpenAIBackend, get_template
from aft_sdk.prompts import PRESETS, parse_selection, shuffled_order

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4"},
    {"role": "user", "content": "And 3+3?"},
]
PROPOSALS = ["six", "6", "It is 6."]

# Changing a preset's wording changes these: add a new version instead (aft-v2 ...),
# because checkpoints were trained on the old bytes.
PINNED = {
    "aft-v1": "9c0ef4815f614e82789eb5dc6c6d8fb82c959e740a9c2ab6c88bed1505b8046a",
    "moa-v1": "762c4d85d80c5a44a0b3e49f967e549667b2140f9a43604248d241da6f7ca060",
    "select-v1": "2cbb505b57868acc5a636b6d62bae6b9e27c3dd1c124ced1387de15a3326b27e",
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_bytes_are_pinned(name: str) -> None:
    rendered = PRESETS[name].render(CONVERSATION, PROPOSALS)
    digest = hashlib.sha256(json.dumps(rendered, ensure_ascii=False).encode()).hexdigest()
    assert digest == PINNED[name]


def test_aft_layout_puts_numbered_proposals_in_the_system_message() -> None:
    out = get_template("aft-v1").render(CONVERSATION, PROPOSALS)
    assert out[0]["role"] == "system"
    assert "\n1. six\n2. 6\n3. It is 6." in out[0]["content"]
    assert out[0]["content"].endswith("\n\nBe brief.")  # the user's system prompt is kept
    assert out[1:] == CONVERSATION[1:]  # user turns unchanged


def test_custom_template_renders_byte_for_byte() -> None:
    template = (
        "Synthesize {num_proposals} answers; keep JSON like {\"a\": 1} as is.\n"
        "{proposals}\n--end--"
    )
    out = get_template(template=template).render(CONVERSATION[1:2], ["alpha", "beta"])
    expected = (
        "Synthesize 2 answers; keep JSON like {\"a\": 1} as is.\n"
        "1. alpha\n2. beta\n--end--"
    )
    assert out == [{"role": "system", "content": expected}, CONVERSATION[1]]


def test_custom_template_without_placeholder_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"\{proposals\}"):
        get_template(template="no placeholder here")
    with pytest.raises(ConfigError, match="unknown prompt preset 'aft-v9'"):
        get_template("aft-v9")


def test_shuffle_is_seeded_and_reproducible() -> None:
    a = shuffled_order(8, seed=3, layer=1, slot=0)
    assert a == shuffled_order(8, seed=3, layer=1, slot=0)
    assert sorted(a) == list(range(8))
    others = {tuple(shuffled_order(8, seed=s, layer=1, slot=k)) for s in range(3) for k in range(3)}
    assert len(others) > 1


async def test_shuffle_and_model_names_reach_the_aggregator(fault) -> None:
    a = OpenAIBackend("prop-a", base_url=fault.base_url)
    b = OpenAIBackend("prop-b", base_url=fault.base_url)
    agg = OpenAIBackend("agg", base_url=fault.base_url)
    graph = AggregateGraph([a, b], agg, width=4, depth=1,
                           prompt={"shuffle": True, "shuffle_seed": 5, "hide_models": False})
    result = await graph.ainvoke("hi")
    info = result.layers[1].outputs[0].prompt
    assert info["order"] == shuffled_order(4, seed=5, layer=1, slot=0)
    system = next(r for r in fault.requests if r["model"] == "agg")["messages"][0]["content"]
    assert "[prop-a]" in system and "[prop-b]" in system
    first_shown = result.layers[0].outputs[info["order"][0]].text
    assert f"1. [{result.layers[0].outputs[info['order'][0]].model}] {first_shown}" in system


def test_selection_parsing() -> None:
    assert parse_selection("2", 3) == 1
    assert parse_selection("Candidate 3 is best", 3) == 2
    assert parse_selection("none fits", 3) is None
    assert parse_selection("7", 3) is None


async def test_select_preset_outputs_the_chosen_proposal(fault) -> None:
    prop = OpenAIBackend("p", base_url=fault.base_url)
    agg = OpenAIBackend("judge", base_url=fault.base_url)
    fault.script("judge", ["say:Candidate 2"])
    graph = AggregateGraph(prop, agg, width=3, depth=1, preset="select")
    result = await graph.ainvoke("hi")
    assert result.layers[1].outputs[0].decision["selection"] == {"raw": "Candidate 2", "picked": 1}
    assert result.answer == result.layers[0].outputs[1].text
    judge_prompt = next(r for r in fault.requests if r["model"] == "judge")["messages"]
    assert judge_prompt[-1]["content"].startswith("Question:\nhi\n\nHere are 3 candidate")


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_topology_is_pinned(depth: int) -> None:
    expected = (Path(__file__).parent / "topology" / f"depth{depth}.mmd").read_text()
    for width in (1, 4):
        graph = AggregateGraph("http://127.0.0.1:9/v1#m", "http://127.0.0.1:9/v1#m",
                               width=width, depth=depth)
        assert graph.draw_mermaid() == expected

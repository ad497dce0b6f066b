"""One prompt format from training to serving, and one way to build a graph.

The byte-for-byte test runs a real graph against our fault server (which records every
request body) and compares what its aggregator received with what each data builder,
the teacher and the trainer's formatting render for the same drafts.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from aft_sdk.backends.embedded_backend import BUNDLED_ADAPTER
from aft_sdk.config import GraphConfig, PromptConfig, load_yaml, validate
from aft_sdk.errors import ConfigError
from aft_sdk.graphs import AggregateGraph
from aft_sdk.testing.fault_server import FaultServer

pytest.importorskip("trl", reason="the train extra (the core suite on Python 3.12/3.13 has none)")
from aft_sdk.trainers import (  # noqa: E402
    AggregatorConfig,
    abuild_on_policy,
    abuild_teacher_targets,
    off_policy_rows,
    trace_rows,
)
from aft_sdk.trainers.formatting import row_prompt

CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs"

CUSTOM = PromptConfig(preset="moa-v1", item_format="<draft {index}>\n{text}\n</draft>",
                      separator="\n~~~\n", placement="user")


def _graph(fault: FaultServer, prompt: PromptConfig, **kw) -> AggregateGraph:
    return AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#agg",
                          width=3, prompt=prompt, **kw)


async def test_every_builder_renders_the_bytes_the_graph_sends(fault: FaultServer,
                                                               tmp_path: Path) -> None:
    question = [{"role": "user", "content": "What is 7 plus 5?"}]
    result = await _graph(fault, CUSTOM).ainvoke(question)
    sent = [r for r in fault.requests if r["model"] == "agg"]
    assert len(sent) == 1
    graph_bytes = sent[0]["messages"]
    assert "<draft 2>" in json.dumps(graph_bytes) and graph_bytes[-1]["role"] == "user"
    drafts = result.proposals
    # The trainer renders rows with AggregatorConfig's prompt: the same fields, as flags.
    train_args = AggregatorConfig(
        model_name_or_path="embedded", dataset_path="rows.jsonl", output_dir=str(tmp_path / "o"),
        preset="moa-v1", item_format=CUSTOM.item_format, separator=CUSTOM.separator,
        placement="user", report_to="none", use_cpu=True)
    assert train_args.prompt_config().render_fields() == CUSTOM.render_fields()
    template = train_args.prompt_config().template_obj()

    # Off-policy rows (drafts from data), traces (drafts from graph results), on-policy
    # rows (drafts sampled through the graph's propose step): each renders the same bytes.
    off = next(off_policy_rows([{"id": "q", "prompt": question[0]["content"],
                                 "completions": [{"response": d, "rating": 1} for d in drafts],
                                 "reference": "12"}],
                               target="reference", reference_field="reference",
                               num_proposals=3, shuffle=False))
    traced = next(trace_rows([result]))
    for row in (off, traced):
        assert row_prompt(row, template) == graph_bytes

    # The teacher reads the same bytes (its request is recorded by the server).
    fault.reset()
    out = tmp_path / "teacher.jsonl"
    await abuild_teacher_targets([off], f"{fault.base_url}#teacher", out, prompt=CUSTOM,
                                 progress=False)
    (teacher_req,) = [r for r in fault.requests if r["model"] == "teacher"]
    assert teacher_req["messages"] == graph_bytes

    # On-policy with a teacher: the builder samples fresh drafts, so the teacher's request
    # must equal the graph's rendering of those drafts.
    fault.reset()
    on = tmp_path / "on.jsonl"
    await abuild_on_policy([{"id": "q", "prompt": question[0]["content"]}],
                           f"{fault.base_url}#p", on, k=3,
                           teacher=f"{fault.base_url}#teacher", prompt=CUSTOM,
                           reference_field=None, progress=False)
    (row,) = [json.loads(line) for line in on.read_text().splitlines()]
    (teacher_req,) = [r for r in fault.requests if r["model"] == "teacher"]
    graph = _graph(fault, CUSTOM)
    rendered, _ = graph.plan.aggregation_prompt(question, [{"text": p} for p in row["proposals"]],
                                                1, 0)
    assert teacher_req["messages"] == rendered
    assert "\n~~~\n<draft 3>\n" + row["proposals"][2] in teacher_req["messages"][-1]["content"]


def test_a_trained_aggregator_brings_its_prompt(fault: FaultServer, tmp_path: Path) -> None:
    # aft_sdk.json as aft train writes it, beside a GGUF adapter export.
    adapter = tmp_path / "adapter.gguf"
    adapter.write_bytes(BUNDLED_ADAPTER.read_bytes())
    (tmp_path / "aft_sdk.json").write_text(json.dumps({
        "preset": "moa-v1+custom", "prompt_config": CUSTOM.model_dump(mode="json")}))
    assert PromptConfig.of_model(adapter) == CUSTOM
    from aft_sdk.backends.embedded_backend import EmbeddedBackend

    agg = EmbeddedBackend(lora_path=adapter)
    assert agg.trained_prompt == CUSTOM
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unset: the trained prompt, no warning
        graph = AggregateGraph(f"{fault.base_url}#p", agg)
    assert graph.plan.prompt.render_fields() == CUSTOM.render_fields()
    assert graph.plan.template.item_format == CUSTOM.item_format
    with pytest.warns(UserWarning, match="trained with the prompt .*the graph's is used"):
        mine = AggregateGraph(f"{fault.base_url}#p", agg, preset="aft-v1")
    assert mine.plan.template.name == "aft-v1"
    # The shipped adapter carries its record too (aft-v1), and the default uses it.
    shipped = PromptConfig.of_model(BUNDLED_ADAPTER)
    assert shipped is not None and shipped.preset == "aft-v1"


def test_records_written_before_prompt_config_still_load(tmp_path: Path) -> None:
    (tmp_path / "aft_sdk.json").write_text(json.dumps({
        "preset": "aft-v1+custom", "template": None,
        "prompt": {"item_format": "* {text}", "separator": "\n\n", "placement": "system"}}))
    got = PromptConfig.of_model(tmp_path)
    assert got == PromptConfig(preset="aft-v1", item_format="* {text}", separator="\n\n",
                               placement="system")
    (tmp_path / "aft_sdk.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        PromptConfig.of_model(tmp_path)


@pytest.mark.parametrize("name", ["graph.yaml", "paper_graph.yaml"])
def test_graph_config_round_trips(name: str, tmp_path: Path) -> None:
    c = load_yaml(CONFIGS / name, GraphConfig)
    assert GraphConfig.model_validate(c.model_dump()) == c
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(c.model_dump(mode="json")))
    assert load_yaml(path, GraphConfig) == c
    assert AggregateGraph.from_config(c).config == c


def test_keywords_build_the_config_once(fault: FaultServer) -> None:
    g = AggregateGraph(f"{fault.base_url}#p", f"{fault.base_url}#a", width=2,
                       preset="moa", shuffle=True, proposer_sampling={"max_tokens": 9})
    assert g.portable and g.source == g.config
    assert g.config.prompt.preset == "moa" and g.config.prompt.shuffle
    assert g.config.proposer_sampling.max_tokens == 9
    again = AggregateGraph.from_config(g.config)
    assert again.config == g.config and again.plan.template == g.plan.template
    assert AggregateGraph.from_config(g.config, width=4).config == g.config.with_changes(width=4)
    with pytest.raises(ConfigError, match="either under prompt: or at the top level"):
        validate(GraphConfig, {"preset": "moa", "prompt": {"preset": "aft-v1"}})
    with pytest.raises(ConfigError, match="unknown prompt preset"):
        AggregateGraph(preset="nope")

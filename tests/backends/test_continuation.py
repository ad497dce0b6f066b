"""Continuing a partial answer on real engines, and searches over steps end to end: the
llama.cpp server (a prompt rendered with the GGUF's template, to /v1/completions), the
embedded model, the vLLM engine; the transformers PRM on a small token-classification
model made here, and the vLLM PRM's request and reading dry-run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from aft_sdk import AggregateGraph
from aft_sdk.config import SamplingConfig
from aft_sdk.eval.chain import ChainTask, chain_problems

pytestmark = pytest.mark.slow

GREEDY = SamplingConfig(temperature=0.0, max_tokens=48)
ITEM = chain_problems(1, seed=1)[0]
QUESTION = ChainTask([ITEM]).prompt(ITEM)
STEPS = {"scorer": "import:aft_sdk.eval.chain:step_score", "final": "best",
         "step_max_tokens": 32, "done": "Answer:"}


def same_start(step: str, whole: str) -> bool:
    """The step begins as the chat's answer to the same prompt does (greedy; engines
    that reuse a cached prefix may drift apart later by near-ties in the logits)."""
    return bool(step) and "\n\n" not in step and step[:8] == whole[:8]


async def check_search(graph: AggregateGraph, steps: int) -> None:
    result = await graph.ainvoke(QUESTION)
    records = result.layers[0].outputs
    assert records and all(r.ok for r in records)
    assert max(r.prompt["step"] for r in records) <= steps
    assert {r.finish_reason for r in records} <= {"step", "stop", "length", "stop_or_step"}
    answer = result.layers[1].outputs[0]
    assert answer.decision["rule"] == "best-path" and result.answer == result.proposals[0]
    by_id = {r.slot: r for r in records}  # the answer is its path's steps, in order
    node, path = answer.decision["candidates"][0], []
    while node is not None:
        path.insert(0, by_id[node].text)
        node = by_id[node].prompt["parent"]
    assert result.answer == "\n\n".join(path)


async def test_the_llama_cpp_server_continues_what_its_chat_would_say(llama_server,
                                                                      gguf_path) -> None:
    from aft_sdk.backends.openai_backend import OpenAIBackend

    chat = OpenAIBackend(llama_server.model, base_url=llama_server.base_url)
    steps = OpenAIBackend(llama_server.model, base_url=llama_server.base_url,
                          continuation="completions", chat_template=str(gguf_path))
    (whole,) = await chat.generate(QUESTION, sampling=GREEDY)
    (step,) = await steps.continue_text(QUESTION, "", separator="\n\n", sampling=GREEDY)
    assert same_start(step.text, whole.text) and step.completion_tokens > 0
    # The server does not say which stop it hit: a step that ended is "stop_or_step".
    assert step.finish_reason in ("stop_or_step", "length")
    graph = AggregateGraph(strategy="beam", width=1, proposers=[steps],
                           beam={**STEPS, "expansions": 2, "max_steps": 2},
                           proposer_sampling={"seed": 0})
    await check_search(graph, 2)


@pytest.mark.needs("embedded")
async def test_the_embedded_model_continues_and_knows_its_separator() -> None:
    from aft_sdk.backends.embedded_backend import EmbeddedBackend

    backend = EmbeddedBackend()
    try:
        (whole,) = await backend.generate(QUESTION, sampling=GREEDY)
        (step,) = await backend.continue_text(QUESTION, "", separator="\n\n", sampling=GREEDY)
        assert same_start(step.text, whole.text)
        if "\n\n" in whole.text:  # the separator ended it, and llama.cpp's criterion knew
            assert step.finish_reason == "step"
        graph = AggregateGraph(strategy="particle-filtering", width=2, proposers=[backend],
                               particle_filtering={**STEPS, "max_steps": 2},
                               proposer_sampling={"seed": 0})
        await check_search(graph, 2)
    finally:
        backend.close()


async def test_the_vllm_engine_continues_with_an_exact_stop_reason(vllm_backend) -> None:
    (whole,) = await vllm_backend.generate(QUESTION, sampling=GREEDY)
    (step,) = await vllm_backend.continue_text(QUESTION, "", separator="\n\n", sampling=GREEDY)
    assert same_start(step.text, whole.text)
    assert step.finish_reason == ("step" if "\n\n" in whole.text else whole.finish_reason)
    (more,) = await vllm_backend.continue_text(QUESTION, step.text + "\n\n", separator="\n\n",
                                               sampling=GREEDY)
    assert more.text and more.prompt_tokens > step.prompt_tokens
    graph = AggregateGraph(strategy="beam", width=1, proposers=[vllm_backend],
                           beam={**STEPS, "expansions": 2, "max_steps": 2},
                           proposer_sampling={"seed": 0})
    await check_search(graph, 2)


@pytest.fixture(scope="module")
def tiny_prm(hf_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A token-classification model on the bundled model's tokenizer (random weights:
    real loading and scoring code, meaningless scores)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForTokenClassification

    tok = AutoTokenizer.from_pretrained(hf_model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         num_labels=2, pad_token_id=tok.pad_token_id or 0)
    out = tmp_path_factory.mktemp("tiny-prm")
    LlamaForTokenClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.needs("train")
async def test_a_transformers_prm_scores_each_step_at_its_separator(tiny_prm: Path) -> None:
    from aft_sdk.errors import ConfigError
    from aft_sdk.graphs.steps import TransformersPRM

    prm = TransformersPRM(str(tiny_prm), "\n")
    short, long = ["3 * 2 = 6"], ["3 * 2 = 6", "6 - 3 = 3", "Answer: 3"]
    alone, batch = await prm.score("q", [short]), await prm.score("q", [short, long])
    assert len(batch[0]) == 1 and len(batch[1]) == 3
    assert all(0.0 < s < 1.0 for scores in batch for s in scores)
    assert alone[0] == pytest.approx(batch[0], abs=1e-5)  # padding changes nothing
    ids, at = prm.encode("q", long)
    assert [ids[i] for i in at] == [prm._loaded[2]] * 3 and at[-1] == len(ids) - 1
    with pytest.raises(ConfigError, match="is 2 tokens"):
        await TransformersPRM(str(tiny_prm), "\n\n\n\n step").score("q", [short])
    with pytest.raises(ConfigError, match="cannot be loaded"):
        await TransformersPRM(str(tiny_prm / "nowhere"), "\n").score("q", [short])


def test_the_vllm_prm_builds_its_requests_and_reads_step_rewards() -> None:
    import torch

    from aft_sdk.errors import GraphError
    from aft_sdk.graphs.steps import VLLMPRM

    prm = VLLMPRM("Qwen/Qwen2.5-Math-PRM-7B", "<extra_0>")
    kwargs = prm.engine_kwargs(151651)
    assert kwargs == {"model": "Qwen/Qwen2.5-Math-PRM-7B", "runner": "pooling",
                      "enable_prefix_caching": True, "pooler_config": {"step_tag_id": 151651}}
    try:  # the pooler config vLLM is given (where vLLM is installed)
        from vllm.config import PoolerConfig
    except ImportError:
        pass
    else:
        assert PoolerConfig(**kwargs["pooler_config"]).step_tag_id == 151651
    paths = [["a", "b"], ["c"]]
    assert prm.prompts("q", paths) == ["q\na<extra_0>b<extra_0>", "q\nc<extra_0>"]
    out = [SimpleNamespace(outputs=SimpleNamespace(data=torch.tensor([[0.9, 0.1], [0.2, 0.8]]))),
           SimpleNamespace(outputs=SimpleNamespace(data=torch.tensor([[0.5, 0.5]])))]
    assert VLLMPRM.read(out, paths) == [[pytest.approx(0.1), pytest.approx(0.8)], [0.5]]
    with pytest.raises(GraphError, match="for a path of 1 steps"):  # a row per token: refused
        VLLMPRM.read(out[:1], [["c"]])

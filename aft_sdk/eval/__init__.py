"""Evaluate test-time compute methods at matched compute, with tables and plots.

    from aft_sdk.eval import ExactMatchTask, evaluate, parse_method
    task = ExactMatchTask(items)
    methods = [parse_method(s, proposers=p, aggregator=a) for s in ("single", "sc:5", "pa:4x1")]
    table = evaluate(task, methods, "eval_out")

Needs the ``eval`` extra (math-verify, matplotlib, scipy). Table rows carry 95% bootstrap
intervals (``score_low``, ``score_high``); :func:`paired_difference` compares two methods.
"""

from aft_sdk.eval.chain import ChainTask, answer_score, chain_problems, step_score
from aft_sdk.eval.methods import Method, MethodRun, majority, parse_method
from aft_sdk.eval.stats import bootstrap_interval, paired_difference
from aft_sdk.eval.shared import SharedSamples
from aft_sdk.eval.runner import aevaluate, evaluate, format_table, run_path, summarise
from aft_sdk.eval.tasks import (
    ExactMatchTask,
    KeywordTask,
    MultipleChoiceTask,
    PairwiseJudgeTask,
    Score,
    answer_scope,
    parse_verdict,
)

__all__ = [
    "ChainTask",
    "ExactMatchTask",
    "KeywordTask",
    "Method",
    "MethodRun",
    "MultipleChoiceTask",
    "PairwiseJudgeTask",
    "Score",
    "SharedSamples",
    "aevaluate",
    "answer_scope",
    "answer_score",
    "bootstrap_interval",
    "chain_problems",
    "evaluate",
    "format_table",
    "majority",
    "paired_difference",
    "parse_method",
    "parse_verdict",
    "run_path",
    "step_score",
    "summarise",
]

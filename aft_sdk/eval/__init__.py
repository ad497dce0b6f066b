"""Evaluate test-time compute methods at matched compute, with tables and plots.

    from aft_sdk.eval import ExactMatchTask, evaluate, parse_method
    task = ExactMatchTask(items)
    methods = [parse_method(s, proposers=p, aggregator=a) for s in ("single", "sc:5", "pa:4x1")]
    table = evaluate(task, methods, "eval_out")

Needs the ``eval`` extra (math-verify, matplotlib).
"""

from aft_sdk.eval.methods import Method, MethodRun, majority, parse_method
from aft_sdk.eval.runner import aevaluate, evaluate, format_table, summarise
from aft_sdk.eval.tasks import (
    ExactMatchTask,
    MultipleChoiceTask,
    PairwiseJudgeTask,
    Score,
    parse_verdict,
)

__all__ = [
    "ExactMatchTask",
    "Method",
    "MethodRun",
    "MultipleChoiceTask",
    "PairwiseJudgeTask",
    "Score",
    "aevaluate",
    "evaluate",
    "format_table",
    "majority",
    "parse_method",
    "parse_verdict",
    "summarise",
]

"""Argument helpers shared by the ``aft`` subcommands (one home, no import cycles)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aft_sdk.errors import AftError
from aft_sdk.plugins import strategy_names

SPEC_HELP = (
    "backend spec: 'embedded', 'embedded:FILE.gguf', 'vllm:MODEL_OR_FOLDER[+lora:ADAPTER]', "
    "'openai:MODEL', 'http://HOST:PORT/v1#MODEL', 'langchain:MODULE:CLASS#MODEL' or an "
    "installed plug-in's 'KIND:...' (repeat to mix several)"
)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """Adds the proposer/aggregator sampling flags."""
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, help="proposer temperature (default 0.7)")
    g.add_argument("--top-p", type=float, help="proposer top_p")
    g.add_argument("--max-tokens", type=int, help="cap on each proposal's tokens (default 512)")
    g.add_argument("--aggregator-temperature", type=float, help="aggregator temperature")
    g.add_argument("--aggregator-max-tokens", type=int,
                   help="cap on each aggregation's tokens (default 1024)")
    g.add_argument("--seed", type=int, help="base seed for proposers and aggregators")


def add_prompt_args(g: Any) -> None:
    """The aggregation prompt flags (one PromptConfig; unset: a trained aggregator's own)."""
    g.add_argument("--preset", help="aggregation prompt preset: aft-v1, moa-v1, select-v1 "
                                    "(default: the aggregator's trained prompt, else aft-v1)")
    g.add_argument("--template-file", help="custom aggregation template (uses {proposals})")
    g.add_argument("--item-format", help="how one draft is written ({index}, {text}, {model})")
    g.add_argument("--separator", help="text between drafts (\\n for a newline)")
    g.add_argument("--placement", choices=("system", "user"),
                   help="where the drafts go: the system turn (AFT) or the user turn")


def prompt_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The prompt fields the flags set (for ``GraphConfig.with_changes`` / ``PromptConfig``)."""
    from pathlib import Path

    from aft_sdk.errors import ConfigError

    fields = {"preset": args.preset, "item_format": args.item_format,
              "placement": args.placement,
              "separator": None if args.separator is None
              else args.separator.replace("\\n", "\n")}
    if args.template_file:
        try:
            fields["template"] = Path(args.template_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ConfigError(f"--template-file {args.template_file}: {reason}") from e
    return {k: v for k, v in fields.items() if v is not None}


def add_graph_args(p: argparse.ArgumentParser) -> None:
    """Adds the graph shape, backend and prompt flags (and the sampling flags)."""
    g = p.add_argument_group("graph")
    g.add_argument("--config", help="graph YAML (GraphConfig); flags below override it")
    g.add_argument("--width", type=int, help="proposals per run (default 3)")
    g.add_argument("--depth", type=int, help="aggregation layers (default 1)")
    g.add_argument("--proposer", action="append", metavar="SPEC", help=SPEC_HELP)
    g.add_argument("--aggregator", action="append", metavar="SPEC", help=SPEC_HELP)
    add_prompt_args(g)
    g.add_argument("--shuffle", action="store_true", default=None,
                   help="shuffle proposal order per aggregator (seeded)")
    g.add_argument("--min-proposals", type=int, help="proposals that must succeed (default 1)")
    g.add_argument("--quorum", type=int, help="go on once this many outputs of a layer are "
                                                "in, cancelling the rest")
    g.add_argument("--strategy", choices=strategy_names(),
                   help="the graph's strategy (default propose-aggregate); `aft strategies` "
                        "lists each, plug-ins included, with its settings")
    g.add_argument("--verifier", help="best-of-n: import:module:function (question, draft) "
                                      "-> score")
    g.add_argument("--extractor", help="answer key for votes and agreement: normalized "
                                       "(default), exact, number, math, regex:PATTERN, "
                                       "import:module:function")
    g.add_argument("--adaptive", action="store_true", default=None,
                   help="draft in rounds and stop when drafts agree (propose-aggregate then "
                        "skips its aggregation)")
    g.add_argument("--round-size", type=int, help="drafts per adaptive round (default: width)")
    g.add_argument("--agreement", type=float, help="share of drafts that must agree (0.75)")
    add_strategy_settings_args(g)
    g.add_argument("--deadline", type=float, help="seconds a whole run may take")
    add_sampling_args(p)


def _sampling(args: argparse.Namespace, base: Any, *, aggregator: bool) -> Any:
    if aggregator:
        over = {"temperature": args.aggregator_temperature,
                "max_tokens": args.aggregator_max_tokens, "seed": args.seed}
    else:
        over = {"temperature": args.temperature, "top_p": args.top_p,
                "max_tokens": args.max_tokens, "seed": args.seed}
    return base.merged(**over)


def graph_config(args: argparse.Namespace) -> Any:
    """The ``GraphConfig`` of a YAML config (if any) with the command-line flags on top."""
    from aft_sdk.config import GraphConfig, load_yaml
    from aft_sdk.graphs.plan import as_configs

    cfg = load_yaml(args.config, GraphConfig) if args.config else GraphConfig()
    return cfg.with_changes(
        width=args.width, depth=args.depth, shuffle=args.shuffle,
        min_proposals=args.min_proposals, deadline_s=args.deadline, **prompt_fields(args),
        **_strategy_changes(args, cfg),
        proposers=as_configs(args.proposer, "--proposer") if args.proposer else None,
        aggregator=as_configs(args.aggregator, "--aggregator") if args.aggregator else None,
        proposer_sampling=_sampling(args, cfg.proposer_sampling, aggregator=False),
        aggregator_sampling=_sampling(args, cfg.aggregator_sampling, aggregator=True),
    )


def _strategy_changes(args: argparse.Namespace, cfg: Any) -> dict[str, Any]:
    """The strategy flags as config changes (each group merged onto the file's)."""
    changes: dict[str, Any] = {"strategy": args.strategy, "quorum": args.quorum}
    vote = {k: v for k, v in (("extractor", args.extractor), ("verifier", args.verifier))
            if v is not None}
    if vote:
        changes["vote"] = {**cfg.vote.model_dump(), **vote}
    adaptive = {k: v for k, v in (("round_size", args.round_size),
                                  ("agreement", args.agreement)) if v is not None}
    if args.adaptive or adaptive:
        changes["adaptive"] = {**(cfg.adaptive.model_dump() if cfg.adaptive else {}), **adaptive}
    changes.update(cfg.merged_sections(_strategy_settings(args)))
    return changes


_SETTING = "strategy_setting:"


def add_strategy_settings_args(g: Any) -> None:
    """``--STRATEGY-FIELD`` for each field of each registered strategy's own settings
    (built-ins and plug-ins, e.g. ``--rsa-subset``); a plug-in that cannot load adds no
    flags here and says what is wrong when it is used."""
    from aft_sdk.plugins import strategy_settings

    for name, model in strategy_settings().items():
        for field, info in model.model_fields.items():
            kind, choices = _flag_type(info.annotation)
            default = "" if info.is_required() else f" (default {info.get_default()})"
            about = f"{name}: {info.description or field}{default}".replace("%", "%%")
            try:
                g.add_argument(f"--{name}-{field.replace('_', '-')}", type=kind,
                               choices=choices, metavar=None if choices else field.upper(),
                               dest=f"{_SETTING}{name.replace('-', '_')}.{field}", help=about)
            except argparse.ArgumentError:  # a plug-in's flag that another flag holds
                continue


def _flag_type(annotation: Any) -> tuple[Any, tuple[Any, ...] | None]:
    import types
    import typing

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal and not any(isinstance(a, bool) for a in args):
        return type(args[0]), tuple(args)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])  # Optional[X]
    if annotation is bool:
        return (lambda v: v.lower() in ("1", "true", "yes", "on")), None
    return (annotation if annotation in (int, float, str) else json.loads), None


def _strategy_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if dest.startswith(_SETTING) and value is not None:
            section, field = dest[len(_SETTING):].split(".", 1)
            found.setdefault(section, {})[field] = value
    return found


def build_graph(args: argparse.Namespace) -> Any:
    """An AggregateGraph from :func:`graph_config`."""
    from aft_sdk.graphs import AggregateGraph

    return AggregateGraph.from_config(graph_config(args))


@contextmanager
def user_errors(debug: bool = False) -> Iterator[None]:
    """The CLI's one error boundary: a user's mistake is one line on stderr and exit 2.

    Our own errors, files that cannot be read or written, text that is not UTF-8, bad
    YAML or JSON: ``error: ...`` and exit 2 (``SystemExit``); Ctrl-C: exit 130. Anything
    else is a bug and keeps its traceback. ``--debug`` (or ``AFT_DEBUG=1``) shows the
    traceback of every error.
    """
    import yaml

    debug = debug or os.environ.get("AFT_DEBUG", "") not in ("", "0")
    try:
        yield
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except (AftError, OSError, UnicodeDecodeError, yaml.YAMLError, json.JSONDecodeError) as e:
        if debug:
            raise
        print(f"error: {describe(e)}", file=sys.stderr)
        raise SystemExit(2) from None


def describe(e: BaseException) -> str:
    """One line for a user error."""
    if isinstance(e, OSError) and e.strerror and not isinstance(e, AftError):
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}"
    if isinstance(e, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({e}); save it as UTF-8"
    text = " ".join(str(e).split())
    return text if isinstance(e, AftError) else f"{type(e).__name__}: {text}"


def executor_of(args: argparse.Namespace) -> Any:
    """The executor the ``--ray`` flags ask for (``None``: this process)."""
    if not getattr(args, "ray", False):
        return None
    from aft_sdk.scale import RayExecutor

    return RayExecutor(workers=args.workers, address=args.ray_address, num_gpus=args.ray_gpus)

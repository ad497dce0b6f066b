"""Writes the API and command-line reference pages of the documentation site.

    python scripts/docs_reference.py           # (re)write docs/reference/*.md
    python scripts/docs_reference.py --check   # exit 1 if a page is out of date

Every name in the public ``__all__`` of ``aft_sdk``, ``aft_sdk.graphs``,
``aft_sdk.trainers``, ``aft_sdk.eval`` and ``aft_sdk.view`` (and the integrations' public classes) gets an
entry rendered by mkdocstrings from its docstring; names exported lazily are pointed at
the module that defines them, so the entry renders without importing torch. The
command-line page holds each command's ``--help``. ``tests/test_docs.py`` runs the check,
so a public name added without regenerating fails the suite.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reference"

# page file -> (module, title, summary)
PAGES = {
    "aft_sdk.md": ("aft_sdk", "aft_sdk",
                   "The names most programs need: the graph and its config, the backends, "
                   "sampling, prompts, strategies' settings, errors and batch runs."),
    "graphs.md": ("aft_sdk.graphs", "aft_sdk.graphs",
                  "The graph, its plan and the records of a run (the trace)."),
    "trainers.md": ("aft_sdk.trainers", "aft_sdk.trainers",
                    "AFT data (rows from multi-response data, on-policy drafts, traces), "
                    "the SFT and GRPO aggregator trainers, and GGUF export."),
    "eval.md": ("aft_sdk.eval", "aft_sdk.eval",
                "Tasks, methods and paired comparisons of test-time methods."),
    "view.md": ("aft_sdk.view", "aft_sdk.view",
                "The run viewer: self-contained HTML pages of a run, a batch output or "
                "an evaluation (`aft view`)."),
}
INTEGRATIONS = [
    "aft_sdk.integrations.langchain.AggregateChatModel",
    "aft_sdk.backends.langchain_backend.LangChainBackend",
    "aft_sdk.integrations.langgraph_server",
]
# command -> the arguments that print its help
COMMANDS = [
    ["--help"], ["run", "--help"], ["batch", "--help"], ["generate", "--help"],
    ["data", "build", "--help"], ["eval", "--help"], ["serve", "--help"],
    ["train", "--help"], ["view", "--help"], ["strategies", "--help"], ["presets", "--help"],
]


def _static_path(module: str, name: str) -> str:
    """Where mkdocstrings finds ``module.name``: the name itself when the package imports
    it eagerly, else (a lazy export) the module that defines it."""
    mod = importlib.import_module(module)
    lazy = getattr(mod, "_LAZY", {})
    if name not in lazy:
        return f"{module}.{name}"
    return f"{lazy[name]}.{name}"


def _entries(module: str) -> list[str]:
    mod = importlib.import_module(module)
    return [_static_path(module, name) for name in mod.__all__]


def public_names() -> dict[str, list[str]]:
    """Page -> the public names it must document (``module.name``)."""
    names = {page: [f"{module}.{n}" for n in importlib.import_module(module).__all__]
             for page, (module, _, _) in PAGES.items()}
    names["integrations.md"] = list(INTEGRATIONS)
    return names


def _identity(module: str, name: str) -> int:
    """Which object ``module.name`` is (imports lazy exports)."""
    return id(getattr(importlib.import_module(module), name))


def api_page(page: str) -> str:
    module, title, summary = PAGES[page]
    lines = [f"# {title}", "", summary, "",
             "Generated from the docstrings by `scripts/docs_reference.py`.", ""]
    # A name an earlier page documents (aft_sdk re-exports the graph) links there.
    earlier = {}
    for other, (other_module, _, _) in PAGES.items():
        if other == page:
            break
        for n in importlib.import_module(other_module).__all__:
            earlier[_identity(other_module, n)] = (other, n)
    for name, path in zip(importlib.import_module(module).__all__, _entries(module),
                          strict=True):
        lines += [f"## {name}", ""]
        seen = earlier.get(_identity(module, name))
        if seen:
            other, n = seen
            lines += [f"The same object as [`{PAGES[other][0]}.{n}`]({other}#{n.lower()}).",
                      ""]
            continue
        lines += [f"::: {path}", "    options:", "      show_root_heading: false", ""]
    return "\n".join(lines)


def integrations_page() -> str:
    lines = ["# aft_sdk.integrations", "",
             "aft-sdk inside other frameworks: a graph as a LangChain chat model, any "
             "LangChain chat model as a backend, and the graph factory LangGraph Server "
             "serves.", "", "Generated from the docstrings by `scripts/docs_reference.py`.",
             ""]
    for path in INTEGRATIONS:
        lines += [f"## {path.rsplit('.', 1)[1]}", "", f"::: {path}", "    options:",
                  "      show_root_heading: false", ""]
    return "\n".join(lines)


_HELP = """
import contextlib, io, json, sys
from aft_sdk.cli.main import main
out = []
for args in json.loads(sys.argv[1]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):
        main(args)
    out.append(buf.getvalue().rstrip())
print(json.dumps(out))
"""


def helps() -> list[str]:
    """Every command's ``--help``, from one interpreter at a fixed width."""
    import json

    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-c", _HELP, json.dumps(COMMANDS)],
                         capture_output=True, text=True, env=env, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_page() -> str:
    lines = ["# Command line", "",
             "`aft` runs graphs, builds data, evaluates, serves and trains. Each "
             "command's `--help`, as it prints it:", ""]
    for args, text in zip(COMMANDS, helps(), strict=True):
        title = " ".join(["aft", *[a for a in args if a != "--help"]])
        lines += [f"## `{title}`", "", "```text", text, "```", ""]
    return "\n".join(lines)


def index_page() -> str:
    lines = ["# Reference", "",
             "Every public name, generated from its docstring, by module:", ""]
    for page, (module, _, summary) in PAGES.items():
        lines.append(f"- [`{module}`]({page}): {summary}")
    lines += ["- [`aft_sdk.integrations`](integrations.md): LangChain (both ways) and "
              "LangGraph Server.",
              "- [Command line](cli.md): every `aft` command's `--help`.", ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    out = {page: api_page(page) for page in PAGES}
    out["integrations.md"] = integrations_page()
    out["cli.md"] = cli_page()
    out["index.md"] = index_page()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a page differs from what would be written")
    args = parser.parse_args()
    stale = []
    for name, text in pages().items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            OUT.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("out of date (run python scripts/docs_reference.py): " + ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``aft view``: write a self-contained HTML page of a run, a batch output or an
evaluation, and print where it is.

    aft run "What is 17 * 3?" --json > run.json && aft view run.json
    aft view answers.jsonl -o answers.html
"""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Adds ``aft view`` to the ``aft`` subcommands."""
    p = sub.add_parser("view", help="write an HTML page of a run, a batch output or an eval")
    p.add_argument("source", metavar="RESULT_OR_TRACE",
                   help="the JSON of `aft run --json`, an `aft batch` output (JSONL) or an "
                        "`aft eval` output folder")
    p.add_argument("-o", "--output", metavar="PAGE.html",
                   help="the page to write (default: NAME.html beside the input; a batch's "
                        "or an eval's run pages go in NAME_runs/ beside it)")
    p.set_defaults(func=cmd_view)


def cmd_view(args: argparse.Namespace) -> int:
    from aft_sdk.view import view

    print(view(args.source, args.output))
    return 0

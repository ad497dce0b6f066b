"""A self-contained HTML viewer of runs: ``aft view RESULT_OR_TRACE``.

- :func:`render_run`: one run's page (its layers side by side, costs, failures,
  decisions, each output's word differences from the answer);
- :func:`render_index`: an index of many runs (a batch output, an evaluation) with
  filters and sorts, and the pages it links to;
- :func:`view`: reads a result, a batch output or an evaluation folder and writes them.

Pages hold their styles and scripts inline and ask no other host for anything: they
open from disk, and every text of a run (model output included) is escaped.
"""

from __future__ import annotations

from aft_sdk.view.index_page import render_index
from aft_sdk.view.load import view
from aft_sdk.view.run_page import render_run

__all__ = ["render_index", "render_run", "view"]

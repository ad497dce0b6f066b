"""``aft serve --debug-ui``: the server's recent runs as the pages ``aft view`` writes.

Off by default. When on, every finished request (answered or failed) is kept in a ring of
the last ``debug_runs``; ``GET /debug/runs`` lists them (status, answer or error, tokens,
cost, time; filters and sorts in the page) and ``GET /debug/runs/NAME`` (its links) shows one
run's page. Both sit behind the same API key as the model routes (``Authorization:
Bearer``); ``aft serve`` refuses ``--debug-ui`` without a key unless it binds a loopback
address. The pages show what clients asked and what the models answered: turn it on
where the people who can read the key may read those.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import deque
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from aft_sdk.view import render_index
from aft_sdk.view.index_page import run_page

#: Where the list of recent runs is served.
PATH = "/debug/runs"


class RecentRuns:
    """The last ``size`` finished requests' results or errors."""

    def __init__(self, size: int = 100) -> None:
        self._rows: deque[dict[str, Any]] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def answered(self, model: str, route: str, results: list[Any]) -> None:
        """Keeps each answer's run (``n`` > 1: one row per answer)."""
        for i, result in enumerate(results):
            self._add({"model": model, "route": route, "choice": i, "answer": result.answer,
                       "cost_usd": result.usage.known_cost_usd,
                       "result": result.model_dump(mode="json")})

    def failed(self, model: str, route: str, status: int, message: str) -> None:
        """Keeps a request that ended in an error (the message its client was sent)."""
        self._add({"model": model, "route": route, "error": f"{status}: {message}"})

    def _add(self, row: dict[str, Any]) -> None:
        with self._lock:
            n = next(self._ids)  # a run's page keeps its name while the list moves on
            self._rows.append({"id": f"{n}-{row['model']}", "page": f"run-{n}.html", **row})

    def rows(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._rows))

    def row(self, page: str) -> dict[str, Any] | None:
        """The kept row whose page is ``page``."""
        with self._lock:
            return next((r for r in self._rows if r["page"] == page and "result" in r), None)


def mount(app: FastAPI, recent: RecentRuns) -> None:
    """Adds the recent-runs routes to ``app`` (pages are rendered off the event loop)."""

    def index_html() -> str:
        return render_index(recent.rows(), title="aft serve: recent runs",
                            runs_dir_name="runs", index_name="runs", pages=False)[0]

    @app.get(PATH, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(await asyncio.to_thread(index_html))

    @app.get(PATH + "/{name}", include_in_schema=False)
    async def one(name: str) -> HTMLResponse:
        row = recent.row(name)
        if row is None:
            return HTMLResponse("<p>No such run among the recent ones (the list keeps the "
                                'last runs only). <a href="../runs">Back to the list</a>',
                                status_code=404)
        return HTMLResponse(await asyncio.to_thread(run_page, row, "runs"))

"""Plots of an evaluation table (matplotlib, written as PNG files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _finish(plt: Any, fig: Any, ax: Any, xlabel: str, what: str, title: str, path: Path) -> Path:
    ax.margins(x=0.2, y=0.12)  # room for the point labels
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score")
    ax.set_title(f"{title}: {what}" if title else what)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _interval(rows: list[dict[str, Any]]) -> list[list[float]] | None:
    """Error bar lengths from the rows' 95% intervals (``None`` for tables without them)."""
    if not all("score_low" in r and "score_high" in r for r in rows):
        return None
    return [[max(0.0, r["score"] - r["score_low"]) for r in rows],
            [max(0.0, r["score_high"] - r["score"]) for r in rows]]


def plot_quality_vs_tokens(table: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Score (with its 95% interval, when the table has one) against mean tokens per item,
    one series per method kind."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for kind in dict.fromkeys(r["kind"] for r in table):
        rows = sorted((r for r in table if r["kind"] == kind), key=lambda r: r["tokens_per_item"])
        # A line says "more compute along this axis"; rows of one kind with the same
        # shape (say, two aggregators at width 4) are separate points, not a trend.
        shapes = {(r["width"], r["depth"]) for r in rows}
        style = "-o" if len(shapes) == len(rows) else "o"
        ax.errorbar([r["tokens_per_item"] for r in rows], [r["score"] for r in rows],
                    yerr=_interval(rows), fmt=style, capsize=3, label=kind.replace("_", " "))
        for r in rows:
            ax.annotate(r["method"], (r["tokens_per_item"], r["score"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    return _finish(plt, fig, ax, "tokens per item (from traces)", "quality vs compute", title, path)


def plot_quality_vs_width(table: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Score against width, one line per depth (propose-and-aggregate rows)."""
    rows = [r for r in table if r["kind"] == "propose_aggregate"]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for depth in sorted({r["depth"] for r in rows}):
        pts = sorted((r for r in rows if r["depth"] == depth), key=lambda r: r["width"])
        style = "-o" if len({r["width"] for r in pts}) == len(pts) else "o"
        ax.plot([r["width"] for r in pts], [r["score"] for r in pts], style,
                label=f"depth {depth}")
    ax.set_xscale("log", base=2)
    return _finish(plt, fig, ax, "width (proposals)", "quality vs width", title, path)


def plot_all(table: list[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """Writes every plot that the table supports; returns their paths."""
    paths = [plot_quality_vs_tokens(table, out_dir / "quality_vs_tokens.png", title)]
    width = plot_quality_vs_width(table, out_dir / "quality_vs_width.png", title)
    return [p for p in (*paths, width) if p is not None]


def plot_splits(tables: dict[str, list[dict[str, Any]]], path: Path, title: str = "") -> Path:
    """Score (with its 95% interval) against tokens per item, one panel per split.

    ``tables`` maps a split name (say ``in-distribution``) to its evaluation table; the
    panels share the y axis so the splits read side by side. Each method keeps one colour
    across panels; the marker shows its kind; the legend names them.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.6 * len(tables) + 2.6, 4.6),
                             sharey=True, squeeze=False)
    methods = list(dict.fromkeys(r["method"] for table in tables.values() for r in table))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    markers = {"single": "o", "self_consistency": "s", "best_of_n": "^", "propose_aggregate": "D",
               "graph": "P"}
    for ax, (split, table) in zip(axes[0], tables.items()):
        for r in table:
            low, high = r.get("score_low", r["score"]), r.get("score_high", r["score"])
            ax.errorbar([r["tokens_per_item"]], [r["score"]],
                        yerr=[[max(0.0, r["score"] - low)], [max(0.0, high - r["score"])]],
                        fmt=markers.get(r["kind"], "o"), color=colours[r["method"]], capsize=3,
                        alpha=0.9, label=r["method"])
        ax.set_xscale("log")
        ax.set_title(split)
        ax.set_xlabel("tokens per item (from traces, log scale)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (95% bootstrap interval)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (5.6 * len(tables) + 2.6), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

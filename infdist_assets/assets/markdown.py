"""Markdown renderings for asset metadata (tables, histograms)."""

from __future__ import annotations

import numpy as np


def table_md(rows: list[dict], columns: list[str], limit: int = 20) -> str:
    if not rows:
        return "_none_"

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|").replace("\n", " ")[:80]

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "\n".join("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows[:limit])


def histogram_md(values: np.ndarray, bins: int = 10) -> str:
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return "_empty_"
    counts, edges = np.histogram(values, bins=bins)
    top = max(1, counts.max())
    lines = [f"`{edges[i]:>9.3g} .. {edges[i + 1]:<9.3g}` {'#' * int(round(30 * c / top))} {c}" for i, c in enumerate(counts)]
    return "\n\n".join(lines)

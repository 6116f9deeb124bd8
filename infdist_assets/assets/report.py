"""What an asset's computation reports besides its artefact: the rows it made, the metrics and
Markdown the UI shows, and its check results. The asset hands it to ``Step.finish``, which adds
the timings and peak memory and records the lineage row."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import dagster as dg


@dataclass
class Report:
    rows: int
    metrics: dict[str, Any]
    markdown: dict[str, Any] = field(default_factory=dict)
    checks: list[dg.AssetCheckResult] = field(default_factory=list)
    samples: int | None = None  # samples processed, when not ``rows`` (a pool-side step's per-sample timings)

    def finish(self, step) -> dg.MaterializeResult:
        """``step.finish`` with this report (``step``: the asset's ``store.step.Step``)."""
        return step.finish(self.rows, self.metrics, self.markdown, self.checks, self.samples)

"""The DuckDB catalog: views over every asset's Parquet, lineage, and result relations.

One writer, any number of read-only readers, and neither ever waits for the other: runs only
write Parquet files (atomically); the DuckDB file holds *views* over Parquet globs, so readers
always see the latest results. When the set of views changes, the catalog is rebuilt in a
temporary file and renamed over the old one; a reader holding the old file open keeps reading
it undisturbed (POSIX rename), the next connection sees the new one.

Relations: ``lineage``, ``selected_subset``, ``eval_scores``, ``eval_rows`` (per held-out row
losses), ``recovery``, ``embedding_candidates``, ``benchmark`` (the quality benchmark's scores,
one row per task, method, seed, k and metric), ``benchmark_summary`` (its means, intervals and
paired differences), ``method_stages`` (the assets each method's selection needs, read off the
asset graph) and ``selection_cost`` (per model, task, seed, k and method: the wall seconds of the
latest materialisation of each of those stages, summed; with and without the warm-up, which the
paper leaves out), ``selection_history`` (every selection ever made, one file per run) and
``selection_changes`` (per model, task, method, seed, k and pair of consecutive selections: each
sample that entered, left or stayed, its weight and rank before and after), and ``asset_<name>``
for every asset (``/`` in keys becomes ``__``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from infdist_core.data.atomic import atomic_path, exclusive

RESULT_VIEWS = {
    "selected_subset": "assets/*/selected_subset/*/*/seed=*/k=*/data.parquet",
    "eval_scores": "assets/*/eval_scores/*/*/seed=*/k=*/data.parquet",
    "eval_rows": "assets/*/eval_scores/*/*/seed=*/k=*/rows.parquet",
    "recovery": "assets/recovery_report/*/*/seed=*/k=*/data.parquet",
    "embedding_candidates": "assets/pool_embeddings/*/seed=*/candidates.parquet",
    "lineage": "lineage/**/*.parquet",
    "benchmark": "assets/quality_report/data.parquet",
    "benchmark_summary": "assets/quality_report/summary.parquet",
    "selection_history": "assets/*/selected_subset/*/*/seed=*/k=*/history/*.parquet",
}
LINEAGE_SCHEMA = pa.schema([
    ("asset", pa.string()), ("partition", pa.string()), ("run_id", pa.string()), ("code_version", pa.string()),
    ("config_hash", pa.string()), ("upstream", pa.string()), ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")), ("row_count", pa.int64()), ("metrics", pa.string()),
    ("variant", pa.string()),
])


def write_lineage(root: Path, record: dict[str, Any]) -> Path:
    """One Parquet row per materialisation: lineage/<asset>/<partition>/<run id>.parquet (atomic)."""
    row = dict(record)
    row["upstream"] = json.dumps(row.get("upstream", []), sort_keys=True)
    row["metrics"] = json.dumps(row.get("metrics", {}), sort_keys=True, default=str)
    table = pa.Table.from_pylist([row], schema=LINEAGE_SCHEMA)
    path = root / "lineage" / record["asset"].replace("/", "__") / record["partition"].replace("|", "__") / f"{record['run_id']}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _views(root: Path, asset_keys: list[str]) -> dict[str, str]:
    views = dict(RESULT_VIEWS)
    for key in asset_keys:
        views["asset_" + key.replace("/", "__")] = f"assets/{key}/**/data.parquet"
    return {name: glob for name, glob in views.items() if any(root.glob(glob))}


SELECTION_COST = r"""
WITH runs AS (  -- the latest materialisation of each asset, partition and variant
    SELECT asset, partition, coalesce(variant, '') AS variant, (epoch_us(finished_at) - epoch_us(started_at)) / 1e6 AS seconds
    FROM lineage
    QUALIFY row_number() OVER (PARTITION BY asset, partition, coalesce(variant, '') ORDER BY finished_at DESC) = 1),
made AS (  -- every selection made: model, task, seed, k, method
    SELECT split_part(partition, '|', 1) AS model, split_part(partition, '|', 2) AS task, variant,
           CAST(regexp_extract(variant, 'seed=(-?\d+)', 1) AS BIGINT) AS seed,
           CAST(regexp_extract(variant, 'k=(\d+)', 1) AS BIGINT) AS k, split_part(asset, '/', 1) AS method
    FROM runs WHERE asset LIKE '%/selected_subset')
SELECT m.model, m.task, m.seed, m.k, m.method, sum(r.seconds) AS seconds,
       coalesce(sum(r.seconds) FILTER (WHERE r.asset <> 'warmup_checkpoint'), 0) AS seconds_without_warmup,
       count(r.asset) AS stages_recorded, count(*) AS stages
FROM made m JOIN method_stages s ON s.method = m.method
LEFT JOIN runs r ON r.asset = s.asset AND (
    (r.partition = m.model AND r.variant IN ('', 'seed=' || m.seed))
    OR (r.partition = m.model || '|' || m.task AND r.variant IN ('', m.variant)))
GROUP BY ALL
"""


SELECTION_CHANGES = r"""
WITH runs AS (  -- every selection made, in time order per model, task, method, seed and k
    SELECT DISTINCT model, task, method, seed, k, run_id, selected_at FROM selection_history),
pairs AS (
    SELECT *, lag(run_id) OVER w AS previous_run FROM runs
    WINDOW w AS (PARTITION BY model, task, method, seed, k ORDER BY selected_at)),
picked AS (
    SELECT p.model, p.task, p.method, p.seed, p.k, p.previous_run, p.run_id, p.selected_at, h.sample_id,
           max(h.weight) FILTER (WHERE h.run_id = p.previous_run) AS weight_before,
           max(h.weight) FILTER (WHERE h.run_id = p.run_id) AS weight_after,
           max(h.rank) FILTER (WHERE h.run_id = p.previous_run) AS rank_before,
           max(h.rank) FILTER (WHERE h.run_id = p.run_id) AS rank_after
    FROM pairs p JOIN selection_history h
      ON h.model = p.model AND h.task = p.task AND h.method = p.method AND h.seed = p.seed AND h.k = p.k
     AND h.run_id IN (p.run_id, p.previous_run)
    WHERE p.previous_run IS NOT NULL
    GROUP BY ALL)
SELECT *, CASE WHEN rank_before IS NULL THEN 'entered' WHEN rank_after IS NULL THEN 'left' ELSE 'kept' END AS change,
       coalesce(weight_after, 0) - coalesce(weight_before, 0) AS weight_change
FROM picked
"""


def rebuild(root: Path, catalog_path: Path, asset_keys: list[str], stages: dict[str, list[str]] | None = None) -> list[str]:
    """Write a fresh catalog with a view for every relation that has data; atomically replace.
    ``stages`` (method -> the assets its selection needs) adds ``method_stages`` and, with
    lineage, ``selection_cost``."""
    # one rebuild at a time on this data root: without it two steps finishing together could rename
    # in the order opposite to their globbing, and the catalog would miss a first-time asset's view
    with exclusive(catalog_path.with_name(catalog_path.name + ".lock")):
        return _rebuild(root, catalog_path, asset_keys, stages)


def _rebuild(root: Path, catalog_path: Path, asset_keys: list[str], stages: dict[str, list[str]] | None) -> list[str]:
    views = _views(root, asset_keys)
    with atomic_path(catalog_path) as tmp:
        con = duckdb.connect(str(tmp))
        try:
            for name, glob in sorted(views.items()):
                pattern = f"{root.resolve()}/{glob}"
                con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}', union_by_name=true, "
                            "hive_partitioning=false)")
            if "selection_history" in views:
                con.execute(f"CREATE VIEW selection_changes AS {SELECTION_CHANGES}")
            if stages:
                pairs = ", ".join(f"('{m}', '{a}')" for m, assets in sorted(stages.items()) for a in assets)
                con.execute(f"CREATE VIEW method_stages AS SELECT * FROM (VALUES {pairs}) AS t(method, asset)")
                if "lineage" in views:
                    con.execute(f"CREATE VIEW selection_cost AS {SELECTION_COST}")
        finally:
            con.close()
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    # a write-ahead log a read-write session left for the file just replaced: against the new file
    # DuckDB would refuse to open it ("WAL does not match"); what it held is gone anyway
    catalog_path.with_name(catalog_path.name + ".wal").unlink(missing_ok=True)
    return sorted(views)


def connect_readonly(catalog_path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection for users, notebooks and tests."""
    return duckdb.connect(str(catalog_path), read_only=True)

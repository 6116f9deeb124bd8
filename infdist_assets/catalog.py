"""The DuckDB catalog: views over every asset's Parquet, lineage, and result relations.

One writer, any number of read-only readers, and neither ever waits for the other: runs only
write Parquet files (atomically); the DuckDB file holds *views* over Parquet globs, so readers
always see the latest results. When the set of views changes, the catalog is rebuilt in a
temporary file and renamed over the old one; a reader holding the old file open keeps reading
it undisturbed (POSIX rename), the next connection sees the new one.

Relations: ``lineage``, ``selected_subset``, ``eval_scores``, ``eval_rows`` (per held-out row
losses), ``recovery``, ``embedding_candidates``, ``benchmark`` (the quality benchmark's scores,
one row per task, method, seed, k and metric), ``benchmark_summary`` (its means, intervals and
paired differences), and ``asset_<name>`` for every asset (``/`` in keys becomes ``__``).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

RESULT_VIEWS = {
    "selected_subset": "assets/*/selected_subset/*/*/seed=*/k=*/data.parquet",
    "eval_scores": "assets/*/eval_scores/*/*/seed=*/k=*/data.parquet",
    "eval_rows": "assets/*/eval_scores/*/*/seed=*/k=*/rows.parquet",
    "recovery": "assets/recovery_report/*/*/seed=*/k=*/data.parquet",
    "embedding_candidates": "assets/pool_embeddings/*/seed=*/candidates.parquet",
    "lineage": "lineage/**/*.parquet",
    "benchmark": "assets/quality_report/data.parquet",
    "benchmark_summary": "assets/quality_report/summary.parquet",
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def _views(root: Path, asset_keys: list[str]) -> dict[str, str]:
    views = dict(RESULT_VIEWS)
    for key in asset_keys:
        views["asset_" + key.replace("/", "__")] = f"assets/{key}/**/data.parquet"
    return {name: glob for name, glob in views.items() if any(root.glob(glob))}


def rebuild(root: Path, catalog_path: Path, asset_keys: list[str]) -> list[str]:
    """Write a fresh catalog with a view for every relation that has data; atomically replace."""
    views = _views(root, asset_keys)
    catalog_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = catalog_path.with_name(f".{catalog_path.name}.{uuid.uuid4().hex}.tmp")
    con = duckdb.connect(str(tmp))
    try:
        for name, glob in sorted(views.items()):
            pattern = f"{root.resolve()}/{glob}"
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{pattern}', union_by_name=true, "
                        "hive_partitioning=false)")
    finally:
        con.close()
    os.replace(tmp, catalog_path)
    wal = tmp.with_name(tmp.name + ".wal")
    if wal.exists():
        wal.unlink()
    return sorted(views)


def connect_readonly(catalog_path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection for users, notebooks and tests."""
    return duckdb.connect(str(catalog_path), read_only=True)

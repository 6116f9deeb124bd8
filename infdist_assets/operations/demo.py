"""The default job end to end for one partition, and the data root a process works on: what
`make demo` (``infdist_assets.cli demo``), the benchmarks and the tests run."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from infdist_assets.operations.automation import POOL_SIDE_DEFAULT, TARGET_SIDE_DEFAULT
from infdist_core.methods import DEFAULT_METHODS

DEMO_SETTINGS = {"pool_size": 200, "n_landmarks": 32, "k": 16, "heldout_rows": 50, "task_metrics": False}
"""What `make demo` changes from the defaults: every stage of the job, on a third of the pool,
with half the landmarks and held-out rows and no generation, so that it ends within 15 minutes on
two slow CPU cores (the defaults take 10 to 30 minutes, depending on the machine; ``demo --full``
runs them). The benchmarks and the UI's launchpad use the defaults."""


def run_partition(defs: dg.Definitions, model: str, task: str, instance: dg.DagsterInstance,
                  methods: tuple[str, ...] = DEFAULT_METHODS, resources: dict | None = None) -> list[dg.ExecuteInProcessResult]:
    """Materialise the pool side for ``model`` (skipping nothing), then the target side for ``model x task``."""
    assets = list(defs.assets)
    res = resources or dict(defs.resources)
    pool = dg.materialize(assets, selection=POOL_SIDE_DEFAULT, partition_key=model, instance=instance, resources=res)
    target_keys = TARGET_SIDE_DEFAULT + [f"{m}/{a}" for m in methods for a in ("selected_subset", "fine_tuned_model", "eval_scores")]
    target = dg.materialize(assets, selection=target_keys, instance=instance, resources=res,
                            partition_key=dg.MultiPartitionKey({"model": model, "task": task}))
    return [pool, target]


def up_to_date_run(catalog: Path, settings, model: str, task: str) -> str | None:
    """The run id of the last InfDist eval for this partition if made with these settings and code."""
    import duckdb

    from infdist_assets.store.catalog import connect_readonly
    from infdist_assets.store.versions import code_version

    if not catalog.exists():
        return None
    try:
        con = connect_readonly(catalog)
        version = code_version("infdist_assets.assets.method_assets")
        row = con.execute("SELECT run_id FROM lineage WHERE asset = 'infdist/eval_scores' AND partition = ? "
                          "AND config_hash = ? AND code_version = ? ORDER BY finished_at DESC LIMIT 1",
                          [f"{model}|{task}", settings.digest(), version]).fetchone()
        con.close()
    except duckdb.Error:  # no lineage yet, or an older catalog: recompute
        return None
    return row[0] if row else None


def use_data_root(data: str | Path) -> Path:
    """Point this process at a data root and its Dagster instance (``<data>/dagster_home``, which
    ``make ui`` serves), before the definitions are imported. Returns the resolved root."""
    root = Path(data).resolve()
    os.environ.setdefault("INFDIST_DATA", str(root))
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return root

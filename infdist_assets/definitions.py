"""The Dagster code location: ``dagster dev -w workspace.yaml`` or ``dg.Definitions`` import."""

from __future__ import annotations

import dagster as dg

from infdist_assets.assets import benchmark, method_assets, pool_assets, target_assets
from infdist_assets.operations import automation, deployment
from infdist_assets.partitions import model_partitions, model_task_partitions
from infdist_assets.registry import load_registry
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store.run_liveness import dead_run_sensor


def build_definitions(registry_path: str | None = None, data_root: str | None = None) -> dg.Definitions:
    """Definitions for the registry at ``registry_path`` (default: $INFDIST_REGISTRY or the embedded one)."""
    reg = load_registry(registry_path, data_root)
    by_model, by_model_task = model_partitions(reg), model_task_partitions(reg)
    assets = pool_assets.build(by_model) + target_assets.build(by_model_task)
    for method in method_assets.METHODS:
        assets += method_assets.build(by_model_task, method)
    assets += benchmark.build()
    # what the catalog and the schedule need of the graph, handed down (no module-level state)
    versions = {k.to_user_string(): v for a in assets for k, v in a.code_versions_by_key.items()}
    settings = SelectionSettings()
    store = ArtefactStore(root=str(reg.data_root), registry_path=str(registry_path or ""),
                          asset_keys=[a.key.to_user_string() for a in assets],
                          selection_stages=benchmark.selection_stages(assets, method_assets.METHODS))
    jobs, schedules, sensors = automation.build(reg, by_model, by_model_task, store, settings, versions)
    jobs += benchmark.jobs(assets)
    sensors.append(dead_run_sensor)
    # step outputs (the shard plan, shard indices) on the data root: the volume every step shares
    io = dg.FilesystemIOManager(base_dir=str(reg.data_root / "dagster_io"))
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors, executor=deployment.executor(),
                          resources={"store": store, "settings": settings, "io_manager": io})


defs = build_definitions()


def pool_side_job() -> dg.JobDefinition:
    """The pool-side job, for ``dg.reconstructable`` (the multiprocess executor re-imports it in
    each step's process; ``benchmarks/bench_scale.py`` and the sharding tests run it so)."""
    return defs.resolve_job_def("pool_side_job")


def selection_job() -> dg.JobDefinition:
    """The target-side job, for ``dg.reconstructable`` (re-execution from failure re-imports it;
    the fault-injection harness, ``benchmarks/bench_faults.py``, runs it so)."""
    return defs.resolve_job_def("selection_job")

"""Jobs, the re-selection schedule and the pool-change sensors (all off by default).

- ``pool_side_job``: the model-partitioned chain up to the KRR coefficients.
- ``selection_job``: target gradients, weights, recovery report, and InfDist + uniform subsets,
  fine-tuned models and eval scores, per model x task.
- ``reselection_schedule``: weekly ``selection_job`` over every model x task partition.
- ``pool_file_sensor``: when the registry's pool file changes, re-runs ``pool_side_job`` for
  every model; ``reselect_after_pool_refresh`` then starts ``selection_job`` for that model's tasks.
  Those runs compute only the rows the row cache lacks (``store/reuse.py``); with
  ``pool_sampling: stable`` they keep the warm-up until ``pool_refresh`` of the sample is new.
"""

from __future__ import annotations

import dagster as dg

from infdist_assets.partitions import split_key
from infdist_assets.registry import Registry
from infdist_assets.store.step import why_stale
from infdist_core.methods import DEFAULT_METHODS

POOL_SIDE_DEFAULT = ["sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings", "krr_coefficients"]
TARGET_SIDE_DEFAULT = ["target_gradients", "per_target_weights", "recovery_report"]


SELECTION_JOB_ASSETS = TARGET_SIDE_DEFAULT + [f"{m}/{a}" for m in DEFAULT_METHODS
                                             for a in ("selected_subset", "fine_tuned_model", "eval_scores")]


def stale_partitions(store, settings, keys, assets: list[str], versions: dict[str, str]) -> dict[str, str]:
    """The model x task partition keys (``model|task``) whose ``assets`` are not all current under
    ``settings`` and the code ``versions`` (asset -> code version), each with the first reason."""
    cfg = settings.to_core()
    out = {}
    for key in keys:
        model, task = split_key(key)
        for asset in assets:
            why = why_stale(store.path, asset, model, task, cfg, versions.get(asset))
            if why:
                out[str(key)] = why
                break
    return out


def build(reg: Registry, model_parts, model_task_parts, store=None, settings=None, versions: dict[str, str] | None = None):
    """The jobs, schedules and sensors. The schedule reads ``store``'s artefacts under ``settings``
    and compares their code with ``versions`` (asset key -> code version, from the definitions)."""
    versions = versions or {}
    pool_job = dg.define_asset_job(
        "pool_side_job", selection=dg.AssetSelection.assets(*POOL_SIDE_DEFAULT), partitions_def=model_parts,
        description="Pool-side Influence Distillation for one model: pool, warm-up, landmarks, embeddings, KRR.")
    selection_job = dg.define_asset_job(
        "selection_job", selection=dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(a) for a in SELECTION_JOB_ASSETS]),
        partitions_def=model_task_parts,
        description="Target side for one model x task: weights, selection (InfDist and uniform), fine-tuning, evaluation."
                    + "".join(f"\n\nTask {t!r} is unavailable (no partition): {why}" for t, why in sorted(reg.unavailable.items())))

    @dg.schedule(job=selection_job, cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Weekly re-selection of the model x task partitions whose selection is not current "
                             "(missing, other settings or code, a re-made upstream, a changed pool, target, "
                             "evaluation file or model); says 'up to date' and starts nothing otherwise.")
    def reselection_schedule(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y%m%d%H%M") if context.scheduled_execution_time else "manual"
        keys = model_task_parts.get_partition_keys()
        stale = stale_partitions(store, settings, keys, SELECTION_JOB_ASSETS, versions)
        if not stale:
            return dg.SkipReason(f"up to date: all {len(keys)} model x task partitions were selected with the current "
                                 "settings, code and input files")
        return [dg.RunRequest(run_key=f"{key}-{stamp}", partition_key=key, tags={"infdist/why": why[:500]})
                for key, why in stale.items()]

    @dg.sensor(job=pool_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
               description="Re-run the pool side for every model when the pool file changes (only the rows "
                           "the row cache lacks are computed).")
    def pool_file_sensor(context: dg.SensorEvaluationContext):
        if not reg.pool.exists():
            return dg.SkipReason(f"pool file {reg.pool} does not exist")
        st = reg.pool.stat()
        fingerprint = f"{st.st_size}-{st.st_mtime_ns}"
        if context.cursor == fingerprint:
            return dg.SkipReason("pool file unchanged")
        context.update_cursor(fingerprint)
        if context.cursor is None:
            return None
        return [dg.RunRequest(run_key=f"{m}-{fingerprint}", partition_key=m) for m in model_parts.get_partition_keys()]

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[pool_job], request_job=selection_job,
                          default_status=dg.DefaultSensorStatus.STOPPED,
                          description="After a pool-side run succeeds, re-select for every task of that model.")
    def reselect_after_pool_refresh(context: dg.RunStatusSensorContext):
        model = context.dagster_run.tags.get("dagster/partition")
        if model is None:
            return None
        return [dg.RunRequest(run_key=f"{context.dagster_run.run_id}-{t}",
                              partition_key=dg.MultiPartitionKey({"model": model, "task": t})) for t in sorted(reg.tasks)]

    return [pool_job, selection_job], [reselection_schedule], [pool_file_sensor, reselect_after_pool_refresh]

"""The one helper every asset uses: where its inputs and outputs live, and what it records.

``Step`` loads upstream artefacts (refusing ones made with incompatible settings), writes outputs
atomically with a sidecar, appends the lineage row and refreshes the DuckDB catalog.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa

from infdist_assets.partitions import split_key
from infdist_assets.registry import Registry, RegistryError
from infdist_assets.resources import ArtefactStore
from infdist_assets.store import catalog, storage
from infdist_assets.store.memory import PeakMemory
from infdist_assets.store.run_liveness import record_worker, refuse_if_overlapping
from infdist_core.config import (DATA_SIDE_FIELDS, EVAL_FIELDS, NEUTRAL, POOL_SIDE_FIELDS, TARGET_DATA_FIELDS,
                                 TARGET_SIDE_FIELDS, SelectionConfig)

SEED_FREE_ASSETS = frozenset({"sampled_pool", "warmup_checkpoint", "pool_perplexity", "rds_embeddings", "pool_gradients",
                              "target_gradients"})
"""Artefacts that do not depend on the selection seed or the budget k: one per partition, shared
by every seed and k. Every other artefact lives under ``seed=<s>`` (model side) or
``seed=<s>/k=<k>`` (model x task side) in its partition's folder, so the runs of the quality
benchmark (several seeds and budgets) sit side by side and are reused when run again."""


MODEL_SIDE_ASSETS = frozenset({"sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings",
                               "krr_coefficients", "pool_perplexity", "rds_embeddings", "pool_gradients"})
"""Assets partitioned by model alone (the rest are model x task)."""


def variant(asset: str, cfg: SelectionConfig, target_side: bool) -> str:
    """The sub-folder of ``asset``'s partition folder for these settings ('' when seed-free)."""
    if asset in SEED_FREE_ASSETS:
        return ""
    return f"seed={cfg.selection.seed}/k={cfg.selection.k}" if target_side else f"seed={cfg.selection.seed}"


def dependency_fields(asset: str, target_side: bool) -> tuple[str, ...]:
    """The settings an artefact of ``asset`` depends on (what a consumer must agree on)."""
    if asset in SEED_FREE_ASSETS:
        return DATA_SIDE_FIELDS + TARGET_DATA_FIELDS if target_side else DATA_SIDE_FIELDS
    if asset.endswith("/eval_scores"):
        return TARGET_SIDE_FIELDS + EVAL_FIELDS
    return TARGET_SIDE_FIELDS if target_side else POOL_SIDE_FIELDS


def settings_diff(meta: dict, cfg: SelectionConfig, asset: str, target_side: bool) -> dict[str, tuple]:
    """Settings an artefact depends on where its sidecar and ``cfg`` differ: {field: (theirs, ours)}.
    A setting its sidecar does not record was made before the setting existed: it compares as the
    setting's ``NEUTRAL`` value (the behaviour before), or not at all when it has none."""
    theirs, ours = {**NEUTRAL, **meta.get("config", {})}, cfg.to_dict()
    return {k: (theirs[k], ours[k]) for k in dependency_fields(asset, target_side)
            if k in theirs and json.dumps(theirs[k], default=list) != json.dumps(ours[k], default=list)}


def artefact_path(root: Path, asset: str, partition: str, cfg: SelectionConfig, name: str = "data.parquet") -> Path:
    """Where ``asset``'s artefact for ``partition`` (``model`` or ``model|task``) and ``cfg``'s seed and k lives."""
    model, _, task = partition.partition("|")
    return storage.partition_dir(root, asset, model, task or None) / variant(asset, cfg, bool(task)) / name


def stale_upstream(root: Path, meta: dict, cfg: SelectionConfig) -> str | None:
    """Why the artefact with sidecar ``meta`` is stale, or None: each upstream artefact it was made
    from must still be the same materialisation (run id) as recorded. One level: every step checks
    the artefacts it loads, so a chain is checked link by link."""
    for u in meta.get("upstream", []):
        try:
            now = storage.read_meta(artefact_path(root, u["asset"], u["partition"], cfg, u.get("file", "data.parquet")))
        except storage.ArtefactMissing:
            return f"its upstream {u['asset']} [{u['partition']}] is gone"
        if now.get("run_id") != u.get("run_id"):
            return (f"it was made from {u['asset']} [{u['partition']}] of run {str(u.get('run_id'))[:8]}, which has been "
                    f"re-materialised since (run {str(now.get('run_id'))[:8]})")
    return None


def changed_inputs(meta: dict) -> str | None:
    """Why the input files an artefact was made from (``Step.record_input``) are not what they
    were, or None: a pool, target or evaluation file, or a model folder, changed or gone."""
    for path, was in meta.get("inputs", {}).items():
        if not Path(path).exists():
            return f"its input {path} is gone"
        if storage.fingerprint(Path(path)) != was:
            return f"its input {path} changed since run {str(meta.get('run_id'))[:8]}"
    return None


def stale_reason(root: Path, meta: dict, cfg: SelectionConfig) -> str | None:
    """Why an artefact with sidecar ``meta`` is stale, or None: an upstream re-materialised since
    (``stale_upstream``) or an input file changed (``changed_inputs``)."""
    return stale_upstream(root, meta, cfg) or changed_inputs(meta)


def why_stale(root: Path, asset: str, model: str, task: str | None, cfg: SelectionConfig,
              code_version: str | None = None) -> str | None:
    """Why ``asset``'s artefact for this partition is not current, or None: missing, made with
    other settings, from an upstream re-materialised since, from input files that changed, or
    (when ``code_version`` is given) by other code."""
    target_side = task is not None and asset not in MODEL_SIDE_ASSETS
    path = storage.partition_dir(root, asset, model, task if target_side else None) / variant(asset, cfg, target_side)
    try:
        meta = storage.read_meta(path / "data.parquet")
    except storage.ArtefactMissing:
        return f"{asset} is not materialised"
    diff = settings_diff(meta, cfg, asset, target_side)
    if diff:
        return f"{asset} was made with other settings {diff}"
    if code_version is not None and meta.get("code_version") != code_version:
        return f"{asset}'s code changed ({meta.get('code_version')} -> {code_version})"
    why = stale_reason(root, meta, cfg)
    return f"{asset}: {why}" if why else None


def is_materialised(root: Path, asset: str, model: str, task: str | None, cfg: SelectionConfig) -> bool:
    """Does a complete, current artefact of ``asset`` for this partition, made with ``cfg``'s
    settings from the upstream artefacts and input files that exist now, exist? (Code versions
    are not compared: a benchmark resumes across edits that change no result.)"""
    return why_stale(root, asset, model, task, cfg) is None


@dataclass
class Step:
    context: dg.AssetExecutionContext
    store: ArtefactStore
    cfg: SelectionConfig
    registry: Registry
    asset: str
    model: str
    task: str | None
    code_version: str
    """The asset's code version (``versions.code_version`` of its module): sidecars and lineage record it."""
    started: float = field(default_factory=time.time)
    upstream: list[dict] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    """Input files and folders read (path -> ``storage.fingerprint``), recorded in the sidecar."""
    memory: PeakMemory = field(default_factory=PeakMemory)

    @classmethod
    def begin(cls, context: dg.AssetExecutionContext | dg.OpExecutionContext, store: ArtefactStore, settings,
              asset: str | None = None, code_version: str | None = None) -> "Step":
        """The step of ``context``'s asset (or ``asset`` with its ``code_version``, for the ops of a
        sharded asset)."""
        try:
            cfg = settings.to_core()
            reg = store.registry()
        except (ValueError, RegistryError) as err:
            raise dg.Failure(description=f"bad configuration: {err}") from err
        record_worker(context)
        refuse_if_overlapping(context)
        model, task = split_key(context.partition_key)
        version = code_version or context.assets_def.code_versions_by_key[context.asset_key]
        step = cls(context, store, cfg, reg, asset or context.asset_key.to_user_string(), model, task, version)
        try:
            reg.model_path(model)
            if task is not None:
                reg.task(task)
        except RegistryError as err:
            raise dg.Failure(description=str(err)) from err
        return step

    @property
    def partition(self) -> str:
        return self.model if self.task is None else f"{self.model}|{self.task}"

    def path(self, asset: str | None = None, name: str = "data.parquet", target_side: bool | None = None) -> Path:
        asset = asset or self.asset
        task = self.task if (target_side if target_side is not None else asset == self.asset) else None
        return storage.partition_dir(self.store.path, asset, self.model, task) / variant(asset, self.cfg, task is not None) / name

    def checkpoint_dir(self) -> Path:
        d = self.store.path / "checkpoints" / self.asset / self.model
        return d / self.task if self.task else d

    def load_meta(self, asset: str, name: str = "data.parquet", target_side: bool = False) -> dict:
        """An upstream artefact's sidecar: recorded as consumed, refused if made with other settings."""
        path = self.path(asset, name, target_side)
        try:
            meta = storage.read_meta(path)
        except storage.ArtefactMissing as err:
            raise dg.Failure(description=f"{asset} [{self.model if not target_side else self.partition}]: {err}") from err
        diff = settings_diff(meta, self.cfg, asset, target_side)
        if diff:
            raise dg.Failure(description=f"{asset} for {self.model} was made with other settings {diff} "
                                         "(theirs, ours): re-materialise it first")
        stale = stale_reason(self.store.path, meta, self.cfg)
        if stale:
            raise dg.Failure(description=f"{asset} [{meta.get('partition')}] is stale: {stale}; re-materialise {asset} first")
        entry = {"asset": asset, "partition": meta.get("partition"), "run_id": meta.get("run_id"), "file": name}
        if entry not in self.upstream:
            self.upstream.append(entry)
        return meta

    def load(self, asset: str, name: str = "data.parquet", target_side: bool = False) -> pa.Table:
        """Read an upstream artefact's table (after ``load_meta``'s checks)."""
        self.load_meta(asset, name, target_side)
        return storage.read_table(self.path(asset, name, target_side))

    def record_input(self, path: Path) -> Path:
        """Note an input file or folder this step reads, so that a later change makes the artefact
        stale. (A missing one is left to the reader, whose error names it.)"""
        if Path(path).exists():
            self.inputs[str(path)] = storage.fingerprint(path)
        return path

    def write(self, table: pa.Table, name: str = "data.parquet", extra: dict | None = None) -> Path:
        path = self.path(name=name)
        meta = {"asset": self.asset, "partition": self.partition, "run_id": self.context.run.run_id,
                "variant": variant(self.asset, self.cfg, self.task is not None),
                "code_version": self.code_version, "config": self.cfg.to_dict(), "upstream": self.upstream,
                "inputs": self.inputs,
                "written_at": datetime.now(timezone.utc).isoformat(), **(extra or {})}
        storage.write_table(table, path, meta)
        return path

    def finish(self, rows: int, metrics: dict[str, Any], metadata: dict[str, Any] | None = None,
               checks: list[dg.AssetCheckResult] | None = None, samples: int | None = None) -> dg.MaterializeResult:
        """Append the lineage row, refresh the catalog, and report metadata to Dagster. Every step
        reports its peak memory; a pool-side step (partitioned by model) also its wall seconds per
        sample and samples per second, over ``samples`` (default: ``rows``) samples processed."""
        end = time.time()
        metrics = {**metrics, **self.memory.stop()}
        n = rows if samples is None else samples
        if self.asset in MODEL_SIDE_ASSETS and n > 0:
            metrics.update(wall_seconds_per_sample=round((end - self.started) / n, 4),
                           samples_per_second=round(n / max(end - self.started, 1e-9), 3))
        catalog.write_lineage(self.store.path, {
            "asset": self.asset, "partition": self.partition, "run_id": self.context.run.run_id,
            "variant": variant(self.asset, self.cfg, self.task is not None), "code_version": self.code_version, "config_hash": self.cfg.digest(),
            "upstream": self.upstream, "started_at": datetime.fromtimestamp(self.started, timezone.utc),
            "finished_at": datetime.fromtimestamp(end, timezone.utc), "row_count": int(rows), "metrics": metrics,
        })
        catalog.rebuild(self.store.path, self.store.catalog_path, self.store.asset_keys, self.store.selection_stages)
        md = {"rows": dg.MetadataValue.int(int(rows)), "seconds": dg.MetadataValue.float(round(end - self.started, 2)),
              "config_hash": self.cfg.digest(), "code_version": self.code_version,
              "path": dg.MetadataValue.path(str(self.path()))}
        for k, v in metrics.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                md[k] = dg.MetadataValue.text(str(v))
            else:
                md[k] = dg.MetadataValue.float(float(v)) if isinstance(v, float) else dg.MetadataValue.int(int(v))
        md.update(metadata or {})
        # the data version is the materialisation (run id + variant): Dagster then marks downstream
        # partitions "unsynced" in the UI when this one is re-made, as stale_upstream refuses them
        version = dg.DataVersion(f"{self.context.run.run_id}:{variant(self.asset, self.cfg, self.task is not None)}")
        return dg.MaterializeResult(metadata=md, check_results=checks or [], data_version=version)

    def progress(self, what: str, every: int = 10):
        def report(i: int, n: int, *rest) -> None:
            if i == n or i % every == 0:
                extra = f" loss={rest[0]:.4f}" if rest else ""
                self.context.log.info(f"{what}: {i}/{n}{extra}")
        return report

"""Pool-side assets as Dagster graphs that fan out over shards of the pool.

Each sharded asset is a graph-backed asset of three ops:

    <asset>.plan      decides what is sharded (and does the non-shardable part, e.g. the embedding
                      choice on the landmarks); yields one dynamic output per shard
    <asset>.shard[i]  one step per shard: computes its rows, writes them atomically with a sidecar
                      naming the upstream runs; skips when a complete, current file is already there
    <asset>.gather    checks every shard is current, concatenates them in order, writes the artefact
                      and reports it (lineage, catalog, metadata, checks) like any other asset

Why a dynamic fan-out rather than a shard partition dimension: Dagster's multi-partitions have two
dimensions at most (model x task is taken on the target side), a partition is one run each (the
shards of one run could not share a plan), and a dynamic fan-out makes each shard a step of the
same run, so the multiprocess executor runs them in parallel locally and ``k8s_job_executor``
gives each its own pod (GPU op tags on the shard op) while the plan and gather ops stay on CPU.

Resuming: a killed run leaves finished shards on disk (written to a temporary name, then renamed);
"Re-execute from failure" in the UI, or a fresh materialisation, recomputes only the shards whose
file is missing or stale (made with other settings, other bounds, or from upstream runs that have
been replaced since). Shard files live under ``<artefact folder>/shards/``; boundaries fall on
multiples of the pass's batch size (``infdist_core.data.shards``), so the gathered artefact is
bit-identical for any ``pool_shards``.
"""

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import dagster as dg
import pyarrow as pa
import torch

from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store import storage
from infdist_assets.store.step import Step, settings_diff, stale_upstream
from infdist_core.data.shards import shard_bounds


@dataclass(frozen=True)
class Plan:
    """What the plan op decides: ``items`` to shard, their batch ``align``ment, a small ``payload``
    every shard and the gather receive (e.g. the chosen embedding and the candidates' CV rows), and
    its ``key``: what the shards' rows depend on (a finished shard made under another key is stale)."""

    items: int
    align: int = 1
    payload: dict = field(default_factory=dict)
    key: dict = field(default_factory=dict)  # the part of the plan the shards' rows depend on


@dataclass(frozen=True)
class Gathered:
    """What ``Step.finish`` reports for the gathered artefact."""

    rows: int
    metrics: dict
    metadata: dict | None = None
    checks: list | None = None
    samples: int | None = None


@dataclass(frozen=True)
class ShardedAsset:
    name: str
    deps: tuple[str, ...]  # model-partitioned upstream assets
    plan: Callable[[Step], Plan]
    compute: Callable[[Step, dict, int, int], tuple[pa.Table, dict]]  # rows lo..hi -> (table, sidecar extras)
    gather: Callable[[Step, dict, pa.Table, list[dict]], Gathered]  # writes the artefact from the shards
    description: str
    kinds: frozenset = frozenset({"pytorch", "parquet"})
    checks: tuple[tuple[str, str], ...] = ()  # (name, description)
    op_tags: dict[str, Any] = field(default_factory=dict)  # of the shard op (e.g. a GPU on Kubernetes)
    pool: str | None = "gpu"  # the shard op's concurrency pool


def share_cores(context: dg.OpExecutionContext) -> None:
    """Under the multiprocess executor with ``max_concurrent`` m > 1, give this step's torch 1/m of
    the cores (m processes each using every core oversubscribe them). The share depends on m only,
    never on the number of shards: torch's CPU reductions depend on the thread count, so a fixed
    count keeps the gathered artefact bit-identical for any ``pool_shards``."""
    conf = (context.run_config.get("execution") or {}).get("config") or {}
    m = int((conf.get("multiprocess") or conf).get("max_concurrent") or 0)
    if m > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // m))


def shard_file(step: Step, count: int, i: int) -> str:
    return f"shards/{count:04d}-{i:04d}.parquet"


def _plan_key(payload: dict) -> str:
    """What a shard's rows depend on in the plan (``Plan.key``: the chosen embedding, ...)."""
    return json.dumps({"key": payload.get("key", {}), "count": payload.get("count")}, sort_keys=True, default=str)


def _current(step: Step, name: str, bounds: list[int], payload: dict) -> bool:
    """Is the shard file ``name`` complete, for these bounds, plan and settings, from the current
    upstream runs?"""
    try:
        meta = storage.read_meta(step.path(name=name))
    except storage.ArtefactMissing:
        return False
    return (meta.get("bounds") == bounds and meta.get("plan") == _plan_key(payload)
            and not settings_diff(meta, step.cfg, step.asset, False)
            and stale_upstream(step.store.path, meta, step.cfg) is None)


def build(spec: ShardedAsset, partitions: dg.PartitionsDefinition, code_version: str) -> dg.AssetsDefinition:
    name = spec.name

    @dg.op(name=f"{name}__plan", ins={dep: dg.In(dg.Nothing) for dep in spec.deps}, out=dg.DynamicOut(list),
           description=f"{name}: decide the shards (and what cannot be sharded)")
    def plan(context: dg.OpExecutionContext, store: ArtefactStore, settings: SelectionSettings):
        step = Step.begin(context, store, settings, asset=name, code_version=code_version)
        p = spec.plan(step)
        bounds = shard_bounds(p.items, step.cfg.runtime.pool_shards, p.align) or [(0, 0)]  # one step even when empty
        context.log.info(f"{name}: {p.items} items in {len(bounds)} shard(s) (boundaries on multiples of {p.align})")
        payload = {**p.payload, "key": p.key, "started": step.started, "count": len(bounds)}
        for i, (lo, hi) in enumerate(bounds):
            yield dg.DynamicOutput([i, lo, hi, payload], mapping_key=f"s{i}")

    @dg.op(name=f"{name}__shard", tags=spec.op_tags, pool=spec.pool, description=f"{name}: one shard of the pool")
    def shard(context: dg.OpExecutionContext, store: ArtefactStore, settings: SelectionSettings, work: list) -> list:
        step = Step.begin(context, store, settings, asset=name, code_version=code_version)
        i, lo, hi, payload = work
        share_cores(context)
        if hi == lo:  # nothing to shard (e.g. every pool sample is a landmark)
            return work
        file = shard_file(step, payload["count"], i)
        if _current(step, file, [lo, hi], payload):
            context.log.info(f"{name} shard {i} [{lo}, {hi}) is on disk and current: not recomputed")
            return work
        t0 = time.time()
        table, extra = spec.compute(step, payload, lo, hi)
        step.write(table, name=file, extra={"bounds": [lo, hi], "plan": _plan_key(payload), "seconds": time.time() - t0,
                                            **extra})
        context.log.info(f"{name} shard {i} [{lo}, {hi}) computed in {time.time() - t0:.1f} s")
        return work

    check_outs = {dg.AssetCheckSpec(c, asset=name).get_python_identifier(): c for c, _ in spec.checks}

    @dg.op(name=f"{name}__gather", out={"result": dg.Out(dg.Nothing),
                                        **{o: dg.Out(dg.Nothing, is_required=False) for o in check_outs}},
           description=f"{name}: check and concatenate the shards, write the artefact")
    def gather(context: dg.OpExecutionContext, store: ArtefactStore, settings: SelectionSettings, done: list):
        step = Step.begin(context, store, settings, asset=name, code_version=code_version)
        done = sorted(done, key=lambda w: w[0])
        payload = done[0][3] if done else {}
        step.started = payload.get("started", step.started)  # wall time of the whole fan-out
        for dep in spec.deps:
            step.load_meta(dep)  # the artefact's upstream: checked current, recorded in its sidecar
        tables, metas = [], []
        for i, lo, hi, _ in done:
            if hi == lo:
                continue
            file = shard_file(step, payload["count"], i)
            if not _current(step, file, [lo, hi], payload):
                raise dg.Failure(description=f"{name}: shard {i} [{lo}, {hi}) is missing or stale; re-materialise {name}")
            metas.append(storage.read_meta(step.path(name=file)))
            tables.append(storage.read_table(step.path(name=file)))
        table = pa.concat_tables(tables) if tables else None  # None: no rows were sharded
        g = spec.gather(step, payload, table, metas)
        res = step.finish(g.rows, {**g.metrics, "shards": len(done)}, g.metadata, samples=g.samples)
        with warnings.catch_warnings():  # data_version on an op's Output is marked beta; an @asset's is not
            warnings.simplefilter("ignore", dg.BetaWarning)
            out = dg.Output(None, output_name="result", metadata=res.metadata, data_version=res.data_version)
        yield out
        for c in g.checks or []:  # the check functions leave the asset to the context; an op must name it
            yield dg.AssetCheckResult(asset_key=dg.AssetKey(name), check_name=c.check_name, passed=c.passed,
                                      metadata=c.metadata, severity=c.severity, description=c.description)

    ins = {dep: dg.AssetIn(dep, dagster_type=dg.Nothing) for dep in spec.deps}

    @dg.graph_asset(name=name, partitions_def=partitions, ins=ins, kinds=set(spec.kinds), code_version=code_version,
                    group_name="pool_side", description=spec.description,
                    check_specs=[dg.AssetCheckSpec(c, asset=name, description=d) for c, d in spec.checks])
    def sharded(**upstream):
        outs = gather(plan(**upstream).map(shard).collect())
        if not check_outs:
            return outs
        return {"result": outs[0], **{o: out for o, out in zip(check_outs, outs[1:])}}

    return sharded


def sidecar_sum(metas: list[dict], key: str) -> float:
    """The sum of a number every shard recorded (e.g. compute seconds)."""
    return float(sum(m.get(key, 0.0) for m in metas))

"""What the assets read: typed loaders of upstream artefacts and of the registered inputs, shared
by the pool-side, target-side and method assets (no asset module imports another)."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_core import pipeline, proxies
from infdist_core.config import DATA_SIDE_FIELDS
from infdist_core.modeling import load_model, load_tokenizer
from infdist_core.records import RecordError, load_records
from infdist_core.training import load_adam_moments
from infdist_assets import storage
from infdist_assets.step import Step

GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
"""Op tags that request a GPU when the job runs on Kubernetes with ``k8s_job_executor``."""


def pool_samples(step: Step):
    return storage.table_samples(step.load("sampled_pool"))


def recorded_checkpoint(meta: dict) -> str:
    """The model folder a sidecar records (``model_path``), refused when it is missing or its size
    changed since it was recorded (``bytes``; a registered base model records none)."""
    if meta.get("bytes"):
        try:
            storage.verify_checkpoint(Path(meta["model_path"]), meta["bytes"])
        except storage.ArtefactMissing as err:
            raise dg.Failure(description=str(err)) from err
    return meta["model_path"]


def selection_model(step: Step):
    """The model at which influence is measured: the warm-up checkpoint (or the base model)."""
    return load_model(recorded_checkpoint(step.load_meta("warmup_checkpoint")), step.cfg.device)


def base_tokenizer(step: Step):
    return load_tokenizer(step.registry.model_path(step.model))


def base_model(step: Step):
    """The registered (not warmed-up) model and its tokenizer."""
    path = step.registry.model_path(step.model)
    return load_model(path, step.cfg.device), load_tokenizer(path)


def warmup_moments(step: Step, model):
    meta = step.load_meta("warmup_checkpoint")
    if not (step.cfg.adam_aware and meta.get("adam_state")):
        return None
    names = [n for n, _ in pipeline.gradient_parameters(model, step.cfg)]
    return load_adam_moments(meta["adam_state"], names)


def known_embeddings(step: Step, n: int) -> dict[str, pipeline.KnownRows]:
    """Proxy rows that other selection seeds' ``pool_embeddings`` computed for this model with the
    same data-side settings (so the same warm-up checkpoint, pool and projections), with the cost
    measured when they were computed."""
    vectors: dict[str, np.ndarray] = {}
    widths: dict[str, tuple[int, ...]] = {}
    cost: dict[str, float] = {}
    here = step.path("pool_embeddings").parent
    ours = {f: step.cfg.to_dict()[f] for f in DATA_SIDE_FIELDS}
    for data in sorted(here.parent.glob("seed=*/data.parquet")):
        if data.parent == here:
            continue
        try:
            meta = storage.read_meta(data)
        except storage.ArtefactMissing:
            continue
        theirs = meta.get("config", {})
        if any(json.dumps(theirs.get(f), default=list) != json.dumps(v, default=list) for f, v in ours.items()):
            continue
        found = [(meta["embedding"], storage.read_table(data).select(["pool_index", "embedding"]), meta.get("widths", []))]
        cands = data.with_name("landmark_candidates.parquet")
        if cands.exists():
            c = storage.read_table(cands)
            for spec, dim, w, lm, flat in zip(*(c.column(x).to_pylist() for x in ("embedding", "dim", "widths", "pool_index", "matrix"))):
                found.append((spec, pa.table({"pool_index": lm, "embedding": storage.vectors_column(
                    np.asarray(flat, np.float32).reshape(-1, dim))}), w))
        scored = data.with_name("candidates.parquet")
        if scored.exists():  # the cost each candidate had when computed (the largest seen: a fresh computation)
            for spec, sec in zip(*(storage.read_table(scored).column(x).to_pylist() for x in ("embedding", "seconds_per_sample"))):
                cost[spec] = max(cost.get(spec, 0.0), float(sec))
        for spec, t, w in found:
            if not proxies.per_sample(spec, step.cfg.batch_size):
                continue
            vec = storage.column_matrix(t, "embedding")
            arr = vectors.setdefault(spec, np.full((n, vec.shape[1]), np.nan, np.float32))
            if arr.shape[1] == vec.shape[1]:
                arr[t.column("pool_index").to_numpy()] = vec
                widths.setdefault(spec, tuple(w))
    return {spec: pipeline.KnownRows(arr, widths[spec], cost.get(spec, 0.0)) for spec, arr in vectors.items()}


def target_records(step: Step) -> list[dict]:
    try:
        return load_records(step.registry.task(step.task).targets)
    except RecordError as err:
        raise dg.Failure(description=str(err)) from err


def target_embeddings(step: Step) -> dict[str, tuple[np.ndarray, tuple]]:
    """spec -> (the targets' proxy embeddings, gradient-part slices), as written by target_gradients."""
    t = step.load("target_gradients", name="target_embeddings.parquet", target_side=True)
    out = {}
    for spec, dim, widths, flat in zip(*(t.column(c).to_pylist() for c in ("embedding", "dim", "widths", "matrix"))):
        out[spec] = (np.asarray(flat, dtype=np.float64).reshape(-1, dim), pipeline.embedding_slices(spec, widths))
    return out


def landmark_inputs(step: Step, pool_ids: list[str] | None = None):
    """The valid landmarks' pool indices and gradients; with ``pool_ids``, refuse landmarks whose
    sample ids are not the pool's at those indices (tables joined by position must agree)."""
    lg = step.load("landmark_gradients")
    valid = np.asarray(lg.column("valid").to_pylist())
    idx = lg.column("pool_index").to_numpy()
    if pool_ids is not None:
        check_ids("landmark_gradients", lg.column("sample_id").to_pylist(), [pool_ids[i] if i < len(pool_ids) else None
                                                                             for i in idx])
    return idx[valid], storage.column_matrix(lg, "gradient")[valid]


def check_ids(what: str, got: list[str], want: list[str]) -> None:
    """Rows joined by position must be the same samples: name the first that is not."""
    if list(got) != list(want):
        i = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise dg.Failure(description=f"{what} does not match the current sampled_pool (row {i}: "
                                     f"{got[i] if i < len(got) else 'missing'} vs {want[i] if i < len(want) else 'missing'}): "
                                     f"re-materialise {what}")

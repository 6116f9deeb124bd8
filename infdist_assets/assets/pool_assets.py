"""Pool-side assets, partitioned by model: sampled pool -> warm-up checkpoint -> landmark
gradients -> pool (JVP/proxy) embeddings -> KRR coefficients; plus the baselines' pool inputs.

Each unsharded asset is a module-level function of typed inputs (``sampled_pool``,
``warmup_checkpoint``, ``krr_coefficients``) returning its artefact and ``Report``; ``build``
wraps each in a Dagster asset that loads the inputs from the store, calls it and saves. The
sharded passes are ``ShardedAsset`` specs of plan / compute / gather functions
(``store.sharding``) whose compute calls one function on a slice of the pool (``landmark_gradients``
here; ``pipeline``'s for the others)."""

from collections.abc import Sequence
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_assets.assets import checks
from infdist_assets.assets.markdown import table_md
from infdist_assets.assets.report import Report
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store import reuse, row_cache, sharding, storage
from infdist_assets.store.artefacts import (KernelFit, LandmarkCandidates, LandmarkGradients, PoolEmbeddings,
                                            PoolLosses, PoolVectors, SampledPool, WarmupCheckpoint)
from infdist_assets.store.loaders import GPU_TAGS, base_model, base_tokenizer, selection_model, warmup_moments
from infdist_assets.store.sharding import Gathered, Plan, ShardedAsset, sidecar_sum
from infdist_assets.store.step import Step
from infdist_assets.store.versions import code_version
from infdist_core import pipeline
from infdist_core.config import DATA_SIDE_FIELDS, WARMUP_FIELDS, SelectionConfig
from infdist_core.data.pool_rows import PoolRows
from infdist_core.data.records import RecordError
from infdist_core.model import proxies
from infdist_core.model.tokenization import TokenizedSample
from infdist_core.model.training import save_adam_state


EMBEDDINGS_ROWS = "pool_embeddings"
"""The row cache of the pool's proxy rows: the landmark-gradient pass adds its landmarks' rows of
``pipeline.gradient_pass_proxy`` there, and the embedding plan takes them."""


def _row_counts(metas: list[dict]) -> dict[str, int]:
    """Rows the shards computed and took from the row cache (none when they do not use it)."""
    if not any("rows_computed" in m for m in metas):
        return {}
    keys = ("rows_computed", "rows_reused") + (("proxy_rows_computed",) if any("proxy_rows_computed" in m for m in metas) else ())
    return {k: int(sidecar_sum(metas, k)) for k in keys}


# ------------------------------------------------------------------ landmark gradients (sharded)
def _landmarks_plan(step: Step) -> Plan:
    return Plan(len(pipeline.landmark_indices(SampledPool.load_ids(step), step.cfg)), step.cfg.data.batch_size)


def landmark_gradients(model, samples: list[TokenizedSample], landmarks: np.ndarray, pad_id: int, rows: reuse.Rows,
                       moments=None, progress=None) -> tuple[LandmarkGradients, dict]:
    """The exact, Hadamard-projected, normalised gradients of the pool samples at ``landmarks``
    (pool indices) at ``model``, Adam-preconditioned with the warm-up's ``moments`` when given;
    one shard's part of the asset, with its timing and row counts."""
    g, counts = rows.gradients("landmark_gradients", model, [samples[i] for i in landmarks], pad_id, moments,
                               progress=progress, proxy_kind=EMBEDDINGS_ROWS)
    lg = LandmarkGradients(landmarks, [samples[i].id for i in landmarks], g.valid, g.vectors, g.norms, g.n_label_tokens)
    return lg, {"compute_seconds": g.seconds, "adam_aware": moments is not None, **counts.metrics()}


def _landmarks_compute(step: Step, payload: dict, lo: int, hi: int):
    samples = SampledPool.load(step).samples
    model = selection_model(step)
    idx = pipeline.landmark_indices([s.id for s in samples], step.cfg)[lo:hi]
    lg, metrics = landmark_gradients(model, samples, idx, base_tokenizer(step).pad_token_id, reuse.CachedRows(step),
                                     warmup_moments(step, model), progress=step.progress("landmark gradients"))
    return lg.table(), metrics


def _landmarks_gather(step: Step, payload: dict, table, metas: list[dict]) -> Gathered:
    lg = LandmarkGradients.from_table(table)
    lg.save(step)
    n = len(lg.pool_index)
    corr = float(np.corrcoef(lg.norms, lg.n_label_tokens)[0, 1]) if n > 2 else float("nan")
    return Gathered(n, {"landmarks": n, "dim": lg.vectors.shape[1], "invalid": int((~lg.valid).sum()),
                        "seconds_per_sample": sidecar_sum(metas, "compute_seconds") / max(sidecar_sum(metas, "rows_computed"), 1),
                        **_row_counts(metas),
                        "adam_aware": bool(metas and metas[0].get("adam_aware")), "norm_vs_label_tokens_corr": corr},
                    checks=[checks.finite_matrix("gradients_finite", lg.vectors, step.cfg.pool.n_landmarks,
                                                 step.cfg.data.projection_dim)])  # (checked <= the parameters)


LANDMARK_GRADIENTS = ShardedAsset(
    "landmark_gradients", ("sampled_pool", "warmup_checkpoint"), _landmarks_plan, _landmarks_compute, _landmarks_gather,
    "Exact, Hadamard-projected, Adam-preconditioned, normalised gradients of the landmarks (sharded: pool_shards).",
    checks=(("gradients_finite", "finite, as many as configured, of the configured dimension"),), op_tags=GPU_TAGS)


# ------------------------------------------------------------------ pool embeddings (sharded)
def _embeddings_plan(step: Step) -> Plan:
    """The embedding choice on the landmarks (not sharded); the shards embed the other rows."""
    samples = SampledPool.load(step).samples
    idx, G = LandmarkGradients.load(step).used
    known = reuse.known_proxy_rows(step, EMBEDDINGS_ROWS, samples, idx)
    plan = pipeline.plan_pool_embedding(selection_model(step), samples, idx, G, step.cfg,
                                        base_tokenizer(step).pad_token_id, log_fn=step.context.log.info, known=known)
    rows = sum((reuse.remember_proxy_rows(step, EMBEDDINGS_ROWS, samples, idx,
                                          proxies.ProxyEmbedding(spec, plan.landmark_embeddings[spec], plan.seconds[spec],
                                                                 plan.widths[spec]), known)
                for spec in plan.landmark_embeddings), reuse.Reuse())
    step.context.log.info(f"landmark proxy rows: {rows.computed} computed, {rows.reused} reused")
    PoolEmbeddings.save_candidates(step, plan.candidates)
    LandmarkCandidates(idx.tolist(), plan.landmark_embeddings, plan.widths).save(step)
    batch = int(np.lcm(proxies.BATCH_SIZE, step.cfg.data.batch_size))  # the batches of the batched proxies
    return Plan(len(pipeline.non_landmarks(len(samples), idx)), batch,
                {"spec": plan.spec, "reason": plan.reason, "candidates": plan.candidates,
                 "landmark_seconds_per_sample": plan.seconds_per_sample, **rows.metrics()}, key={"spec": plan.spec})


def _embeddings_compute(step: Step, payload: dict, lo: int, hi: int):
    samples = SampledPool.load(step).samples
    idx, _ = LandmarkGradients.load(step).used
    rows = pipeline.non_landmarks(len(samples), idx)[lo:hi]
    known = reuse.known_proxy_rows(step, EMBEDDINGS_ROWS, samples, rows)
    pe = pipeline.embed_pool_rows(selection_model(step), samples, rows, payload["spec"], step.cfg,
                                  base_tokenizer(step).pad_token_id, known)
    counts = reuse.remember_proxy_rows(step, EMBEDDINGS_ROWS, samples, rows, pe, known)
    table = pa.table({"pool_index": rows, "embedding": storage.vectors_column(pe.vectors)})
    return table, {"seconds_per_sample": pe.seconds_per_sample, "rows": len(rows), **counts.metrics()}


def _embeddings_gather(step: Step, payload: dict, table, metas: list[dict]) -> Gathered:
    ids = SampledPool.load_ids(step)
    idx, _ = LandmarkGradients.load(step).used
    cands = LandmarkCandidates.load(step, idx)
    plan = pipeline.EmbeddingPlan(payload["spec"], payload["reason"], payload["candidates"], cands.rows, cands.widths,
                                  payload["landmark_seconds_per_sample"])
    rest = pipeline.non_landmarks(len(ids), idx)
    rest_vectors = storage.column_matrix(table, "embedding") if table is not None and table.num_rows else None
    if rest_vectors is not None and table.column("pool_index").to_numpy().tolist() != rest.tolist():
        raise dg.Failure(description="pool_embeddings: the shards do not cover the non-landmark rows in order")
    rows = sum(m.get("rows", 0) for m in metas)
    per = sum(m.get("seconds_per_sample", 0.0) * m.get("rows", 0) for m in metas) / rows if rows else None
    choice = pipeline.assemble_pool_embedding(plan, idx, rest, rest_vectors, per)
    PoolEmbeddings(choice.spec, choice.vectors, ids, tuple(choice.widths[choice.spec]), choice.reason).save(step)
    md = {"candidates": dg.MetadataValue.md(table_md(choice.candidates, ["embedding", "spearman", "grad_cosine",
                                                                         "mean_cosine", "seconds_per_sample"]))}
    counts = {k: payload.get(k, 0) + int(sidecar_sum(metas, k)) for k in ("rows_computed", "rows_reused")}  # landmarks + rest
    return Gathered(len(ids), {"embedding": choice.spec, "dim": choice.vectors.shape[1],
                               "seconds_per_sample": choice.seconds_per_sample, "why": choice.reason, **counts}, md,
                    checks=[checks.finite_matrix("embeddings_finite", choice.vectors, step.cfg.data.pool_size)])


POOL_EMBEDDINGS = ShardedAsset(
    "pool_embeddings", ("sampled_pool", "warmup_checkpoint", "landmark_gradients"), _embeddings_plan, _embeddings_compute,
    _embeddings_gather,
    "Proxy embedding of every pool sample (the paper's JVP embeddings, Eq. 12, or the proxy chosen by landmark "
    "cross-validation when embedding=auto); the choice is made on the landmarks, the other rows in shards.",
    checks=(("embeddings_finite", "finite, one per pool sample"),), op_tags=GPU_TAGS)


# ------------------------------------------------------------------ the baselines' pool passes (sharded)
def _pool_plan(step: Step) -> Plan:
    return Plan(len(SampledPool.load_ids(step)), int(np.lcm(proxies.BATCH_SIZE, step.cfg.data.batch_size)))


def _perplexity_compute(step: Step, payload: dict, lo: int, hi: int):
    samples = SampledPool.load(step).samples[lo:hi]
    model, tok = base_model(step)
    return PoolLosses(pipeline.pool_losses(model, samples, tok.pad_token_id)).table(lo), {}


def _perplexity_gather(step: Step, payload: dict, table, metas: list[dict]) -> Gathered:
    pl = PoolLosses.from_table(table)
    pl.save(step)
    return Gathered(len(pl.losses), {"mean_loss": float(pl.losses.mean())})


def _rds_compute(step: Step, payload: dict, lo: int, hi: int):
    samples = SampledPool.load(step).samples[lo:hi]
    model, tok = base_model(step)
    pe = proxies.compute_proxy(model, samples, tok.pad_token_id, "rds")
    return PoolVectors("rds_embeddings", pe.vectors).table(lo), {"compute_seconds": pe.seconds_per_sample * len(samples)}


def _gradients_compute(step: Step, payload: dict, lo: int, hi: int):
    samples = SampledPool.load(step).samples[lo:hi]
    model = selection_model(step)
    g, rows = reuse.gradients(step, "pool_gradients", model, samples, base_tokenizer(step).pad_token_id,
                              warmup_moments(step, model), progress=step.progress("pool gradients", 50))
    return PoolVectors("pool_gradients", g.vectors, g.valid).table(lo), {"compute_seconds": g.seconds, **rows.metrics()}


def _vectors_gather(asset: str):
    def gather(step: Step, payload: dict, table, metas: list[dict]) -> Gathered:
        pv = PoolVectors.from_table(asset, table)
        pv.save(step)
        n = len(pv.vectors)
        computed = sidecar_sum(metas, "rows_computed") if any("rows_computed" in m for m in metas) else n
        return Gathered(n, {"seconds_per_sample": sidecar_sum(metas, "compute_seconds") / max(computed, 1), **_row_counts(metas)})
    return gather


POOL_PERPLEXITY = ShardedAsset("pool_perplexity", ("sampled_pool",), _pool_plan, _perplexity_compute, _perplexity_gather,
                               "Per-sample loss (log-perplexity) of the base model, for the mid-PPL baseline.",
                               op_tags=GPU_TAGS)
RDS_EMBEDDINGS = ShardedAsset("rds_embeddings", ("sampled_pool",), _pool_plan, _rds_compute, _vectors_gather("rds_embeddings"),
                              "RDS+ embeddings (position-weighted mean of last hidden states) of the base model.",
                              op_tags=GPU_TAGS)
POOL_GRADIENTS = ShardedAsset("pool_gradients", ("sampled_pool", "warmup_checkpoint"), _pool_plan, _gradients_compute,
                              _vectors_gather("pool_gradients"),
                              "True projected gradients of every pool sample (as the landmarks'): Grad, InfDist's ceiling with no approximation.",
                              op_tags=GPU_TAGS)


# ------------------------------------------------------------------ the unsharded assets' functions
def sampled_pool(records: Sequence[dict], tokenizer, cfg: SelectionConfig) -> tuple[SampledPool, Report]:
    """The seeded pool sample, tokenised with the model's chat template (``pipeline.sample_pool``;
    ``records``: a list of records, or a pool file's ``PoolRows``)."""
    pool = pipeline.sample_pool(records, tokenizer, cfg)
    lengths = np.array([len(s.input_ids) for s in pool.samples])
    return SampledPool(pool.samples, pool.excluded), Report(len(pool.samples), {
        "pool_records": len(records), "excluded": len(pool.excluded), "mean_tokens": float(lengths.mean())})


def warmup_checkpoint(model, tokenizer, samples: list[TokenizedSample], cfg: SelectionConfig, base: Path,
                      checkpoints: Path, progress=None) -> tuple[WarmupCheckpoint, Report]:
    """The brief AdamW warm-up of ``model`` (the registered model at ``base``) on ``samples``
    (``pipeline.warm_up``), saved with its Adam state under ``checkpoints`` in a folder named by
    its settings and the sample it was drawn from (another sample is another folder); the base
    model itself when ``warmup_steps`` is 0."""
    res = pipeline.warm_up(model, samples, cfg, tokenizer.pad_token_id, progress=progress)
    if res is None:
        return WarmupCheckpoint(str(base), None, 0), Report(1, {"warmup": "none", "steps": 0, "bytes": 0, "sha256": "",
                                                                  "first_loss": 0.0, "last_loss": 0.0}, samples=0)
    final = checkpoints / f"{cfg.digest(*DATA_SIDE_FIELDS)}-{row_cache.samples_digest(samples)}"
    size, digest = storage.save_checkpoint(model, tokenizer, final,
                                           also=lambda d: save_adam_state(res, model, d / "adam_state.safetensors"))
    ckpt = WarmupCheckpoint(str(final), str(final / "adam_state.safetensors"), res.steps, size, digest, res.losses[-1],
                            [s.id for s in samples])
    train = cfg.training
    return ckpt, Report(1, {"warmup": "trained", "steps": res.steps, "bytes": size, "sha256": digest,
                            "first_loss": res.losses[0], "last_loss": res.losses[-1]},
                        samples=res.steps * train.train_micro_batch * train.train_grad_accum)


def krr_coefficients(embeddings: PoolEmbeddings, landmarks: LandmarkGradients,
                     cfg: SelectionConfig) -> tuple[KernelFit, Report]:
    """The landmark kernel ridge regression fitted on the valid landmarks' embeddings and gradients
    (``pipeline.fit_landmark_regression``: kernel settings by landmark cross-validation)."""
    idx, G = landmarks.used
    reg = pipeline.fit_landmark_regression(embeddings.vectors, idx, G, cfg)
    best = max(reg.cv, key=lambda r: r["spearman"]) if reg.cv else {}
    md = {"kernel_cv": dg.MetadataValue.md(table_md(reg.cv, ["bandwidth_scale", "damping", "center", "spearman",
                                                             "grad_cosine", "mean_cosine", "top10_overlap"]))}
    return KernelFit(reg, idx), Report(len(embeddings.vectors), {
        "bandwidth2": reg.bandwidth2, "bandwidth_scale": reg.setting.bandwidth_scale, "damping": reg.setting.damping,
        "center": reg.setting.center, "cv_spearman": best.get("spearman", float("nan")),
        "cv_spearman_is": "the selection criterion (best setting on these folds: optimistic)",
        "cv_grad_cosine": best.get("grad_cosine", float("nan")), "cv_mean_cosine": best.get("mean_cosine", float("nan")),
        "coefficients_stored": reg.coefficients is not None}, md)


def _keepable_warmup(step: Step, pool_ids: list[str]) -> tuple[WarmupCheckpoint, float] | None:
    """The partition's last warm-up with the share of ``pool_ids`` it was trained from, when it may
    serve this pool sample (``pipeline.keep_warmup``: stable sampling, the same warm-up settings,
    enough of the sample unchanged); None when a new one must be trained."""
    prev = WarmupCheckpoint.previous(step)
    if prev is None or step.cfg.data.warmup_steps == 0:
        return None
    ckpt, meta = prev
    ours = step.cfg.to_dict()
    if any(meta.get("config", {}).get(f) != ours[f] for f in WARMUP_FIELDS):
        return None
    keep, share = pipeline.keep_warmup(ckpt.trained_on, pool_ids, step.cfg)
    return (ckpt, share) if keep else None


def build(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    common = dict(code_version=code_version(__name__), partitions_def=partitions, group_name="pool_side")

    @dg.asset(**common, name="sampled_pool", kinds={"parquet"},
              description="Seeded random sample of the pool, tokenised with the model's chat template.")
    def sampled_pool_asset(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        tok = base_tokenizer(step)
        try:
            records = PoolRows(step.record_input(step.registry.pool), cache_dir=step.store.path / "cache" / "pool_arrow")
            pool, report = sampled_pool(records, tok, step.cfg)
        except (RecordError, ValueError) as err:
            raise dg.Failure(description=str(err)) from err
        pool.save(step, str(step.registry.pool))
        return report.finish(step)

    @dg.asset(**common, name="warmup_checkpoint", deps=[sampled_pool_asset], kinds={"pytorch"}, op_tags=GPU_TAGS, pool="gpu",
              description="Brief AdamW warm-up on random pool samples (Sec. 5.1); checkpoint + Adam state.")
    def warmup_checkpoint_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                                settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        kept = _keepable_warmup(step, [s.id for s in samples])
        if kept is not None:
            ckpt, share = kept
            step.record_input(step.registry.model_path(step.model))
            ckpt.save(step, {"kept_from_run": ckpt.trained_in_run, "sample_share": share})
            step.context.log.info(f"warm-up kept from run {ckpt.trained_in_run[:8]}: {share:.1%} of the pool sample was in "
                                  f"the sample it was trained from (refresh below {1 - step.cfg.data.pool_refresh:.0%})")
            return step.finish(1, {"warmup": "kept", "kept_from_run": ckpt.trained_in_run, "sample_share": round(share, 4),
                                   "steps": ckpt.steps, "bytes": ckpt.bytes, "sha256": ckpt.sha256,
                                   "last_loss": ckpt.final_loss or 0.0}, samples=0)
        model, tok = base_model(step, training=True)
        ckpt, report = warmup_checkpoint(model, tok, samples, step.cfg, step.registry.model_path(step.model),
                                         step.checkpoint_dir(), progress=step.progress("warm-up", 2))
        ckpt.save(step)
        if ckpt.steps:  # the sidecar now points at this version: earlier settings' versions are unreferenced
            storage.remove_other_versions(Path(ckpt.model_path))
            row_cache.prune_warmup_states(step.store.path, step.model, ckpt.sha256)
        return report.finish(step)

    landmark_gradients = sharding.build(LANDMARK_GRADIENTS, partitions, common["code_version"])
    pool_embeddings = sharding.build(POOL_EMBEDDINGS, partitions, common["code_version"])

    @dg.asset(**common, name="krr_coefficients", deps=[pool_embeddings, landmark_gradients], kinds={"parquet"},
              description="The fitted landmark kernel ridge regression (Eq. 10): kernel settings chosen by landmark "
                          "cross-validation, which the target side scores with, and the coefficient matrix C (when "
                          "small) with p_hat = C @ P_L exactly for a task scored without the direct term.")
    def krr_coefficients_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                               settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        embeddings = PoolEmbeddings.load(step)
        fit, report = krr_coefficients(embeddings, LandmarkGradients.load(step), step.cfg)
        fit.save(step, len(embeddings.vectors))
        return report.finish(step)

    pool_perplexity, rds_embeddings, pool_gradients = (sharding.build(spec, partitions, common["code_version"])
                                                       for spec in (POOL_PERPLEXITY, RDS_EMBEDDINGS, POOL_GRADIENTS))

    return [sampled_pool_asset, warmup_checkpoint_asset, landmark_gradients, pool_embeddings, krr_coefficients_asset,
            pool_perplexity, rds_embeddings, pool_gradients]

"""Pool-side assets, partitioned by model: sampled pool -> warm-up checkpoint -> landmark
gradients -> pool (JVP/proxy) embeddings -> KRR coefficients; plus the baselines' pool inputs."""


import dagster as dg
import numpy as np

from infdist_core import pipeline, proxies
from infdist_core.config import DATA_SIDE_FIELDS
from infdist_core.records import RecordError, load_records
from infdist_core.training import save_adam_state
from infdist_assets import checks, storage
from infdist_assets.artefacts import (KernelFit, LandmarkCandidates, LandmarkGradients, PoolEmbeddings, PoolLosses,
                                      PoolVectors, SampledPool, WarmupCheckpoint, known_embeddings)
from infdist_assets.loaders import GPU_TAGS, base_model, base_tokenizer, selection_model, warmup_moments
from infdist_assets.markdown import table_md
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.step import Step, code_version


def build(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    common = dict(code_version=code_version(), partitions_def=partitions, group_name="pool_side")

    @dg.asset(**common, kinds={"parquet"}, description="Seeded random sample of the pool, tokenised with the model's chat template.")
    def sampled_pool(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        tok = base_tokenizer(step)
        try:
            records = load_records(step.registry.pool)
            pool = pipeline.sample_pool(records, tok, step.cfg)
        except (RecordError, ValueError) as err:
            raise dg.Failure(description=str(err)) from err
        SampledPool(pool.samples).save(step, pool.excluded, str(step.registry.pool))
        lengths = np.array([len(s.input_ids) for s in pool.samples])
        return step.finish(len(pool.samples), {"pool_records": len(records), "excluded": len(pool.excluded),
                                               "mean_tokens": float(lengths.mean())})

    @dg.asset(**common, deps=[sampled_pool], kinds={"pytorch"}, op_tags=GPU_TAGS, pool="gpu",
              description="Brief AdamW warm-up on random pool samples (Sec. 5.1); checkpoint + Adam state.")
    def warmup_checkpoint(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        model, tok = base_model(step)
        res = pipeline.warm_up(model, samples, step.cfg, tok.pad_token_id, progress=step.progress("warm-up", 2))
        if res is None:
            ckpt, losses = WarmupCheckpoint(str(step.registry.model_path(step.model)), None, 0), []
        else:
            final = step.checkpoint_dir() / step.cfg.digest(*DATA_SIDE_FIELDS)  # addressed by its settings
            size, digest = storage.save_checkpoint(model, tok, final,
                                                   also=lambda d: save_adam_state(res, model, d / "adam_state.safetensors"))
            ckpt = WarmupCheckpoint(str(final), str(final / "adam_state.safetensors"), res.steps, size, digest, res.losses[-1])
            losses = res.losses
        ckpt.save(step)
        if res is not None:  # the sidecar now points at this version: earlier settings' versions are unreferenced
            storage.remove_other_versions(final)
        return step.finish(1, {"steps": ckpt.steps, "bytes": ckpt.bytes, "sha256": ckpt.sha256,
                               "first_loss": losses[0] if losses else 0.0, "last_loss": losses[-1] if losses else 0.0},
                           samples=ckpt.steps * step.cfg.train_micro_batch * step.cfg.train_grad_accum)

    @dg.asset(**common, deps=[sampled_pool, warmup_checkpoint], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS, pool="gpu",
              check_specs=[checks.spec("gradients_finite", "landmark_gradients", "finite, as many as configured, of the configured dimension")],
              description="Exact, Hadamard-projected, Adam-preconditioned, normalised gradients of the landmarks.")
    def landmark_gradients(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        model = selection_model(step)
        moments = warmup_moments(step, model)
        tok = base_tokenizer(step)
        idx = pipeline.landmark_indices(len(samples), step.cfg)
        g = pipeline.compute_gradients(model, [samples[i] for i in idx], step.cfg, tok.pad_token_id, moments,
                                       progress=step.progress("landmark gradients"))
        LandmarkGradients(idx, [samples[i].id for i in idx], g.valid, g.vectors, g.norms, g.n_label_tokens).save(step)
        corr = float(np.corrcoef(g.norms, g.n_label_tokens)[0, 1]) if len(idx) > 2 else float("nan")
        return step.finish(len(idx), {"landmarks": len(idx), "dim": g.vectors.shape[1], "invalid": int((~g.valid).sum()),
                                      "seconds_per_sample": g.seconds / len(idx), "adam_aware": moments is not None,
                                      "norm_vs_label_tokens_corr": corr},
                           checks=[checks.finite_matrix("gradients_finite", g.vectors, step.cfg.n_landmarks,
                                                        step.cfg.projection_dim)])  # (checked <= the parameters)

    @dg.asset(**common, deps=[sampled_pool, warmup_checkpoint, landmark_gradients], kinds={"pytorch", "parquet"},
              op_tags=GPU_TAGS, pool="gpu",
              check_specs=[checks.spec("embeddings_finite", "pool_embeddings", "finite, one per pool sample")],
              description="Proxy embedding of every pool sample (the paper's JVP embeddings, Eq. 12, or the proxy "
                          "chosen by landmark cross-validation when embedding=auto).")
    def pool_embeddings(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        model = selection_model(step)
        tok = base_tokenizer(step)
        idx, G = LandmarkGradients.load(step).used
        known = known_embeddings(step, len(samples))
        if known:
            context.log.info(f"reusing proxy rows computed for other selection seeds: {sorted(known)}")
        choice = pipeline.embed_pool(model, samples, idx, G, step.cfg, tok.pad_token_id, log_fn=context.log.info, known=known)
        PoolEmbeddings(choice.spec, choice.vectors, [s.id for s in samples], tuple(choice.widths[choice.spec]),
                       choice.reason).save(step)
        PoolEmbeddings.save_candidates(step, choice.candidates)
        LandmarkCandidates(idx.tolist(), choice.landmark_embeddings, choice.widths).save(step)
        md = {"candidates": dg.MetadataValue.md(table_md(choice.candidates, ["embedding", "spearman", "grad_cosine",
                                                                             "mean_cosine", "seconds_per_sample"]))}
        return step.finish(len(samples), {"embedding": choice.spec, "dim": choice.vectors.shape[1],
                                          "seconds_per_sample": choice.seconds_per_sample, "why": choice.reason}, md,
                           checks=[checks.finite_matrix("embeddings_finite", choice.vectors, step.cfg.pool_size)])

    @dg.asset(**common, deps=[pool_embeddings, landmark_gradients], kinds={"parquet"},
              description="The fitted landmark kernel ridge regression (Eq. 10): kernel settings chosen by landmark "
                          "cross-validation, which the target side scores with, and the coefficient matrix C (when "
                          "small) with p_hat = C @ P_L exactly for a task scored without the direct term.")
    def krr_coefficients(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        E = PoolEmbeddings.load(step).vectors
        idx, G = LandmarkGradients.load(step).used
        reg = pipeline.fit_landmark_regression(E, idx, G, step.cfg)
        KernelFit(reg, idx).save(step, len(E))
        best = max(reg.cv, key=lambda r: r["spearman"]) if reg.cv else {}
        md = {"kernel_cv": dg.MetadataValue.md(table_md(reg.cv, ["bandwidth_scale", "damping", "center", "spearman",
                                                                 "grad_cosine", "mean_cosine", "top10_overlap"]))}
        return step.finish(len(E), {"bandwidth2": reg.bandwidth2, "bandwidth_scale": reg.setting.bandwidth_scale,
                                    "damping": reg.setting.damping, "center": reg.setting.center,
                                    "cv_spearman": best.get("spearman", float("nan")),
                                    "cv_spearman_is": "the selection criterion (best setting on these folds: optimistic)",
                                    "cv_grad_cosine": best.get("grad_cosine", float("nan")),
                                    "cv_mean_cosine": best.get("mean_cosine", float("nan")),
                                    "coefficients_stored": reg.coefficients is not None}, md)

    @dg.asset(**common, deps=[sampled_pool], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS, pool="gpu",
              description="Per-sample loss (log-perplexity) of the base model, for the mid-PPL baseline.")
    def pool_perplexity(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        model, tok = base_model(step)
        losses = pipeline.pool_losses(model, samples, tok.pad_token_id)
        PoolLosses(losses).save(step)
        return step.finish(len(samples), {"mean_loss": float(losses.mean())})

    @dg.asset(**common, deps=[sampled_pool], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS, pool="gpu",
              description="RDS+ embeddings (position-weighted mean of last hidden states) of the base model.")
    def rds_embeddings(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        model, tok = base_model(step)
        pe = proxies.compute_proxy(model, samples, tok.pad_token_id, "rds")
        PoolVectors("rds_embeddings", pe.vectors).save(step)
        return step.finish(len(samples), {"seconds_per_sample": pe.seconds_per_sample})

    @dg.asset(**common, deps=[sampled_pool, warmup_checkpoint], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS, pool="gpu",
              description="True projected gradients of every pool sample: the expensive LESS-like 'Grad' baseline.")
    def pool_gradients(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        samples = SampledPool.load(step).samples
        model = selection_model(step)
        g = pipeline.compute_gradients(model, samples, step.cfg, base_tokenizer(step).pad_token_id,
                                       warmup_moments(step, model), progress=step.progress("pool gradients", 50))
        PoolVectors("pool_gradients", g.vectors, g.valid).save(step)
        return step.finish(len(samples), {"seconds_per_sample": g.seconds / len(samples)})

    return [sampled_pool, warmup_checkpoint, landmark_gradients, pool_embeddings, krr_coefficients,
            pool_perplexity, rds_embeddings, pool_gradients]

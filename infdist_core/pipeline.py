"""The stages of Influence Distillation, one function per artefact, on models and arrays.

The Dagster assets (``infdist_assets``) call exactly one of these each; they can equally be
called from a notebook or a script. Nothing here knows about files or partitions.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from infdist_core.config import PROXY_AUTO, SelectionConfig
from infdist_core.data import evalsets
from infdist_core.data.seeding import generator, stable_order
from infdist_core.maths import recovery
from infdist_core.maths.influence import landmark_scores, propagate_scores
from infdist_core.maths.landmarks import DirectTerm, KRRModel, choose_landmarks, krr_fit, part_slices
from infdist_core.maths.preconditioning import AdamMoments
from infdist_core.maths.projection import HadamardProjector
from infdist_core.maths.weights import ScoreTies, break_ties, robust_weights
from infdist_core.model import finetuning, proxies
from infdist_core.model.gradients import GradientMatrix, sample_gradients
from infdist_core.model.modeling import block_pattern, select_parameters
from infdist_core.model.tokenization import TokenizedSample, TokenizedSet, tokenize_records, tokenize_sample
from infdist_core.model.training import TrainConfig, TrainResult, train
from infdist_core.proxy_specs import ProxySpec

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------- pool side
def pool_order(records: Sequence[dict], cfg: SelectionConfig) -> np.ndarray:
    """The order in which ``sample_pool`` visits the pool file's rows (``cfg.data.pool_sampling``).

    ``permutation``: a seeded permutation of the row positions, drawn for the file's length, so
    any change in length reshuffles every row (reads only as far as the sample goes).
    ``stable``: the rows in ``seeding.stable_order`` of their ids (read from every row), so
    a row's rank depends on its id alone: appending rows keeps every earlier row's order among
    the others, and the sample of the first ``pool_size`` usable rows changes only where a new row
    ranks below an old member (it takes that member's place: about ``new / (old + new)`` of the
    sample, the new rows' share of the file)."""
    if cfg.data.pool_sampling == "permutation":
        return torch.randperm(len(records), generator=generator(cfg.data.data_seed, "pool", len(records))).numpy()
    return stable_order((records[i]["id"] for i in range(len(records))), cfg.data.data_seed, "pool", len(records))


def sample_pool(records: Sequence[dict], tokenizer, cfg: SelectionConfig) -> TokenizedSet:
    """A seeded random sample of ``cfg.data.pool_size`` usable records, tokenised (order = pool index):
    the first usable rows in ``pool_order``.

    ``records`` is read by position: a list, or a pool file's ``pool_rows.PoolRows`` (memory-mapped,
    parsed on access); both give the same sample."""
    if len(records) < cfg.data.pool_size:
        raise ValueError(f"the pool file has {len(records)} records, fewer than pool_size={cfg.data.pool_size}")
    order = pool_order(records, cfg)
    out = TokenizedSet([])
    for i in map(int, order):  # not .tolist(): a Python int per pool row would be the only O(pool) objects
        if len(out.samples) == cfg.data.pool_size:
            break
        res = tokenize_sample(tokenizer, records[i], cfg.data.max_length)
        if isinstance(res, str):
            out.excluded[str(records[i]["id"])] = res
        else:
            out.samples.append(res)
    if out.excluded:
        log.info("pool: skipped %d records on the way to %d usable ones (e.g. %s)", len(out.excluded),
                 len(out.samples), next(iter(out.excluded.items())))
    if len(out.samples) < cfg.data.pool_size:
        why = Counter(reason.split(" (")[0] for reason in out.excluded.values()).most_common()
        raise ValueError(f"only {len(out.samples)} of {len(records)} pool records are usable, fewer than pool_size="
                         f"{cfg.data.pool_size}; excluded: " + ", ".join(f"{n} x {r}" for r, n in why))
    return out


def warm_up(model, pool: list[TokenizedSample], cfg: SelectionConfig, pad_id: int,
            progress: Callable[[int, int, float], None] | None = None) -> TrainResult | None:
    """Brief AdamW training on a seeded random subset of the pool (Sec. 5.1); None if disabled.
    The subset is drawn as the pool sample is (``cfg.data.pool_sampling``): with ``stable``, by the
    samples' ids, so a member keeps its place in it when the pool grows."""
    if cfg.data.warmup_steps == 0:
        return None
    n = min(cfg.data.warmup_samples, len(pool))
    idx = seeded_subset([s.id for s in pool], n, cfg.data.data_seed, "warmup", cfg.data.pool_sampling)
    opt = cfg.training
    tc = TrainConfig(lr=opt.train_lr, micro_batch=opt.train_micro_batch, grad_accum=opt.train_grad_accum,
                     epochs=1e9, max_steps=cfg.data.warmup_steps, seed=cfg.data.data_seed)
    return train(model, [pool[i] for i in idx], tc, pad_id, progress=progress)


def keep_warmup(trained_on: Sequence[str], pool_ids: Sequence[str], cfg: SelectionConfig) -> tuple[bool, float]:
    """May a warm-up trained from the pool sample ``trained_on`` serve the sample ``pool_ids``?
    Returns the decision and the share of ``pool_ids`` that was in ``trained_on``: kept with
    ``pool_sampling='stable'`` while that share is at least ``1 - cfg.data.pool_refresh``."""
    share = len(set(trained_on).intersection(pool_ids)) / max(len(pool_ids), 1)
    return cfg.data.pool_sampling == "stable" and share >= 1 - cfg.data.pool_refresh, share


def gradient_parameters(model, cfg: SelectionConfig) -> list[tuple[str, torch.nn.Parameter]]:
    return select_parameters(model, block_pattern(model, cfg.data.grad_params))


def gradient_projector(model, cfg: SelectionConfig) -> HadamardProjector:
    params = gradient_parameters(model, cfg)
    in_dim = sum(p.numel() for _, p in params)
    if cfg.data.projection_dim > in_dim:
        raise ValueError(f"projection_dim={cfg.data.projection_dim} exceeds the {in_dim} parameters grad_params="
                         f"{cfg.data.grad_params!r} covers: a projection cannot add dimensions; lower projection_dim")
    return HadamardProjector(in_dim, cfg.data.projection_dim, seed=cfg.data.data_seed,
                             device=next(model.parameters()).device)


def compute_gradients(model, samples: list[TokenizedSample], cfg: SelectionConfig, pad_id: int,
                      moments: AdamMoments | None = None, progress: Progress | None = None) -> GradientMatrix:
    """Projected, normalised gradients (Adam-preconditioned when ``moments`` is given)."""
    params = [p for _, p in gradient_parameters(model, cfg)]
    return sample_gradients(model, samples, params, gradient_projector(model, cfg), pad_id, moments=moments,
                            batch_size=cfg.data.batch_size, progress=progress)


def gradient_pass_proxy(cfg: SelectionConfig) -> str | None:
    """The embedding spec whose rows the landmark-gradient pass computes from its own forward
    (``compute_gradients_and_proxy``): the first of ``embedding_specs()`` that is one forward and
    one partial backward, when gradients run one sample per pass; else None (the plan embeds the
    landmarks as it embeds every other sample)."""
    if cfg.data.batch_size != 1:
        return None
    return next((s for s in cfg.data.embedding_specs() if ProxySpec.parse(s).partial_backward), None)


def compute_gradients_and_proxy(model, samples: list[TokenizedSample], cfg: SelectionConfig, pad_id: int, spec: str,
                                moments: AdamMoments | None = None, progress: Progress | None = None
                                ) -> tuple[GradientMatrix, proxies.ProxyEmbedding]:
    """``compute_gradients`` and, from the same forwards, ``embed_samples``' rows of ``spec`` (a
    ``gradient_pass_proxy``), both bit for bit what the two passes give apart."""
    params = [p for _, p in gradient_parameters(model, cfg)]
    return proxies.gradients_with_proxy(model, samples, params, gradient_projector(model, cfg), pad_id, spec,
                                        cfg.data.embedding_dim, cfg.data.data_seed, moments=moments, progress=progress)


def known_rows(pe: proxies.ProxyEmbedding, positions: np.ndarray, n_pool: int) -> dict[str, KnownRows]:
    """``pe`` (rows of ``pool[positions]``) as ``known`` rows of a pool of ``n_pool`` samples."""
    vectors = np.full((n_pool, pe.vectors.shape[1]), np.nan, np.float32)
    vectors[np.asarray(positions)] = pe.vectors
    return {pe.spec: KnownRows(vectors, tuple(pe.widths), pe.seconds_per_sample)}


def seeded_subset(ids: Sequence[str], n: int, seed: int, name: str, sampling: str) -> list[int]:
    """``n`` seeded random positions of ``ids``: a permutation drawn for ``len(ids)``
    (``permutation``), or the ``n`` ids first in ``seeding.stable_order`` (``stable``: a member
    stays chosen until ids that outrank it arrive), in that order."""
    if sampling == "stable":
        return stable_order(ids, seed, name, len(ids))[:n].tolist()
    return torch.randperm(len(ids), generator=generator(seed, name, len(ids)))[:n].tolist()


def landmark_indices(pool_ids: Sequence[str], cfg: SelectionConfig) -> np.ndarray:
    """The landmarks' pool indices (sorted): uniformly random, as in Section 5.1, drawn as the pool
    sample is (``cfg.data.pool_sampling``; with ``stable`` by the samples' ids, so that a grown pool keeps
    its landmarks except where new samples outrank them, about their share of the pool)."""
    if cfg.data.pool_sampling == "stable":
        if not 0 < cfg.pool.n_landmarks <= len(pool_ids):
            raise ValueError(f"n_landmarks must be in [1, {len(pool_ids)}] (the pool size), got {cfg.pool.n_landmarks}")
        picked = seeded_subset(pool_ids, cfg.pool.n_landmarks, cfg.selection.seed, "landmarks", "stable")
        return np.sort(np.asarray(picked, np.int64))
    return choose_landmarks(len(pool_ids), cfg.pool.n_landmarks, cfg.selection.seed)


@dataclass
class EmbeddingChoice:
    spec: str
    reason: str
    vectors: np.ndarray  # (n, e)
    seconds_per_sample: float
    candidates: list[dict] = field(default_factory=list)  # CV rows per candidate (pseudo-targets)
    landmark_embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # spec -> (l, e)
    widths: dict[str, tuple[int, ...]] = field(default_factory=dict)  # spec -> column widths of its parts


def embedding_slices(spec: str, widths: tuple[int, ...] | list[int]) -> tuple[tuple[int, int], ...]:
    """Column ranges of the gradient parts of an embedding ``spec`` (empty: no direct term possible,
    or ``widths`` unknown)."""
    if not widths:
        return ()
    return part_slices(tuple(widths), ProxySpec.parse(spec).gradient_parts)


@dataclass(frozen=True)
class KnownRows:
    """Proxy rows computed before for the same samples, weights and settings (another selection
    seed's run, a smaller pool's): ``vectors`` (n, e) with NaN rows where unknown, the parts'
    ``widths``, and the ``seconds_per_sample`` measured when they were computed (the cost the
    embedding choice weighs, so that it does not depend on what happens to be cached)."""

    vectors: np.ndarray
    widths: tuple[int, ...]
    seconds_per_sample: float


def _proxy_rows(model, pool: list[TokenizedSample], rows: np.ndarray, spec: str, cfg: SelectionConfig, pad_id: int,
                known: dict[str, KnownRows]) -> proxies.ProxyEmbedding:
    """``spec``'s embeddings of ``pool[rows]``, taking rows already in ``known[spec]`` and computing
    only the others. Seconds per sample: of the computed rows, or as recorded when all are known."""
    have = known.get(spec)
    if have is None or not ProxySpec.parse(spec).per_sample(cfg.data.batch_size):
        return embed_samples(model, [pool[i] for i in rows], spec, cfg, pad_id)
    out = have.vectors[rows].astype(np.float32)
    missing = np.isnan(out).any(1)
    if not missing.any():
        return proxies.ProxyEmbedding(spec, out, have.seconds_per_sample, tuple(have.widths))
    pe = embed_samples(model, [pool[i] for i in rows[missing]], spec, cfg, pad_id)
    out[missing] = pe.vectors
    return proxies.ProxyEmbedding(spec, out, pe.seconds_per_sample, pe.widths)


def choose_proxy(on_landmarks: dict[str, proxies.ProxyEmbedding], G_landmarks: np.ndarray, cfg: SelectionConfig,
                 log_fn: Callable[[str], None] = log.info) -> tuple[str, str, list[dict]]:
    """The proxy embedding to use, from the candidates' embeddings of the landmarks: with
    ``embedding='auto'``, landmark cross-validation on task-independent pseudo-targets (``recovery``),
    the direct term on where a candidate has gradient parts, costs weighed as
    ``recovery.choose_embedding`` does; a pinned spec is taken as is. Returns the spec, the reason
    and one CV row per candidate. The pipeline and every benchmark decide through this function."""
    rows = []
    for spec, pe in on_landmarks.items():
        if len(G_landmarks) < 8:
            break
        slices = embedding_slices(spec, pe.widths)
        setting = recovery.KernelSetting(damping=cfg.pool.damping, direct=bool(slices))
        cv = recovery.cross_validate(pe.vectors, G_landmarks, None, (setting,), seed=cfg.selection.seed,
                                     slices=slices)[0]
        rows.append({"embedding": spec, "seconds_per_sample": pe.seconds_per_sample, **cv})
        log_fn(f"candidate {spec}: held-out rho={cv['spearman']:.3f}, grad cos={cv['grad_cosine']:.3f} "
               f"(mean-landmark {cv['mean_cosine']:.3f}), {pe.seconds_per_sample:.3f} s/sample")
    specs = list(on_landmarks)
    if cfg.data.embedding == PROXY_AUTO and rows:
        costs = {s: pe.seconds_per_sample for s, pe in on_landmarks.items()}
        pick, reason = recovery.choose_embedding({r["embedding"]: r for r in rows}, costs,
                                                 prior=tuple(cfg.data.embedding_candidates))
    else:
        pick, reason = specs[0], ("pinned by configuration" if cfg.data.embedding != PROXY_AUTO else "only candidate")
    return pick, reason, rows


@dataclass
class EmbeddingPlan:
    """The pool-embedding choice, made on the landmarks: the spec and why, the candidates' CV rows,
    their rows on the landmarks and part widths, and the chosen spec's seconds per sample there."""

    spec: str
    reason: str
    candidates: list[dict]
    landmark_embeddings: dict[str, np.ndarray]
    widths: dict[str, tuple[int, ...]]
    seconds_per_sample: float
    seconds: dict[str, float] = field(default_factory=dict)  # every candidate's seconds per sample there


def plan_pool_embedding(model, pool: list[TokenizedSample], landmarks: np.ndarray, G_landmarks: np.ndarray,
                        cfg: SelectionConfig, pad_id: int, log_fn: Callable[[str], None] = log.info,
                        known: dict[str, KnownRows] | None = None) -> EmbeddingPlan:
    """Every candidate's embeddings of the landmarks and the choice among them (``choose_proxy``)."""
    known = known or {}
    specs = cfg.data.embedding_specs()
    on_landmarks = {spec: _proxy_rows(model, pool, np.asarray(landmarks), spec, cfg, pad_id, known) for spec in specs}
    pick, reason, rows = choose_proxy(on_landmarks, G_landmarks, cfg, log_fn)
    log_fn(f"embedding: {pick} ({reason})")
    return EmbeddingPlan(pick, reason, rows, {s: pe.vectors for s, pe in on_landmarks.items()},
                         {s: pe.widths for s, pe in on_landmarks.items()}, on_landmarks[pick].seconds_per_sample,
                         {s: pe.seconds_per_sample for s, pe in on_landmarks.items()})


def non_landmarks(n_pool: int, landmarks: np.ndarray) -> np.ndarray:
    """The pool rows the chosen proxy still has to embed, in order (sharded in this order)."""
    return np.setdiff1d(np.arange(n_pool), landmarks)


def embed_pool_rows(model, pool: list[TokenizedSample], rows: np.ndarray, spec: str, cfg: SelectionConfig, pad_id: int,
                    known: dict[str, KnownRows] | None = None) -> proxies.ProxyEmbedding:
    """``spec``'s embeddings of ``pool[rows]`` (rows known from other runs are taken, not recomputed)."""
    return _proxy_rows(model, pool, np.asarray(rows), spec, cfg, pad_id, known or {})


def assemble_pool_embedding(plan: EmbeddingPlan, landmarks: np.ndarray, rest: np.ndarray, rest_vectors: np.ndarray,
                            seconds_per_sample: float | None = None) -> EmbeddingChoice:
    """The pool's rows: the landmarks' from the plan, the others as embedded (in ``rest`` order)."""
    lm = plan.landmark_embeddings[plan.spec]
    vectors = np.zeros((len(landmarks) + len(rest), lm.shape[1]), dtype=np.float32)
    vectors[landmarks] = lm
    if len(rest):
        vectors[rest] = rest_vectors
    per = plan.seconds_per_sample if seconds_per_sample is None else seconds_per_sample
    return EmbeddingChoice(plan.spec, plan.reason, vectors, per, plan.candidates, plan.landmark_embeddings, plan.widths)


def embed_pool(model, pool: list[TokenizedSample], landmarks: np.ndarray, G_landmarks: np.ndarray,
               cfg: SelectionConfig, pad_id: int, log_fn: Callable[[str], None] = log.info,
               known: dict[str, KnownRows] | None = None) -> EmbeddingChoice:
    """Proxy embeddings of the whole pool; with ``embedding='auto'`` the proxy is chosen first by
    cross-validation on the landmarks (task-independent pseudo-targets, ``recovery``). In one call
    what the sharded asset does in steps: ``plan_pool_embedding``, ``embed_pool_rows`` over
    ``non_landmarks`` (in shards), ``assemble_pool_embedding``.

    ``known`` maps a spec to rows computed before (``KnownRows``), e.g. by another selection seed's
    run with the same model, pool and ``data_seed``: proxies computed one sample at a time
    (``ProxySpec.per_sample``) give the same rows whatever the landmarks, so those rows are reused
    and only the others are computed; or the landmarks' rows that ``compute_gradients_and_proxy``
    computed with their gradients (``known_rows(pe, landmarks, len(pool))``)."""
    plan = plan_pool_embedding(model, pool, landmarks, G_landmarks, cfg, pad_id, log_fn, known)
    rest = non_landmarks(len(pool), landmarks)
    if not len(rest):
        return assemble_pool_embedding(plan, landmarks, rest, np.zeros((0, 0)))
    pe = embed_pool_rows(model, pool, rest, plan.spec, cfg, pad_id, known)
    return assemble_pool_embedding(plan, landmarks, rest, pe.vectors, pe.seconds_per_sample)


def embed_samples(model, samples: list[TokenizedSample], spec: str, cfg: SelectionConfig, pad_id: int) -> proxies.ProxyEmbedding:
    """``spec``'s embeddings of ``samples`` with ``cfg``'s width, seed, batch size and JVP defaults:
    the pool's rows, and the targets' (for the direct term) the same way."""
    data = cfg.data
    return proxies.compute_proxy(model, samples, pad_id, spec, data.embedding_dim, data.data_seed,
                                 grad_batch=data.batch_size, jvp=(data.jvp_blocks, data.jvp_tangents))


@dataclass
class LandmarkRegression:
    """The pool-side part of Eq. 10, as fitted: the kernel setting chosen by landmark
    cross-validation, the RBF bandwidth, and (when small enough to store) the coefficient matrix
    ``C`` with ``p_hat = C @ P_L`` exactly for a task scored without the direct term: centring
    folded in and the landmarks' rows one-hot (their scores are exact). The direct term, when a
    task uses it, adds a per-task linear part that ``C`` cannot hold (``score_pool`` refits it)."""

    setting: recovery.KernelSetting
    bandwidth2: float
    cv: list[dict] = field(default_factory=list)  # the cross-validation rows behind the choice
    coefficients: np.ndarray | None = None  # (n, l) or None


def fit_landmark_regression(E: np.ndarray, landmarks: np.ndarray, G_landmarks: np.ndarray, cfg: SelectionConfig,
                            materialize_limit: int = 2**25) -> LandmarkRegression:
    """Pick the kernel setting by landmark cross-validation and compute ``C`` when it is small.
    (The direct term is a per-task decision: ``choose_direct``.)"""
    EL = E[landmarks]
    fixed = recovery.KernelSetting(damping=cfg.pool.damping, center=cfg.pool.kernel_center)
    settings = recovery.DEFAULT_SETTINGS if cfg.pool.kernel_search else (fixed,)
    cv = (recovery.cross_validate(EL, G_landmarks, None, settings, seed=cfg.selection.seed)
          if len(landmarks) >= 8 else [])
    best = max(cv, key=lambda r: r["spearman"]) if cv else None
    setting = recovery.KernelSetting(best["bandwidth_scale"], best["damping"], best["center"]) if best else fixed
    model = krr_fit(EL, np.zeros((len(landmarks), 1)), damping=setting.damping,
                    bandwidth_scale=setting.bandwidth_scale, center=setting.center)
    C = None
    if len(E) * len(landmarks) <= materialize_limit:
        C = np.concatenate(list(model.coefficients(E)))  # the kernel part: K_nL (K_LL + delta I)^-1
        if setting.center:  # p_hat = C (P_L - 1 m') + 1 m' with m = P_L' 1 / l: fold the mean in
            C += (1.0 - C.sum(1, keepdims=True)) / len(landmarks)
        C[landmarks] = np.eye(len(landmarks))  # exact on the landmarks, as propagate_scores
    return LandmarkRegression(setting, model.bandwidth2, cv, C)


# -------------------------------------------------------------------------- target side
@dataclass
class TargetScores:
    scores: np.ndarray  # (n, t): exact on landmarks, propagated elsewhere
    weights: np.ndarray  # (n,): robust weights of the mean target (Eq. 7), exactly k non-zeros
    lam: float


def choose_direct(E_landmarks: np.ndarray, G_landmarks: np.ndarray, G_targets: np.ndarray, direct: DirectTerm,
                  setting: recovery.KernelSetting, seed: int = 0) -> tuple[recovery.KernelSetting, list[dict]]:
    """Whether this task's scores get the direct term, by landmark cross-validation on the task's
    real targets: its gain depends on the targets (measured with GSM8K targets: +0.04 held-out
    Spearman for grad-last:2+grad-head at 256 landmarks, while pool-side pseudo-targets, means of
    random pool samples, show none), so the pool side cannot decide it."""
    off, on = replace(setting, direct=False), replace(setting, direct=True)
    if len(E_landmarks) < 8:
        return on, []
    rows = recovery.cross_validate(E_landmarks, G_landmarks, G_targets, (off, on), seed=seed, slices=direct.slices,
                                   target_embeddings=direct.targets)
    return (on if rows[1]["spearman"] > rows[0]["spearman"] else off), rows


def score_pool(E: np.ndarray, landmarks: np.ndarray, G_landmarks: np.ndarray, G_targets: np.ndarray,
               reg: LandmarkRegression, cfg: SelectionConfig, direct: DirectTerm | None = None) -> TargetScores:
    """Per-target influence of every pool sample (Eq. 3, 10) and the robust weights (Eq. 7).

    ``direct`` (the targets' proxy embeddings and the gradient parts) is required when the chosen
    setting uses the direct term, and ignored otherwise."""
    if reg.setting.direct and direct is None:
        raise ValueError("the landmark regression uses the direct term: pass the targets' proxy embeddings")
    P_L = landmark_scores(G_landmarks, G_targets)
    model: KRRModel = krr_fit(E[landmarks], P_L, damping=reg.setting.damping, bandwidth2=reg.bandwidth2,
                              center=reg.setting.center, direct=direct if reg.setting.direct else None)
    return weigh_scores(propagate_scores(model, E, landmarks, P_L), cfg.selection.k)


def weigh_scores(scores: np.ndarray, k: int) -> TargetScores:
    """Per-target scores (n, t) with the robust weights of their mean target (Eq. 7), exactly
    ``k`` non-zeros. Shared by InfDist (propagated scores) and Grad (every sample exact)."""
    mean = scores.mean(1)
    try:
        w, lam = robust_weights(mean, k=k)
    except ScoreTies:  # e.g. duplicate pool rows: exactly k non-zeros needs a tie-break, by index as top_k's
        log.warning("the mean-target scores tie at rank k=%d (duplicate samples?): ties broken by pool index", k)
        w, lam = robust_weights(break_ties(mean), k=k)
    return TargetScores(scores, w, lam)


def exact_scores(G_pool: np.ndarray, G_targets: np.ndarray, k: int) -> TargetScores:
    """Influence Distillation with a perfect approximation: every pool sample's true projected
    gradient (as if every sample were a landmark), so the scores are Eq. 3 exactly, then the same
    robust weights. The ceiling InfDist's landmark regression approaches. Shapes (n, d), (t, d)."""
    return weigh_scores(landmark_scores(G_pool, G_targets), k)


def score_targets(E: np.ndarray, landmarks: np.ndarray, G_landmarks: np.ndarray, G_targets: np.ndarray,
                  reg: LandmarkRegression, cfg: SelectionConfig,
                  direct: DirectTerm | None = None) -> tuple[TargetScores, recovery.KernelSetting, list[dict]]:
    """The target side's policy and scores in one call: the direct term decided for this task
    (``choose_direct``, when the proxy has gradient parts, i.e. ``direct`` is given), then
    ``score_pool`` with the resulting setting. Returns the scores, the setting used and the
    direct-term cross-validation rows. The asset and the benchmarks score through this function."""
    setting, rows = reg.setting, []
    if direct is not None:
        setting, rows = choose_direct(E[landmarks], G_landmarks, G_targets, direct, reg.setting, cfg.selection.seed)
    scores = score_pool(E, landmarks, G_landmarks, G_targets, replace(reg, setting=setting), cfg,
                        direct if setting.direct else None)
    return scores, setting, rows


def pool_losses(model, samples: list[TokenizedSample], pad_id: int) -> np.ndarray:
    """Per-sample log-perplexity of the pool, for the mid-PPL baseline."""
    from infdist_core.model.evaluation import sample_losses

    return sample_losses(model, samples, pad_id)


def fine_tune(model, samples: list[TokenizedSample], weights: np.ndarray | None, cfg: SelectionConfig, pad_id: int,
              output_dir, progress: Callable[[int, int, float], None] | None = None) -> finetuning.FineTuneResult:
    """Train the base model on the selected subset with ``transformers.Trainer`` (Sec. 5.1; weights
    only if configured, App. J); Trainer checkpoints go to ``output_dir``, and a fine-tune
    interrupted after one resumes from it."""
    opt, run = cfg.training, cfg.runtime
    tc = TrainConfig(lr=opt.train_lr, epochs=opt.train_epochs, micro_batch=opt.train_micro_batch,
                     grad_accum=opt.train_grad_accum, seed=cfg.selection.seed)
    device = next(model.parameters()).device
    opts = finetuning.TrainerOptions(precision=cfg.training_dtype(str(device)),
                                     gradient_checkpointing=run.gradient_checkpointing, lora_rank=opt.lora_rank,
                                     lora_alpha=opt.lora_alpha, save_steps=run.train_save_steps,
                                     use_cpu=device.type == "cpu")
    w = None
    if cfg.selection.weighted_training and weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        w = w / w.mean()
    return finetuning.fine_tune(model, samples, tc, opts, pad_id, output_dir, weights=w, progress=progress)


@dataclass
class Evaluation:
    """What ``evaluate`` measured: the scores by metric name, their standard errors where known
    (the harness's, and the held-out loss's over rows), and one row per held-out row (``row_id``,
    ``loss``: its mean label-token loss; ``acc``/``acc_norm`` for choice tasks) for paired
    comparisons."""

    scores: dict[str, float]
    rows: list[dict]
    stderr: dict[str, float] = field(default_factory=dict)


CHOICE_KINDS = ("mmlu", "multiple_choice")
"""Evaluation kinds with choices: their held-out rows are also scored for accuracy (``acc``, and
``acc_norm`` where the harness gives it) through the harness, row by row."""
ROW_ACCURACY = ("acc", "acc_norm")
"""The per-row accuracy columns of ``Evaluation.rows`` for choice tasks."""


def evaluate(model, tok, eval_set: evalsets.EvalSet, targets: list[dict], cfg: SelectionConfig,
             log_fn: Callable[[str], None] = log.info) -> Evaluation:
    """Held-out loss on ``cfg.evaluation.heldout_rows`` rows of the task's evaluation set (seeded by
    ``data_seed``, so every method and seed scores the same rows), for choice tasks the accuracy
    on those same rows (``CHOICE_KINDS``; per row, in ``rows``), plus the task metric on
    ``cfg.evaluation.eval_subset`` rows when ``cfg.evaluation.task_metrics`` (Sec. 5.1, App. E): GSM8K, MMLU and
    multiple-choice tasks through lm-evaluation-harness (``harness``), HumanEval here.

    ``target_loss`` is the loss on the targets the selection was made for: in-sample, a sanity
    check, never evidence of quality."""
    from infdist_core.model import evaluation as ev
    from infdist_core.model import harness

    pad, opts, seed = tok.pad_token_id, cfg.evaluation, cfg.data.data_seed
    out = {"target_loss": ev.target_loss(model, tokenize_records(tok, targets, cfg.data.target_tokens()).samples, pad)}
    rows: list[dict] = []
    if eval_set.kind == "none":
        log_fn("evaluation: this task has no evaluation set (eval kind none): target loss only")
        return Evaluation(out, rows)
    order = ev.seeded_subset(list(range(len(eval_set.records))), opts.heldout_rows or None, seed,
                             f"heldout-{eval_set.kind}", opts.heldout_split)
    held = tokenize_records(tok, [eval_set.records[i] for i in order], opts.heldout_max_length)
    if not held.samples:
        raise ValueError(f"none of the {len(order)} held-out rows has an assistant token within heldout_max_length="
                         f"{opts.heldout_max_length} (e.g. {next(iter(held.excluded.items()))}): raise heldout_max_length")
    losses = ev.sample_losses(model, held.samples, pad)
    rows = [{"row_id": s.id, "loss": float(v)} for s, v in zip(held.samples, losses)]
    out["heldout_loss"] = float(losses.mean())
    stderr = {"heldout_loss": float(losses.std(ddof=1) / np.sqrt(len(losses))) if len(losses) > 1 else float("nan")}
    out["heldout_rows"] = float(len(rows))
    out["heldout_rows_excluded"] = float(len(held.excluded))
    out["eval_rows_overlapping_targets"] = float(eval_set.excluded_as_targets)
    lm = None
    if eval_set.kind in CHOICE_KINDS:
        # accuracy on the same held-out rows, per row, so methods pair on rows as their losses do
        lm = harness.language_model(model, tok, batch_size=proxies.BATCH_SIZE)
        ids = [eval_set.records[i]["id"] for i in order]
        per_row = harness.run(lm, eval_set.kind, [eval_set.rows[i] for i in order], opts.max_new_tokens, seed)
        by_id = {ids[smp["doc_id"]]: smp for smp in per_row.samples}
        for metric in ROW_ACCURACY:
            if all(metric in by_id.get(r["row_id"], {}) for r in rows):
                vals = np.array([float(by_id[r["row_id"]][metric]) for r in rows])
                for r, v in zip(rows, vals):
                    r[metric] = float(v)
                out[f"heldout_{metric}"] = float(vals.mean())
                stderr[f"heldout_{metric}"] = float(vals.std(ddof=1) / np.sqrt(len(vals))) if len(vals) > 1 else float("nan")
    if not opts.task_metrics:
        return Evaluation(out, rows, stderr)
    t0 = time.perf_counter()
    metric_rows = ev.seeded_subset(eval_set.rows, opts.eval_subset or None, seed, eval_set.kind)
    if eval_set.kind in harness.KINDS:
        lm = lm or harness.language_model(model, tok, batch_size=proxies.BATCH_SIZE)
        for name, (value, se) in harness.run(lm, eval_set.kind, metric_rows, opts.max_new_tokens, seed).metrics.items():
            out[name], stderr[name] = value, se
    elif eval_set.kind == "humaneval":
        out["humaneval_pass@1"] = ev.humaneval_pass_at_1(model, tok, metric_rows, opts.max_new_tokens)
    if eval_set.kind != "heldout":
        out["eval_rows"] = float(len(metric_rows))
    log_fn(f"evaluation ({eval_set.kind}, {len(rows)} held-out rows, {len(metric_rows)} metric rows, "
           f"{time.perf_counter() - t0:.0f} s): {out}")
    return Evaluation(out, rows, stderr)

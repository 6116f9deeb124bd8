"""Configuration of a selection run: one frozen dataclass of six sections, validated, with the
paper's values available as ``SelectionConfig.paper()`` and defaults sized for a 135M model on a
2-core CPU.

The sections follow what depends on them: ``data`` (the pool sample, the warm-up and the
instruments: every artefact), ``pool`` (landmarks and kernel regression of one selection seed),
``selection`` and ``training`` (the subset and its fine-tune), ``evaluation`` (only the eval
scores) and ``runtime`` (nothing). So the settings an artefact depends on are a lookup of
sections (``DATA_SIDE_FIELDS`` and on below). A field's name is unique across the sections, so
the flat name (``SelectionConfig.of(k=16)``, ``with_(k=16)``, a benchmark's ``--set k=16``, an
artefact's recorded settings and their digests) addresses exactly one field.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal, get_args

PROXY_AUTO = "auto"
Precision = Literal["auto", "float32", "bfloat16"]
"""The closed set of ``dtype`` and ``train_precision`` (auto: bfloat16 on a CUDA device that supports it)."""
HeldoutSplit = Literal["test", "dev"]
"""The closed set of ``heldout_split``."""
PoolSampling = Literal["permutation", "stable"]
"""The closed set of ``pool_sampling``."""


def _at_least(section, minimum: int, names: tuple[str, ...], what: str) -> None:
    """Refuse, naming every field and value, the ``names`` of ``section`` that are not integers >= ``minimum``."""
    values = {f: getattr(section, f) for f in names}
    bad = {f: v for f, v in values.items() if not isinstance(v, int) or v < minimum}
    if bad:
        raise ValueError(f"these settings must be integers >= {minimum}{what}: {bad}")


def _one_of(section, name: str, allowed) -> None:
    """Refuse a value of a closed set (a ``Literal``) that is not in it, naming the field and the choices."""
    if getattr(section, name) not in get_args(allowed):
        *rest, last = get_args(allowed)
        raise ValueError(f"{name}={getattr(section, name)!r}: use {', '.join(rest)} or {last}")


@dataclass(frozen=True)
class DataSection:
    """The data side: the pool sample, the warm-up and the instruments (gradient projection, proxies).

    Every artefact depends on these; the selection-seed-free ones (pool sample, warm-up, target
    gradients, the baselines' pool inputs) on these alone, with the warm-up's optimiser settings
    (``WARMUP_TRAINING_FIELDS``), so they are shared by every selection seed and budget."""

    pool_size: int = 600
    """Samples drawn (seeded) from the pool file; paper: 200,000."""
    pool_sampling: PoolSampling = "permutation"
    """How the sample is drawn. permutation: a seeded shuffle of the file's rows, redrawn whenever
    the file's length changes. stable: the usable rows of smallest seeded hash of their id, so
    appending rows keeps every member except those a new row outranks (about the new rows' share
    of the sample), an edited row stays a member, and a removed member's place goes to the next
    row in hash order. Use stable for a pool that grows between re-selections."""
    pool_refresh: float = 0.5
    """With pool_sampling=stable, a re-selection keeps the warm-up checkpoint (and so every
    gradient and proxy row computed at it) while at least 1 - pool_refresh of the pool sample was
    in the sample it was trained from; past that it trains a new one. 0.5: kept until the pool has
    doubled. 0 retrains at any change, 1 never (permutation sampling retrains at every change)."""
    max_length: int = 128
    """Tokens per sample after the chat template; paper: 2,048."""
    target_max_length: int = 0
    """Tokens per target sample (0: max_length). A target whose answer starts past the limit has
    no label token and is left out of the selection: at 128 tokens that is 11 of HumanEval's 16
    targets, 91 of MMLU's 282 and 42 of BBH's 81 (none of GSM8K's 8); at 384, none of HumanEval's
    or BBH's and 9 of MMLU's. Only the target side reads it: changing it recomputes no pool-side
    artefact. Each usable target costs a full gradient and its proxy rows, about a landmark's
    cost: MMLU's 191 usable targets were most of a 2,711 s selection on 2 CPU cores."""
    projection_dim: int = 8192
    """Hadamard projection of gradients; paper: 131,072."""
    grad_params: str = "all"
    """Parameters the gradients cover: all, blocks (no embeddings), down_proj, last:N or first:N."""
    adam_aware: bool = False
    """Precondition training gradients with the warm-up Adam state (Eq. 8-9). Off here: after a
    brief warm-up, v is tiny for rarely seen tokens' embedding rows, so a = 1/(sqrt(v)+eps) is huge
    there and the preconditioned gradient is nearly all embedding. Use it with a long warm-up, or
    with grad_params 'blocks' / 'down_proj' as the paper does."""
    warmup_samples: int = 64
    """Random pool samples for the warm-up; paper: 10,000."""
    warmup_steps: int = 6
    """Optimizer steps of warm-up (0: no warm-up, no Adam state)."""
    embedding: str = PROXY_AUTO
    """Proxy embedding spec (see infdist_core.model.proxies) or 'auto' (chosen by landmark cross-validation)."""
    embedding_candidates: tuple[str, ...] = ("grad-last:2+grad-head", "jvp-hidden:4:2")
    """Candidates for 'auto', best first as benchmarks/bench_recovery.py ranks them (the order is
    the fallback when landmark cross-validation is inconclusive). grad-last:2 alone is not among
    them: pool-side CV cannot see that adding the head's gradient helps real targets, and would
    take the cheaper proxy."""
    embedding_dim: int = 4096
    """Width of projected proxies (JVP logits, partial gradients)."""
    jvp_blocks: int = 4
    """l in Eq. 12 for the jvp-* proxies given without a block count."""
    jvp_tangents: int = 2
    """|V| in Eq. 12."""
    data_seed: int = 0
    """Seed of the data and the instruments, fixed across selection seeds: the pool sample, the
    warm-up, the gradient and proxy projections and the evaluation rows (so that scores pair across
    methods and seeds)."""
    batch_size: int = 1
    """Samples per batch of the gradient passes: the landmark and target gradients (one vmapped
    backward per batch) and the blocks before ``grad-last``'s in the gradient proxies (a no-grad
    batched forward, then the last blocks per sample). 1: one sample per pass, so a proxy row does
    not depend on its batch and other selection seeds' rows are reused (``ProxySpec.per_sample``).
    Results differ from 1 only by rounding; measured in ``benchmarks/bench_cost.py``."""
    dtype: Precision = "auto"
    """Weights and activations of the passes that do not train (gradients, proxies, perplexity,
    RDS+, evaluation): float32, bfloat16, or auto (bfloat16 on a CUDA device that supports it, else
    float32). The warm-up trains in float32, fine-tuning as ``train_precision`` says (bf16 mixed
    precision at most: AdamW on bf16 weights would lose small updates)."""

    def __post_init__(self) -> None:
        from infdist_core.proxy_specs import ProxySpec

        _at_least(self, 1, ("pool_size", "max_length", "projection_dim", "embedding_dim", "jvp_blocks", "jvp_tangents",
                            "batch_size", "warmup_samples"), "")
        _at_least(self, 0, ("warmup_steps", "target_max_length"), " (warmup_steps 0 = no warm-up; target_max_length 0 = "
                                                                  "max_length)")
        if not 0 <= self.pool_refresh <= 1:
            raise ValueError(f"pool_refresh={self.pool_refresh}: must be in [0, 1] (the share of the pool sample that may "
                             "be new since the warm-up before it is retrained)")
        if self.embedding == PROXY_AUTO and not self.embedding_candidates:
            raise ValueError("embedding='auto' needs at least one embedding candidate")
        for spec in ([] if self.embedding == PROXY_AUTO else [self.embedding]) + list(self.embedding_candidates):
            ProxySpec.parse(spec)  # names the spec and the part
        parse_grad_params(self.grad_params)
        _one_of(self, "dtype", Precision)
        _one_of(self, "pool_sampling", PoolSampling)

    def target_tokens(self) -> int:
        """Tokens per target sample: ``target_max_length``, or ``max_length`` when it is 0."""
        return self.target_max_length or self.max_length

    def embedding_specs(self) -> tuple[str, ...]:
        """The proxy specs the pool side computes: the candidates with ``embedding='auto'`` (one is
        chosen by landmark cross-validation), else the pinned ``embedding`` alone."""
        return tuple(self.embedding_candidates) if self.embedding == PROXY_AUTO else (self.embedding,)


@dataclass(frozen=True)
class PoolSection:
    """The pool side of one selection seed: the landmarks and the kernel regression."""

    n_landmarks: int = 64
    """Landmarks with exact gradients (each costs about four proxy rows); paper: 4,096. On a small
    pool more pay: on the embedded default (600 samples, k = 30) InfDist captured 0.58, 0.80 and
    about 0.96 of the true-gradient selection's held-out gain at 64, 128 and 256, mostly because
    more of the pool is scored exactly (docs/results.md). How the count should grow with a larger
    pool was not measured."""
    damping: float = 0.01
    """KRR ridge, relative to the kernel diagonal."""
    kernel_search: bool = True
    """Choose bandwidth scale / centring by landmark cross-validation (else the median heuristic,
    ``damping`` and ``kernel_center``)."""
    kernel_center: bool = True
    """Without ``kernel_search``: centre the kernel regression (fit the landmarks' mean gradient
    apart). The paper's Eq. 10 does not centre (``paper()``); centring won the landmark
    cross-validation on SmolLM2-135M."""

    def __post_init__(self) -> None:
        if not isinstance(self.n_landmarks, int) or self.n_landmarks < 2:
            raise ValueError(f"n_landmarks={self.n_landmarks}: the kernel regression needs at least 2 landmarks (one "
                             "landmark gives every sample the same score); 8 or more for its cross-validation")
        if self.damping < 0:
            raise ValueError(f"damping must be >= 0, got damping={self.damping}")


@dataclass(frozen=True)
class SelectionSection:
    """The budget, how the weights become a subset (Eq. 7, Sec. 3.3), and the selection seed."""

    k: int = 30
    """Samples to select; paper: 10,000 (5% of its pool, as 30 is of 600 here)."""
    eta: float = 0.0
    """Learning rate of the second-order term; only 0 (first order, the paper's default) in the pipeline."""
    per_target: bool = True
    """Per-target round-robin selection (Sec. 3.3); False: top-k of the robust weights."""
    weighted_training: bool = False
    """Scale each selected sample's loss by its weight (App. J: does not help)."""
    seed: int = 0
    """Seed of the selection: landmarks, cross-validation folds, round-robin ties, the uniform draw
    and the fine-tuning order. Vary it to measure selection-to-selection variance."""

    def __post_init__(self) -> None:
        _at_least(self, 1, ("k",), "")
        if self.eta < 0:
            raise ValueError(f"eta must be >= 0, got eta={self.eta}")
        if self.eta > 0:
            raise ValueError(
                f"eta={self.eta}: the pipeline runs first-order Influence Distillation only. The second-order term "
                "needs Hessian-vector products of the full (unprojected) landmark gradients, which it does not "
                "compute; infdist_core.maths.weights.robust_weights accepts Q (dense or low rank) directly")
        if self.weighted_training and self.per_target:
            raise ValueError("weighted_training=True needs per_target=False: round-robin picks have no Eq. 7 weight of "
                             "their own (the mean target's weights are zero for most of them)")


@dataclass(frozen=True)
class TrainingSection:
    """Fine-tuning on the subset; the warm-up trains with the same optimiser settings."""

    train_lr: float = 2e-5
    """AdamW learning rate of the warm-up and the fine-tuning (linear decay); paper: 2e-5."""
    train_epochs: float = 2.0
    """Epochs over the selected subset when fine-tuning; paper: 2."""
    train_micro_batch: int = 4
    """Samples per forward/backward pass when training; paper: 1."""
    train_grad_accum: int = 2
    """Micro-batches per optimizer step; paper: 128 (an effective batch of 128)."""
    train_precision: Precision = "auto"
    """Fine-tuning precision (Trainer): float32, bfloat16 (mixed: bf16 autocast, fp32 weights and
    AdamW state) or auto (bfloat16 on a CUDA device that supports it, else float32). The warm-up
    stays float32."""
    lora_rank: int = 0
    """0: full fine-tuning; r > 0: LoRA adapters of rank r (peft, the ``lora`` extra) on every
    linear layer, merged into the weights before the model is saved."""
    lora_alpha: int = 32
    """LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank)."""

    def __post_init__(self) -> None:
        _at_least(self, 1, ("train_micro_batch", "train_grad_accum", "lora_alpha"), "")
        _at_least(self, 0, ("lora_rank",), " (0 = full fine-tuning)")
        positive = {f: getattr(self, f) for f in ("train_lr", "train_epochs") if not getattr(self, f) > 0}
        if positive:
            raise ValueError(f"these settings must be > 0: {positive}")
        _one_of(self, "train_precision", Precision)


@dataclass(frozen=True)
class EvaluationSection:
    """The held-out loss and the task metric: only the eval scores depend on these."""

    eval_subset: int = 2
    """Rows for the task metric (GSM8K exact match, MMLU and multiple-choice accuracy through
    lm-evaluation-harness, HumanEval pass@1; a seeded subset); 0 = all. 2 shows the harness path
    on a CPU (8-shot GSM8K generation is slow there), not quality: use 0 on a GPU."""
    heldout_rows: int = 100
    """Rows for the held-out loss (a seeded subset of the task's evaluation file, disjoint from its
    targets; a forward pass each); 0 = all. The subsets are nested: 100 rows are the first 100 of
    the 200 ``benchmarks/bench_quality.py`` uses."""
    heldout_split: HeldoutSplit = "test"
    """Which held-out rows: 'test' (the first ``heldout_rows`` of a seeded permutation of the
    evaluation file: what benchmarks report) or 'dev' (its last ``heldout_rows``: disjoint from
    every test subset of up to N - heldout_rows rows, for choosing settings such as the training
    budget without touching the reported rows)."""
    heldout_max_length: int = 384
    """Tokens per held-out row (prompt and reference, chat template included). Longer than
    max_length: at 128 tokens most MMLU and HumanEval rows have no reference token left; at 384
    almost all fit."""
    task_metrics: bool = True
    """Compute the task metric besides the held-out loss (lm-evaluation-harness for GSM8K, MMLU
    and multiple-choice tasks; HumanEval pass@1 here), with standard errors. On a 2-core CPU a
    135M model scores about 0 on a few rows, which says nothing about quality: the held-out loss
    and ``benchmarks/bench_quality.py`` do (it turns this off)."""
    max_new_tokens: int = 160
    """Tokens generated per row for the generation metrics (GSM8K exact match, HumanEval pass@1)."""

    def __post_init__(self) -> None:
        _at_least(self, 1, ("heldout_max_length", "max_new_tokens"), "")
        _at_least(self, 0, ("eval_subset", "heldout_rows"), " (0 = all rows)")
        _one_of(self, "heldout_split", HeldoutSplit)


@dataclass(frozen=True)
class RuntimeSection:
    """Where and in how many steps the work runs: no artefact depends on these."""

    device: str = "auto"
    """cuda when available, else cpu."""
    pool_shards: int = 1
    """Shards of the pool-side passes (landmark gradients, pool embeddings, the baselines' pool
    passes): each shard is its own Dagster step, run in parallel by the multiprocess or Kubernetes
    executor, resumable shard by shard. The gathered artefacts are bit-identical for any value."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass when fine-tuning (Trainer's activation
    checkpointing): less memory, about a third more compute, the same result."""
    train_save_steps: int = 50
    """Write a Trainer checkpoint every this many fine-tuning steps (0: never); an interrupted
    fine-tune resumes from the newest one."""

    def __post_init__(self) -> None:
        _at_least(self, 1, ("pool_shards",), "")
        _at_least(self, 0, ("train_save_steps",), " (0 = never)")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise ValueError(f"device={self.device!r}: use auto, cpu, cuda, cuda:N or mps")


SECTIONS = {"data": DataSection, "pool": PoolSection, "selection": SelectionSection, "training": TrainingSection,
            "evaluation": EvaluationSection, "runtime": RuntimeSection}
"""Each section of ``SelectionConfig`` and its class, in order."""

SECTION_OF = {f.name: section for section, cls in SECTIONS.items() for f in fields(cls)}
"""The section that holds each setting, by its (unique) name."""


NEUTRAL = {"target_max_length": 0}
"""Settings added after artefacts were first recorded, with the value at which they behave as
before they existed: at that value a setting is left out of digests (``SelectionConfig.digest``)."""


def nested(settings: dict) -> dict[str, dict]:
    """Flat settings grouped by their sections, ``{"k": 16}`` -> ``{"selection": {"k": 16}}`` (the
    shape of the settings resource's run config); an unknown name is refused."""
    unknown = sorted(set(settings) - set(SECTION_OF))
    if unknown:
        raise ValueError(f"unknown settings {unknown}: see infdist_core.config (sections {', '.join(SECTIONS)})")
    out: dict[str, dict] = {}
    for name, value in settings.items():
        out.setdefault(SECTION_OF[name], {})[name] = value
    return out


@dataclass(frozen=True)
class SelectionConfig:
    """Every knob of Influence Distillation, in sections (paper values in ``paper()``). Build one
    from flat setting names with ``SelectionConfig.of(pool_size=40, k=5)``; read a setting through
    its section (``cfg.data.pool_size``, ``cfg.selection.k``)."""

    data: DataSection = field(default_factory=DataSection)
    """The pool sample, the warm-up and the instruments: every artefact depends on these."""
    pool: PoolSection = field(default_factory=PoolSection)
    """Landmarks and kernel regression: the artefacts of one selection seed."""
    selection: SelectionSection = field(default_factory=SelectionSection)
    """The budget, how weights become a subset, and the selection seed."""
    training: TrainingSection = field(default_factory=TrainingSection)
    """Fine-tuning (and the warm-up's optimiser)."""
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    """Held-out loss and task metrics: only the eval scores depend on these."""
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    """Where and in how many steps the work runs: no artefact depends on these."""

    def __post_init__(self) -> None:
        """The checks that span sections (each section checks its own fields when it is made)."""
        if self.pool.n_landmarks > self.data.pool_size:
            raise ValueError(f"n_landmarks={self.pool.n_landmarks} exceeds pool_size={self.data.pool_size}")
        if self.selection.k > self.data.pool_size:
            raise ValueError(f"k={self.selection.k} exceeds pool_size={self.data.pool_size}")

    @classmethod
    def of(cls, **settings) -> "SelectionConfig":
        """The defaults with ``settings`` (flat names: ``of(pool_size=40, k=5)``) changed."""
        return cls().with_(**settings)

    @classmethod
    def paper(cls) -> "SelectionConfig":
        """The paper's Section 5.1 settings (Llama-2-7B on one H100), landmark gradients over the
        ``down_proj`` matrices as for Llama-2-7B, and the kernel regression of Eq. 10 (median
        bandwidth, damping 0.01, no centring)."""
        return cls.of(pool_size=200_000, max_length=2048, n_landmarks=4096, k=10_000, projection_dim=131_072,
                      adam_aware=True, grad_params="down_proj", warmup_samples=10_000, warmup_steps=80,
                      embedding="jvp-logits:4:2", kernel_search=False, kernel_center=False, train_micro_batch=1,
                      train_grad_accum=128, eval_subset=0, task_metrics=True, batch_size=8)

    def with_(self, **changes) -> "SelectionConfig":
        """A copy with ``changes`` (flat setting names, routed to their sections) applied and validated."""
        return replace(self, **{s: replace(getattr(self, s), **c) for s, c in nested(changes).items()})

    def inference_dtype(self, device: str | None = None):
        """The torch dtype of the passes that do not train (``dtype``; auto: bf16 on CUDA if supported)."""
        import torch

        if self.data.dtype != "auto":
            return getattr(torch, self.data.dtype)
        return torch.bfloat16 if _bf16_device(device or self.runtime.device) else torch.float32

    def training_dtype(self, device: str | None = None) -> str:
        """Fine-tuning precision, ``float32`` or ``bfloat16`` (``train_precision``; auto as ``dtype``'s)."""
        if self.training.train_precision != "auto":
            return self.training.train_precision
        return "bfloat16" if _bf16_device(device or self.runtime.device) else "float32"

    def to_dict(self) -> dict:
        """Every setting by its flat name (what an artefact records and a digest hashes)."""
        return {name: value for section in SECTIONS for name, value in asdict(getattr(self, section)).items()}

    def digest(self, *fields: str) -> str:
        """Stable hash of the named settings (all when none): what a cached artefact depends on. A
        setting at its ``NEUTRAL`` value is left out, so artefacts recorded before it existed keep
        their address."""
        d = self.to_dict()
        if fields:
            d = {f: d[f] for f in fields}
        d = {f: v for f, v in d.items() if not (f in NEUTRAL and v == NEUTRAL[f])}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=list).encode()).hexdigest()[:16]


def _bf16_device(device: str) -> bool:
    """A CUDA device (``auto``: when one is available) that computes in bfloat16."""
    import torch

    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return on_cuda and torch.cuda.is_bf16_supported()


def parse_grad_params(which: str) -> tuple[str, int]:
    """``grad_params`` as (kind, N): ('all' | 'blocks' | 'down_proj', 0) or ('last' | 'first', N >= 1).
    The one parser of the setting: the configuration checks it, ``modeling.block_pattern`` uses it."""
    if which in ("all", "blocks", "down_proj"):
        return which, 0
    kind, _, count = which.partition(":")
    if kind in ("last", "first") and (count == "" or count.isdigit()) and int(count or 1) >= 1:
        return kind, int(count or 1)
    raise ValueError(f"unknown parameter subset grad_params={which!r}: use all, blocks, down_proj, last:N or first:N "
                     "(N >= 1)")


def section_fields(*sections: str) -> tuple[str, ...]:
    """The settings of the named sections, in order."""
    return tuple(f.name for s in sections for f in fields(SECTIONS[s]))


WARMUP_TRAINING_FIELDS = ("train_lr", "train_micro_batch", "train_grad_accum")
"""The training settings the warm-up trains with (the fine-tune's optimiser), so the data side
depends on them too."""

TARGET_DATA_FIELDS = ("target_max_length",)
"""Data settings only the target side reads (how the targets are tokenised): no pool-side artefact
depends on them, so changing one recomputes the target side alone."""

DATA_SIDE_FIELDS = tuple(f for f in section_fields("data") if f not in TARGET_DATA_FIELDS) + WARMUP_TRAINING_FIELDS
"""Settings the selection-seed-free artefacts depend on (pool sample, warm-up, the baselines' pool
inputs; target gradients with ``TARGET_DATA_FIELDS`` too): they are shared by every selection
seed and budget k."""

POOL_SIDE_FIELDS = DATA_SIDE_FIELDS + section_fields("pool") + ("seed",)
"""Settings the model-partitioned artefacts of one selection seed depend on (landmarks and on:
the landmarks are drawn with the selection seed)."""

TARGET_SIDE_FIELDS = POOL_SIDE_FIELDS + TARGET_DATA_FIELDS + tuple(
    f for f in section_fields("selection") if f != "seed") + tuple(
    f for f in section_fields("training") if f not in WARMUP_TRAINING_FIELDS)
"""Settings the model x task artefacts depend on (evaluation settings affect only eval scores)."""

EVAL_FIELDS = section_fields("evaluation")
"""Settings the evaluation scores depend on besides the target side's."""

RUNTIME_FIELDS = section_fields("runtime")
"""Settings no artefact depends on (where and in how many steps the computation runs)."""

ROW_FIELDS = ("projection_dim", "grad_params", "adam_aware", "embedding_dim", "jvp_blocks", "jvp_tangents", "data_seed",
              "batch_size", "dtype")
"""Settings one sample's gradient or proxy row depends on, besides its tokens and the weights it
is computed at: what a row computed before must agree on to be reused."""

WARMUP_FIELDS = ("max_length", "pool_sampling", "warmup_samples", "warmup_steps", "data_seed") + WARMUP_TRAINING_FIELDS
"""Settings the warm-up's training depends on besides its pool sample: a warm-up made with the same
ones may be kept for a grown pool (``pool_refresh``)."""


def field_docs(cls: type | None = None) -> dict[str, str]:
    """The docstring under each field of ``cls`` (default: every setting of every section, by its
    flat name): what the Dagster UI and docs/configuration.md show."""
    import ast
    import inspect

    if cls is None:
        return {name: doc for section in SECTIONS.values() for name, doc in field_docs(section).items()}
    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
            docs[node.target.id] = str(nxt.value.value).strip()
    return docs

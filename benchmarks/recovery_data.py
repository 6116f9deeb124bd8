"""The recovery protocol shared by ``bench_recovery.py`` and ``bench_cost.py``: the model, the
first ``n`` usable ShareGPT first exchanges, the GSM8K CoT targets, and their true per-sample
gradients (all parameters, Hadamard-projected, normalised), cached on disk because they take
~1.2 s per sample on 2 CPU cores and every proxy is measured against the same ones."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infdist_core.data.atomic import atomic_path
from infdist_core.data.records import load_records
from infdist_core.maths.projection import HadamardProjector
from infdist_core.model.gradients import sample_gradients
from infdist_core.model.modeling import load_model, load_tokenizer, select_parameters
from infdist_core.model.tokenization import TokenizedSample, tokenize_records

CORE = Path(__file__).resolve().parents[1] / "infdist_core"
GRADIENT_CODE = ("model/gradients.py", "maths/projection.py", "maths/hadamard.py", "model/tokenization.py")


@dataclass
class RecoverySetting:
    model_path: str
    pool_path: str
    targets_path: str
    n: int = 600
    tokens: int = 128
    dim: int = 8192

    def key(self) -> str:
        stat = [(p, os.path.getsize(p), int(os.path.getmtime(p))) for p in (self.pool_path, self.targets_path)]
        code = [hashlib.sha256((CORE / f).read_bytes()).hexdigest() for f in GRADIENT_CODE]  # a new projection: new cache
        raw = json.dumps([self.model_path, self.n, self.tokens, self.dim, stat, code])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def add_arguments(ap) -> None:
    """The protocol's command-line arguments (``--model --pool --targets --n --tokens --dim``)."""
    ap.add_argument("--model", default="data/models/smollm2-135m")
    ap.add_argument("--pool", default="data/pools/sharegpt.jsonl")
    ap.add_argument("--targets", default="data/targets/gsm8k.jsonl")
    ap.add_argument("--n", type=int, default=600, help="pool samples (the first usable ones)")
    ap.add_argument("--tokens", type=int, default=128, help="tokens per sample")
    ap.add_argument("--dim", type=int, default=8192, help="projection of the true gradients")


def setting(args) -> RecoverySetting:
    return RecoverySetting(args.model, args.pool, args.targets, args.n, args.tokens, args.dim)


@dataclass
class RecoveryData:
    model: object
    tokenizer: object
    pool: list[TokenizedSample]
    spare: list[TokenizedSample]  # further usable pool records (warm-up data)
    targets: list[TokenizedSample]
    G: np.ndarray | None  # (n, dim) float64 true gradients of the pool
    T: np.ndarray | None  # (t, dim) of the targets
    seconds_per_gradient: float


def load(setting: RecoverySetting, with_gradients: bool = True, cache_dir: str | Path = "data/bench_cache",
         log=print) -> RecoveryData:
    """The protocol's data; true gradients from ``cache_dir`` when computed before with the same
    setting (and the same file sizes and times), else computed and cached (written under a
    temporary name, then renamed)."""
    import torch

    torch.manual_seed(0)
    tok = load_tokenizer(setting.model_path)
    model = load_model(setting.model_path, "cpu")
    pool = tokenize_records(tok, load_records(setting.pool_path, limit=setting.n + 500), setting.tokens).samples
    pool, spare = pool[: setting.n], pool[setting.n :]
    targets = tokenize_records(tok, load_records(setting.targets_path), setting.tokens).samples
    if not with_gradients:
        return RecoveryData(model, tok, pool, spare, targets, None, None, float("nan"))
    pad = tok.pad_token_id

    def compute() -> dict[str, np.ndarray]:
        G, per = true_gradients(model, pool, setting.dim, pad)
        return {"G": G, "T": true_gradients(model, targets, setting.dim, pad)[0], "seconds": np.float64(per)}

    z = cached("true_gradients", setting, compute, cache_dir, log)
    log(f"true gradients: {float(z['seconds']):.2f} s/sample")
    return RecoveryData(model, tok, pool, spare, targets, z["G"], z["T"], float(z["seconds"]))


def true_gradients(model, samples: list[TokenizedSample], dim: int, pad_id: int) -> tuple[np.ndarray, float]:
    """The protocol's true gradients of ``samples`` (all parameters, projected to ``dim`` with the
    projection seed 0, normalised) and the seconds per sample they took."""
    params = [p for _, p in select_parameters(model, None)]
    proj = HadamardProjector(sum(p.numel() for p in params), dim, seed=0)
    t0 = time.perf_counter()
    G = sample_gradients(model, samples, params, proj, pad_id).vectors.astype(np.float64)
    return G, (time.perf_counter() - t0) / len(samples)


def cached(name: str, setting: RecoverySetting, compute, cache_dir: str | Path = "data/bench_cache",
           log=print) -> dict[str, np.ndarray]:
    """The arrays ``compute()`` returns, cached in ``cache_dir`` under ``name`` and the setting's
    key (written under a temporary name, then renamed): a rerun takes them instead."""
    path = Path(cache_dir) / f"{name}_{setting.key()}.npz"
    if path.exists():
        log(f"{name}: cached in {path}")
        with np.load(path) as z:
            return dict(z)
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **out)
    log(f"{name}: computed, cached in {path}")
    return out


def shipped_recovery(emb: dict[str, np.ndarray], widths: dict[str, tuple[int, ...]], cost: dict[str, float],
                     directs: dict, G: np.ndarray, T: np.ndarray, ell: int, draws: int,
                     embedding: str = "auto") -> tuple[list[str], float]:
    """What the pipeline does with ``ell`` landmarks, through its own policy functions: the proxy
    chosen among the default candidates (``pipeline.choose_proxy``; or ``embedding`` pinned), the
    kernel setting (``fit_landmark_regression``), the direct term per task and the scores
    (``score_targets``); scored against the true influence on the non-landmarks (Spearman of the
    mean over targets), for landmark draws 0 .. draws-1. Returns the choices and the mean Spearman."""
    from scipy.stats import spearmanr

    from infdist_core import pipeline
    from infdist_core.config import SelectionConfig
    from infdist_core.model import proxies

    spec_of = lambda key: key.partition("@")[0]  # noqa: E731  (keys may carry "@B", the batch they were computed in)
    cfg = SelectionConfig.of(pool_size=len(G), n_landmarks=ell, k=1, embedding=spec_of(embedding))
    keys = [c for c in cfg.data.embedding_candidates if c in emb] if embedding == "auto" else [embedding]
    key_of = {spec_of(k): k for k in keys}
    picks, rhos = [], []
    for d in range(draws):
        lm = np.random.default_rng(d).choice(len(G), ell, replace=False)
        rest = np.setdiff1d(np.arange(len(G)), lm)
        on_lm = {spec_of(k): proxies.ProxyEmbedding(spec_of(k), emb[k][lm], cost[k], widths[k]) for k in keys}
        pick = key_of[pipeline.choose_proxy(on_lm, G[lm], cfg, log_fn=lambda _: None)[0]]
        reg = pipeline.fit_landmark_regression(emb[pick], lm, G[lm], cfg)
        scores, setting, _ = pipeline.score_targets(emb[pick], lm, G[lm], T, reg, cfg, directs.get(pick))
        picks.append(f"{pick}{'+direct' if setting.direct else ''}")
        rhos.append(spearmanr(scores.scores[rest].mean(1), (G[rest] @ T.T).mean(1)).statistic)
    return picks, float(np.mean(rhos))

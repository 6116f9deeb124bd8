"""AdamW training on tokenised samples, written by hand: the brief warm-up (Sec. 5.1, App. A).

Fine-tuning on the selected subset goes through ``transformers.Trainer`` (``finetuning``); the
warm-up stays here on purpose: it is a few dozen fp32 steps on one device whose product is the
optimizer's state, exported by parameter name (``save_adam_state``) for Eq. 8-9, and keeping it
unchanged keeps every pool-side artefact bit-identical. Both share the sample order
(``batch_order``) and the loss (per-sample mean label-token loss, optionally weighted, App. J),
and a test holds their loss trajectories equal. Deterministic given the seed."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from infdist_core.data.atomic import atomic_path
from infdist_core.data.seeding import generator
from infdist_core.maths.preconditioning import AdamMoments
from infdist_core.model.gradients import per_sample_losses
from infdist_core.model.tokenization import TokenizedSample, pad_batch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings (paper, Sec. 5.1: AdamW, lr 2e-5, linear schedule, 2 epochs)."""

    lr: float = 2e-5
    """Peak learning rate, decayed linearly to 0."""
    epochs: float = 1.0
    """Passes over the samples (fractions allowed)."""
    micro_batch: int = 4
    """Samples per forward pass."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    max_steps: int | None = None
    """Stop after this many optimizer steps (None: as many as the epochs give)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.lr > 0 or self.micro_batch < 1 or self.grad_accum < 1 or not self.epochs > 0:
            raise ValueError(f"invalid TrainConfig: {self}")


def schedule(n: int, cfg: TrainConfig) -> int:
    """Optimizer steps for ``n`` samples: ``epochs`` passes of micro-batches, ``max_steps`` at most."""
    per_epoch = math.ceil(n / cfg.micro_batch)
    total_micro = max(1, math.ceil(per_epoch * cfg.epochs))
    steps = max(1, total_micro // cfg.grad_accum)
    return steps if cfg.max_steps is None else min(steps, cfg.max_steps)


def batch_order(n: int, cfg: TrainConfig, steps: int) -> list[list[int]]:
    """The micro-batches of ``steps`` optimizer steps, as sample indices: seeded permutations of
    the ``n`` samples, one after another, cut into ``micro_batch``-sized pieces (a batch may span
    two permutations). The one definition of the training order."""
    g = generator(cfg.seed, "train-order", n)
    order: list[int] = []
    out = []
    for _ in range(steps * cfg.grad_accum):
        if len(order) < cfg.micro_batch:
            order += torch.randperm(n, generator=g).tolist()
        out.append(order[: cfg.micro_batch])
        order = order[cfg.micro_batch :]
    return out


def check_inputs(samples: list, weights: np.ndarray | None) -> None:
    """Samples to train on, and one weight per sample when weights are given."""
    if not samples:
        raise ValueError("no samples to train on")
    if weights is not None and len(weights) != len(samples):
        raise ValueError(f"{len(weights)} weights for {len(samples)} samples")


@dataclass
class TrainResult:
    steps: int
    losses: list[float]
    seconds: float
    optimizer: torch.optim.Optimizer


def train(
    model,
    samples: list[TokenizedSample],
    cfg: TrainConfig,
    pad_id: int,
    weights: np.ndarray | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with AdamW; ``weights`` (one per sample) scale each sample's loss."""
    check_inputs(samples, weights)
    device = next(model.parameters()).device
    steps = schedule(len(samples), cfg)
    batches = iter(batch_order(len(samples), cfg, steps))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    model.train()
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            idx = next(batches)
            batch = {k: v.to(device) for k, v in pad_batch([samples[i] for i in idx], pad_id).items()}
            per = per_sample_losses(model, batch)
            if weights is not None:
                per = per * torch.as_tensor(weights[idx], dtype=per.dtype, device=device)
            loss = per.mean() / cfg.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        opt.step()
        sched.step()
        losses.append(step_loss)
        if progress:
            progress(step + 1, steps, step_loss)
    model.eval()
    return TrainResult(steps, losses, time.perf_counter() - t0, opt)


def save_adam_state(result: TrainResult, model, path: str | Path) -> None:
    """Moments of every parameter as safetensors (``<name>.exp_avg``/``.exp_avg_sq``), atomically."""
    from safetensors.torch import save_file

    group = result.optimizer.param_groups[0]
    tensors, step = {}, None
    for name, p in model.named_parameters():
        st = result.optimizer.state.get(p)
        if st:
            tensors[f"{name}.exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
            tensors[f"{name}.exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
            step = int(st["step"])
    meta = {"step": str(step), "beta1": str(group["betas"][0]), "beta2": str(group["betas"][1]), "eps": str(group["eps"])}
    # one metadata key: safetensors writes its metadata map in hash order, which changes from process
    # to process, so several keys would make the same state a different file each time
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"adam": json.dumps(meta, sort_keys=True)})


def load_adam_moments(path: str | Path, names: list[str]) -> AdamMoments:
    """``AdamMoments`` for ``names`` (in that order) from ``save_adam_state``'s file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        meta = json.loads(meta["adam"]) if "adam" in meta else meta  # files written before: one key per field
        keys = set(f.keys())
        missing = [n for n in names if f"{n}.exp_avg" not in keys]
        if missing:
            raise ValueError(f"{path}: no Adam state for {missing[:3]} ({len(missing)} parameters)")
        m = torch.cat([f.get_tensor(f"{n}.exp_avg").reshape(-1).float() for n in names])
        v = torch.cat([f.get_tensor(f"{n}.exp_avg_sq").reshape(-1).float() for n in names])
    return AdamMoments(m, v, int(meta["step"]), float(meta["beta1"]), float(meta["beta2"]), float(meta["eps"]))

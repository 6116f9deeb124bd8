"""Gradient post-processing: L2 normalisation (Sec. 3.3) and Adam preconditioning (Eq. 8-9, App. C)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

ZERO_NORM = 1e-12


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Every row of ``x`` scaled to unit L2 norm; all-zero rows stay zero (NumPy, dtype kept for
    floats). The one row normalisation of embeddings, pseudo-targets and similarity baselines."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def normalize_rows(g: torch.Tensor, eps: float = ZERO_NORM) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale every row of ``g`` to unit L2 norm.

    Parameters
    ----------
    g : Tensor of shape (n, d)
    eps : float
        Rows whose norm is at most ``eps`` (e.g. a sample with every label masked) are left
        zero and flagged, never divided into NaN.

    Returns
    -------
    normalised : Tensor of shape (n, d), same dtype
    valid : bool Tensor of shape (n,), False where the row had (near) zero norm
    """
    if g.ndim != 2:
        raise ValueError(f"normalize_rows expects a 2-D tensor, got shape {tuple(g.shape)}")
    norms = torch.linalg.vector_norm(g.float(), dim=1)
    valid = norms > eps
    if not bool(valid.all()):
        log.warning("%d of %d rows have zero norm; they stay zero and are flagged invalid", int((~valid).sum()), len(valid))
    scale = torch.where(valid, 1.0 / norms.clamp_min(eps), torch.zeros_like(norms))
    return g * scale.to(g.dtype)[:, None], valid


@dataclass(frozen=True)
class AdamMoments:
    """Adam state after warm-up, flattened in one fixed parameter order.

    Attributes
    ----------
    exp_avg, exp_avg_sq : Tensor of shape (d,)
        First and second moments ``m`` and ``v`` (torch's ``exp_avg``/``exp_avg_sq``).
    step : int
        Number of optimizer steps already taken (``s`` in the paper).
    beta1, beta2, eps : float
        Adam hyper-parameters.
    """

    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    step: int
    beta1: float
    beta2: float
    eps: float

    def __post_init__(self) -> None:
        if self.exp_avg.shape != self.exp_avg_sq.shape:
            raise ValueError(f"exp_avg {tuple(self.exp_avg.shape)} and exp_avg_sq {tuple(self.exp_avg_sq.shape)} differ")
        if self.step < 1:
            raise ValueError(f"Adam preconditioning needs at least one warm-up step, got step={self.step}")


def _denominator(v: torch.Tensor, step: int, beta1: float, beta2: float, eps: float) -> torch.Tensor:
    # The update being scored is optimizer step t = step + 1 (torch's bias-correction index).
    t = step + 1
    return (1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + eps)


def adam_scale(v: torch.Tensor, step: int, beta1: float, beta2: float, eps: float) -> torch.Tensor:
    """``a = (1 - b1) / ((1 - b1^t)(sqrt(v / (1 - b2^t)) + eps))``, elementwise (Eq. 8-9)."""
    return (1 - beta1) / _denominator(v, step, beta1, beta2, eps)


def adam_momentum_term(m: torch.Tensor, v: torch.Tensor, step: int, beta1: float, beta2: float, eps: float) -> torch.Tensor:
    """``b = b1 m / ((1 - b1^t)(sqrt(v / (1 - b2^t)) + eps))``, elementwise (Eq. 8)."""
    return beta1 * m / _denominator(v, step, beta1, beta2, eps)


def precondition(g: torch.Tensor, moments: AdamMoments) -> torch.Tensor:
    """Adam-aware training gradient ``a * g`` (rows of ``G_S^Adam`` in Eq. 8-9); g: (..., d)."""
    a = adam_scale(moments.exp_avg_sq, moments.step, moments.beta1, moments.beta2, moments.eps)
    return g * a.to(g.device, g.dtype)


def moments_from_optimizer(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> AdamMoments:
    """Flatten a torch Adam/AdamW state for ``params`` (in that order) into ``AdamMoments``."""
    group = optimizer.param_groups[0]
    beta1, beta2 = group["betas"]
    m, v, steps = [], [], set()
    for p in params:
        st = optimizer.state.get(p)
        if not st:
            raise ValueError("optimizer has no state for a requested parameter: run at least one warm-up step")
        m.append(st["exp_avg"].detach().reshape(-1).float().cpu())
        v.append(st["exp_avg_sq"].detach().reshape(-1).float().cpu())
        steps.add(int(st["step"]))
    if len(steps) != 1:
        raise ValueError(f"parameters were stepped different numbers of times: {sorted(steps)}")
    return AdamMoments(torch.cat(m), torch.cat(v), steps.pop(), float(beta1), float(beta2), float(group["eps"]))

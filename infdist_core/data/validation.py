"""Argument checks shared by the public functions: errors name the argument, shape and value."""

from __future__ import annotations

import numpy as np
import torch


def as_numpy(x: np.ndarray | torch.Tensor, name: str, ndim: int | tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """``x`` as a numpy array of ``dtype``; raises ``ValueError`` on wrong rank or non-finite values."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(dtype, copy=False)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimension(s), got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
    return arr


def check_k(k: int, n: int, name: str = "k") -> int:
    if int(k) != k or k <= 0 or k > n:
        raise ValueError(f"{name} must be an integer in [1, {n}] (the pool size), got {k}")
    return int(k)

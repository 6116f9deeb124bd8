"""Walsh-Hadamard transforms along the last axis, unnormalised (entries of H are +-1).

Sylvester ordering throughout: ``H[i, j] = (-1) ** popcount(i & j)``, so the transform of a
row-major ``(m, n)`` reshaping is ``H_m X H_n`` (Appendix I) and equals the 1-D transform.

Backends, all with the same signature ``fn(x: Tensor[b, n]) -> None`` (in place):

- ``fwht_rows_reference``: dense matmul with ``scipy.linalg.hadamard`` (test oracle, small n);
- ``fwht_rows_torch``: radix-2 butterflies in plain torch (any device);
- ``fwht_rows_fhtcpu``: the SIMD + OpenMP kernel of the ``fht-cpu`` package (CPU, float32);
- ``fwht_rows_cuda``: Tri Dao's ``fast-hadamard-transform`` (CUDA, n <= 2**15, optional).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch

try:  # SIMD CPU kernel; a hard dependency on CPU installs, optional elsewhere
    import fht_cpu as _fht_cpu
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _fht_cpu = None

try:  # CUDA-only optional extra `gpu`
    from fast_hadamard_transform import hadamard_transform as _cuda_hadamard
except ImportError:
    _cuda_hadamard = None

CUDA_MAX_LOG2 = 15


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@lru_cache(maxsize=8)
def _dense_hadamard(n: int) -> torch.Tensor:
    import scipy.linalg

    return torch.from_numpy(scipy.linalg.hadamard(n).astype(np.float32))


def fwht_rows_reference(x: torch.Tensor) -> None:
    """Oracle: ``x <- x @ H_n`` with a dense Hadamard matrix (n <= 4096)."""
    n = x.shape[-1]
    if n > 4096:
        raise ValueError(f"reference transform is for small n only, got n={n}")
    x.copy_(x @ _dense_hadamard(n).to(x.device, x.dtype))


def fwht_rows_torch(x: torch.Tensor) -> None:
    """Radix-2 butterflies, in place on a contiguous ``[b, n]`` tensor."""
    b, n = x.shape
    h = 1
    while h < n:
        v = x.view(b, n // (2 * h), 2, h)
        a = v[:, :, 0, :].clone()
        v[:, :, 0, :].add_(v[:, :, 1, :])
        v[:, :, 1, :].mul_(-1).add_(a)
        h *= 2


def fwht_rows_fhtcpu(x: torch.Tensor) -> None:
    """fht-cpu's batched row kernel (float32, CPU, contiguous), multithreaded."""
    arr = x.numpy()
    threads = max(1, torch.get_num_threads())
    _fht_cpu.fht_2d_f32_rows(arr, threads)


def fwht_rows_cuda(x: torch.Tensor) -> None:
    """Dao-AILab fast-hadamard-transform kernel; needs n <= 2**15."""
    x.copy_(_cuda_hadamard(x, scale=1.0))


def available_backends() -> list[str]:
    names = ["reference", "torch"]
    if _fht_cpu is not None:
        names.append("fht_cpu")
    if _cuda_hadamard is not None and torch.cuda.is_available():
        names.append("cuda")
    return names


def pick_backend(device: torch.device, requested: str | None = None) -> str:
    """The fastest backend for ``device`` unless ``requested`` (or $INFDIST_FWHT) names one."""
    requested = requested or os.environ.get("INFDIST_FWHT") or None
    if requested is not None:
        if requested not in available_backends():
            raise ValueError(f"FWHT backend {requested!r} unavailable here; have {available_backends()}")
        return requested
    if device.type == "cuda":
        return "cuda" if _cuda_hadamard is not None else "torch"
    return "fht_cpu" if _fht_cpu is not None else "torch"


BACKENDS = {
    "reference": fwht_rows_reference,
    "torch": fwht_rows_torch,
    "fht_cpu": fwht_rows_fhtcpu,
    "cuda": fwht_rows_cuda,
}

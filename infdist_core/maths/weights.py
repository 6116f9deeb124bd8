"""Robust Influence Distillation weights (Eq. 7; Appendix G).

    minimise  -p.w + (eta/2) w'Qw + (lam/2) |w|^2   s.t.  w >= 0,  sum(w) = n

First order (``eta = 0`` or no ``Q``): ``w`` is the Euclidean projection of ``p/lam`` onto the
simplex scaled to ``n``; its support is a top-j set of ``p`` (App. G). Asking for exactly ``k``
non-zeros gives a closed-form interval of ``lam`` (the limit of Section 4.4's binary search):

    lam in ( (S_k - k p_(k)) / n ,  (S_k - k p_(k+1)) / n ],   S_k = sum of the top k of p

Second order: the primal-dual active-set method of App. G on ``R = eta Q + lam I``, with ``Q``
dense or low rank ``U M U'`` (the landmark form of Eq. 11); low-rank systems are solved with
the push-through/Woodbury identity, so no n x n matrix is built. Exact k: bisection on ``lam``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from infdist_core.data.validation import as_numpy, check_k

log = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]
LowRank = tuple[ArrayLike, ArrayLike]


# ---------------------------------------------------------------- first order (closed form)
def _order(p: np.ndarray) -> np.ndarray:
    """Indices of p by descending value, ties broken by ascending index."""
    return np.lexsort((np.arange(len(p)), -p))


def first_order_weights(p: np.ndarray, lam: float) -> np.ndarray:
    """Exact minimiser of ``-p.w + lam/2 |w|^2`` over ``{w >= 0, sum w = n}``: ``(p + tau)_+ / lam``."""
    n = len(p)
    srt = p[_order(p)]
    csum = np.cumsum(srt)
    j = np.arange(1, n + 1)
    tau = (n * lam - csum) / j
    support = int(np.nonzero(srt + tau > 0)[0].max()) + 1  # largest j with p_(j) + tau_j > 0
    return np.maximum(p + tau[support - 1], 0.0) / lam


def lambda_interval_for_k(p: np.ndarray, k: int) -> tuple[float, float]:
    """The half-open interval ``(lo, hi]`` of lam whose first-order solution has exactly k non-zeros."""
    n = len(p)
    srt = p[_order(p)]
    s_k = float(srt[:k].sum())
    lo = (s_k - k * srt[k - 1]) / n
    hi = (s_k - k * srt[k]) / n if k < n else math.inf
    return lo, hi


class ScoreTies(ValueError):
    """The scores tie at the k-th largest value: no lambda gives exactly k non-zero weights."""


def break_ties(p: np.ndarray) -> np.ndarray:
    """``p`` minus ``index x 4 ulp(max |p|)``: exact ties broken in favour of the lower index (the
    order ``_order`` uses), every other order kept unless two values are within n x 4 ulp."""
    p = np.asarray(p, dtype=np.float64)
    return p - np.arange(len(p)) * 4 * np.spacing(max(1.0, float(np.abs(p).max(initial=0.0))))


def _first_order_exact_k(p: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    lo, hi = lambda_interval_for_k(p, k)
    if math.isinf(hi):
        lam = 2 * lo if lo > 0 else 1.0
    elif hi > lo:
        lam = 0.5 * (lo + hi)
    else:
        raise ScoreTies(
            f"p has ties at the k-th largest value ({p[_order(p)][k - 1]!r}): no lambda gives exactly k={k} "
            "non-zero weights; perturb or de-duplicate the scores"
        )
    w = first_order_weights(p, lam)
    return w, lam


# ------------------------------------------------------------- second order (active set)
@dataclass
class _Operator:
    """``R = eta Q + lam I`` restricted to index sets, dense or low rank."""

    lam: float
    eta: float
    dense: np.ndarray | None = None
    U: np.ndarray | None = None
    M: np.ndarray | None = None

    def solve(self, B: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``R_BB^{-1} y`` for y of shape (|B|,) or (|B|, c)."""
        if self.dense is not None:
            R = self.eta * self.dense[np.ix_(B, B)] + self.lam * np.eye(len(B))
            return np.linalg.solve(R, y)
        # (lam I + U K U')^{-1} = (I - U (lam I + K U'U)^{-1} K U') / lam,   K = eta M
        UB = self.U[B]
        K = self.eta * self.M
        inner = self.lam * np.eye(K.shape[0]) + K @ (UB.T @ UB)
        return (y - UB @ np.linalg.solve(inner, K @ (UB.T @ y))) / self.lam

    def off_diag(self, A: np.ndarray, B: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``(R_AB x)``: only the ``eta Q`` part, the identity has no off-diagonal block."""
        if self.dense is not None:
            return self.eta * self.dense[np.ix_(A, B)] @ x
        return self.eta * self.U[A] @ (self.M @ (self.U[B].T @ x))


def _active_set(p: np.ndarray, op: _Operator, tol: float = 1e-10, max_iter: int = 1000) -> np.ndarray:
    """Primal-dual active-set iterations of App. G (Eq. 49-51), starting from w = 1."""
    n = len(p)
    free = np.ones(n, dtype=bool)
    seen: set[bytes] = set()
    single_moves = False
    for _ in range(max_iter):
        B = np.flatnonzero(free)
        A = np.flatnonzero(~free)
        sol = op.solve(B, np.stack([p[B], np.ones(len(B))], axis=1))
        rp, r1 = sol[:, 0], sol[:, 1]
        tau = (n - rp.sum()) / r1.sum()  # Eq. 49
        wB = rp + tau * r1  # Eq. 50
        neg = wB < -tol * max(1.0, np.abs(wB).max())
        if neg.any():
            move = B[neg] if not single_moves else B[[int(np.argmin(wB))]]
            free[move] = False
        else:
            if len(A) == 0:
                break
            alpha = op.off_diag(A, B, wB) - p[A] - tau  # Eq. 51
            bad = alpha < -tol * max(1.0, np.abs(alpha).max())
            if not bad.any():
                break
            move = A[bad] if not single_moves else A[[int(np.argmin(alpha))]]
            free[move] = True
        key = np.packbits(free).tobytes()
        if key in seen:
            single_moves = True  # block moves cycled: fall back to one index at a time
        seen.add(key)
    else:
        raise RuntimeError(f"active-set method did not converge in {max_iter} iterations")
    w = np.zeros(n)
    w[B] = np.maximum(wB, 0.0)
    return w * (n / w.sum())


def _operator(Q: ArrayLike | LowRank, eta: float, n: int, lam: float) -> _Operator:
    if isinstance(Q, tuple):
        if len(Q) != 2:
            raise ValueError("low-rank Q must be a pair (U, M) with Q = U M U'")
        U = as_numpy(Q[0], "Q[0] (U)", 2)
        M = as_numpy(Q[1], "Q[1] (M)", 2)
        if U.shape[0] != n or M.shape != (U.shape[1], U.shape[1]):
            raise ValueError(f"low-rank Q needs U of shape ({n}, r) and M of shape (r, r); got U {U.shape}, M {M.shape}")
        return _Operator(lam, eta, U=U, M=0.5 * (M + M.T))
    D = as_numpy(Q, "Q", 2)
    if D.shape != (n, n):
        raise ValueError(f"Q must have shape ({n}, {n}) to match p, got {D.shape}")
    return _Operator(lam, eta, dense=0.5 * (D + D.T))


def second_order_weights(p: np.ndarray, Q: ArrayLike | LowRank, eta: float, lam: float) -> np.ndarray:
    """Minimiser of Eq. 42 for fixed ``lam`` (requires ``eta Q + lam I`` positive definite)."""
    return _active_set(p, _operator(Q, eta, len(p), lam))


def _second_order_exact_k(p: np.ndarray, k: int, Q, eta: float, max_iter: int = 200) -> tuple[np.ndarray, float]:
    # support grows with lam (App. G for eta -> 0; observed beyond): bisection on log lam
    lo, hi = lambda_interval_for_k(p, k)
    lo, hi = max(lo, 1e-12), (hi if math.isfinite(hi) else max(lo, 1.0) * 10)
    lo, hi = lo / 10, hi * 10
    best: tuple[int, np.ndarray, float] | None = None
    for _ in range(max_iter):
        lam = math.sqrt(lo * hi)
        w = second_order_weights(p, Q, eta, lam)
        nnz = int((w > 0).sum())
        if best is None or abs(nnz - k) < abs(best[0] - k):
            best = (nnz, w, lam)
        if nnz == k:
            return w, lam
        if nnz < k:
            lo = lam
        else:
            hi = lam
        if hi / lo < 1 + 1e-12:
            break
    nnz, w, lam = best
    log.warning("no lambda found giving exactly k=%d non-zeros; closest has %d (lam=%g)", k, nnz, lam)
    return w, lam


# ------------------------------------------------------------------------- public entry
def robust_weights(
    p: ArrayLike,
    k: int | None = None,
    lam: float | None = None,
    Q: ArrayLike | LowRank | None = None,
    eta: float = 0.0,
) -> tuple[np.ndarray, float]:
    """Robust sample weights of Eq. 7.

    Parameters
    ----------
    p : array of shape (n,)
        First-order influence ``G_S g_T`` (Eq. 3, or Eq. 8 with Adam), finite.
    k : int, optional
        Number of samples that must receive non-zero weight; ``lam`` is chosen for it.
    lam : float, optional
        Fixed L2 regularisation (> 0). Exactly one of ``k`` and ``lam``.
    Q : array of shape (n, n) or pair (U (n, r), M (r, r)), optional
        Second-order matrix (Eq. 4 / 9 / 11). Ignored when ``eta == 0``.
    eta : float
        Learning rate scaling the second-order term; 0 is the first-order variant (Sec. 4.1).

    Returns
    -------
    w : float64 array of shape (n,), ``w >= 0``, ``w.sum() == n``
    lam : float, the regularisation used
    """
    p_arr = as_numpy(p, "p", 1)
    n = len(p_arr)
    if n == 0:
        raise ValueError("p is empty: there is nothing to weight")
    if (k is None) == (lam is None):
        raise ValueError(f"give exactly one of k and lam (got k={k}, lam={lam})")
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if lam is not None and not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    second = Q is not None and eta > 0
    if k is not None:
        k = check_k(k, n)
        return _second_order_exact_k(p_arr, k, Q, eta) if second else _first_order_exact_k(p_arr, k)
    return (second_order_weights(p_arr, Q, eta, lam) if second else first_order_weights(p_arr, lam)), float(lam)


def objective(w: ArrayLike, p: ArrayLike, lam: float, Q: ArrayLike | None = None, eta: float = 0.0) -> float:
    """Value of Eq. 7's objective ``-p.w + eta/2 w'Qw + lam/2 |w|^2`` (dense Q)."""
    w = np.asarray(w, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    val = -p @ w + 0.5 * lam * w @ w
    if Q is not None and eta > 0:
        val += 0.5 * eta * w @ np.asarray(Q, dtype=np.float64) @ w
    return float(val)

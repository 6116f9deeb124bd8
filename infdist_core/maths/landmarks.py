"""Landmark-based propagation of influence (Section 4.3, Eq. 10-11).

Each sample's gradient is approximated as ``g_i ~ G_L' c_i`` with coefficients from kernel ridge
regression of the sample's proxy embedding on the landmarks' embeddings:

    C = K(E_S, E_L) (K(E_L, E_L) + delta I)^{-1}          (n x l, never built unless asked)
    p_hat = C P_L                                          (Eq. 10, all targets at once)

RBF kernel ``k(x, y) = exp(-|x - y|^2 / h^2)``, ``h^2`` = median squared distance between
landmarks times ``bandwidth_scale`` unless given; ``delta = damping * mean(diag K_LL)``.
With ``center=True`` the landmark mean of the targets is subtracted before and added after, so
samples far from every landmark fall back to the mean instead of to zero.

With a ``DirectTerm`` the regression gets a linear part: when the proxy embedding is made of
partial gradients (``proxies.GRADIENT_KINDS``), each part's cosine to the same part of a target's
embedding is a direct, landmark-free estimate of that target's score. Per target, least squares
on the landmarks fits ``p ~ b_0 + sum_k b_k cos_k``, and the kernel regression propagates only
the residual (a control variate; it recovers what the partial gradients miss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.linalg
import torch

from infdist_core.data.seeding import generator
from infdist_core.data.validation import as_numpy
from infdist_core.maths.selection import top_indices

DEFAULT_CHUNK = 8192


def squared_distances(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``|x_i - y_j|^2`` of shape (len(X), len(Y)), clipped at 0."""
    d = (X * X).sum(1)[:, None] + (Y * Y).sum(1)[None, :] - 2.0 * X @ Y.T
    return np.maximum(d, 0.0)


def median_bandwidth(E_landmarks: np.ndarray) -> float:
    """Median squared pairwise distance between distinct landmarks (the median heuristic)."""
    d = squared_distances(E_landmarks, E_landmarks)
    off = d[~np.eye(len(d), dtype=bool)]
    med = float(np.median(off)) if off.size else 1.0
    return med if med > 0 else 1.0


def rbf_kernel(X: np.ndarray, Y: np.ndarray, bandwidth2: float) -> np.ndarray:
    return np.exp(-squared_distances(X, Y) / bandwidth2)


@dataclass(frozen=True)
class DirectTerm:
    """The linear part's features: per gradient part, a sample's cosine to each target.

    Attributes
    ----------
    targets : array of shape (t, e), the targets' proxy embeddings (same spec as the samples')
    slices : ((start, stop), ...) column ranges of the gradient parts
    """

    targets: np.ndarray
    slices: tuple[tuple[int, int], ...]

    def features(self, E: np.ndarray) -> np.ndarray:
        """Cosines of shape (n, t, parts); 0 where a part is zero."""
        E = np.asarray(E, dtype=np.float64)
        if E.shape[1] != self.targets.shape[1]:
            raise ValueError(f"embeddings have {E.shape[1]} columns, the targets' {self.targets.shape[1]}")
        out = np.zeros((len(E), len(self.targets), len(self.slices)))
        for k, (lo, hi) in enumerate(self.slices):
            a, b = E[:, lo:hi], np.asarray(self.targets[:, lo:hi], dtype=np.float64)
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            out[:, :, k] = (a @ b.T) / np.maximum(np.outer(na, nb), 1e-30) * np.outer(na > 0, nb > 0)
        return out


def part_slices(widths: tuple[int, ...] | list[int], mask: tuple[bool, ...] | list[bool]) -> tuple[tuple[int, int], ...]:
    """Column ranges of the parts whose ``mask`` is true, for parts of the given widths."""
    if len(widths) != len(mask):
        raise ValueError(f"{len(widths)} part widths but {len(mask)} mask entries")
    ends = np.cumsum([0, *widths])
    return tuple((int(ends[i]), int(ends[i + 1])) for i, m in enumerate(mask) if m)


@dataclass(frozen=True)
class KRRModel:
    """A fitted landmark regression: enough to propagate to any sample's embedding.

    Attributes
    ----------
    E_landmarks : array of shape (l, e)
    dual : array of shape (l, t)
        ``(K_LL + delta I)^{-1} (P_L - offset)``.
    offset : array of shape (t,)
        Landmark mean of the targets (zeros when not centred), plus the linear part's intercept.
    bandwidth2, delta : float
    direct, beta : the linear part (``DirectTerm``, coefficients of shape (parts, t)), or None
    """

    E_landmarks: np.ndarray
    dual: np.ndarray
    offset: np.ndarray
    bandwidth2: float
    delta: float
    direct: DirectTerm | None = None
    beta: np.ndarray | None = None

    def predict(self, E: np.ndarray, chunk: int = DEFAULT_CHUNK) -> np.ndarray:
        """``p_hat`` of shape (n, t) for embeddings of shape (n, e), streamed in chunks."""
        out = np.empty((len(E), self.dual.shape[1]), dtype=np.float64)
        for lo in range(0, len(E), chunk):
            Ec = np.asarray(E[lo : lo + chunk], dtype=np.float64)
            out[lo : lo + chunk] = rbf_kernel(Ec, self.E_landmarks, self.bandwidth2) @ self.dual + self.offset
            if self.direct is not None:
                out[lo : lo + chunk] += np.einsum("ntk,kt->nt", self.direct.features(Ec), self.beta)
        return out

    def coefficients(self, E: np.ndarray, chunk: int = DEFAULT_CHUNK) -> Iterator[np.ndarray]:
        """Rows of ``C`` (Eq. 10) chunk by chunk, each of shape (chunk, l): the kernel part only."""
        l = len(self.E_landmarks)
        K = rbf_kernel(self.E_landmarks, self.E_landmarks, self.bandwidth2) + self.delta * np.eye(l)
        factor = scipy.linalg.cho_factor(K)
        for lo in range(0, len(E), chunk):
            Kc = rbf_kernel(np.asarray(E[lo : lo + chunk], dtype=np.float64), self.E_landmarks, self.bandwidth2)
            yield scipy.linalg.cho_solve(factor, Kc.T).T


def krr_fit(
    E_landmarks: np.ndarray | torch.Tensor,
    P_landmarks: np.ndarray | torch.Tensor,
    damping: float = 0.01,
    bandwidth2: float | None = None,
    bandwidth_scale: float = 1.0,
    center: bool = True,
    direct: DirectTerm | None = None,
) -> KRRModel:
    """Fit the landmark regression once for all targets (multiple right-hand sides).

    Parameters
    ----------
    E_landmarks : array of shape (l, e)
    P_landmarks : array of shape (l,) or (l, t)
        Exact influence of the landmarks, per target (or gradients: any per-landmark rows).
    damping : float
        Ridge term relative to the mean of the kernel diagonal (paper: 0.01).
    direct : DirectTerm, optional
        Linear part fitted first by least squares per target (one column of ``P`` per target).
    """
    EL = as_numpy(E_landmarks, "E_landmarks", 2)
    PL = as_numpy(P_landmarks, "P_landmarks", (1, 2))
    PL = PL[:, None] if PL.ndim == 1 else PL
    if len(PL) != len(EL):
        raise ValueError(f"E_landmarks has {len(EL)} rows but P_landmarks has {len(PL)}")
    if len(EL) == 0:
        raise ValueError("at least one landmark is needed")
    if damping < 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    h2 = float(bandwidth2) if bandwidth2 is not None else median_bandwidth(EL) * bandwidth_scale
    if not h2 > 0:
        raise ValueError(f"bandwidth must be positive, got {h2}")
    K = rbf_kernel(EL, EL, h2)
    delta = damping * float(np.mean(np.diag(K)))
    beta, base = None, np.zeros(PL.shape[1])
    if direct is not None:
        D = direct.features(EL)
        if D.shape[1] != PL.shape[1]:
            raise ValueError(f"the direct term has {D.shape[1]} targets but P_landmarks {PL.shape[1]} columns")
        beta = np.zeros((D.shape[2], PL.shape[1]))
        for t in range(PL.shape[1]):
            coef = np.linalg.lstsq(np.c_[D[:, t, :], np.ones(len(EL))], PL[:, t], rcond=None)[0]
            beta[:, t], base[t] = coef[:-1], coef[-1]
        PL = PL - np.einsum("ltk,kt->lt", D, beta) - base
    offset = PL.mean(0) if center else np.zeros(PL.shape[1])
    dual = scipy.linalg.solve(K + delta * np.eye(len(K)), PL - offset, assume_a="pos")
    return KRRModel(EL, dual, offset + base, h2, delta, direct, beta)


def krr_propagate(
    E_pool: np.ndarray | torch.Tensor,
    E_landmarks: np.ndarray | torch.Tensor,
    P_landmarks: np.ndarray | torch.Tensor,
    damping: float = 0.01,
    bandwidth2: float | None = None,
    bandwidth_scale: float = 1.0,
    center: bool = True,
    chunk: int = DEFAULT_CHUNK,
    direct: DirectTerm | None = None,
) -> np.ndarray:
    """Propagate landmark influence to every pool sample (Eq. 10).

    Parameters
    ----------
    E_pool : array of shape (n, e)
    E_landmarks : array of shape (l, e)
    P_landmarks : array of shape (l, t) or (l,)

    Returns
    -------
    p_hat : float64 array of shape (n, t) (or (n,) when P_landmarks is 1-D)
    """
    E = as_numpy(E_pool, "E_pool", 2)
    model = krr_fit(E_landmarks, P_landmarks, damping, bandwidth2, bandwidth_scale, center, direct)
    if E.shape[1] != model.E_landmarks.shape[1]:
        raise ValueError(f"E_pool has {E.shape[1]} columns but E_landmarks has {model.E_landmarks.shape[1]}")
    out = model.predict(E, chunk)
    return out[:, 0] if np.ndim(P_landmarks) == 1 else out


def choose_landmarks(n: int, n_landmarks: int, seed: int) -> np.ndarray:
    """Uniformly random landmark indices (sorted), as in Section 5.1."""
    if not 0 < n_landmarks <= n:
        raise ValueError(f"n_landmarks must be in [1, {n}] (the pool size), got {n_landmarks}")
    perm = torch.randperm(n, generator=generator(seed, "landmarks", n))
    return perm[:n_landmarks].sort().values.numpy().astype(np.int64)


# ------------------------------------------------------------------ landmark choice in proxy space
# The paper draws landmarks uniformly (``choose_landmarks``). Two alternatives spread them over the
# proxy embedding instead, at the same count: k-centre (cover the space) and ridge leverage scores
# (Nystrom sampling: rows the kernel regression depends on most). ``benchmarks/bench_landmarks.py``
# measures their recovery against uniform draws on a pool whose exact scores are known.
def kcenter_landmarks(E: np.ndarray, n_landmarks: int, seed: int) -> np.ndarray:
    """Greedy farthest-point landmarks (Gonzalez's k-centre 2-approximation) on the rows of ``E``
    (shape (n, e)): a seeded first row, then each time the row farthest from those chosen.
    Returns the indices sorted."""
    n = len(E)
    if not 0 < n_landmarks <= n:
        raise ValueError(f"n_landmarks must be in [1, {n}] (the pool size), got {n_landmarks}")
    first = int(torch.randint(n, (1,), generator=generator(seed, "kcenter", n)).item())
    chosen = [first]
    dist = squared_distances(E, E[[first]])[:, 0]
    for _ in range(n_landmarks - 1):
        nxt = int(np.argmax(dist))  # ties: the lowest index
        chosen.append(nxt)
        dist = np.minimum(dist, squared_distances(E, E[[nxt]])[:, 0])
    return np.sort(np.asarray(chosen, dtype=np.int64))


def ridge_leverage_scores(K: np.ndarray, ridge: float) -> np.ndarray:
    """``diag(K (K + ridge I)^-1)``, shape (n,): each row's ridge leverage (Alaoui & Mahoney, 2015).
    One eigendecomposition: ``tau_i = sum_j U_ij^2 s_j / (s_j + ridge)``."""
    s, U = np.linalg.eigh((K + K.T) / 2)
    s = np.clip(s, 0.0, None)
    return (U**2) @ (s / (s + ridge))


def leverage_landmarks(E: np.ndarray, n_landmarks: int, seed: int, damping: float = 0.01) -> np.ndarray:
    """Landmarks drawn without replacement with probability proportional to their ridge leverage
    in the RBF kernel on ``E`` (median-heuristic bandwidth, ridge ``damping`` times the mean
    diagonal, as the regression's). Exact: O(n^3), for pools up to tens of thousands of rows.
    Returns the indices sorted."""
    n = len(E)
    if not 0 < n_landmarks <= n:
        raise ValueError(f"n_landmarks must be in [1, {n}] (the pool size), got {n_landmarks}")
    K = rbf_kernel(E, E, median_bandwidth(E))
    tau = ridge_leverage_scores(K, damping * float(np.mean(np.diag(K))))
    p = torch.as_tensor(np.maximum(tau, 1e-12), dtype=torch.float64)
    idx = torch.multinomial(p, n_landmarks, replacement=False, generator=generator(seed, "leverage", n))
    return np.sort(idx.numpy().astype(np.int64))


LANDMARK_POLICIES = {
    "uniform": lambda E, l, seed: choose_landmarks(len(E), l, seed),
    "kcenter": kcenter_landmarks,
    "leverage": leverage_landmarks,
}
"""Landmark choice by name: ``(E, n_landmarks, seed) -> sorted indices``."""


def guided_landmarks(scores: np.ndarray, landmarks: np.ndarray, n_extra: int) -> np.ndarray:
    """Score-guided landmarks, a second round after a first set of ``landmarks``: the ``n_extra``
    other samples with the highest propagated ``scores`` (shape (n,), the mean over targets; ties:
    the lowest index), the ones a selection would take, to be scored exactly next. Returns their
    indices sorted. Unlike the policies above it depends on the targets, so it is a target-side
    choice; ``benchmarks/bench_pick_value.py`` measures it against random landmarks at the same
    count."""
    scores = np.asarray(scores, dtype=np.float64)
    others = np.setdiff1d(np.arange(len(scores)), landmarks)
    if not 0 <= n_extra <= len(others):
        raise ValueError(f"n_extra must be in [0, {len(others)}] (the samples that are not landmarks), got {n_extra}")
    return np.sort(others[top_indices(scores[others], n_extra)])  # others is sorted: ties by pool index

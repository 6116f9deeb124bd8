"""Robust weights (Eq. 7) against SciPy's SLSQP, and the App. G properties."""

import numpy as np
import pytest
from scipy.optimize import minimize

from infdist_core.maths.weights import lambda_interval_for_k, objective, robust_weights


def slsqp(p, lam, Q=None, eta=0.0):
    n = len(p)
    res = minimize(
        lambda w: objective(w, p, lam, Q, eta),
        np.ones(n),
        jac=lambda w: -p + lam * w + (eta * Q @ w if Q is not None else 0),
        method="SLSQP",
        bounds=[(0, None)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - n, "jac": lambda w: np.ones(n)}],
        options={"ftol": 1e-13, "maxiter": 2000},
    )
    # SLSQP may stop with "positive directional derivative" at the optimum; judge it by value
    assert res.success or res.status == 8, res.message
    return res.x


def rel_gap(a, b):
    return abs(a - b) / max(1.0, abs(b))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("lam", [0.05, 0.5, 5.0])
def test_first_order_matches_slsqp(seed, lam):
    p = np.random.default_rng(seed).standard_normal(30)
    w, lam_used = robust_weights(p, lam=lam)
    ref = slsqp(p, lam)
    assert lam_used == lam
    assert rel_gap(objective(w, p, lam), objective(ref, p, lam)) <= 1e-6
    assert (w >= 0).all() and np.isclose(w.sum(), 30)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("form", ["dense", "lowrank"])
def test_second_order_matches_slsqp(seed, form):
    rng = np.random.default_rng(seed)
    n, r = 25, 4
    p = rng.standard_normal(n)
    U = rng.standard_normal((n, r))
    M = np.diag(rng.uniform(0.1, 1.0, r))
    Q = U @ M @ U.T
    eta, lam = 0.2, 0.3
    w, _ = robust_weights(p, lam=lam, Q=Q if form == "dense" else (U, M), eta=eta)
    ref = slsqp(p, lam, Q, eta)
    assert rel_gap(objective(w, p, lam, Q, eta), objective(ref, p, lam, Q, eta)) <= 1e-6
    assert (w >= 0).all() and np.isclose(w.sum(), n)


def test_second_order_with_indefinite_q_but_positive_definite_r():
    rng = np.random.default_rng(9)
    n = 20
    p = rng.standard_normal(n)
    A = rng.standard_normal((n, n))
    Q = (A + A.T) / 2  # indefinite; eta Q + lam I is PD for lam above eta |lambda_min|
    eta = 0.05
    lam = eta * abs(np.linalg.eigvalsh(Q).min()) + 0.1
    w, _ = robust_weights(p, lam=lam, Q=Q, eta=eta)
    ref = slsqp(p, lam, Q, eta)
    assert rel_gap(objective(w, p, lam, Q, eta), objective(ref, p, lam, Q, eta)) <= 1e-6


@pytest.mark.parametrize("k", [1, 7, 50, 199, 200])
def test_exact_k_first_order_is_top_k_and_optimal(k):
    p = np.random.default_rng(k).standard_normal(200)
    w, lam = robust_weights(p, k=k)
    support = np.flatnonzero(w > 0)
    assert len(support) == k, f"asked for {k} non-zeros, got {len(support)} (lam={lam})"
    assert set(support) == set(np.argsort(-p)[:k]), "App. G: the support must be a top-k set of p"
    assert np.isclose(w.sum(), 200)
    ref = slsqp(p, lam) if k <= 50 else None
    if ref is not None:
        assert rel_gap(objective(w, p, lam), objective(ref, p, lam)) <= 1e-6


def test_exact_k_second_order_low_rank_has_k_nonzeros():
    rng = np.random.default_rng(3)
    n = 300
    p = rng.standard_normal(n)
    U = rng.standard_normal((n, 8)) / np.sqrt(n)
    w, lam = robust_weights(p, k=20, Q=(U, np.eye(8)), eta=0.5)
    assert (w > 0).sum() == 20 and np.isclose(w.sum(), n)


def test_density_is_monotone_in_lambda():
    """App. G: as lam grows the first-order solution only gets denser, reaching w = 1."""
    p = np.random.default_rng(4).standard_normal(100)
    counts = [int((robust_weights(p, lam=lam)[0] > 0).sum()) for lam in np.geomspace(1e-4, 1e3, 40)]
    assert counts == sorted(counts), counts
    assert counts[0] == 1 and counts[-1] == 100
    w_big, _ = robust_weights(p, lam=1e6)
    assert np.allclose(w_big, 1.0, atol=1e-4)


def test_lambda_interval_bounds_are_tight():
    p = np.random.default_rng(5).standard_normal(60)
    lo, hi = lambda_interval_for_k(p, 10)
    assert (robust_weights(p, lam=hi * 1.001)[0] > 0).sum() > 10
    assert (robust_weights(p, lam=lo * 0.999)[0] > 0).sum() < 10


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(k=0), "k must be"),
        (dict(k=11), "k must be"),
        (dict(), "exactly one of k and lam"),
        (dict(k=2, lam=0.1), "exactly one of k and lam"),
        (dict(lam=-1.0), "lam must be > 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        robust_weights(np.arange(10.0), **kwargs)


def test_nan_in_p_is_reported_with_its_index():
    p = np.arange(5.0)
    p[3] = np.nan
    with pytest.raises(ValueError, match=r"p contains NaN or inf \(first at index \(3,\)\)"):
        robust_weights(p, k=2)


def test_ties_at_the_boundary_are_reported():
    with pytest.raises(ValueError, match="ties"):
        robust_weights(np.array([3.0, 1.0, 1.0, 0.0]), k=2)


def test_mismatched_q_shape():
    with pytest.raises(ValueError, match=r"Q must have shape \(4, 4\)"):
        robust_weights(np.arange(4.0), lam=1.0, Q=np.eye(3), eta=0.1)

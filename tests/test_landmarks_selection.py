"""Kernel ridge propagation and round-robin selection against their references."""

import numpy as np
import pytest
import torch

from infdist_core.landmarks import choose_landmarks, krr_fit, krr_propagate, median_bandwidth, rbf_kernel
from infdist_core.selection import round_robin, round_robin_reference, top_k


def test_all_landmarks_and_no_damping_recovers_p():
    rng = np.random.default_rng(0)
    E, P = rng.standard_normal((60, 5)), rng.standard_normal((60, 3))
    for center in (True, False):
        got = krr_propagate(E, E, P, damping=1e-10, center=center)
        np.testing.assert_allclose(got, P, atol=1e-5, err_msg=f"identity case fails (center={center})")


def test_krr_equals_closed_form_with_explicit_coefficients():
    rng = np.random.default_rng(1)
    E, EL, PL = rng.standard_normal((200, 4)), rng.standard_normal((30, 4)), rng.standard_normal((30, 2))
    h2 = median_bandwidth(EL)
    K = rbf_kernel(EL, EL, h2)
    C = rbf_kernel(E, EL, h2) @ np.linalg.inv(K + 0.01 * np.eye(30))  # Eq. 10's C, built densely
    want = C @ PL
    got = krr_propagate(E, EL, PL, damping=0.01, center=False, chunk=17)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    model = krr_fit(EL, PL, damping=0.01, center=False)
    np.testing.assert_allclose(np.concatenate(list(model.coefficients(E, chunk=64))), C, rtol=1e-6, atol=1e-8)


def test_median_bandwidth_is_the_median_squared_distance():
    EL = np.array([[0.0], [1.0], [3.0]])
    assert median_bandwidth(EL) == 4.0  # squared distances 1, 9, 4 (each twice)


def test_krr_accepts_torch_and_1d_targets():
    E = torch.randn(20, 3)
    out = krr_propagate(E, E[:5], torch.arange(5.0))
    assert out.shape == (20,)


@pytest.mark.parametrize(
    "args,match",
    [
        ((np.zeros((5, 3)), np.zeros((4, 3)), np.zeros(5)), "E_landmarks has 4 rows but P_landmarks has 5"),
        ((np.zeros((5, 2)), np.zeros((4, 3)), np.zeros(4)), "E_pool has 2 columns"),
        ((np.full((5, 3), np.nan), np.zeros((4, 3)), np.zeros(4)), "E_pool contains NaN"),
    ],
)
def test_krr_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        krr_propagate(*args)


def test_landmarks_are_seeded_distinct_and_sorted():
    a, b = choose_landmarks(1000, 50, seed=3), choose_landmarks(1000, 50, seed=3)
    assert np.array_equal(a, b) and len(set(a)) == 50 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, choose_landmarks(1000, 50, seed=4))
    with pytest.raises(ValueError, match="n_landmarks"):
        choose_landmarks(10, 11, 0)


@pytest.mark.parametrize("seed", range(6))
def test_round_robin_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    n, t = 60, rng.integers(1, 6)
    S = rng.integers(0, 6, (n, t)).astype(float)  # many ties: tie-breaking must agree too
    k = int(rng.integers(1, n + 1))
    got = round_robin(S, k, seed=seed)
    assert np.array_equal(got, round_robin_reference(S, k, seed=seed))
    assert len(set(got)) == k


def test_round_robin_takes_turns_per_target():
    S = np.array([[9.0, 0.0], [8.0, 0.0], [0.0, 9.0], [0.0, 8.0]])
    picks = round_robin(S, 4, seed=0)
    assert set(picks[:2]) == {0, 2}, "first round: each target's best sample"


def test_round_robin_exhausts_the_pool_and_rejects_k_above_n():
    S = np.random.default_rng(0).standard_normal((10, 3))
    assert sorted(round_robin(S, 10)) == list(range(10))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 10\]"):
        round_robin(S, 11)


def test_top_k_orders_by_score_then_index():
    assert list(top_k(np.array([1.0, 3.0, 3.0, 2.0]), 3)) == [1, 2, 3]

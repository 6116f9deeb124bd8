"""Kernel ridge propagation and round-robin selection against their references."""

import numpy as np
import pytest
import torch

from infdist_core.maths.landmarks import choose_landmarks, krr_fit, krr_propagate, median_bandwidth, rbf_kernel
from infdist_core.maths.selection import round_robin, round_robin_reference, top_indices, top_k


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


def _parts_problem(seed=0, n=80, t=3):
    rng = np.random.default_rng(seed)
    E = rng.standard_normal((n, 10))
    TE = rng.standard_normal((t, 10))
    return rng, E, TE


def test_direct_features_are_per_part_cosines():
    from infdist_core.maths.landmarks import DirectTerm, part_slices

    _, E, TE = _parts_problem()
    slices = part_slices((4, 3, 3), (True, False, True))
    assert slices == ((0, 4), (7, 10))
    D = DirectTerm(TE, slices).features(E)
    i, t = 5, 2
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    np.testing.assert_allclose(D[i, t], [cos(E[i, :4], TE[t, :4]), cos(E[i, 7:], TE[t, 7:])])
    E[3, :4] = 0  # a zero part has no direction: cosine 0, never NaN
    assert DirectTerm(TE, slices).features(E)[3, :, 0].tolist() == [0.0, 0.0, 0.0]


def test_direct_term_fits_a_linear_truth_exactly_and_leaves_krr_the_residual():
    from infdist_core.maths.landmarks import DirectTerm, part_slices

    rng, E, TE = _parts_problem()
    dt = DirectTerm(TE, part_slices((4, 3, 3), (True, False, True)))
    D = dt.features(E)
    beta_true = np.array([[2.0, -1.0, 0.5], [0.3, 1.5, -2.0]])  # (parts, t)
    P = np.einsum("ntk,kt->nt", D, beta_true) + np.array([0.1, -0.2, 0.0])
    lm = np.arange(40)
    model = krr_fit(E[lm], P[lm], damping=1e-3, direct=dt)
    np.testing.assert_allclose(model.beta, beta_true, atol=1e-10)
    np.testing.assert_allclose(model.predict(E[40:]), P[40:], atol=1e-8)  # residual 0 => exact everywhere
    # a non-linear truth: the kernel part equals plain KRR on the least-squares residual
    P2 = P + np.sin(E[:, :3])
    m2 = krr_fit(E[lm], P2[lm], damping=0.01, direct=dt)
    resid = P2[lm] - np.einsum("ltk,kt->lt", D[lm], m2.beta)
    plain = krr_fit(E[lm], resid, damping=0.01, center=True)
    np.testing.assert_allclose(m2.predict(E[40:]) - np.einsum("ntk,kt->nt", D[40:], m2.beta), plain.predict(E[40:]), atol=1e-9)


def test_direct_term_needs_one_column_per_target():
    from infdist_core.maths.landmarks import DirectTerm

    _, E, TE = _parts_problem()
    with pytest.raises(ValueError, match="3 targets but P_landmarks 1"):
        krr_fit(E[:20], np.ones(20), direct=DirectTerm(TE, ((0, 4),)))


def test_score_pool_uses_the_direct_term_when_the_setting_says_so():
    from infdist_core.config import SelectionConfig
    from infdist_core.maths.landmarks import DirectTerm
    from infdist_core.maths.recovery import KernelSetting
    from infdist_core.pipeline import LandmarkRegression, score_pool

    rng = np.random.default_rng(4)
    E, G = rng.standard_normal((30, 8)), rng.standard_normal((30, 16))
    G_T = rng.standard_normal((2, 16))
    lm = np.arange(0, 30, 3)
    dt = DirectTerm(rng.standard_normal((2, 8)), ((0, 8),))
    reg = LandmarkRegression(KernelSetting(direct=True), 2.0, [], None)
    cfg = SelectionConfig.of(pool_size=30, k=5, n_landmarks=10)
    got = score_pool(E, lm, G[lm], G_T, reg, cfg, dt).scores
    want = krr_fit(E[lm], G[lm] @ G_T.T, bandwidth2=2.0, direct=dt).predict(E)
    want[lm] = G[lm] @ G_T.T
    np.testing.assert_allclose(got, want)
    with pytest.raises(ValueError, match="direct term"):
        score_pool(E, lm, G[lm], G_T, reg, cfg)


@pytest.mark.parametrize("center", [False, True])
def test_stored_coefficients_reproduce_the_scores_without_the_direct_term(center):
    """krr_coefficients stores C such that p_hat = C @ P_L (Eq. 10 with centring folded in and the
    landmarks exact): it must equal what score_pool propagates for a task without the direct term."""
    from infdist_core.config import SelectionConfig
    from infdist_core.maths.influence import landmark_scores
    from infdist_core.pipeline import fit_landmark_regression, score_pool

    rng = np.random.default_rng(3)
    E, G, G_T = rng.standard_normal((120, 6)), rng.standard_normal((120, 9)), rng.standard_normal((4, 9))
    lm = np.sort(rng.choice(120, 20, replace=False))
    cfg = SelectionConfig.of(pool_size=120, n_landmarks=20, k=10, kernel_search=False, kernel_center=center)
    reg = fit_landmark_regression(E, lm, G[lm], cfg)
    assert reg.setting.center is center and not reg.setting.direct
    want = score_pool(E, lm, G[lm], G_T, reg, cfg).scores
    np.testing.assert_allclose(reg.coefficients @ landmark_scores(G[lm], G_T), want, rtol=1e-9, atol=1e-12)


def test_selection_methods_registry_names_unknown_methods_and_missing_inputs():
    from infdist_core.config import SelectionConfig
    from infdist_core.methods import select

    cfg = SelectionConfig.of(pool_size=20, n_landmarks=4, k=5)
    idx, w = select("uniform", cfg, 20)
    assert len(set(idx.tolist())) == 5 and (w == 1).all()
    assert select("full", cfg, 20)[0].tolist() == list(range(20))
    with pytest.raises(ValueError, match="unknown selection method 'less'"):
        select("less", cfg, 20)
    with pytest.raises(ValueError, match=r"needs \['pool_losses'\]"):
        select("mid_ppl", cfg, 20)


@pytest.mark.parametrize("per_target", [True, False])
def test_grad_is_infdist_with_every_sample_a_landmark(per_target):
    """The ceiling row: Grad must select exactly what InfDist selects when every pool sample is a
    landmark (the propagated scores are then the exact ones, Eq. 3), with the same weights."""
    from infdist_core import methods
    from infdist_core.config import SelectionConfig
    from infdist_core.maths.recovery import KernelSetting
    from infdist_core.pipeline import LandmarkRegression, score_pool

    rng = np.random.default_rng(3)
    n, k = 40, 7
    E, G, G_T = rng.standard_normal((n, 5)), rng.standard_normal((n, 16)), rng.standard_normal((3, 16))
    cfg = SelectionConfig.of(pool_size=n, n_landmarks=n, k=k, seed=2, per_target=per_target)
    influence = score_pool(E, np.arange(n), G, G_T, LandmarkRegression(KernelSetting(), 1.0, [], None), cfg)
    want_idx, want_w = methods.select("infdist", cfg, n, influence=influence)
    got_idx, got_w = methods.select("grad", cfg, n, pool_gradients=G, target_gradients=G_T)
    assert got_idx.tolist() == want_idx.tolist(), "Grad does not pick what InfDist picks with perfect scores"
    np.testing.assert_allclose(got_w, want_w, rtol=1e-12)
    # and it is the per-target round-robin over <g_i, g_t> (or the top-k of the robust weights)
    exact = G @ G_T.T
    ref = round_robin(exact, k, seed=2) if per_target else top_k(influence.weights, k)
    assert got_idx.tolist() == ref.tolist()


def test_compare_selections_names_what_entered_left_and_moved():
    from infdist_core.maths.selection import compare_selections

    c = compare_selections({"a": 1.0, "b": 2.0, "c": 0.5}, {"b": 2.5, "d": 1.0, "a": 1.0})
    assert c.entered == ("d",) and c.left == ("c",) and set(c.kept) == {"a", "b"}
    assert c.weight_change == {"b": 0.5, "d": 1.0, "a": 0.0, "c": -0.5}


def test_kcenter_is_farthest_first_and_covers_separated_clusters():
    from infdist_core.maths.landmarks import kcenter_landmarks, squared_distances

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 5)) * 50
    E = np.concatenate([c + rng.standard_normal((40, 5)) for c in centres])
    idx = kcenter_landmarks(E, 6, seed=3)
    assert sorted({int(i) // 40 for i in idx}) == list(range(6)), "one landmark per far-apart cluster"
    # reference: the naive farthest-first rule from the same first point
    got = kcenter_landmarks(E, 10, seed=3)
    first = int(next(i for i in got if i in kcenter_landmarks(E, 1, seed=3)))
    ref = [first]
    for _ in range(9):
        d = np.min(squared_distances(E, E[ref]), axis=1)
        ref.append(int(np.argmax(d)))
    assert got.tolist() == sorted(ref)
    assert np.array_equal(kcenter_landmarks(E, 10, seed=3), got), "seeded: same inputs, same landmarks"


def test_ridge_leverage_scores_are_the_closed_form_and_sampling_is_seeded():
    from infdist_core.maths.landmarks import leverage_landmarks, median_bandwidth, rbf_kernel, ridge_leverage_scores

    rng = np.random.default_rng(1)
    E = rng.standard_normal((50, 4))
    K = rbf_kernel(E, E, median_bandwidth(E))
    lam = 0.05
    want = np.diag(K @ np.linalg.inv(K + lam * np.eye(50)))
    np.testing.assert_allclose(ridge_leverage_scores(K, lam), want, rtol=1e-8, atol=1e-10)
    a, b = leverage_landmarks(E, 12, seed=4), leverage_landmarks(E, 12, seed=4)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 12 and a.tolist() == sorted(a.tolist())
    assert not np.array_equal(a, leverage_landmarks(E, 12, seed=5))


def test_guided_landmarks_are_the_top_scored_non_landmarks_ties_by_index():
    from infdist_core.maths.landmarks import guided_landmarks

    scores = np.array([5.0, 1.0, 3.0, 3.0, 9.0, 0.5, 3.0])
    landmarks = np.array([4, 1])
    # highest non-landmarks: 0 (5.0), then the 3.0 ties at 2, 3, 6 in index order
    assert guided_landmarks(scores, landmarks, 3).tolist() == [0, 2, 3]
    assert guided_landmarks(scores, landmarks, 0).tolist() == []
    assert top_indices(scores, 0).tolist() == []  # no partition at n: the empty pick, not an IndexError
    assert guided_landmarks(scores, landmarks, 5).tolist() == [0, 2, 3, 5, 6]
    with pytest.raises(ValueError, match="n_extra must be in"):
        guided_landmarks(scores, landmarks, 6)

"""Landmark cross-validation on synthetic cases where the truth is known, and the auto choice."""

import numpy as np
import pytest

from infdist_core.maths.recovery import DEFAULT_SETTINGS, KernelSetting, choose_embedding, cross_validate


@pytest.fixture()
def low_rank_gradients():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((6, 200))
    coef = rng.standard_normal((120, 6))
    G = coef @ basis + 0.05 * rng.standard_normal((120, 200))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    T = rng.standard_normal((4, 6)) @ basis
    return G, T / np.linalg.norm(T, axis=1, keepdims=True)


def test_gradient_as_embedding_recovers_almost_perfectly(low_rank_gradients):
    G, T = low_rank_gradients
    row = cross_validate(G, G, T, (KernelSetting(bandwidth_scale=4.0, damping=1e-3),), seed=0)[0]
    assert row["spearman"] > 0.9, row
    assert row["grad_cosine"] > 0.9 and row["grad_cosine"] > row["mean_cosine"] + 0.5


def test_random_embedding_is_at_chance(low_rank_gradients):
    G, T = low_rank_gradients
    E = np.random.default_rng(1).standard_normal((len(G), 32))
    rows = cross_validate(E, G, T, (KernelSetting(),), folds=10, seed=0)
    assert abs(rows[0]["spearman"]) < 0.15, rows[0]


def test_auto_choice_picks_the_informative_embedding(low_rank_gradients):
    G, T = low_rank_gradients
    rng = np.random.default_rng(2)
    cands = {"informative": G @ rng.standard_normal((200, 40)) + 0.01 * rng.standard_normal((len(G), 40)),
             "random": rng.standard_normal((len(G), 40))}
    costs = {"informative": 1.0, "random": 0.1}
    # pseudo-targets (no task gradients), as the pool side does
    best = {name: max(cross_validate(E, G, None, DEFAULT_SETTINGS, seed=0), key=lambda r: r["spearman"])
            for name, E in cands.items()}
    pick, reason = choose_embedding(best, costs)
    assert pick == "informative", reason
    assert "informative" in reason and "random" in reason


def test_cheapest_within_tolerance_wins():
    rows = {"a": {"spearman": 0.50}, "b": {"spearman": 0.49}, "c": {"spearman": 0.30}}
    assert choose_embedding(rows, {"a": 2.0, "b": 1.0, "c": 0.1})[0] == "b"
    assert choose_embedding(rows, {"a": 2.0, "b": 1.0, "c": 0.1}, tolerance=0.0)[0] == "a"


def test_too_few_landmarks_is_an_error():
    with pytest.raises(ValueError, match="too few to cross-validate"):
        cross_validate(np.zeros((3, 2)), np.zeros((3, 4)))


def test_inconclusive_cross_validation_falls_back_to_the_measured_ranking():
    rows = {"cheap": {"spearman": 0.05}, "good": {"spearman": 0.02}}
    pick, reason = choose_embedding(rows, {"cheap": 0.1, "good": 1.0}, prior=("good", "cheap"))
    assert pick == "good" and "inconclusive" in reason
    assert choose_embedding({"cheap": {"spearman": 0.4}, "good": {"spearman": 0.3}}, {"cheap": 0.1, "good": 1.0},
                            prior=("good", "cheap"))[0] == "cheap", "a conclusive CV overrides the prior"


def test_direct_term_recovers_what_partial_gradients_carry():
    """Nearly orthogonal gradients (as measured on real models) and the embedding = half of each
    gradient (a 'partial gradient'): the kernel alone transfers little, the direct term's cosine to
    the targets' half carries the score, and cross-validation sees it."""
    rng = np.random.default_rng(0)
    G = rng.standard_normal((160, 400))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    T = rng.standard_normal((3, 400))
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    E, TE = G[:, :200], T[:, :200]
    plain = cross_validate(E, G, T, (KernelSetting(),), seed=0)[0]
    row = cross_validate(E, G, T, (KernelSetting(direct=True),), seed=0, slices=((0, 200),), target_embeddings=TE)[0]
    assert row["direct"] and row["spearman"] > 0.55 and row["spearman"] > plain["spearman"] + 0.2, (row, plain)
    # pseudo-targets (the pool side): the group's mean embedding stands in for the target's
    pseudo = cross_validate(E, G, None, (KernelSetting(), KernelSetting(direct=True)), seed=0, slices=((0, 200),))
    assert pseudo[1]["spearman"] > pseudo[0]["spearman"], pseudo
    with pytest.raises(ValueError, match="gradient parts"):
        cross_validate(E, G, T, (KernelSetting(direct=True),))
    with pytest.raises(ValueError, match="one proxy embedding per target"):
        cross_validate(E, G, T, (KernelSetting(direct=True),), slices=((0, 200),))


def test_choose_direct_keeps_the_direct_term_only_when_the_real_targets_gain():
    from infdist_core.maths.landmarks import DirectTerm
    from infdist_core.pipeline import choose_direct

    rng = np.random.default_rng(0)
    G = rng.standard_normal((160, 400))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    T = rng.standard_normal((3, 400))
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    E = G[:, :200]
    informative = DirectTerm(T[:, :200], ((0, 200),))
    setting, rows = choose_direct(E, G, T, informative, KernelSetting(bandwidth_scale=2.0))
    assert setting == KernelSetting(bandwidth_scale=2.0, direct=True) and rows[1]["spearman"] > rows[0]["spearman"]
    E_blind = rng.standard_normal((160, 200))  # an embedding unrelated to the gradients: nothing to gain
    setting, rows = choose_direct(E_blind, G, T, DirectTerm(rng.standard_normal((3, 200)), ((0, 200),)), KernelSetting())
    assert setting.direct == (rows[1]["spearman"] > rows[0]["spearman"])


def test_calibration_slope_is_one_when_the_regression_recovers_the_scores_and_grows_with_overdamping(low_rank_gradients):
    """With the gradients as embeddings and little damping the propagated scores are the exact ones
    (slope about 1); a ridge that shrinks the fit toward the mean leaves the exact scores spread
    wider than the propagated ones (slope well above 1), which is what the slope is there to show."""
    from infdist_core.maths.recovery import calibration_slope

    G, T = low_rank_gradients
    P = (G @ T.T).mean(1)
    fit = calibration_slope(G, P, KernelSetting(bandwidth_scale=4.0, damping=1e-3))
    shrunk = calibration_slope(G, P, KernelSetting(bandwidth_scale=4.0, damping=30.0))
    assert 0.85 < fit < 1.15, fit
    assert shrunk > 2 * fit, (fit, shrunk)
    assert calibration_slope(G, P, KernelSetting(), seed=3) == calibration_slope(G, P, KernelSetting(), seed=3)
    with pytest.raises(ValueError, match="too few"):
        calibration_slope(G[:3], P[:3], KernelSetting())


def test_stretch_propagated_keeps_the_landmarks_and_scales_the_rest_about_their_mean():
    from infdist_core.maths.recovery import stretch_propagated

    rng = np.random.default_rng(0)
    S = rng.normal(size=(10, 3))
    lm = np.array([1, 4, 7])
    out = stretch_propagated(S, lm, 2.0)
    np.testing.assert_array_equal(out[lm], S[lm])
    rest = np.setdiff1d(np.arange(10), lm)
    mean = S[lm].mean(0)
    np.testing.assert_allclose(out[rest] - mean, 2.0 * (S[rest] - mean))
    np.testing.assert_allclose(stretch_propagated(S, lm, 1.0), S)
    assert not np.shares_memory(out, S)

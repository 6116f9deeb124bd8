"""The benchmark's statistics against closed forms, and its verdicts on synthetic losses."""

import numpy as np
import pytest
from scipy import stats

from infdist_core.maths.quality import summarize
from infdist_core.maths.statistics import crossed_interval, t_interval


def test_t_interval_matches_the_closed_form():
    x = np.array([1.0, 2.0, 4.0, 7.0])
    half = stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2.0
    ci = t_interval(x)
    assert ci.mean == pytest.approx(3.5) and ci.low == pytest.approx(3.5 - half) and ci.high == pytest.approx(3.5 + half)
    assert np.isnan(t_interval(np.array([1.0])).low), "one value gives no interval"


def test_crossed_interval_reduces_to_paired_t_with_one_seed_or_one_row():
    rng = np.random.default_rng(0)
    D = rng.normal(size=(1, 50))
    assert crossed_interval(D) == t_interval(D[0])
    D = rng.normal(size=(5, 1))
    assert crossed_interval(D) == t_interval(D[:, 0])


def test_crossed_interval_variance_is_the_anova_closed_form():
    rng = np.random.default_rng(1)
    S, R = 4, 30
    D = 0.3 * rng.normal(size=(S, 1)) + 1.0 * rng.normal(size=(1, R)) + 0.2 * rng.normal(size=(S, R))
    m = D.mean()
    ms_seed = R * np.var(D.mean(1), ddof=1)
    ms_row = S * np.var(D.mean(0), ddof=1)
    ms_err = ((D - D.mean(1, keepdims=True) - D.mean(0, keepdims=True) + m) ** 2).sum() / ((S - 1) * (R - 1))
    assert ms_seed > ms_err and ms_row > ms_err  # both components positive here: no flooring
    var = (ms_seed + ms_row - ms_err) / (S * R)
    df = var**2 / ((ms_seed / (S * R)) ** 2 / (S - 1) + (ms_row / (S * R)) ** 2 / (R - 1)
                   + (ms_err / (S * R)) ** 2 / ((S - 1) * (R - 1)))
    ci = crossed_interval(D)
    assert ci.df == pytest.approx(df)
    assert ci.high - ci.mean == pytest.approx(stats.t.ppf(0.975, df) * np.sqrt(var))


def test_crossed_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(400):
        D = 0.1 + 0.5 * rng.normal(size=(3, 1)) + rng.normal(size=(1, 40)) + 0.3 * rng.normal(size=(3, 40))
        ci = crossed_interval(D)
        hits += ci.low <= 0.1 <= ci.high
    assert 0.90 <= hits / 400 <= 0.995, f"coverage {hits / 400:.3f}: the seed-level variance is mis-weighted"


def test_ignoring_the_seed_variance_would_be_overconfident():
    """The reason for the crossed design: a row-level paired t on seed-averaged differences
    misses the seed-to-seed variance and is far too narrow when seeds disagree."""
    rng = np.random.default_rng(3)
    D = np.array([[1.0], [-1.0], [0.2]]) + 0.05 * rng.normal(size=(3, 200))
    naive = t_interval(D.mean(0))
    assert naive.excludes_zero and not crossed_interval(D).excludes_zero


def _long(cells):
    cols = ([], [], [], [], [], [])
    for (task, method, seed), losses in cells.items():
        for r, v in enumerate(losses):
            for c, x in zip(cols, (task, method, seed, 30, f"r{r}", v)):
                c.append(x)
    return cols


def _shifted(seed: int, seeds: int, rows: int, shifts: dict[str, tuple[float, float]]) -> dict:
    """Task ``t``: per seed, uniform's row losses and each method's as uniform's plus an offset
    and Gaussian noise (``shifts``: method -> (offset, noise scale))."""
    rng = np.random.default_rng(seed)
    cells = {}
    for s in range(seeds):
        u = rng.normal(2.0, 0.3, size=rows)
        cells[("t", "uniform", s)] = u
        for method, (offset, noise) in shifts.items():
            cells[("t", method, s)] = u + offset + noise * rng.normal(size=rows)
    return cells


def test_summarize_calls_win_loss_and_tie_from_the_interval():
    rng = np.random.default_rng(4)
    base = rng.normal(2.0, 0.3, size=100)
    cells = {}
    for s in range(3):
        cells[("a", "uniform", s)] = base + 0.01 * rng.normal(size=100)
        cells[("a", "infdist", s)] = base - 0.1 + 0.01 * rng.normal(size=100)  # clearly better
        cells[("b", "uniform", s)] = base + 0.01 * rng.normal(size=100)
        cells[("b", "infdist", s)] = base + 0.1 + 0.01 * rng.normal(size=100)  # clearly worse
        cells[("c", "uniform", s)] = base + 0.01 * rng.normal(size=100)
        cells[("c", "infdist", s)] = base + 0.3 * rng.normal(size=100)  # noise
    s = summarize(*_long(cells))
    assert s.verdicts("uniform") == {"a": "win", "b": "loss", "c": "tie"}
    a = next(d for d in s.differences if d["task"] == "a")
    assert a["delta"] == pytest.approx(-0.1, abs=0.01) and a["seeds"] == 3 and a["rows"] == 100
    m = next(r for r in s.methods if (r["task"], r["method"]) == ("a", "infdist"))
    assert m["seeds"] == 3 and m["low"] < m["heldout_loss"] < m["high"]


def test_summarize_pairs_only_common_seeds_and_rows():
    cells = {("t", "infdist", 0): [1.0, 2.0, 3.0], ("t", "infdist", 1): [1.0, 2.0, 3.0],
             ("t", "uniform", 0): [2.0, 3.0]}
    d = summarize(*_long(cells)).differences[0]
    assert (d["seeds"], d["rows"]) == (1, 2) and d["delta"] == pytest.approx(-1.0)


def test_the_landmarks_row_is_compared_with_uniform_and_infdist_with_it():
    """The landmarks-only row answers two questions: does it beat uniform (as the ceiling is
    asked), and does InfDist's propagation add to it (InfDist minus landmarks)."""
    cells = _shifted(8, 4, 150, {"landmarks": (-0.1, 0.01), "infdist": (-0.1, 0.01), "rds": (0.0, 0.01)})
    s = summarize(*_long(cells), baselines=("uniform", "rds", "landmarks"))
    assert s.verdicts("uniform", method="landmarks") == {"t": "win"}
    assert s.verdicts("landmarks") == {"t": "tie"} and s.verdicts("uniform") == {"t": "win"}
    assert s.verdicts("rds", method="landmarks") == {}, "a reference row is compared with uniform only"


def test_the_text_plot_places_each_method_on_a_shared_axis():
    from infdist_assets.assets.benchmark import interval_text

    rows = [{"task": "t", "k": 30, "method": "infdist", "heldout_loss": 1.0, "low": 0.9, "high": 1.1, "seeds": 3},
            {"task": "t", "k": 30, "method": "uniform", "heldout_loss": 2.0, "low": float("nan"), "high": float("nan"),
             "seeds": 1}]
    lines = interval_text(rows, width=21).splitlines()
    infdist, uniform = (next(x for x in lines if m in x) for m in ("infdist", "uniform"))
    bar = infdist.split("|")[1]
    assert bar.index("[") == 0 and bar.index("*") == 2 and bar.index("]") == 4, bar  # 0.9..1.1 of 0.9..2.0
    assert uniform.split("|")[1].index("*") == 20 and "[" not in uniform, "one seed: a point, no interval"


def test_frontier_pairs_each_methods_cold_cost_with_its_mean_gain_over_uniform():
    """Figure 1's points: the cost of the first seed (which computed the pool side; later seeds
    reuse it), median over tasks, against the mean over tasks of loss minus uniform's."""
    from infdist_assets.assets.benchmark import frontier, frontier_text

    cells = {("a", "uniform", 0): [2.0, 2.0], ("a", "infdist", 0): [1.8, 1.8], ("a", "infdist", 1): [1.6, 1.6],
             ("b", "uniform", 0): [3.0, 3.0], ("b", "infdist", 0): [3.1, 3.1]}
    costs = [("a", 0, 30, "infdist", 100.0), ("a", 1, 30, "infdist", 10.0), ("b", 0, 30, "infdist", 120.0),
             ("a", 0, 30, "uniform", 1.0), ("b", 0, 30, "uniform", 3.0), ("a", 0, 60, "infdist", 999.0)]
    pts = {p["method"]: p for p in frontier(summarize(*_long(cells)), costs)}
    assert pts["infdist"]["selection_seconds"] == pytest.approx(110.0)  # seeds 0 of a and b, not seed 1, not k=60
    assert pts["infdist"]["delta_vs_uniform"] == pytest.approx(((1.7 - 2.0) + (3.1 - 3.0)) / 2)
    assert pts["uniform"]["delta_vs_uniform"] == 0.0 and pts["uniform"]["selection_seconds"] == pytest.approx(2.0)
    text = frontier_text(list(pts.values()), width=20, height=5)
    assert "A uniform: 2 s" in text and "B infdist: 110 s, -0.1000" in text


def test_accuracy_wins_are_differences_above_zero():
    rng = np.random.default_rng(5)
    cells = {}
    for s in range(3):
        base = (rng.random(200) < 0.4).astype(float)
        cells[("a", "uniform", s)] = base
        cells[("a", "infdist", s)] = np.maximum(base, rng.random(200) < 0.3)  # strictly more right answers
    assert summarize(*_long(cells), higher_is_better=True).verdicts("uniform") == {"a": "win"}
    assert summarize(*_long(cells)).verdicts("uniform") == {"a": "loss"}, "as a loss, more is worse"


def test_gap_closed_is_the_ratio_of_gains_with_fiellers_interval():
    """InfDist gains half of what the ceiling gains: the ratio is 0.5, and Fieller's interval is
    exactly the set of ratios r whose A - rB has a crossed interval containing 0."""
    from infdist_core.maths.quality import ratio_interval

    cells = _shifted(6, 5, 200, {"grad": (-0.2, 0.02), "infdist": (-0.1, 0.02)})
    g = summarize(*_long(cells)).gaps[0]
    assert g["gap_closed"] == pytest.approx(0.5, abs=0.02) and g["low"] < 0.5 < g["high"] and g["high"] - g["low"] < 0.1
    U, I, G = (np.array([cells[("t", m, s)] for s in range(5)]) for m in ("uniform", "infdist", "grad"))
    A, B = U - I, U - G
    for r, inside in ((g["low"] - 1e-4, False), (g["low"] + 1e-4, True), (g["high"] - 1e-4, True), (g["high"] + 1e-4, False)):
        c = crossed_interval(A - r * B)
        assert (c.low <= 0 <= c.high) == inside, r
    # a ceiling indistinguishable from uniform leaves the ratio unbounded
    noise = np.random.default_rng(60).normal(0, 0.3, size=(5, 200))
    assert ratio_interval(A, noise - noise.mean()) == (-np.inf, np.inf)


def test_detectable_difference_is_the_power_formula_on_the_crossed_standard_error():
    from infdist_core.maths.quality import detectable

    rng = np.random.default_rng(7)
    D = rng.normal(0.0, 0.5, size=(1, 150))  # one seed: the paired t over rows
    c = crossed_interval(D)
    se = D.std(ddof=1) / np.sqrt(150)
    want = (stats.t.ppf(0.975, 149) + stats.t.ppf(0.8, 149)) * se
    assert detectable(c) == pytest.approx(want, rel=1e-9)

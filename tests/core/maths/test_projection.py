"""Projections: equal to a dense Hadamard oracle, inner products preserved, seeded and stable."""

import math

import numpy as np
import pytest
import torch

from infdist_core.maths import hadamard
from infdist_core.maths.projection import (HadamardLayout, HadamardProjector, RademacherProjector,
                                           hadamard_project_reference)


@pytest.mark.parametrize("backend", [b for b in hadamard.available_backends() if b != "cuda"])
@pytest.mark.parametrize("in_dim,out_dim", [(128, 64), (100, 10), (1000, 50), (300, 7), (4096, 4096), (2048, 1)])
def test_projection_equals_dense_hadamard(backend, in_dim, out_dim):
    proj = HadamardProjector(in_dim, out_dim, seed=3, backend=backend)
    x = torch.randn(3, in_dim, generator=torch.Generator().manual_seed(0))
    got = proj(x)
    want = hadamard_project_reference(proj, x)
    assert got.shape == (3, out_dim) and got.dtype == torch.float32
    # second call must not see the first call's workspace (padding, in-place transform)
    torch.testing.assert_close(proj(x), want, rtol=1e-4, atol=1e-4, msg=f"{backend} differs from dense H_N")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_fwht_backends_agree(backend):
    x = torch.randn(4, 1024, generator=torch.Generator().manual_seed(1))
    a, b = x.clone(), x.clone()
    hadamard.BACKENDS[backend](a)
    hadamard.BACKENDS[hadamard.pick_backend(torch.device("cpu"))](b)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-3)


def test_layout_masks_just_above_power_of_two_and_pads_otherwise():
    assert HadamardLayout.plan(1100, 64).masked and HadamardLayout.plan(1100, 64).n_hadamard == 1024
    pad = HadamardLayout.plan(1700, 64)
    assert not pad.masked and pad.n_hadamard == 2048
    big = HadamardLayout.plan(5000, 64, max_dim=1024)
    assert big.masked and big.n_hadamard == 1024
    assert HadamardLayout.plan(2**28, 8).cols <= 2**15, "rows must fit the CUDA kernel's 2**15 limit"


def test_hadamard_preserves_inner_products_in_expectation():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(512), rng.standard_normal(512)
    y = 0.6 * x + 0.8 * y
    X = torch.from_numpy(np.stack([x, y])).float()
    est = []
    for seed in range(300):
        P = HadamardProjector(512, 32, seed=seed)(X)
        est.append(float(P[0] @ P[1]))
    est = np.array(est)
    truth = float(x @ y)
    stderr = est.std() / math.sqrt(len(est))
    assert abs(est.mean() - truth) < 4 * stderr, f"mean {est.mean():.2f} vs <x,y>={truth:.2f} (se {stderr:.2f})"


def test_masked_projection_is_unbiased_for_norms():
    x = torch.randn(1, 1100, generator=torch.Generator().manual_seed(2))
    norms = [float(HadamardProjector(1100, 64, seed=s)(x).square().sum()) for s in range(300)]
    truth = float(x.square().sum())
    assert abs(np.mean(norms) - truth) < 4 * np.std(norms) / math.sqrt(300)


def test_same_seed_same_projection_and_different_seed_differs():
    x = torch.randn(2, 3000)
    a = HadamardProjector(3000, 100, seed=7)(x)
    b = HadamardProjector(3000, 100, seed=7)(x)
    c = HadamardProjector(3000, 100, seed=8)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_projection_does_not_mutate_input_and_accepts_numpy():
    x = np.random.default_rng(0).standard_normal((2, 256)).astype(np.float32)
    keep = x.copy()
    out = HadamardProjector(256, 16, seed=0)(x)
    assert np.array_equal(x, keep) and out.shape == (2, 16)


@pytest.mark.parametrize("bad", [dict(in_dim=10, out_dim=20), dict(in_dim=0, out_dim=1), dict(in_dim=16, out_dim=0)])
def test_bad_dimensions_are_rejected(bad):
    with pytest.raises(ValueError, match="out_dim|positive"):
        HadamardProjector(**bad)


def test_wrong_input_width_names_the_shape():
    with pytest.raises(ValueError, match=r"expected last dimension 64"):
        HadamardProjector(64, 8)(torch.zeros(2, 65))


def test_rademacher_matches_its_matrix_blocked_or_cached():
    x = torch.randn(3, 5000, generator=torch.Generator().manual_seed(0))
    cached = RademacherProjector(5000, 64, seed=1)
    RademacherProjector.CACHE_LIMIT, saved = 0, RademacherProjector.CACHE_LIMIT
    try:
        streamed = RademacherProjector(5000, 64, seed=1)
    finally:
        RademacherProjector.CACHE_LIMIT = saved
    M = cached.matrix()
    assert set(np.unique(M.numpy() * 8).round(6)) == {-1.0, 1.0}, "entries must be +-1/sqrt(out_dim)"
    torch.testing.assert_close(cached(x), x @ M)
    torch.testing.assert_close(streamed(x), x @ M, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("in_dim", [1100, 1024, 1700])  # masked, exact power of two, padded
def test_project_parts_equals_projecting_the_concatenation(in_dim):
    gen = torch.Generator().manual_seed(0)
    sizes = [300, 1, in_dim - 401, 100]
    parts = [torch.randn(s, generator=gen) for s in sizes]
    pre = torch.rand(in_dim, generator=gen) + 0.5
    proj = HadamardProjector(in_dim, 40, seed=4)
    flat = torch.cat(parts)
    torch.testing.assert_close(proj.project_parts(parts), proj(flat), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proj.project_parts(parts, pre), proj(flat * pre), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(proj.project_parts([p.view(1, -1) for p in parts]), proj(flat), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="parts hold"):
        proj.project_parts(parts[:-1])


def test_output_subset_is_uniform_not_a_grid():
    """Appendix I keeps a random subset of the N entries. A rows x columns grid would average only
    ~sqrt(out_dim) distinct rows when the energy sits in one column of the (m, n) reshaping (every
    column of H_m X H_n is then the same): its norm estimate's relative spread is ~0.5 here, a
    uniform subset's ~sqrt(2/64) = 0.18."""
    x = torch.zeros(1, 4096)
    x[0, ::64] = torch.randn(64, generator=torch.Generator().manual_seed(0))  # column 0 of the 64 x 64 grid
    ratios = np.array([float(HadamardProjector(4096, 64, seed=s)(x).square().sum()) for s in range(200)])
    ratios /= float(x.square().sum())
    assert abs(ratios.mean() - 1) < 4 * ratios.std() / math.sqrt(200), "the norm estimate must stay unbiased"
    assert ratios.std() < 0.3, f"relative spread {ratios.std():.2f}: the subset is not uniform over the entries"
    flat = HadamardProjector(4096, 64, seed=0).output_flat_index
    assert len(set(flat.tolist())) == 64 and len(set((flat % 64).tolist())) > 40, "64 distinct entries, spread"


def test_block_pre_mask_matches_the_oracle_and_is_unbiased(monkeypatch):
    """Above MASK_BLOCKS coordinates the pre-mask keeps whole blocks (the 7B setting); shrink the
    threshold so that a small input takes that path."""
    from infdist_core.maths import projection

    monkeypatch.setattr(projection, "MASK_BLOCKS", 64)
    x = torch.randn(2, 5000, generator=torch.Generator().manual_seed(1))
    proj = HadamardProjector(5000, 40, seed=2, max_dim=1024)
    runs = proj.mask_runs
    assert len(runs) <= 64 and bool((runs[:, 1] - runs[:, 0] >= 128).all()), "blocks of 128 coordinates"
    torch.testing.assert_close(proj(x), hadamard_project_reference(proj, x), rtol=1e-4, atol=1e-4)
    parts = [x[0, :777], x[0, 777:]]
    torch.testing.assert_close(proj.project_parts(parts), proj(x[0]), rtol=1e-5, atol=1e-5)
    norms = [float(HadamardProjector(5000, 40, seed=s, max_dim=1024)(x[:1]).square().sum()) for s in range(300)]
    assert abs(np.mean(norms) - float(x[0].square().sum())) < 4 * np.std(norms) / math.sqrt(300)


def test_seven_billion_pre_mask_is_drawn_without_a_coordinate_permutation():
    """Llama-2-7B's down_proj (32 x 4096 x 11008 = 1.44e9 entries) down to 2**30: a permutation of
    the coordinates would take 11.5 GB; the block draw permutes at most MASK_BLOCKS blocks."""
    from infdist_core.maths import projection

    in_dim = 32 * 4096 * 11008
    runs, p = projection._random_block_runs(in_dim, 2**30, torch.Generator().manual_seed(0))
    kept = sum(b - a for a, b in runs)
    assert kept <= 2**30 and kept > 0.99 * 2**30 and p == pytest.approx(2**30 / in_dim, rel=1e-3)
    assert all(a < b <= c for (a, b), (c, _) in zip(runs, runs[1:])), "sorted, disjoint, merged runs"

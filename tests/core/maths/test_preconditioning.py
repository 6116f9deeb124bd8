"""Gradient normalisation and Adam preconditioning against a real AdamW step."""

import pytest
import torch

from infdist_core.maths.preconditioning import (
    AdamMoments,
    adam_momentum_term,
    adam_scale,
    moments_from_optimizer,
    normalize_rows,
    precondition,
)


def test_normalize_rows_flags_zero_rows_instead_of_nan():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    out, valid = normalize_rows(g)
    assert torch.isfinite(out).all()
    assert valid.tolist() == [True, False, True]
    torch.testing.assert_close(out[0], torch.tensor([0.6, 0.8]))
    assert out[1].abs().sum() == 0


def test_adam_terms_reproduce_a_torch_adamw_step():
    """With v unchanged by the step (g^2 == v), AdamW's update is exactly -lr (b + a g) (Eq. 26)."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(50))
    lr, betas, eps = 1e-2, (0.9, 0.99), 1e-8
    opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=0.0)
    for _ in range(3):  # warm-up: 3 steps
        opt.zero_grad()
        (p.square().sum() + p.sum()).backward()
        opt.step()
    moments = moments_from_optimizer(opt, [p])
    assert moments.step == 3
    g = moments.exp_avg_sq.sqrt() * torch.where(torch.rand(50) > 0.5, 1.0, -1.0)
    a = adam_scale(moments.exp_avg_sq, moments.step, *betas, eps)
    b = adam_momentum_term(moments.exp_avg, moments.exp_avg_sq, moments.step, *betas, eps)
    before = p.detach().clone()
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(p.detach() - before, -lr * (b + a * g), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(precondition(g, moments), a * g)


def test_moments_need_a_warm_up_step():
    with pytest.raises(ValueError, match="at least one warm-up step"):
        AdamMoments(torch.zeros(2), torch.zeros(2), 0, 0.9, 0.999, 1e-8)

"""Fine-tuning through ``transformers.Trainer`` (``finetuning``) against the hand-written loop
(``training.train``): the same loss trajectory and weights, with sample weights, gradient
checkpointing, a resumed run, bf16 mixed precision and LoRA."""

import numpy as np
import pytest
import torch

from infdist_core.model.finetuning import TrainerOptions, fine_tune
from infdist_core.model.modeling import tiny_llama
from infdist_core.model.tokenization import tokenize_records
from infdist_core.model.training import TrainConfig, batch_order, schedule, train

CFG = TrainConfig(lr=5e-3, epochs=3, micro_batch=3, grad_accum=2, seed=4)


@pytest.fixture()
def samples(tokenizer):
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                         {"role": "assistant", "content": f"{i} plus {i} is {2 * i}." + " Indeed." * (i % 3)}]}
            for i in range(7)]
    return tokenize_records(tokenizer, rows, 96).samples


def _model(tokenizer):
    return tiny_llama(len(tokenizer), seed=0, n_layers=2, hidden=32, pad_token_id=tokenizer.pad_token_id)


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    assert worst < atol, worst


@pytest.mark.parametrize("weighted", [False, True])
def test_trainer_path_matches_the_hand_loop(tokenizer, samples, tmp_path, weighted):
    """Same seed, same order, same per-sample mean loss: the trajectories agree to rounding."""
    weights = np.linspace(0.5, 1.5, len(samples)) if weighted else None
    hand = _model(tokenizer)
    ref = train(hand, samples, CFG, tokenizer.pad_token_id, weights=weights)
    got = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(), tokenizer.pad_token_id, tmp_path / "run", weights=weights)
    assert got.steps == ref.steps == schedule(len(samples), CFG) == 4
    np.testing.assert_allclose(got.losses, ref.losses, rtol=2e-5)
    assert ref.losses[-1] < ref.losses[0]  # it trains: the comparison is not between two untouched models
    _assert_same_weights(_params(got.model), _params(hand), atol=2e-5)


def test_the_order_crosses_epochs_like_the_loop(samples):
    batches = batch_order(7, CFG, 4)
    flat = [i for b in batches for i in b]
    assert len(batches) == 8 and all(len(b) == 3 for b in batches)
    assert sorted(flat[:7]) == list(range(7)) and sorted(flat[7:14]) == list(range(7))  # whole permutations in turn
    assert flat[:7] != flat[7:14]  # reshuffled per epoch


def test_weights_change_the_result(tokenizer, samples, tmp_path):
    """The weights reach the loss (a compute_loss that ignored them would pass the parity test only
    when weighted and unweighted runs coincide)."""
    a = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(), tokenizer.pad_token_id, tmp_path / "a")
    w = np.ones(len(samples))
    w[0] = 3.0
    b = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(), tokenizer.pad_token_id, tmp_path / "b", weights=w)
    assert abs(a.losses[-1] - b.losses[-1]) > 1e-4


def test_gradient_checkpointing_gives_the_same_trajectory(tokenizer, samples, tmp_path):
    plain = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(), tokenizer.pad_token_id, tmp_path / "a")
    ckpt = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(gradient_checkpointing=True), tokenizer.pad_token_id,
                     tmp_path / "b")
    np.testing.assert_allclose(ckpt.losses, plain.losses, rtol=1e-5)
    assert not ckpt.model.is_activation_checkpointing and ckpt.model.config.use_cache


def test_an_interrupted_fine_tune_resumes_from_its_last_checkpoint(tokenizer, samples, tmp_path):
    from transformers import TrainerCallback

    whole = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(), tokenizer.pad_token_id, tmp_path / "whole")

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt("killed after step 3")

    import transformers

    original = transformers.Trainer.__init__

    def with_crash(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(Crash())

    opts = TrainerOptions(save_steps=2)
    transformers.Trainer.__init__ = with_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            fine_tune(_model(tokenizer), samples, CFG, opts, tokenizer.pad_token_id, tmp_path / "run")
    finally:
        transformers.Trainer.__init__ = original
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    resumed = fine_tune(_model(tokenizer), samples, CFG, opts, tokenizer.pad_token_id, tmp_path / "run")
    assert resumed.resumed_from == 2
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)  # steps 1-2 from the checkpoint's log
    _assert_same_weights(_params(resumed.model), _params(whole.model), atol=1e-5)


def test_a_checkpoint_a_killed_save_left_half_written_is_passed_over(tmp_path):
    """Trainer writes trainer_state.json last; transformers' get_last_checkpoint would take the
    newest folder anyway and resume without optimizer state. last_checkpoint takes the newest
    complete one."""
    from transformers.trainer_utils import get_last_checkpoint

    from infdist_core.model.finetuning import last_checkpoint

    run = tmp_path / "run"
    for step, state in ((2, '{"global_step": 2}'), (4, None), (6, '{"global_st')):  # 4: killed before the state; 6: mid-state
        d = run / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    assert get_last_checkpoint(str(run)).endswith("checkpoint-6"), "transformers' own choice: the half-written one"
    assert last_checkpoint(run) == str(run / "checkpoint-2")
    assert last_checkpoint(tmp_path / "none") is None


def test_bf16_mixed_precision_trains_close_to_fp32(tokenizer, samples, tmp_path):
    fp32 = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(), tokenizer.pad_token_id, tmp_path / "a")
    bf16 = fine_tune(_model(tokenizer), samples, CFG, TrainerOptions(precision="bfloat16"), tokenizer.pad_token_id,
                     tmp_path / "b")
    gap = np.abs(np.array(bf16.losses) - np.array(fp32.losses))
    assert gap.max() > 0  # bf16 autocast really ran
    assert gap.max() < 0.05 * max(fp32.losses)
    assert next(bf16.model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_lora_trains_adapters_and_returns_a_merged_plain_model(tokenizer, samples, tmp_path):
    pytest.importorskip("peft")
    base = _model(tokenizer)
    before = _params(base)
    res = fine_tune(base, samples, TrainConfig(lr=5e-2, epochs=3, micro_batch=3, grad_accum=2, seed=4),
                    TrainerOptions(lora_rank=4, lora_alpha=8), tokenizer.pad_token_id, tmp_path / "run")
    after = _params(res.model)
    assert after.keys() == before.keys()  # merged: no lora_A/lora_B, same names as the base model
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # not a linear layer
    moved = [n for n in after if not torch.equal(after[n], before[n])]
    assert moved and all(n.endswith("proj.weight") for n in moved)
    for n in moved:  # a merged rank-4 update: the change has rank <= 4
        assert torch.linalg.matrix_rank(after[n] - before[n], atol=1e-6) <= 4
    assert res.losses[-1] < res.losses[0]

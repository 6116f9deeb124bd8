"""Model side against references: autograd of one sample alone, finite differences for the JVP,
exact assistant label masks, zero-label samples reported, seeded determinism, batch invariance."""

import json

import numpy as np
import pytest
import torch

from infdist_core.data import sources
from infdist_core.data.records import RecordError, load_records
from infdist_core.maths.preconditioning import AdamMoments
from infdist_core.maths.projection import HadamardProjector
from infdist_core.model.gradients import per_sample_losses, sample_gradients
from infdist_core.model.jvp import block_tangents, jvp_embeddings, truncated_backbone
from infdist_core.model.modeling import block_pattern, select_parameters
from infdist_core.model.tokenization import IGNORE, tokenize_records, tokenize_sample
from infdist_core.model.training import TrainConfig, train


def _params(model, pattern=None):
    return [p for _, p in select_parameters(model, pattern)]


def test_labels_cover_exactly_the_assistant_turns(tokenizer, chats):
    ts = tokenize_records(tokenizer, chats, max_length=256)
    decoded = {s.id: tokenizer.decode(s.input_ids[s.labels != IGNORE]) for s in ts.samples}
    assert decoded["a"] == "Hello there, friend!<|im_end|>\n"
    assert decoded["b"] == "4<|im_end|>\nIt is 6.<|im_end|>\n", "both assistant turns, nothing of the user's"
    assert "France" not in decoded["c"] and "Be brief" not in decoded["c"]
    s = ts.samples[0]
    assert torch.equal(s.labels[s.labels != IGNORE], s.input_ids[s.labels != IGNORE])


def test_sample_without_labels_is_reported_not_nan(tokenizer, chats):
    chats.append({"id": "noreply", "messages": [{"role": "user", "content": "hello?"}]})
    long_prompt = {"id": "cut", "messages": [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "ok"}]}
    ts = tokenize_records(tokenizer, chats + [long_prompt], max_length=64)
    assert ts.excluded == {"noreply": "no assistant turn", "cut": "no assistant tokens within max_length"}
    assert isinstance(tokenize_sample(tokenizer, long_prompt, 64), str)


def test_zero_gradient_sample_is_flagged_not_nan(tokenizer, tiny_model, chats):
    ts = tokenize_records(tokenizer, chats, 128)
    bad = ts.samples[0]
    bad.labels[:] = IGNORE  # e.g. labels all masked by a later truncation
    params = _params(tiny_model)
    proj = HadamardProjector(sum(p.numel() for p in params), 32, seed=0)
    g = sample_gradients(tiny_model, ts.samples, params, proj, tokenizer.pad_token_id)
    assert np.isfinite(g.vectors).all()
    assert g.valid.tolist() == [False, True, True, True]
    assert np.abs(g.vectors[0]).sum() == 0


def test_per_sample_gradient_equals_autograd_of_that_sample_alone(tokenizer, tiny_model, chats):
    ts = tokenize_records(tokenizer, chats, 128)
    params = _params(tiny_model, block_pattern(tiny_model, "last:1"))
    d = sum(p.numel() for p in params)
    proj = HadamardProjector(d, 64, seed=1)
    got = sample_gradients(tiny_model, ts.samples, params, proj, tokenizer.pad_token_id, normalize=False, batch_size=3)
    for i, s in enumerate(ts.samples):
        ids = s.input_ids[None]
        logits = tiny_model(input_ids=ids).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, s.labels[1:], ignore_index=IGNORE)
        ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])
        np.testing.assert_allclose(got.vectors[i], proj(ref).numpy(), rtol=1e-4, atol=1e-6,
                                   err_msg=f"sample {s.id}: batched projected gradient != autograd alone")
        kept = ref if proj.mask_runs is None else ref[proj.kept_coordinates()] * (proj.in_dim / proj.layout.n_hadamard) ** 0.5
        assert got.norms[i] == pytest.approx(float(kept.norm()), rel=1e-5)


def test_adam_preconditioned_gradient_is_scaled_elementwise(tokenizer, tiny_model, chats):
    ts = tokenize_records(tokenizer, chats, 128)
    params = _params(tiny_model, "down_proj")
    d = sum(p.numel() for p in params)
    v = torch.rand(d) + 0.1
    moments = AdamMoments(torch.zeros(d), v, 10, 0.9, 0.999, 1e-8)
    proj = HadamardProjector(d, 32, seed=2)
    got = sample_gradients(tiny_model, ts.samples[:1], params, proj, tokenizer.pad_token_id, moments=moments, normalize=False)
    loss = per_sample_losses(tiny_model, {k: t[None] for k, t in
                                          [("input_ids", ts.samples[0].input_ids), ("labels", ts.samples[0].labels),
                                           ("attention_mask", torch.ones_like(ts.samples[0].input_ids))]})[0]
    g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, params)])
    a = (1 - 0.9) / ((1 - 0.9**11) * ((v / (1 - 0.999**11)).sqrt() + 1e-8))
    np.testing.assert_allclose(got.vectors[0], proj(a * g).numpy(), rtol=1e-4, atol=1e-7)


def test_gradients_are_deterministic_and_batch_invariant(tokenizer, tiny_model, chats):
    ts = tokenize_records(tokenizer, chats, 128)
    params = _params(tiny_model)
    proj = HadamardProjector(sum(p.numel() for p in params), 48, seed=0)
    a = sample_gradients(tiny_model, ts.samples, params, proj, tokenizer.pad_token_id, batch_size=1)
    b = sample_gradients(tiny_model, ts.samples, params, proj, tokenizer.pad_token_id, batch_size=4)
    c = sample_gradients(tiny_model, ts.samples, params, proj, tokenizer.pad_token_id, batch_size=1)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=2e-5)
    assert np.array_equal(a.vectors, c.vectors), "same inputs and seed must give identical gradients"


@pytest.mark.parametrize("output", ["hidden", "logits"])
def test_jvp_equals_finite_difference_directional_derivative(tokenizer, tiny_model, chats, output):
    model = tiny_model.double()
    ts = tokenize_records(tokenizer, chats, 128)
    emb = jvp_embeddings(model, ts.samples, tokenizer.pad_token_id, n_blocks=2, n_tangents=2, output=output, seed=5)
    sub = truncated_backbone(model, 2)
    tangents = block_tangents(sub, 2, seed=5)
    v = {n: (tangents[0][n] + tangents[1][n]) / 2 for n in tangents[0]}
    named = dict(sub.named_parameters())

    def f(s):
        h = sub(input_ids=s.input_ids[None]).last_hidden_state[0, -1]
        return model.lm_head(h) if output == "logits" else h

    eps = 1e-4  # balances O(eps^2) truncation against rotary embeddings computed in float32
    for i, s in enumerate(ts.samples):
        with torch.no_grad():
            for n, t in v.items():
                named[n].add_(eps * t)
            up = f(s)
            for n, t in v.items():
                named[n].sub_(2 * eps * t)
            down = f(s)
            for n, t in v.items():
                named[n].add_(eps * t)
        fd = (up - down) / (2 * eps)
        np.testing.assert_allclose(emb[i].numpy(), fd.float().numpy(), rtol=1e-3, atol=5e-3,
                                   err_msg=f"JVP of sample {s.id} != central finite difference")


def test_jvp_is_seeded_batch_invariant_and_leaves_the_model_intact(tokenizer, tiny_model, chats):
    ts = tokenize_records(tokenizer, chats, 128)
    n_layers = len(tiny_model.model.layers)
    a = jvp_embeddings(tiny_model, ts.samples, tokenizer.pad_token_id, n_blocks=2, seed=1, batch_size=4)
    b = jvp_embeddings(tiny_model, ts.samples, tokenizer.pad_token_id, n_blocks=2, seed=1, batch_size=1)
    c = jvp_embeddings(tiny_model, ts.samples, tokenizer.pad_token_id, n_blocks=2, seed=2, batch_size=4)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, c)
    assert len(tiny_model.model.layers) == n_layers, "truncation must not modify the model"


def test_load_records_accepts_the_common_shapes_and_names_bad_rows(tmp_path):
    rows = [
        {"id": "t", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"id": "s", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
        {"id": "al", "instruction": "do", "input": "this", "output": "done"},
        {"id": "pc", "prompt": "p", "completion": "c"},
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    recs = load_records(path)
    assert [r["messages"][-1]["role"] for r in recs] == ["assistant"] * 4
    assert recs[2]["messages"][0]["content"] == "do\n\nthis"
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = ("id", "instruction", "input", "output", "prompt", "completion")  # every column, None where a shape has none
    pq.write_table(pa.table({c: [r.get(c) for r in rows[2:]] for c in cols}), tmp_path / "pool.parquet")
    got = load_records(tmp_path / "pool.parquet")
    assert [r["id"] for r in got] == ["al", "pc"] and got[1]["messages"][1]["content"] == "c"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"text": "x"}) + "\n")
    with pytest.raises(RecordError, match=r"bad.jsonl: line 2 has fields \['text'\]"):
        load_records(bad)


def test_sharegpt_reader_recovers_complete_records_from_a_truncated_file(tmp_path):
    full = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]}
            for i in range(3)]
    text = json.dumps(full)
    (tmp_path / "sg.json").write_text(text[: text.rindex("gpt") + 10])  # cut inside the last record
    recs = sources.sharegpt_conversations(tmp_path / "sg.json")
    assert [r["id"] for r in recs] == ["sharegpt-0", "sharegpt-1"]


def test_warm_up_training_reduces_loss_and_is_deterministic(tokenizer, tiny_model, chats):
    from infdist_core.model.modeling import tiny_llama

    ts = tokenize_records(tokenizer, chats, 128)
    cfg = TrainConfig(lr=1e-2, epochs=8, micro_batch=2, seed=0)
    res = train(tiny_model, ts.samples, cfg, tokenizer.pad_token_id)
    assert res.losses[-1] < res.losses[0]
    other = tiny_llama(len(tokenizer), seed=0, n_layers=4, hidden=32, pad_token_id=tokenizer.pad_token_id)
    res2 = train(other, ts.samples, cfg, tokenizer.pad_token_id)
    assert res.losses == res2.losses


def test_head_gradient_sketch_equals_sketching_the_autograd_head_gradient(tokenizer, chats):
    from infdist_core.data.seeding import generator
    from infdist_core.model.modeling import tiny_llama
    from infdist_core.model.proxies import head_gradient_sketch

    model = tiny_llama(len(tokenizer), seed=0, n_layers=2, hidden=32, pad_token_id=tokenizer.pad_token_id)
    model.config.tie_word_embeddings = False  # the head gradient alone (no embedding share)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    ts = tokenize_records(tokenizer, chats, 128).samples
    got = head_gradient_sketch(model, ts, tokenizer.pad_token_id, width=8, seed=3, batch_size=3)
    V, H = model.lm_head.weight.shape
    S_V = torch.randn(V, 8, generator=generator(3, "head-sketch-V", V, 8)) / 8**0.5
    S_H = torch.randn(H, 8, generator=generator(3, "head-sketch-H", H, 8)) / 8**0.5
    for i, s in enumerate(ts):
        logits = model(input_ids=s.input_ids[None]).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, s.labels[1:], ignore_index=IGNORE)
        (dW,) = torch.autograd.grad(loss, [model.lm_head.weight])
        np.testing.assert_allclose(got[i], (S_V.T @ dW @ S_H).reshape(-1).numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n_blocks", [1, 3])
def test_truncated_head_gradient_equals_autograd_of_the_cut_model(tokenizer, chats, n_blocks):
    """grad-head:N = the head gradient of the model cut after N blocks (final norm kept), projected
    with the seeded projector; grad-head:N:B = the same gradient with the vocabulary rows
    count-sketched into B signed buckets (closed form, no autograd, batched with padding)."""
    import copy

    from infdist_core.model.modeling import tiny_llama
    from infdist_core.model.proxies import _vocab_sketch, compute_proxy, truncated_head_gradients
    from infdist_core.proxy_specs import ProxySpec

    model = tiny_llama(len(tokenizer), seed=0, n_layers=3, hidden=32, pad_token_id=tokenizer.pad_token_id)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    cut = copy.deepcopy(model)
    cut.model.layers = cut.model.layers[:n_blocks]
    ts = tokenize_records(tokenizer, chats, 128).samples
    pad = tokenizer.pad_token_id
    V, H = model.lm_head.weight.shape
    exact = truncated_head_gradients(model, ts, pad, n_blocks, 48, seed=5, batch_size=3)
    sketched = truncated_head_gradients(model, ts, pad, n_blocks, 48, seed=5, buckets=4, batch_size=3)
    ph, ps = HadamardProjector(V * H, 48, seed=5), HadamardProjector(4 * H, 48, seed=5)
    bucket, sign = _vocab_sketch(V, 4, 5)
    S = torch.zeros(4, V).index_put_((bucket, torch.arange(V)), sign)  # the count sketch as a matrix
    for i, s in enumerate(ts):
        logits = cut(input_ids=s.input_ids[None]).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, s.labels[1:], ignore_index=IGNORE)
        (dW,) = torch.autograd.grad(loss, [cut.lm_head.weight])
        np.testing.assert_allclose(exact[i], ph.project_parts([dW], None).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(sketched[i], ps.project_parts([S @ dW], None).numpy(), rtol=1e-4, atol=1e-5)
    spec = f"grad-head:{n_blocks}:4"
    pe = compute_proxy(model, ts, pad, spec, dim=48, seed=5)
    assert pe.widths == (48,) and not ProxySpec.parse(spec).per_sample() and ProxySpec.parse("grad-last:2+grad-head").per_sample()
    np.testing.assert_allclose(pe.vectors, sketched / np.linalg.norm(sketched, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_parameter_subsets_select_what_they_name(tiny_model):
    names = lambda which: [n for n, _ in select_parameters(tiny_model, block_pattern(tiny_model, which))]
    assert all(".layers." in n for n in names("blocks")) and not any("embed" in n for n in names("blocks"))
    assert all("down_proj" in n for n in names("down_proj")) and len(names("down_proj")) == 4
    assert all("layers.3." in n for n in names("last:1"))
    with pytest.raises(ValueError, match="unknown parameter subset"):
        block_pattern(tiny_model, "middle")


def test_partial_gradients_equal_autograd_of_blocks_and_untied_head(tokenizer, chats):
    """One forward + partial backward gives the last block's gradient and the LM head's alone
    (projected with the same seeded projectors), fused or not."""
    from infdist_core.model.modeling import tiny_llama
    from infdist_core.model.proxies import compute_proxy, partial_gradients

    model = tiny_llama(len(tokenizer), seed=0, n_layers=2, hidden=32, pad_token_id=tokenizer.pad_token_id)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    ts = tokenize_records(tokenizer, chats, 128).samples
    pad = tokenizer.pad_token_id
    blocks, head = partial_gradients(model, ts, pad, 1, True, 48, seed=5)
    bp = _params(model, block_pattern(model, "last:1") + r"|^model\.norm\.")
    pb = HadamardProjector(sum(p.numel() for p in bp), 48, seed=5)
    ph = HadamardProjector(model.lm_head.weight.numel(), 48, seed=5)
    for i, s in enumerate(ts):
        loss = per_sample_losses(model, {k: v[None] for k, v in
                                         (("input_ids", s.input_ids), ("attention_mask", torch.ones_like(s.input_ids)),
                                          ("labels", s.labels))})[0]
        *gb, gh = torch.autograd.grad(loss, bp + [model.lm_head.weight])
        np.testing.assert_allclose(blocks[i], pb.project_parts(gb, None).numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(head[i], ph.project_parts([gh], None).numpy(), rtol=1e-4, atol=1e-6)
    fused = compute_proxy(model, ts, pad, "grad-last:1+grad-head", dim=48, seed=5)
    alone = [compute_proxy(model, ts, pad, s, dim=48, seed=5).vectors for s in ("grad-last:1", "grad-head")]
    assert fused.widths == (48, 48)
    np.testing.assert_allclose(fused.vectors * np.sqrt(2), np.concatenate(alone, axis=1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", ["grad-last:1+grad-head", "grad-head+grad-last:2", "grad-last:1", "grad-head"])
def test_the_gradient_pass_gives_the_proxy_rows_of_its_own_pass_bit_for_bit(tokenizer, tiny_model, chats, spec):
    """The landmark-gradient pass computes a partial-backward proxy from its own forward: its
    gradients and the proxy's rows are exactly what the two passes give apart (Adam-scaled
    gradients, a zero-label sample, a tied head), and a proxy that needs more is refused."""
    from infdist_core.model.proxies import compute_proxy, gradients_with_proxy

    ts = tokenize_records(tokenizer, chats, 128).samples
    ts[1].labels[:] = IGNORE  # a zero row in both
    pad = tokenizer.pad_token_id
    params = _params(tiny_model)
    d = sum(p.numel() for p in params)
    moments = AdamMoments(torch.zeros(d), torch.rand(d, generator=torch.Generator().manual_seed(0)) + 0.1, 5, 0.9, 0.999, 1e-8)
    proj = HadamardProjector(d, 48, seed=3)
    g, pe = gradients_with_proxy(tiny_model, ts, params, proj, pad, spec, dim=40, seed=7, moments=moments)
    ref_g = sample_gradients(tiny_model, ts, params, proj, pad, moments=moments)
    ref = compute_proxy(tiny_model, ts, pad, spec, dim=40, seed=7)
    for field in ("vectors", "norms", "valid", "n_label_tokens"):
        assert np.array_equal(getattr(g, field), getattr(ref_g, field)), f"gradients' {field} changed"
    assert np.array_equal(pe.vectors, ref.vectors) and pe.widths == ref.widths and pe.spec == ref.spec
    assert not pe.vectors[1].any() and pe.vectors[0].any()
    assert pe.seconds_per_sample > 0
    with pytest.raises(ValueError, match="partial backward"):
        gradients_with_proxy(tiny_model, ts, params, proj, pad, "grad-last:1+jvp-hidden", dim=40, seed=7)
    with pytest.raises(ValueError, match="batch_size=1"):
        sample_gradients(tiny_model, ts, params, proj, pad, batch_size=2, tap=lambda *a: None)


def test_batched_prefix_gives_the_one_sample_partial_gradients(tokenizer, chats):
    """batch_size > 1 runs the blocks before the differentiated ones batched (padded, no graph) and
    the last ones per sample on the prefix's hidden states: the same gradients up to rounding."""
    from infdist_core.model.modeling import tiny_llama
    from infdist_core.model.proxies import partial_gradients, split_backbone

    model = tiny_llama(len(tokenizer), seed=0, n_layers=3, hidden=32, pad_token_id=tokenizer.pad_token_id)
    ts = tokenize_records(tokenizer, chats, 128).samples
    pad = tokenizer.pad_token_id
    one = partial_gradients(model, ts, pad, 2, True, 48, seed=5)
    batched = partial_gradients(model, ts, pad, 2, True, 48, seed=5, batch_size=3)
    for a, b in zip(one, batched):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
    prefix, suffix = split_backbone(model, 2)
    assert len(prefix.layers) == 1 and len(suffix.layers) == 2 and len(model.model.layers) == 3
    assert suffix.layers[0] is model.model.layers[1] and suffix.norm is model.model.norm
    assert isinstance(prefix.norm, torch.nn.Identity) and not isinstance(model.model.norm, torch.nn.Identity)


def test_a_proxy_spec_is_parsed_once_into_its_parts():
    from infdist_core.proxy_specs import ProxyPart, ProxySpec

    spec = ProxySpec.parse("grad-last:2+grad-head")
    assert spec.parts == (ProxyPart("grad-last", (2,)), ProxyPart("grad-head", ())) and str(spec) == "grad-last:2+grad-head"
    assert spec.gradient_parts == (True, True) and spec.fused == (0, 1)
    assert ProxySpec.parse(spec) is spec, "a parsed spec passes through"
    other = ProxySpec.parse("jvp-hidden:4:2+grad-head-sketch:8+rds")
    assert other.gradient_parts == (False, True, False) and other.fused is None
    assert ProxySpec.parse("grad-head:16+grad-last:1").fused is None, "a truncated head is not the fused pair"
    for bad, message in (("", "non-empty"), ("grad-last:0", "positive integers"), ("rds:1", "at most 0"),
                         ("grad-last:2+nope", "unknown kind 'nope'")):
        with pytest.raises(ValueError, match=message):
            ProxySpec.parse(bad)


def test_embed_pool_reuses_known_proxy_rows_bit_identically(tokenizer, tiny_model, chats, monkeypatch):
    """Another selection seed's proxy rows are reused, not recomputed, and give the same embeddings."""
    from infdist_core import pipeline
    from infdist_core.config import SelectionConfig
    from infdist_core.model import proxies

    pool = tokenize_records(tokenizer, chats, 64).samples
    cfg = SelectionConfig.of(pool_size=4, n_landmarks=2, k=2, embedding="grad-last:1+grad-head", embedding_dim=64)
    G = np.eye(2, 8)
    first = pipeline.embed_pool(tiny_model, pool, np.array([0, 1]), G, cfg, tokenizer.pad_token_id)
    fresh = pipeline.embed_pool(tiny_model, pool, np.array([3, 2]), G, cfg.with_(seed=1), tokenizer.pad_token_id)
    calls = []
    real = proxies.compute_proxy
    monkeypatch.setattr(proxies, "compute_proxy", lambda m, s, *a, **k: calls.append(len(s)) or real(m, s, *a, **k))
    known = {first.spec: pipeline.KnownRows(first.vectors.astype(np.float32), first.widths[first.spec], 0.25)}
    reused = pipeline.embed_pool(tiny_model, pool, np.array([3, 2]), G, cfg.with_(seed=1), tokenizer.pad_token_id, known=known)
    assert calls == [], f"known rows were recomputed ({calls})"
    assert np.array_equal(reused.vectors, fresh.vectors) and reused.widths == fresh.widths
    assert reused.seconds_per_sample == 0.25, "the recorded cost, not 0: the choice must not depend on the cache"
    partial = np.full_like(first.vectors, np.nan)
    partial[:2] = first.vectors[:2]
    again = pipeline.embed_pool(tiny_model, pool, np.array([3, 2]), G, cfg.with_(seed=1), tokenizer.pad_token_id,
                                known={first.spec: pipeline.KnownRows(partial, first.widths[first.spec], 0.25)})
    assert sum(calls) == 2 and np.array_equal(again.vectors, fresh.vectors), "only the two unknown rows are computed"


def test_every_registered_proxy_kind_has_a_computation_and_unknown_ones_are_named(tiny_model, tokenizer, chats):
    from infdist_core.model.proxies import COMPUTE, compute_proxy
    from infdist_core.proxy_specs import KINDS

    assert set(COMPUTE) == set(KINDS)
    ts = tokenize_records(tokenizer, chats, 128).samples
    with pytest.raises(ValueError, match="unknown kind 'grad-tail'"):
        compute_proxy(tiny_model, ts, tokenizer.pad_token_id, "grad-last:1+grad-tail")

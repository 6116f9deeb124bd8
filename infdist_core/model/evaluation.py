"""The evaluations lm-evaluation-harness does not cover here: the held-out loss (every row's
mean label-token loss, for paired comparisons) and HumanEval pass@1 (generated code executed in a
separate, isolated Python process without a network, with a timeout: the harness's HumanEval
executes code through ``evaluate``'s code_eval, a metric script fetched from the hub, with no
network sandbox). GSM8K, MMLU
and multiple-choice tasks go through the harness (``harness``). Subsets are seeded."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache

import numpy as np
import torch

from infdist_core.data.seeding import generator
from infdist_core.model.tokenization import IGNORE, TokenizedSample, pad_batch

log = logging.getLogger(__name__)


def seeded_subset(rows: list, n: int | None, seed: int, name: str, split: str = "test") -> list:
    """``n`` rows of ``rows`` in file order, from a seeded permutation (independent of ``n``, so
    subsets nest): its first ``n`` (``split='test'``) or its last ``n`` (``'dev'``, disjoint from
    every test subset of up to ``len(rows) - n`` rows). ``n`` None or 0: every row (test only)."""
    if split not in ("test", "dev"):
        raise ValueError(f"split={split!r}: use test or dev")
    if split == "dev" and (not n or 2 * n > len(rows)):
        raise ValueError(f"a dev split of {n or 'all'} rows needs at least twice as many evaluation rows as "
                         f"held-out rows; {name} has {len(rows)}: lower heldout_rows")
    if split == "test" and (n is None or n >= len(rows)):
        return rows
    perm = torch.randperm(len(rows), generator=generator(seed, "eval-subset", name, len(rows)))
    idx = (perm[:n] if split == "test" else perm[len(rows) - n:]).sort().values
    return [rows[i] for i in idx.tolist()]


@torch.no_grad()
def sample_losses(model, samples: list[TokenizedSample], pad_id: int, batch_size: int = 8) -> np.ndarray:
    """Mean label-token cross-entropy of every sample (its log-perplexity), float64 (n,).

    The LM head runs at the label positions only (``gradients.per_sample_losses`` computes the
    logits of every position, prompt and padding included): same losses, a fraction of the head's
    cost and memory (the head is a fifth of a 135M model's forward FLOPs at 128 tokens)."""
    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))  # batches of similar length pad less
    out = np.zeros(len(samples), np.float64)
    for lo in range(0, len(samples), batch_size):
        idx = order[lo : lo + batch_size]
        batch = {k: v.to(device) for k, v in pad_batch([samples[i] for i in idx], pad_id).items()}
        h = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[:, :-1]
        labels = batch["labels"][:, 1:]
        keep = labels != IGNORE
        tok = torch.nn.functional.cross_entropy(head(h[keep]).float(), labels[keep], reduction="none")
        row = keep.nonzero()[:, 0]
        sums = torch.zeros(len(idx), dtype=torch.float64, device=device).index_add_(0, row, tok.double())
        out[idx] = (sums / keep.sum(1).clamp_min(1)).cpu().numpy()
    return out


def target_loss(model, samples: list[TokenizedSample], pad_id: int, batch_size: int = 8) -> float:
    """Mean over samples of the mean label-token cross-entropy."""
    return float(sample_losses(model, samples, pad_id, batch_size).mean())


@torch.no_grad()
def _generate(model, tok, messages: list[dict], max_new_tokens: int) -> str:
    device = next(model.parameters()).device
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    input_ids = ids["input_ids"].to(device)
    out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True)


def extract_code(text: str) -> str:
    m = re.search(r"```(?:python)?\n(.*?)```", text, re.S)
    return m.group(1) if m else text


@lru_cache(maxsize=1)
def network_sandbox() -> list[str]:
    """``unshare -rn`` (a new, empty network namespace) where this machine allows it, else nothing."""
    exe = shutil.which("unshare")
    if exe and subprocess.run([exe, "-rn", "true"], capture_output=True).returncode == 0:
        return [exe, "-rn"]
    log.warning("unshare -rn is unavailable: HumanEval programs run without a network namespace")
    return []


def run_humaneval_program(program: str, timeout: float) -> bool:
    """Run one test program in a fresh isolated interpreter: ``-I``, near-empty environment,
    a temporary working directory, no network (``network_sandbox``), killed after ``timeout``."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = subprocess.run([*network_sandbox(), sys.executable, "-I", "-c", program], cwd=tmp, timeout=timeout,
                                 capture_output=True,
                                 env={"PATH": os.environ.get("PATH", ""), "no_proxy": "*", "http_proxy": "http://0.0.0.0:1",
                                      "https_proxy": "http://0.0.0.0:1"})
        except subprocess.TimeoutExpired:
            return False
    return res.returncode == 0


def humaneval_pass_at_1(model, tok, problems: list[dict], max_new_tokens: int = 256, timeout: float = 10.0) -> float:
    """Greedy pass@1: the completion plus the problem's tests must exit 0 within ``timeout``."""
    passed = 0
    for p in problems:
        text = _generate(model, tok, [{"role": "user", "content": "Complete the following Python function.\n\n" + p["prompt"]}],
                         max_new_tokens)
        program = f"{p['prompt']}\n{extract_code(text)}\n\n{p['test']}\ncheck({p['entry_point']})\n"
        passed += run_humaneval_program(program, timeout)
    return passed / max(1, len(problems))

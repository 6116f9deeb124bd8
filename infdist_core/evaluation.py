"""Evaluation of a fine-tuned model: held-out loss, multiple-choice log-likelihood accuracy
(lm-evaluation-harness's ``acc`` / ``acc_norm``), GSM8K exact match (greedy, 8-shot), MMLU accuracy
(zero-shot, answer-letter log-likelihood) and HumanEval pass@1 (tests executed in a separate
Python process with a timeout). Subsets are seeded."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from infdist_core.seeding import generator
from infdist_core.tokenization import IGNORE, TokenizedSample, pad_batch

log = logging.getLogger(__name__)


def seeded_subset(rows: list, n: int | None, seed: int, name: str) -> list:
    if n is None or n >= len(rows):
        return rows
    idx = torch.randperm(len(rows), generator=generator(seed, "eval-subset", name, len(rows)))[:n].sort().values
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


def extract_number(text: str) -> str | None:
    m = re.search(r"answer is\s*\$?(-?[\d,]*\.?\d+)", text)
    nums = [m.group(1)] if m else re.findall(r"-?[\d,]*\.?\d+", text)
    if not nums:
        return None
    val = nums[-1].replace(",", "").rstrip(".")
    try:
        f = float(val)
    except ValueError:
        return None
    return str(int(f)) if f == int(f) else str(f)


def gsm8k_exact_match(model, tok, rows: list[dict], exemplars: list[dict], max_new_tokens: int = 192) -> float:
    """Share of questions whose final number matches, with ``exemplars`` as prior chat turns."""
    shots = [m for ex in exemplars for m in ex["messages"]]
    hits = 0
    for r in rows:
        text = _generate(model, tok, shots + [{"role": "user", "content": r["question"]}], max_new_tokens)
        hits += extract_number(text) == r["final"]
    return hits / max(1, len(rows))


@torch.no_grad()
def mmlu_accuracy(model, tok, rows: list[dict]) -> float:
    """Zero-shot: the letter among A-D with the highest next-token log-probability."""
    device = next(model.parameters()).device
    letters = [tok.encode(c, add_special_tokens=False)[0] for c in "ABCD"]
    hits = 0
    for r in rows:
        q = (f"{r['question']}\nA. {r['answer_a']}\nB. {r['answer_b']}\nC. {r['answer_c']}\nD. {r['answer_d']}\n"
             "Answer with the letter of the correct option.")
        enc = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        logits = model(input_ids=enc["input_ids"].to(device)).logits[0, -1]
        hits += "ABCD"[int(torch.argmax(logits[letters]))] == r["correct_answer"]
    return hits / max(1, len(rows))


@dataclass
class ChoiceScores:
    """Per-item results of ``multiple_choice_scores``, each of shape (n_items,)."""

    correct: np.ndarray
    """argmax of the choices' summed log-likelihoods is the answer (``acc``)."""
    correct_norm: np.ndarray
    """argmax of log-likelihood / character length of the choice is the answer (``acc_norm``)."""
    answer_loss: np.ndarray
    """Mean per-token negative log-likelihood of the right choice."""


def choice_context(tok, question: str) -> str:
    """The prompt a choice continues: the question as a user turn, rendered with the chat template
    and its generation prompt (the format the model is fine-tuned on)."""
    return tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)


@torch.no_grad()
def choice_loglikelihoods(model, tok, context: str, choices: tuple[str, ...] | list[str]) -> list[tuple[float, int]]:
    """(summed log-likelihood, token count) of each choice as the continuation of ``context``.

    As lm-evaluation-harness does, the whole string ``context + choice`` is tokenised and the
    continuation is what follows the context's own tokens, so a merge across the boundary is
    scored as the harness scores it."""
    device = next(model.parameters()).device
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    out = []
    for choice in choices:
        whole = tok(context + choice, add_special_tokens=False)["input_ids"]
        n_ctx = len(ctx)
        while n_ctx > 0 and whole[:n_ctx] != ctx[:n_ctx]:
            n_ctx -= 1  # the boundary token merged with the continuation's first characters
        n_ctx = max(1, n_ctx)
        ids = torch.tensor([whole], device=device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        target = ids[0, 1:]
        lp = logp.gather(1, target[:, None])[:, 0][n_ctx - 1:]
        out.append((float(lp.sum()), int(lp.numel())))
    return out


def multiple_choice_scores(model, tok, items: list) -> ChoiceScores:
    """``acc``, ``acc_norm`` and the right answer's loss for ``evalsets.ChoiceItem``s."""
    correct, norm, loss = [], [], []
    for it in items:
        ll = choice_loglikelihoods(model, tok, choice_context(tok, it.question), it.choices)
        sums = np.array([s for s, _ in ll])
        lengths = np.array([float(len(c)) for c in it.choices])
        correct.append(int(np.argmax(sums)) == it.answer)
        norm.append(int(np.argmax(sums / lengths)) == it.answer)
        loss.append(-ll[it.answer][0] / max(1, ll[it.answer][1]))
    return ChoiceScores(np.array(correct, bool), np.array(norm, bool), np.array(loss, np.float64))


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

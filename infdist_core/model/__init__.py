"""The model side, on torch models: loading, tokenisation, per-sample projected gradients, JVP and
the other proxy embeddings, the warm-up, fine-tuning through ``transformers.Trainer``, and the
evaluations (held-out loss, HumanEval, lm-evaluation-harness).

Imports ``infdist_core.maths`` and ``infdist_core.data``, and the settings (``config``,
``proxy_specs``); never ``pipeline`` or ``methods``.
"""

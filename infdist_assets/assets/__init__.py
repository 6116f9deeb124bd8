"""The assets: the pool side (per model), the target side (per model x task), each selection
method's subset, fine-tuned model and eval scores, and the quality benchmark's report; their
checks, the Markdown they show and the ``Report`` they return. None imports another. Each asset's
work is a module-level function of typed inputs (named after the asset) returning its artefact
and ``Report``; the Dagster asset around it loads the inputs through ``infdist_assets.store``,
calls it, saves, reports."""

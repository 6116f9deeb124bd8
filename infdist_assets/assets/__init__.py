"""The assets: the pool side (per model), the target side (per model x task), each selection
method's subset, fine-tuned model and eval scores, and the quality benchmark's report; their
checks and the Markdown they show. None imports another; each loads typed inputs through
``infdist_assets.store``, calls the core, writes, reports."""

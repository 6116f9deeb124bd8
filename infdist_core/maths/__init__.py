"""The maths of Influence Distillation on arrays, no model: projections, preconditioning, the
robust weights, landmark influence and its kernel-ridge propagation, the selection rules, the
baselines' similarity round-robin, landmark cross-validation and the benchmark's statistics.

Imports only ``infdist_core.data`` (seeds, argument checks) besides its own modules.
"""

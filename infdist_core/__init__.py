"""Influence Distillation as a plain library: tensors and files in, tensors and files out.

This package never imports dagster; the orchestration layer lives in ``infdist_assets``.
Module map (paper: Nikdan et al., "Efficient Data Selection at Scale via Influence Distillation"):

- ``hadamard``        fast Walsh-Hadamard transforms (reference, torch, fht-cpu, CUDA)
- ``projection``      randomized Hadamard and Rademacher projectors (Sec. 4.2, App. I)
- ``preconditioning`` gradient normalisation and Adam preconditioning (Eq. 8-9, App. C)
- ``weights``         robust weights, first and second order (Eq. 7, App. G)
- ``landmarks``       kernel ridge propagation from landmarks (Sec. 4.3, Eq. 10-11)
- ``selection``       per-target round-robin selection (Sec. 3.3)
- ``recovery``        landmark cross-validation of proxy embeddings
"""

__version__ = "0.1.0"

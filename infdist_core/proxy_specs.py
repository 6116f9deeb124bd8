"""The grammar of proxy embedding specs (``infdist_core.proxies``), without torch: a spec is one
or more parts joined by ``+``, each ``kind[:n[:n]]`` with non-negative integer parameters.
``SelectionConfig`` validates its ``embedding`` and candidates here, before any work starts."""

from __future__ import annotations

KINDS = {
    # kind: (most parameters, what they are)
    "jvp-hidden": (2, "blocks, tangents"),
    "jvp-logits": (2, "blocks, tangents"),
    "jvp-hidden-last": (2, "blocks, tangents"),
    "jvp-hidden-concat": (2, "blocks, tangents"),
    "rds": (0, ""),
    "grad-last": (1, "blocks"),
    "grad-head": (2, "blocks of the truncated model, vocabulary buckets"),
    "grad-head-sketch": (1, "sketch width"),
}


def parse_spec(spec: str) -> tuple[str, list[int]]:
    """``"kind:a:b"`` -> ``("kind", [a, b])`` (one part, no validation)."""
    kind, *nums = spec.split(":")
    return kind, [int(x) for x in nums]


def validate_spec(spec: str) -> None:
    """Raise ``ValueError`` naming the part of ``spec`` that is not a known kind with valid parameters."""
    if not spec:
        raise ValueError("empty proxy embedding spec")
    for part in spec.split("+"):
        kind, *nums = part.split(":")
        if kind not in KINDS:
            raise ValueError(f"proxy embedding {spec!r}: unknown kind {kind!r} in {part!r}; known kinds: {sorted(KINDS)}")
        most, what = KINDS[kind]
        if len(nums) > most:
            raise ValueError(f"proxy embedding {spec!r}: {kind} takes at most {most} parameter(s) ({what or 'none'}), "
                             f"got {part!r}")
        for j, x in enumerate(nums):
            zero_ok = kind == "grad-head" and j == 1  # 0 buckets: the exact head gradient
            if not x.isdigit() or (int(x) == 0 and not zero_ok):
                raise ValueError(f"proxy embedding {spec!r}: parameters of {part!r} must be positive integers "
                                 f"({what}), got {x!r}")

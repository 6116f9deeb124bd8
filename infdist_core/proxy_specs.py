"""The registry of proxy embedding kinds and the grammar of their specs, without torch.

A spec is one or more parts joined by ``+``, each ``kind[:n[:n]]`` with non-negative integer
parameters. ``KINDS`` says, per kind, how many parameters it takes, whether it estimates a block
of the true gradient (so that a part can be compared with the same part of a target's: the
direct term) and when its rows are computed from each sample alone. How a kind is computed lives
beside it in ``infdist_core.proxies.COMPUTE`` (keyed by the same names; a test checks they agree),
so adding a proxy means one entry here and one function there. ``SelectionConfig`` validates its
``embedding`` and candidates here, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProxyKind:
    params: int  # most parameters after the kind
    what: str  # what they are, for error messages
    gradient: bool = False  # estimates inner products of a true gradient block (direct term possible)
    per_sample: Callable[[list[int], int], bool] = lambda nums, grad_batch: False
    """(parameters, grad_batch) -> is a row computed from its sample alone (no padding with others)?"""
    zero_ok: tuple[int, ...] = ()  # parameter positions where 0 is allowed


KINDS: dict[str, ProxyKind] = {
    "jvp-hidden": ProxyKind(2, "blocks, tangents"),
    "jvp-logits": ProxyKind(2, "blocks, tangents"),
    "jvp-hidden-last": ProxyKind(2, "blocks, tangents"),
    "jvp-hidden-concat": ProxyKind(2, "blocks, tangents"),
    "rds": ProxyKind(0, ""),
    "grad-last": ProxyKind(1, "blocks", gradient=True, per_sample=lambda nums, grad_batch: grad_batch == 1),
    "grad-head": ProxyKind(2, "blocks of the truncated model, vocabulary buckets", gradient=True,
                           per_sample=lambda nums, grad_batch: not nums, zero_ok=(1,)),  # 0 buckets: exact head gradient
    "grad-head-sketch": ProxyKind(1, "sketch width", gradient=True),
}


def parse_spec(spec: str) -> tuple[str, list[int]]:
    """``"kind:a:b"`` -> ``("kind", [a, b])`` (one part, no validation)."""
    kind, *nums = spec.split(":")
    return kind, [int(x) for x in nums]


def parts(spec: str) -> list[tuple[str, list[int]]]:
    """The ``+`` parts of ``spec``, parsed, in order."""
    return [parse_spec(p) for p in spec.split("+")]


def gradient_parts(spec: str) -> tuple[bool, ...]:
    """For each ``+`` part of ``spec``: does it estimate a gradient block (so it has a direct similarity)?"""
    return tuple(KINDS[kind].gradient for kind, _ in parts(spec))


def per_sample(spec: str, grad_batch: int = 1) -> bool:
    """Is every row of ``spec`` computed from its sample alone (one sample per pass), so that a row
    does not depend on which other samples were embedded with it? (Batched kinds pad, and so does
    ``grad-last`` when its earlier blocks run in batches of ``grad_batch`` > 1.)"""
    return all(KINDS[kind].per_sample(nums, grad_batch) for kind, nums in parts(spec))


def validate_spec(spec: str) -> None:
    """Raise ``ValueError`` naming the part of ``spec`` that is not a known kind with valid parameters."""
    if not spec:
        raise ValueError("empty proxy embedding spec")
    for part in spec.split("+"):
        kind, *nums = part.split(":")
        if kind not in KINDS:
            raise ValueError(f"proxy embedding {spec!r}: unknown kind {kind!r} in {part!r}; known kinds: {sorted(KINDS)}")
        k = KINDS[kind]
        if len(nums) > k.params:
            raise ValueError(f"proxy embedding {spec!r}: {kind} takes at most {k.params} parameter(s) ({k.what or 'none'}), "
                             f"got {part!r}")
        for j, x in enumerate(nums):
            if not x.isdigit() or (int(x) == 0 and j not in k.zero_ok):
                raise ValueError(f"proxy embedding {spec!r}: parameters of {part!r} must be positive integers "
                                 f"({k.what}), got {x!r}")

"""The registry of proxy embedding kinds and the grammar of their specs, without torch.

A spec is one or more parts joined by ``+``, each ``kind[:n[:n]]`` with non-negative integer
parameters. ``KINDS`` says, per kind, how many parameters it takes, whether it estimates a block
of the true gradient (so that a part can be compared with the same part of a target's: the
direct term) and when its rows are computed from each sample alone. How a kind is computed lives
beside it in ``infdist_core.model.proxies.COMPUTE`` (keyed by the same names; a test checks they agree),
so adding a proxy means one entry here and one function there. A spec string is parsed once, at
the door, into a ``ProxySpec`` (``ProxySpec.parse``: the one parser), whose parts and properties
every caller reads; ``SelectionConfig`` validates its ``embedding`` and candidates so, before any
work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
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


@dataclass(frozen=True)
class ProxyPart:
    """One ``+`` part of a spec: a registered kind and its integer parameters."""

    kind: str
    params: tuple[int, ...]

    @property
    def gradient(self) -> bool:
        """Does this part estimate a block of the true gradient (so it has a direct similarity)?"""
        return KINDS[self.kind].gradient


@dataclass(frozen=True)
class ProxySpec:
    """A proxy embedding spec, parsed and validated once (``ProxySpec.parse``): its parts in order
    and what follows from them. ``str()`` gives the spec back."""

    text: str
    parts: tuple[ProxyPart, ...]

    @classmethod
    def parse(cls, spec: "str | ProxySpec") -> "ProxySpec":
        """The one parser of the grammar; raises ``ValueError`` naming the part of ``spec`` that is
        not a known kind with valid parameters."""
        return spec if isinstance(spec, ProxySpec) else _parse(spec)

    def __str__(self) -> str:
        return self.text

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(p.kind for p in self.parts)

    @property
    def gradient_parts(self) -> tuple[bool, ...]:
        """For each part: does it estimate a gradient block (the direct term's parts)?"""
        return tuple(p.gradient for p in self.parts)

    def per_sample(self, grad_batch: int = 1) -> bool:
        """Is every row computed from its sample alone (one sample per pass), so that a row does not
        depend on which other samples were embedded with it? (Batched kinds pad, and so does
        ``grad-last`` when its earlier blocks run in batches of ``grad_batch`` > 1.)"""
        return all(KINDS[p.kind].per_sample(list(p.params), grad_batch) for p in self.parts)

    @property
    def partial_backward(self) -> bool:
        """Is every row one forward and one partial backward (``grad-last``, an exact ``grad-head``,
        or the two fused), so that a pass computing the full gradient from the same forward can
        compute it too (``proxies.gradients_with_proxy``)?"""
        if self.fused:
            return len(self.parts) == 2
        return len(self.parts) == 1 and (self.kinds[0] == "grad-last"
                                         or (self.kinds[0] == "grad-head" and not self.parts[0].params))

    @property
    def fused(self) -> tuple[int, int] | None:
        """The positions of a ``grad-last`` part and an exact ``grad-head`` part, which one forward
        and one partial backward compute together (``proxies.partial_gradients``); else None."""
        if self.kinds.count("grad-last") != 1 or self.kinds.count("grad-head") != 1:
            return None
        i, j = self.kinds.index("grad-last"), self.kinds.index("grad-head")
        return (i, j) if not self.parts[j].params else None


@lru_cache(maxsize=256)
def _parse(spec: str) -> ProxySpec:
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"proxy embedding spec must be a non-empty string, got {spec!r}")
    out = []
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
        out.append(ProxyPart(kind, tuple(int(x) for x in nums)))
    return ProxySpec(spec, tuple(out))

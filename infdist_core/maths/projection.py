"""Random projections of gradients and embeddings (Section 4.2, Appendix I).

``HadamardProjector``: optional pre-masking (or zero padding) to ``N = 2**k`` coordinates,
random signs, the two-sided transform ``H_m X H_n`` of the row-major ``(m, n)`` reshaping
(equal to the 1-D Walsh-Hadamard transform of length N), then a fixed random subset of
``out_dim`` entries, scaled by ``1/sqrt(out_dim)`` (and ``sqrt(in_dim/N)`` after masking) so
that ``E[<Px, Py>] = <x, y>`` over the signs.

The grid is as wide as the CUDA kernel allows (``n = 2**min(k, 15)``, ``m = N / n``), not the
paper's near-square ``2**ceil(k/2) x 2**floor(k/2)``: ``H_m (x) H_n = H_N`` for any split, so the
projection is the same (bit-identical here, measured), and the column side below costs
(touched columns) x m, 2.2x less time at N = 2**27 than the square grid.

The output subset is a uniform random subset of ``out_dim`` of the N entries, as in Appendix I
(an earlier version drew random rows x random columns: an r x c grid, whose variance grows
several-fold when the gradient's energy sits in a few columns; ``tests/core/maths/test_projection.py``
measures both). The row transforms ``X H_n`` run over the whole grid (cache-resident, SIMD);
the column transforms ``H_m`` run only over the distinct columns the subset touches, gathered
in chunks of at most ``COLUMN_CHUNK`` values, so the workspace never doubles. Measured in
``benchmarks/bench_core.py``.

Pre-masking (in_dim above a power of two, or above ``max_dim``) keeps N coordinates: a cyclic
window at a random offset when at most a quarter would be dropped (each coordinate is kept with
probability N/in_dim, and the kept runs are copied without a gather), else a random subset of
blocks of consecutive coordinates (``_random_block_runs``): single coordinates while the input
has at most ``MASK_BLOCKS`` of them, the smallest power-of-two blocks that keep the permutation at
``MASK_BLOCKS`` units above that, so that the paper's 7B setting (2**30 of Llama-2-7B's 1.44e9
``down_proj`` entries) permutes 2.8M blocks of 512, not 1.44e9 coordinates (11.5 GB). Every
coordinate is kept with the same probability either way; the mask is held as runs.

Signs, mask and subset come from ``seed`` alone (``infdist_core.data.seeding``), so two processes,
or the CPU and CUDA paths, produce the same projection.

``RademacherProjector``: a dense ``+-1/sqrt(out_dim)`` matrix, generated in seeded row blocks
(held in memory when small, regenerated per call otherwise). Used for JVP embeddings and as the
LESS/TRAK-style baseline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from infdist_core.data.seeding import generator
from infdist_core.maths import hadamard

MAX_HADAMARD_DIM = 2**30  # App. I: one billion coordinates after pre-masking
MASK_IF_WITHIN = 0.25  # mask down when in_dim exceeds a power of two by at most this fraction
ROW_LOG2_CAP = hadamard.CUDA_MAX_LOG2  # rows of at most 2**15 so that CUDA and CPU split alike
MASK_BLOCKS = 2**22  # most units the random pre-mask permutes (coordinates, or blocks of them)
COLUMN_CHUNK = 2**22  # values per gathered chunk of columns for the H_m side
PERMUTE_UP_TO = 2**24  # output subsets of larger transforms are drawn by rejection, not randperm(N)


def _as_float_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not torch.is_floating_point(x):
        raise TypeError(f"projection input must be floating point, got {x.dtype}")
    return x


@dataclass(frozen=True)
class HadamardLayout:
    """How a length-``in_dim`` vector is mapped onto the ``m x n`` Hadamard grid."""

    in_dim: int
    out_dim: int
    n_hadamard: int  # N = m * n, a power of two
    rows: int  # m
    cols: int  # n
    masked: bool  # True: keep a random subset of N coordinates; False: zero-pad to N

    @classmethod
    def plan(cls, in_dim: int, out_dim: int, max_dim: int = MAX_HADAMARD_DIM) -> "HadamardLayout":
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"in_dim and out_dim must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        if out_dim > in_dim:
            raise ValueError(f"out_dim={out_dim} exceeds in_dim={in_dim}: a projection cannot add dimensions")
        if not hadamard.is_power_of_two(max_dim):
            raise ValueError(f"max_dim must be a power of two, got {max_dim}")
        lo = 1 << (in_dim.bit_length() - 1)
        if in_dim > max_dim:
            n_had, masked = max_dim, True
        elif lo == in_dim:
            n_had, masked = in_dim, False
        elif in_dim - lo <= MASK_IF_WITHIN * lo and lo >= out_dim:
            n_had, masked = lo, True
        else:
            n_had, masked = 2 * lo, False
        k = n_had.bit_length() - 1
        cols = 1 << min(k, ROW_LOG2_CAP)  # rows as long as the CUDA kernel allows: few rows, cheap H_m side
        return cls(in_dim, out_dim, n_had, n_had // cols, cols, masked)


class HadamardProjector:
    """Seeded randomized-Hadamard projection ``[..., in_dim] -> [..., out_dim]`` (float32).

    Parameters
    ----------
    in_dim, out_dim : int
        Input and output dimensions, ``out_dim <= in_dim``.
    seed : int
        Determines the mask, signs and output subset.
    device : str or torch.device, optional
        Where the transform runs; inputs are moved there. Default: CPU.
    backend : str, optional
        FWHT backend (``hadamard.available_backends()``); default: fastest for the device.
    max_dim : int
        Largest transform length; longer inputs are pre-masked to it (App. I).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        seed: int = 0,
        device: str | torch.device | None = None,
        backend: str | None = None,
        max_dim: int = MAX_HADAMARD_DIM,
    ) -> None:
        self.layout = HadamardLayout.plan(int(in_dim), int(out_dim), max_dim)
        self.in_dim, self.out_dim, self.seed = int(in_dim), int(out_dim), int(seed)
        self.device = torch.device(device or "cpu")
        self.backend = hadamard.pick_backend(self.device, backend)
        lay = self.layout
        g = generator(seed, "hadamard", in_dim, out_dim, lay.n_hadamard)
        self.mask_runs: torch.Tensor | None = None  # kept (start, stop) input ranges, sorted
        scale = 1.0
        if lay.masked:
            if in_dim - lay.n_hadamard <= MASK_IF_WITHIN * lay.n_hadamard:
                # few coordinates dropped: a cyclic window at a random offset keeps every coordinate
                # with probability N/in_dim, like a random subset, and is copied without a gather
                start = int(torch.randint(0, in_dim, (1,), generator=g))
                end = start + lay.n_hadamard
                runs = [(start, end)] if end <= in_dim else [(0, end - in_dim), (start, in_dim)]
                keep_probability = lay.n_hadamard / in_dim
            else:
                runs, keep_probability = _random_block_runs(in_dim, lay.n_hadamard, g)
            self.mask_runs = torch.tensor(runs, dtype=torch.int64).reshape(-1, 2)
            lengths = self.mask_runs[:, 1] - self.mask_runs[:, 0]
            self._run_pos = torch.cumsum(lengths, 0) - lengths  # workspace position of each run
            self.n_kept = int(lengths.sum())
            scale = 1.0 / math.sqrt(keep_probability)
        else:
            self.n_kept = in_dim
        signs = torch.randint(0, 2, (lay.n_hadamard,), generator=g, dtype=torch.int8)
        # signs of the kept coordinates only (padding is zero), with the mask scale folded in
        self.signs = ((1 - 2 * signs[: self.n_kept].to(torch.float32)) * scale).to(self.device)
        flat = _distinct_draw(lay.n_hadamard, out_dim, g)
        self.output_flat_index = flat
        cols, rows = flat % lay.cols, flat // lay.cols
        self._columns, slot = torch.unique(cols, return_inverse=True)  # distinct columns, sorted
        # per chunk of distinct columns: (first, last) slot, and for its outputs (position, flat index
        # into the chunk's transposed (columns, m) block)
        per = max(1, COLUMN_CHUNK // lay.rows)
        self._chunks = []
        for a in range(0, len(self._columns), per):
            b = min(a + per, len(self._columns))
            at = torch.nonzero((slot >= a) & (slot < b)).flatten()
            self._chunks.append((a, b, at.to(self.device), ((slot[at] - a) * lay.rows + rows[at]).to(self.device)))
        self._columns = self._columns.to(self.device)
        self._out_scale = 1.0 / math.sqrt(out_dim)
        self._buffer: torch.Tensor | None = None
        self._part_masks: dict[tuple[int, int], tuple] = {}
        self._premult_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def _workspace(self) -> torch.Tensor:
        if self._buffer is None:
            self._buffer = torch.zeros(self.layout.n_hadamard, dtype=torch.float32, device=self.device)
        return self._buffer

    def _transform_and_pick(self, buf: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        grid = buf.view(lay.rows, lay.cols)
        transform = hadamard.BACKENDS[self.backend]
        transform(grid)  # X <- X H_n
        out = buf.new_empty(self.out_dim)
        for a, b, at, where in self._chunks:  # H_m over the columns the subset touches
            block = grid.T.index_select(0, self._columns[a:b])  # (columns, m), contiguous
            transform(block)
            out[at] = block.view(-1).index_select(0, where)
        return out.mul_(self._out_scale)

    def _load(self, parts: list[torch.Tensor], signs: torch.Tensor) -> torch.Tensor:
        """Signed copy of the concatenated ``parts`` in the workspace (masked or zero-padded): one pass.

        With pre-masking, each part contributes the contiguous stretch of kept coordinates it holds.
        """
        buf = self._workspace()
        sizes = [p.numel() for p in parts]
        if sum(sizes) != self.in_dim:
            raise ValueError(f"parts hold {sum(sizes)} values, the projector expects in_dim={self.in_dim}")
        off = 0
        for part, size in zip(parts, sizes):
            flat = part.reshape(-1).to(buf.dtype)
            if self.mask_runs is None:
                torch.mul(flat, signs[off : off + size], out=buf[off : off + size])
            else:
                a, b, local, runs = self._part_mask(off, size)
                if runs is not None:  # a few contiguous runs (window mask): fused copy-and-sign
                    for lo, hi, pos in runs:
                        torch.mul(flat[lo:hi], signs[pos : pos + hi - lo], out=buf[pos : pos + hi - lo])
                elif b > a:
                    local = local if local is not None else self._local_index(off, size)[2]
                    torch.index_select(flat, 0, local.to(flat.device), out=buf[a:b])
                    buf[a:b].mul_(signs[a:b])
            off += size
        buf[self.n_kept if self.mask_runs is not None else off :].zero_()  # last call's transform
        return buf

    def _project_one(self, v: torch.Tensor) -> torch.Tensor:
        return self._transform_and_pick(self._load([v], self.signs))

    def project_parts(self, parts: list[torch.Tensor], premultiplier: torch.Tensor | None = None) -> torch.Tensor:
        """Project the concatenation of ``parts`` (times ``premultiplier``) without building it.

        Each part is written once, signed, straight into the workspace; this replaces the copy a
        caller would need anyway to flatten per-parameter gradients (``gradients.py``).
        ``premultiplier`` (shape (in_dim,), e.g. the Adam scale ``a``) is folded into the signs.
        """
        return self.project_parts_and_norm(parts, premultiplier)[0]

    def project_parts_and_norm(self, parts: list[torch.Tensor], premultiplier: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, float]:
        """``project_parts`` and the norm of the (premultiplied) input over the kept coordinates,
        rescaled like the projection (exact without masking, unbiased for its square with it)."""
        signs = self.signs if premultiplier is None else self._signed_premultiplier(premultiplier)
        buf = self._load(parts, signs)
        norm = float(torch.linalg.vector_norm(buf))
        return self._transform_and_pick(buf), norm

    def _local_index(self, off: int, size: int) -> tuple[int, int, torch.Tensor, torch.Tensor]:
        """Workspace span [a, b) of the kept coordinates in ``[off, off + size)``, their indices
        within the part (int32), and the clipped runs as an (R, 3) tensor of (lo, hi, position)."""
        runs = self.mask_runs
        i0 = int(torch.searchsorted(runs[:, 1].contiguous(), off, right=True))
        i1 = int(torch.searchsorted(runs[:, 0].contiguous(), off + size))
        lo = runs[i0:i1, 0].clamp(min=off)
        hi = runs[i0:i1, 1].clamp(max=off + size)
        pos = self._run_pos[i0:i1] + (lo - runs[i0:i1, 0])
        lengths = hi - lo
        a = int(pos[0]) if len(pos) else 0
        b = a + int(lengths.sum())
        starts = torch.repeat_interleave(lo - off - (pos - a), lengths)
        local = (starts + torch.arange(b - a)).to(torch.int32)
        return a, b, local, torch.stack([lo - off, hi - off, pos], 1)

    def _part_mask(self, off: int, size: int):
        """``_local_index`` of a part, cached: ``(a, b, local or None, runs or None)``. The runs when
        there are few (a window mask: a fused copy), the local indices when they are small enough
        to keep (else None: rebuilt per call, so that a 2**30 mask never holds 4 GB of indices)."""
        cache = self._part_masks
        if (off, size) not in cache:
            a, b, local, runs = self._local_index(off, size)
            few = [tuple(int(v) for v in r) for r in runs.tolist()] if len(runs) <= 8 else None
            cache[(off, size)] = (a, b, local if few is None and b - a <= PERMUTE_UP_TO else None, few)
        return cache[(off, size)]

    def kept_coordinates(self) -> torch.Tensor | None:
        """Input coordinates kept by the pre-mask, in workspace order (None: no mask). For tests
        and small inputs: it materialises one index per kept coordinate."""
        return None if self.mask_runs is None else self._local_index(0, self.in_dim)[2].to(torch.int64)

    def _signed_premultiplier(self, premultiplier: torch.Tensor) -> torch.Tensor:
        """``signs * premultiplier`` over the kept coordinates, computed once per premultiplier."""
        cached = self._premult_cache
        if cached is None or cached[0] is not premultiplier:
            pm = premultiplier.to(self.signs.device, torch.float32)
            self._premult_cache = (premultiplier, self._load([pm], self.signs)[: self.n_kept].clone())
        return self._premult_cache[1]

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = _as_float_tensor(x)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected last dimension {self.in_dim}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.in_dim).to(self.device, torch.float32)
        out = torch.stack([self._project_one(v) for v in flat]) if flat.shape[0] else flat.new_zeros(0, self.out_dim)
        return out.reshape(*x.shape[:-1], self.out_dim)


def _distinct_draw(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """``k`` distinct integers of ``[0, n)``, uniformly (every k-subset equally likely), int64.

    ``randperm`` up to ``PERMUTE_UP_TO``; above it (a 2**30 transform would need an 8 GB
    permutation) draws with replacement and keeps first occurrences until ``k`` are distinct,
    which is the same distribution and costs O(k) memory.
    """
    if n <= PERMUTE_UP_TO:
        return torch.randperm(n, generator=g)[:k]
    kept: list[int] = []
    seen: set[int] = set()
    while len(kept) < k:
        for v in torch.randint(0, n, (2 * (k - len(kept)),), generator=g).tolist():
            if v not in seen:
                seen.add(v)
                kept.append(v)
                if len(kept) == k:
                    break
    return torch.tensor(kept, dtype=torch.int64)


def _random_block_runs(in_dim: int, keep: int, g: torch.Generator) -> tuple[list[tuple[int, int]], float]:
    """A random subset of at most ``keep`` of ``in_dim`` coordinates, as sorted (start, stop) runs,
    and the probability with which each coordinate is kept. Whole blocks of ``B`` consecutive
    coordinates are drawn: ``B = 1`` while ``in_dim <= MASK_BLOCKS`` (a plain random subset),
    the smallest power of two that keeps the permutation at ``MASK_BLOCKS`` above it."""
    block = 1
    while in_dim > block * MASK_BLOCKS:
        block *= 2
    n_blocks = -(-in_dim // block)
    kept_blocks = keep // block
    chosen = torch.randperm(n_blocks, generator=g)[:kept_blocks].sort().values.tolist()
    runs: list[list[int]] = []
    for c in chosen:  # merge adjacent blocks into one run
        start, stop = c * block, min((c + 1) * block, in_dim)
        if runs and runs[-1][1] == start:
            runs[-1][1] = stop
        else:
            runs.append([start, stop])
    return [tuple(r) for r in runs], kept_blocks / n_blocks


def hadamard_project_reference(proj: HadamardProjector, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Oracle for ``proj``: the same signs, mask and subset through a dense ``H_N`` (small N)."""
    import scipy.linalg

    x = _as_float_tensor(x).to(torch.float64).reshape(-1, proj.in_dim)
    lay = proj.layout
    H = torch.from_numpy(scipy.linalg.hadamard(lay.n_hadamard).astype(np.float64))
    full = torch.zeros(x.shape[0], lay.n_hadamard, dtype=torch.float64)
    kept_index = proj.kept_coordinates()
    kept = x[:, kept_index] if kept_index is not None else x
    full[:, : kept.shape[1]] = kept * proj.signs.cpu().to(torch.float64)
    y = full @ H
    return (y[:, proj.output_flat_index] / math.sqrt(proj.out_dim)).to(torch.float32)


class RademacherProjector:
    """Seeded dense ``+-1/sqrt(out_dim)`` projection ``[..., in_dim] -> [..., out_dim]`` (float32)."""

    BLOCK_ROWS = 4096
    CACHE_LIMIT = 2**26  # elements held in memory; larger matrices are regenerated per call

    def __init__(self, in_dim: int, out_dim: int, seed: int = 0, device: str | torch.device | None = None) -> None:
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"in_dim and out_dim must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.in_dim, self.out_dim, self.seed = int(in_dim), int(out_dim), int(seed)
        self.device = torch.device(device or "cpu")
        self._matrix = self._full_matrix() if in_dim * out_dim <= self.CACHE_LIMIT else None

    def _block(self, i: int) -> torch.Tensor:
        lo = i * self.BLOCK_ROWS
        rows = min(self.BLOCK_ROWS, self.in_dim - lo)
        g = generator(self.seed, "rademacher", self.in_dim, self.out_dim, i)
        bits = torch.randint(0, 2, (rows, self.out_dim), generator=g, dtype=torch.int8)
        return ((1 - 2 * bits.to(torch.float32)) / math.sqrt(self.out_dim)).to(self.device)

    def _n_blocks(self) -> int:
        return math.ceil(self.in_dim / self.BLOCK_ROWS)

    def _full_matrix(self) -> torch.Tensor:
        return torch.cat([self._block(i) for i in range(self._n_blocks())])

    def matrix(self) -> torch.Tensor:
        """The dense ``[in_dim, out_dim]`` matrix (for tests and small sizes)."""
        return self._matrix if self._matrix is not None else self._full_matrix()

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = _as_float_tensor(x)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected last dimension {self.in_dim}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.in_dim).to(self.device, torch.float32)
        if self._matrix is not None:
            out = flat @ self._matrix
        else:
            out = flat.new_zeros(flat.shape[0], self.out_dim)
            for i in range(self._n_blocks()):
                lo = i * self.BLOCK_ROWS
                out += flat[:, lo : lo + self.BLOCK_ROWS] @ self._block(i)
        return out.reshape(*x.shape[:-1], self.out_dim)

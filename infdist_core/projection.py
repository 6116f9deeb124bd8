"""Random projections of gradients and embeddings (Section 4.2, Appendix I).

``HadamardProjector``: optional pre-masking (or zero padding) to ``N = 2**k`` coordinates,
random signs, the two-sided transform ``H_m X H_n`` of the row-major ``(m, n)`` reshaping
(equal to the 1-D Walsh-Hadamard transform of length N), then a fixed random subset of
``out_dim`` entries, scaled by ``1/sqrt(out_dim)`` (and ``sqrt(in_dim/N)`` after masking) so
that ``E[<Px, Py>] = <x, y>`` over the signs.

The output subset is drawn as random rows R x random columns C of the ``m x n`` result, and
then ``out_dim`` of those ``|R||C|`` entries. Any fixed subset preserves inner products in
expectation; this one lets us apply the row transforms ``X H_n`` to every row (cache-resident,
SIMD) and then only the ``|R|`` needed rows of ``H_m`` as a small GEMM, instead of a full
second transform over all of memory. Measured in ``benchmarks/bench_core.py``.

Pre-masking (in_dim above a power of two, or above ``max_dim``) keeps N coordinates: a cyclic
window at a random offset when at most a quarter would be dropped (each coordinate is kept with
probability N/in_dim, and the kept runs are copied without a gather), else a random subset.

Signs, mask and subset come from ``seed`` alone (``infdist_core.seeding``), so two processes,
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

from infdist_core import hadamard
from infdist_core.seeding import generator

MAX_HADAMARD_DIM = 2**30  # App. I: one billion coordinates after pre-masking
MASK_IF_WITHIN = 0.25  # mask down when in_dim exceeds a power of two by at most this fraction
ROW_LOG2_CAP = hadamard.CUDA_MAX_LOG2  # rows of at most 2**15 so that CUDA and CPU split alike


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
        col_log2 = min(k // 2, ROW_LOG2_CAP)
        cols = 1 << col_log2
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
        self.mask_index = None
        scale = 1.0
        if lay.masked:
            if in_dim - lay.n_hadamard <= MASK_IF_WITHIN * lay.n_hadamard:
                # few coordinates dropped: a cyclic window at a random offset keeps every coordinate
                # with probability N/in_dim, like a random subset, and is copied without a gather
                start = int(torch.randint(0, in_dim, (1,), generator=g))
                self.mask_index = ((torch.arange(lay.n_hadamard) + start) % in_dim).sort().values
            else:
                self.mask_index = torch.randperm(in_dim, generator=g)[: lay.n_hadamard].sort().values
            scale = math.sqrt(in_dim / lay.n_hadamard)
        signs = torch.randint(0, 2, (lay.n_hadamard,), generator=g, dtype=torch.int8)
        # signs of the kept coordinates only (padding is zero), with the mask scale folded in
        n_real = lay.n_hadamard if lay.masked else in_dim
        self.signs = ((1 - 2 * signs[:n_real].to(torch.float32)) * scale).to(self.device)
        c = min(lay.cols, max(1, math.ceil(math.sqrt(out_dim))))
        r = math.ceil(out_dim / c)
        if r > lay.rows:
            r, c = lay.rows, math.ceil(out_dim / lay.rows)
        self.row_index = torch.randperm(lay.rows, generator=g)[:r].sort().values
        self.col_index = torch.randperm(lay.cols, generator=g)[:c].sort().values
        self.pick = torch.randperm(r * c, generator=g)[:out_dim]
        self._h_rows = hadamard.hadamard_rows(self.row_index, lay.rows).to(self.device)
        self._out_scale = 1.0 / math.sqrt(out_dim)
        self._buffer: torch.Tensor | None = None
        self._mask_runs: dict[tuple[int, int], tuple] = {}
        self._premult_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.last_input_norm = float("nan")

    @property
    def output_flat_index(self) -> torch.Tensor:
        """Indices, into the flattened length-N transform, of the ``out_dim`` outputs."""
        rr, cc = torch.meshgrid(self.row_index, self.col_index, indexing="ij")
        return (rr * self.layout.cols + cc).reshape(-1)[self.pick]

    def _workspace(self) -> torch.Tensor:
        if self._buffer is None:
            self._buffer = torch.zeros(self.layout.n_hadamard, dtype=torch.float32, device=self.device)
        return self._buffer

    def _transform_and_pick(self, buf: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        grid = buf.view(lay.rows, lay.cols)
        hadamard.BACKENDS[self.backend](grid)  # X <- X H_n
        picked = grid.index_select(1, self.col_index.to(buf.device))  # (m, |C|)
        out = (self._h_rows @ picked).reshape(-1)  # rows R of H_m X H_n, columns C
        return out.index_select(0, self.pick.to(out.device)).mul_(self._out_scale)

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
            if self.mask_index is None:
                torch.mul(flat, signs[off : off + size], out=buf[off : off + size])
            else:
                a, b, local, runs = self._mask_run(off, size)
                if runs is not None:  # a few contiguous runs (window mask): fused copy-and-sign
                    for lo, hi, pos in runs:
                        torch.mul(flat[lo:hi], signs[pos : pos + hi - lo], out=buf[pos : pos + hi - lo])
                else:
                    torch.index_select(flat, 0, local.to(flat.device), out=buf[a:b])
                    buf[a:b].mul_(signs[a:b])
            off += size
        buf[off if self.mask_index is None else self.layout.n_hadamard :].zero_()  # last call's transform
        return buf

    def _project_one(self, v: torch.Tensor) -> torch.Tensor:
        return self._transform_and_pick(self._load([v], self.signs))

    def project_parts(self, parts: list[torch.Tensor], premultiplier: torch.Tensor | None = None) -> torch.Tensor:
        """Project the concatenation of ``parts`` (times ``premultiplier``) without building it.

        Each part is written once, signed, straight into the workspace; this replaces the copy a
        caller would need anyway to flatten per-parameter gradients (``gradients.py``).
        ``premultiplier`` (shape (in_dim,), e.g. the Adam scale ``a``) is folded into the signs.
        Sets ``last_input_norm``: the norm of the (premultiplied) input over the kept coordinates,
        rescaled like the projection (exact without masking, unbiased for its square with it).
        """
        signs = self.signs if premultiplier is None else self._signed_premultiplier(premultiplier)
        buf = self._load(parts, signs)
        self.last_input_norm = float(torch.linalg.vector_norm(buf))
        return self._transform_and_pick(buf)

    def _mask_run(self, off: int, size: int):
        """Workspace span [a, b) of this part's kept coordinates, their local indices, and their
        contiguous runs ``(lo, hi, workspace position)`` when there are few (else None)."""
        cache = self._mask_runs
        if (off, size) not in cache:
            a = int(torch.searchsorted(self.mask_index, off))
            b = int(torch.searchsorted(self.mask_index, off + size))
            local = (self.mask_index[a:b] - off).to(torch.int32)
            breaks = (torch.nonzero(local[1:] - local[:-1] != 1).flatten() + 1).tolist() if b > a else []
            runs = None
            if len(breaks) < 8:
                edges = [0, *breaks, b - a]
                runs = [(int(local[i]), int(local[j - 1]) + 1, a + i) for i, j in zip(edges, edges[1:]) if j > i]
            cache[(off, size)] = (a, b, local, runs)
        return cache[(off, size)]

    def _signed_premultiplier(self, premultiplier: torch.Tensor) -> torch.Tensor:
        """``signs * premultiplier`` over the kept coordinates, computed once per premultiplier."""
        cached = self._premult_cache
        if cached is None or cached[0] is not premultiplier:
            pm = premultiplier.to(self.signs.device, torch.float32)
            if self.mask_index is not None:
                pm = pm.index_select(0, self.mask_index.to(pm.device))
            self._premult_cache = (premultiplier, self.signs * pm)
        return self._premult_cache[1]

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = _as_float_tensor(x)
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected last dimension {self.in_dim}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.in_dim).to(self.device, torch.float32)
        out = torch.stack([self._project_one(v) for v in flat]) if flat.shape[0] else flat.new_zeros(0, self.out_dim)
        return out.reshape(*x.shape[:-1], self.out_dim)


def hadamard_project_reference(proj: HadamardProjector, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Oracle for ``proj``: the same signs, mask and subset through a dense ``H_N`` (small N)."""
    import scipy.linalg

    x = _as_float_tensor(x).to(torch.float64).reshape(-1, proj.in_dim)
    lay = proj.layout
    H = torch.from_numpy(scipy.linalg.hadamard(lay.n_hadamard).astype(np.float64))
    full = torch.zeros(x.shape[0], lay.n_hadamard, dtype=torch.float64)
    kept = x[:, proj.mask_index] if proj.mask_index is not None else x
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

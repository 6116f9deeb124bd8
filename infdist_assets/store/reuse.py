"""Gradients and proxy rows through the row cache (``row_cache``): each step computes only the
samples the cache lacks at its model's weights, adds what it computed, and reports how many rows
it computed and reused (its metadata in the UI and its lineage row)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infdist_assets.store import storage
from infdist_assets.store.artefacts import WarmupCheckpoint
from infdist_assets.store.row_cache import RowCache, sample_key
from infdist_assets.store.step import Step
from infdist_core import pipeline
from infdist_core.config import SelectionConfig
from infdist_core.maths.preconditioning import AdamMoments
from infdist_core.model import proxies
from infdist_core.model.gradients import GradientMatrix
from infdist_core.model.tokenization import TokenizedSample
from infdist_core.proxy_specs import ProxySpec


@dataclass
class Reuse:
    """Rows a step computed and rows it took from the cache."""

    computed: int = 0
    reused: int = 0
    proxy_computed: int = 0  # proxy rows a gradient pass computed from its own forwards, for a later step

    def __add__(self, other: "Reuse") -> "Reuse":
        return Reuse(self.computed + other.computed, self.reused + other.reused, self.proxy_computed + other.proxy_computed)

    def within_step(self) -> "Reuse":
        """The counts of a step that later takes the proxy rows its own gradient pass computed:
        those rows count as computed, not as reused."""
        return Reuse(self.computed + self.proxy_computed, self.reused - self.proxy_computed)

    def metrics(self) -> dict[str, int]:
        extra = {"proxy_rows_computed": self.proxy_computed} if self.proxy_computed else {}
        return {"rows_computed": self.computed, "rows_reused": self.reused, **extra}


def selection_cache(step: Step, kind: str) -> RowCache:
    """The cache of ``kind`` at the weights influence is measured at (the warm-up checkpoint's
    digest, or the base model folder's fingerprint when there is no warm-up)."""
    ckpt = WarmupCheckpoint.load(step)
    weights = ckpt.sha256 or storage.fingerprint(step.registry.model_path(step.model))
    return RowCache.open(step.store.path, step.model, kind, weights, step.cfg, warmup=bool(ckpt.sha256))


def gradients(step: Step, kind: str, model, samples: list[TokenizedSample], pad_id: int,
              moments: AdamMoments | None = None, progress=None, proxy_kind: str = "") -> tuple[GradientMatrix, Reuse]:
    """``pipeline.compute_gradients`` of ``samples``, taking the rows the cache of ``kind`` has
    (only at ``batch_size`` 1: a batched row depends on its neighbours' padding). ``seconds`` is
    the time of the rows computed now. With ``proxy_kind``, the pass also computes the
    ``pipeline.gradient_pass_proxy`` rows of the samples it differentiates, from its own forwards,
    into the cache of ``proxy_kind``, where the step that embeds them finds them (the same rows,
    bit for bit, at the price of a partial backward)."""
    if step.cfg.data.batch_size != 1 or not samples:
        g = pipeline.compute_gradients(model, samples, step.cfg, pad_id, moments, progress=progress)
        return g, Reuse(len(samples), 0)
    cache = selection_cache(step, kind)
    keys = [sample_key(s) for s in samples]
    found, rows = cache.lookup(keys)
    todo = np.flatnonzero(~found)
    n = len(samples)
    spec = pipeline.gradient_pass_proxy(step.cfg) if proxy_kind else None
    g, proxy_rows = None, 0
    if len(todo) and spec:
        g, pe = pipeline.compute_gradients_and_proxy(model, [samples[i] for i in todo], step.cfg, pad_id, spec, moments,
                                                     progress=progress)
        proxy_rows = _remember_rows(step, f"{proxy_kind}/{spec}", [keys[i] for i in todo], pe)
    elif len(todo):
        g = pipeline.compute_gradients(model, [samples[i] for i in todo], step.cfg, pad_id, moments, progress=progress)
    width = g.vectors.shape[1] if g is not None else storage.column_matrix(rows, "vector").shape[1]
    out = GradientMatrix(np.zeros((n, width), np.float32), np.zeros(n), np.zeros(n, bool), np.zeros(n, np.int64),
                         g.seconds if g is not None else 0.0)
    if found.any():
        out.vectors[found] = storage.column_matrix(rows, "vector")
        out.norms[found] = rows.column("norm").to_numpy()
        out.valid[found] = np.asarray(rows.column("valid").to_pylist(), bool)
        out.n_label_tokens[found] = rows.column("n_label_tokens").to_numpy()
    if g is not None:
        out.vectors[todo], out.norms[todo], out.valid[todo], out.n_label_tokens[todo] = (g.vectors, g.norms, g.valid,
                                                                                         g.n_label_tokens)
        cache.add([keys[i] for i in todo], g.vectors, norm=g.norms, valid=g.valid, n_label_tokens=g.n_label_tokens,
                  seconds=np.full(len(todo), g.seconds / len(todo)))
    return out, Reuse(len(todo), int(found.sum()), proxy_rows)


def _remember_rows(step: Step, kind: str, keys: list[str], pe: proxies.ProxyEmbedding) -> int:
    """Add the rows of ``pe`` (one per key) that the cache of ``kind`` lacks; returns how many."""
    cache = selection_cache(step, kind)
    found, _ = cache.lookup(keys)
    new = np.flatnonzero(~found)
    _add_proxy_rows(cache, [keys[i] for i in new], pe, new)
    return len(new)


def _add_proxy_rows(cache: RowCache, keys: list[str], pe: proxies.ProxyEmbedding, which: np.ndarray) -> None:
    """Store ``pe``'s rows ``which`` under ``keys``, with what ``known_proxy_rows`` reads back
    (the parts' widths and the seconds per sample)."""
    if len(keys):
        cache.add(keys, pe.vectors[which], seconds=np.full(len(keys), pe.seconds_per_sample),
                  widths=[list(pe.widths)] * len(keys))


def _proxy_specs(step: Step) -> list[str]:
    """The embedding specs whose rows are computed from each sample alone (so may be cached)."""
    return [s for s in step.cfg.data.embedding_specs() if ProxySpec.parse(s).per_sample(step.cfg.data.batch_size)]


def known_proxy_rows(step: Step, kind: str, samples: list[TokenizedSample],
                     positions: np.ndarray) -> dict[str, pipeline.KnownRows]:
    """The cached rows of every cacheable embedding spec for ``samples[positions]`` (the rows a
    step embeds; NaN rows elsewhere and where unknown), with the seconds per sample measured when
    they were computed: ``pipeline``'s ``known``."""
    positions = np.asarray(positions, np.int64)
    keys = [sample_key(samples[i]) for i in positions]
    out = {}
    for spec in _proxy_specs(step):
        found, rows = selection_cache(step, f"{kind}/{spec}").lookup(keys)
        if not found.any():
            continue
        vec = storage.column_matrix(rows, "vector")
        arr = np.full((len(samples), vec.shape[1]), np.nan, np.float32)
        arr[positions[found]] = vec
        out[spec] = pipeline.KnownRows(arr, tuple(rows.column("widths")[0].as_py()),
                                       float(np.mean(rows.column("seconds").to_numpy())))
    return out


def remember_proxy_rows(step: Step, kind: str, samples: list[TokenizedSample], positions: np.ndarray,
                        pe: proxies.ProxyEmbedding, known: dict[str, pipeline.KnownRows]) -> Reuse:
    """Add the rows of ``pe`` (``spec``'s embeddings of ``samples[positions]``) that ``known`` did
    not have; returns how many were computed and how many reused."""
    positions = np.asarray(positions, np.int64)
    have = known.get(pe.spec)
    new = np.ones(len(positions), bool) if have is None else np.isnan(have.vectors[positions]).any(1)
    if pe.spec in _proxy_specs(step) and new.any():
        _add_proxy_rows(selection_cache(step, f"{kind}/{pe.spec}"), [sample_key(samples[i]) for i in positions[new]],
                        pe, new)
    return Reuse(int(new.sum()), int((~new).sum()))


def embed(step: Step, kind: str, model, samples: list[TokenizedSample], spec: str, pad_id: int
          ) -> tuple[proxies.ProxyEmbedding, Reuse]:
    """``spec``'s embeddings of ``samples`` (``pipeline.embed_pool_rows``), through the cache."""
    everything = np.arange(len(samples))
    known = known_proxy_rows(step, kind, samples, everything)
    pe = pipeline.embed_pool_rows(model, samples, everything, spec, step.cfg, pad_id, known)
    return pe, remember_proxy_rows(step, kind, samples, everything, pe, known)


class Rows:
    """Where an asset function gets gradient and proxy rows: computed afresh (this class: what a
    test calling the function on small inputs uses), or through a step's row cache
    (``CachedRows``: what the asset uses). Both report what they computed and reused."""

    def __init__(self, cfg: SelectionConfig):
        self.cfg = cfg

    def gradients(self, kind: str, model, samples: list[TokenizedSample], pad_id: int,
                  moments: AdamMoments | None = None, progress=None, proxy_kind: str = "") -> tuple[GradientMatrix, Reuse]:
        """(Without a cache there is nowhere to keep ``proxy_kind``'s rows: they are not computed.)"""
        return pipeline.compute_gradients(model, samples, self.cfg, pad_id, moments, progress=progress), Reuse(len(samples))

    def embed(self, kind: str, model, samples: list[TokenizedSample], spec: str, pad_id: int
              ) -> tuple[proxies.ProxyEmbedding, Reuse]:
        pe = pipeline.embed_pool_rows(model, samples, np.arange(len(samples)), spec, self.cfg, pad_id, {})
        return pe, Reuse(len(samples))


class CachedRows(Rows):
    """``Rows`` through ``step``'s row cache (``gradients`` and ``embed`` above)."""

    def __init__(self, step: Step):
        super().__init__(step.cfg)
        self.step = step

    def gradients(self, kind, model, samples, pad_id, moments=None, progress=None, proxy_kind=""):
        return gradients(self.step, kind, model, samples, pad_id, moments, progress, proxy_kind)

    def embed(self, kind, model, samples, spec, pad_id):
        return embed(self.step, kind, model, samples, spec, pad_id)

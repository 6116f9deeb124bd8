"""Every artefact that crosses an asset boundary: one typed class each, with ``save`` (through
``Step.write``: atomic, with its sidecar) and ``load`` (through ``Step.load``: refused when
missing, made with other settings or stale). Assets hold no decoding of tables or sidecars; the
Parquet schemas are the catalog's (``catalog.py`` reads these files with DuckDB).

    SampledPool          sampled_pool                      tokenised samples
    WarmupCheckpoint     warmup_checkpoint                 model folder, Adam state, the sample it was trained from
    LandmarkGradients    landmark_gradients                exact projected gradients of the landmarks
    PoolEmbeddings       pool_embeddings                   proxy rows of the pool, the chosen spec
    LandmarkCandidates   pool_embeddings/landmark_candidates  every candidate's rows on the landmarks
    KernelFit            krr_coefficients                  the fitted landmark regression (Eq. 10)
    TargetGradients      target_gradients                  projected gradients of the targets
    TargetEmbeddings     target_gradients/target_embeddings the targets' proxy rows (direct term)
    TargetWeights        per_target_weights                per-target scores, robust weights
    Subset               <method>/selected_subset          the picks, in order, with weights
    FineTunedModel       <method>/fine_tuned_model         model folder (content-addressed), training record
    PoolLosses           pool_perplexity                   the base model's per-sample loss (mid-PPL)
    PoolVectors          rds_embeddings, pool_gradients    a row per pool sample (RDS+, Grad)
"""

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_assets.store import storage
from infdist_assets.store.step import Step, changed_inputs
from infdist_core import pipeline
from infdist_core.maths import recovery
from infdist_core.model.tokenization import TokenizedSample


def _matrices(table: pa.Table) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A table of one row per proxy spec (embedding, dim, widths, matrix) -> spec -> (rows, widths)."""
    cols = (table.column(c).to_pylist() for c in ("embedding", "dim", "widths", "matrix"))
    return {spec: (np.asarray(flat, np.float32).reshape(-1, dim), list(widths)) for spec, dim, widths, flat in zip(*cols)}


def _matrices_table(rows: dict[str, np.ndarray], widths: dict[str, tuple[int, ...]], extra: dict | None = None) -> pa.Table:
    specs = sorted(rows)
    return pa.table({"embedding": specs, "dim": [rows[s].shape[1] for s in specs], "widths": [list(widths[s]) for s in specs],
                     **(extra or {}),
                     "matrix": pa.array([np.asarray(rows[s], np.float32).reshape(-1) for s in specs], pa.list_(pa.float32()))})


def check_ids(what: str, got: list[str], want: list[str]) -> None:
    """Rows joined by position must be the same samples: name the first that is not."""
    if list(got) != list(want):
        i = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise dg.Failure(description=f"{what} does not match the current sampled_pool (row {i}: "
                                     f"{got[i] if i < len(got) else 'missing'} vs {want[i] if i < len(want) else 'missing'}): "
                                     f"re-materialise {what}")


@dataclass
class SampledPool:
    samples: list[TokenizedSample]
    excluded: dict[str, str] = field(default_factory=dict)  # id -> why the row was passed over (in the sidecar)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def save(self, step: Step, pool_file: str) -> None:
        step.write(storage.samples_table(self.samples), extra={"excluded": self.excluded, "pool_file": pool_file})

    @classmethod
    def load(cls, step: Step) -> "SampledPool":
        return cls(storage.table_samples(step.load("sampled_pool")))

    @staticmethod
    def load_ids(step: Step) -> list[str]:
        return step.load("sampled_pool").column("sample_id").to_pylist()


@dataclass
class WarmupCheckpoint:
    model_path: str  # the warm-up folder, or the registered base model when there is no warm-up
    adam_state: str | None
    steps: int
    bytes: int = 0
    sha256: str = ""
    final_loss: float | None = None
    trained_on: list[str] = field(default_factory=list)  # the pool sample it was trained from (ids)
    trained_in_run: str = ""  # the run that trained it ('' for the base model: no warm-up)

    TRAINED_ON = "trained_on.parquet"

    def save(self, step: Step, extra: dict | None = None) -> None:
        run = self.trained_in_run or (step.context.run.run_id if self.steps else "")
        step.write(pa.table({"model_path": [self.model_path], "bytes": [self.bytes], "sha256": [self.sha256],
                             "steps": [self.steps], "final_loss": [self.final_loss]}),
                   extra={"model_path": self.model_path, "adam_state": self.adam_state, "steps": self.steps,
                          "bytes": self.bytes, "sha256": self.sha256, "trained_in_run": run, **(extra or {})})
        if self.steps:
            step.write(pa.table({"sample_id": pa.array(self.trained_on, pa.string())}), name=self.TRAINED_ON)

    @classmethod
    def load(cls, step: Step) -> "WarmupCheckpoint":
        meta = step.load_meta("warmup_checkpoint")
        return cls(recorded_checkpoint(meta), meta.get("adam_state"), meta.get("steps", 0), meta.get("bytes", 0),
                   meta.get("sha256", ""), trained_in_run=meta.get("trained_in_run", ""))

    @classmethod
    def previous(cls, step: Step) -> tuple["WarmupCheckpoint", dict] | None:
        """This partition's last trained warm-up and its sidecar, whatever the settings it was made
        with (the caller compares them): None when there is none, it trained nothing, its folder
        is gone or changed, or the base model it started from changed."""
        try:
            meta = storage.read_meta(step.path())
            ids = storage.read_table(step.path(name=cls.TRAINED_ON)).column("sample_id").to_pylist()
            storage.verify_checkpoint(Path(meta["model_path"]), meta["bytes"])
        except (storage.ArtefactMissing, FileNotFoundError, KeyError):
            return None
        if not meta.get("steps") or changed_inputs(meta):
            return None
        final = storage.read_table(step.path()).column("final_loss")[0].as_py()
        return cls(meta["model_path"], meta.get("adam_state"), meta["steps"], meta["bytes"], meta["sha256"], final, ids,
                   meta.get("trained_in_run") or meta.get("run_id", "")), meta


def recorded_checkpoint(meta: dict) -> str:
    """The model folder a sidecar records (``model_path``), refused when it is missing or its size
    changed since it was recorded (``bytes``; a registered base model records none)."""
    if meta.get("bytes"):
        try:
            storage.verify_checkpoint(Path(meta["model_path"]), meta["bytes"])
        except storage.ArtefactMissing as err:
            raise dg.Failure(description=str(err)) from err
    return meta["model_path"]


@dataclass
class LandmarkGradients:
    pool_index: np.ndarray  # (l,) all landmarks, valid or not
    sample_ids: list[str]
    valid: np.ndarray
    vectors: np.ndarray  # (l, d)
    norms: np.ndarray | None = None
    n_label_tokens: np.ndarray | None = None

    def table(self) -> pa.Table:
        return pa.table({"pool_index": self.pool_index, "sample_id": self.sample_ids, "valid": self.valid,
                         "norm": self.norms, "n_label_tokens": self.n_label_tokens,
                         "gradient": storage.vectors_column(self.vectors)})

    @classmethod
    def from_table(cls, t: pa.Table) -> "LandmarkGradients":
        return cls(t.column("pool_index").to_numpy(), t.column("sample_id").to_pylist(),
                   np.asarray(t.column("valid").to_pylist()), storage.column_matrix(t, "gradient"),
                   t.column("norm").to_numpy(), t.column("n_label_tokens").to_numpy())

    def save(self, step: Step) -> None:
        step.write(self.table())

    @classmethod
    def load(cls, step: Step, pool_ids: list[str] | None = None) -> "LandmarkGradients":
        """With ``pool_ids``, refuse landmarks whose sample ids are not the pool's at their indices."""
        lg = cls.from_table(step.load("landmark_gradients"))
        if pool_ids is not None:
            check_ids("landmark_gradients", lg.sample_ids,
                      [pool_ids[i] if i < len(pool_ids) else None for i in lg.pool_index])
        return lg

    @property
    def used(self) -> tuple[np.ndarray, np.ndarray]:
        """The valid landmarks' pool indices and gradients: what the regression is fitted on."""
        return self.pool_index[self.valid], self.vectors[self.valid]


@dataclass
class PoolEmbeddings:
    spec: str
    vectors: np.ndarray  # (n, e)
    sample_ids: list[str]
    widths: tuple[int, ...] = ()
    reason: str = ""

    def save(self, step: Step) -> None:
        step.write(pa.table({"pool_index": np.arange(len(self.vectors)), "sample_id": self.sample_ids,
                             "embedding": storage.vectors_column(self.vectors)}),
                   extra={"embedding": self.spec, "reason": self.reason, "widths": list(self.widths)})

    @classmethod
    def load(cls, step: Step, pool_ids: list[str] | None = None) -> "PoolEmbeddings":
        meta = step.load_meta("pool_embeddings")
        t = step.load("pool_embeddings")
        ids = t.column("sample_id").to_pylist()
        if pool_ids is not None:
            check_ids("pool_embeddings", ids, pool_ids)
        return cls(meta["embedding"], storage.column_matrix(t, "embedding"), ids, tuple(meta.get("widths", [])),
                   meta.get("reason", ""))

    @staticmethod
    def save_candidates(step: Step, rows: list[dict]) -> None:
        """The embedding choice's cross-validation rows (``candidates.parquet``, a catalog view)."""
        if rows:
            seed = step.cfg.selection.seed
            step.write(pa.Table.from_pylist([{"model": step.model, "seed": seed, **r} for r in rows]),
                       name="candidates.parquet")


@dataclass
class LandmarkCandidates:
    """Every candidate proxy's rows on the landmarks (``landmark_candidates.parquet`` beside
    ``pool_embeddings``), for the recovery report and for reuse by other selection seeds."""

    landmarks: list[int]
    rows: dict[str, np.ndarray]  # spec -> (l, e)
    widths: dict[str, tuple[int, ...]]

    NAME = "landmark_candidates.parquet"

    def save(self, step: Step) -> None:
        step.write(_matrices_table(self.rows, self.widths, {"pool_index": [list(self.landmarks)] * len(self.rows)}),
                   name=self.NAME)

    @classmethod
    def load(cls, step: Step, landmarks: np.ndarray) -> "LandmarkCandidates":
        t = step.load("pool_embeddings", name=cls.NAME)
        if t.num_rows and t.column("pool_index")[0].as_py() != landmarks.tolist():
            raise dg.Failure(description="pool_embeddings' landmark candidates do not match landmark_gradients: "
                                         "re-materialise pool_embeddings")
        m = _matrices(t)
        return cls(landmarks.tolist(), {s: r for s, (r, _) in m.items()}, {s: tuple(w) for s, (_, w) in m.items()})


@dataclass
class PoolLosses:
    losses: np.ndarray

    def table(self, offset: int = 0) -> pa.Table:
        return pa.table({"pool_index": offset + np.arange(len(self.losses)), "loss": self.losses})

    @classmethod
    def from_table(cls, t: pa.Table) -> "PoolLosses":
        return cls(t.column("loss").to_numpy())

    def save(self, step: Step) -> None:
        step.write(self.table())

    @classmethod
    def load(cls, step: Step) -> "PoolLosses":
        return cls.from_table(step.load("pool_perplexity"))


@dataclass
class PoolVectors:
    """A row per pool sample: ``rds_embeddings`` (column ``embedding``) or ``pool_gradients``
    (``gradient``, with a ``valid`` flag)."""

    asset: str
    vectors: np.ndarray
    valid: np.ndarray | None = None

    COLUMN = {"rds_embeddings": "embedding", "pool_gradients": "gradient"}

    def table(self, offset: int = 0) -> pa.Table:
        cols = {"pool_index": offset + np.arange(len(self.vectors))}
        if self.valid is not None:
            cols["valid"] = self.valid
        return pa.table({**cols, self.COLUMN[self.asset]: storage.vectors_column(self.vectors)})

    @classmethod
    def from_table(cls, asset: str, t: pa.Table) -> "PoolVectors":
        valid = t.column("valid").to_numpy(False) if "valid" in t.column_names else None
        return cls(asset, storage.column_matrix(t, cls.COLUMN[asset]), valid)

    def save(self, step: Step) -> None:
        step.write(self.table())

    @classmethod
    def load(cls, step: Step, asset: str) -> "PoolVectors":
        return cls.from_table(asset, step.load(asset))


@dataclass
class KernelFit:
    """``krr_coefficients``: the fitted landmark regression (``pipeline.LandmarkRegression``): the
    kernel setting and bandwidth the target side scores with, and ``C`` (when stored) with
    ``p_hat = C @ P_L`` exactly for a task without the direct term."""

    regression: pipeline.LandmarkRegression
    landmarks: np.ndarray

    def save(self, step: Step, n_pool: int) -> None:
        reg = self.regression
        cols = {"pool_index": np.arange(n_pool), "is_landmark": np.isin(np.arange(n_pool), self.landmarks)}
        if reg.coefficients is not None:
            cols["coefficients"] = storage.vectors_column(reg.coefficients)
        kernel = {"bandwidth_scale": reg.setting.bandwidth_scale, "damping": reg.setting.damping,
                  "center": reg.setting.center, "bandwidth2": reg.bandwidth2, "landmarks": self.landmarks.tolist()}
        step.write(pa.table(cols), extra={"kernel": kernel})
        if reg.cv:
            step.write(pa.Table.from_pylist([{"model": step.model, **r} for r in reg.cv]), name="kernel_cv.parquet")

    @classmethod
    def load(cls, step: Step, with_coefficients: bool = False) -> "KernelFit":
        k = step.load_meta("krr_coefficients")["kernel"]
        C = None
        if with_coefficients:
            t = step.load("krr_coefficients")
            C = storage.column_matrix(t, "coefficients").astype(np.float64) if "coefficients" in t.column_names else None
        setting = recovery.KernelSetting(k["bandwidth_scale"], k["damping"], k["center"])
        return cls(pipeline.LandmarkRegression(setting, k["bandwidth2"], coefficients=C), np.asarray(k["landmarks"]))


@dataclass
class TargetGradients:
    sample_ids: list[str]
    vectors: np.ndarray  # (t, d) valid targets only
    n_label_tokens: np.ndarray
    excluded: dict[str, str] = field(default_factory=dict)  # id -> why the target was left out (in the sidecar)
    embedded: list[str] = field(default_factory=list)  # the proxies of TargetEmbeddings beside it

    def save(self, step: Step) -> None:
        step.write(pa.table({"target_index": np.arange(len(self.sample_ids)), "target_id": self.sample_ids,
                             "n_label_tokens": self.n_label_tokens, "gradient": storage.vectors_column(self.vectors)}),
                   extra={"excluded": self.excluded, "embedded": self.embedded})

    @classmethod
    def load(cls, step: Step) -> "TargetGradients":
        t = step.load("target_gradients", target_side=True)
        return cls(t.column("target_id").to_pylist(), storage.column_matrix(t, "gradient"),
                   t.column("n_label_tokens").to_numpy())


@dataclass
class TargetEmbeddings:
    """The targets' proxy rows for every gradient-proxy candidate (``target_embeddings.parquet``
    beside ``target_gradients``): the direct term's targets."""

    rows: dict[str, np.ndarray]
    widths: dict[str, tuple[int, ...]] = field(default_factory=dict)

    NAME = "target_embeddings.parquet"

    def save(self, step: Step) -> None:
        step.write(_matrices_table(self.rows, self.widths), name=self.NAME)

    @classmethod
    def load(cls, step: Step) -> "TargetEmbeddings":
        return cls.from_table(step.load("target_gradients", name=cls.NAME, target_side=True))

    @classmethod
    def from_table(cls, table: pa.Table) -> "TargetEmbeddings":
        m = _matrices(table)
        return cls({s: r.astype(np.float64) for s, (r, _) in m.items()}, {s: tuple(w) for s, (_, w) in m.items()})

    def slices(self, spec: str) -> tuple[tuple[int, int], ...]:
        return pipeline.embedding_slices(spec, self.widths.get(spec, ()))

    def direct_term(self, spec: str):
        """The direct term's inputs for ``spec`` (None when the proxy has no gradient part)."""
        from infdist_core.maths.landmarks import DirectTerm

        sl = self.slices(spec)
        return DirectTerm(self.rows[spec], sl) if sl and spec in self.rows else None


@dataclass
class TargetWeights:
    scores: pipeline.TargetScores
    sample_ids: list[str]
    landmarks: np.ndarray
    direct: bool

    def save(self, step: Step) -> None:
        res, n = self.scores, len(self.sample_ids)
        step.write(pa.table({"pool_index": np.arange(n), "sample_id": self.sample_ids,
                             "is_landmark": np.isin(np.arange(n), self.landmarks), "mean_score": res.scores.mean(1),
                             "weight": res.weights, "scores": storage.vectors_column(res.scores)}),
                   extra={"lambda": res.lam, "direct": self.direct})

    @classmethod
    def load(cls, step: Step) -> "TargetWeights":
        meta = step.load_meta("per_target_weights", target_side=True)
        t = step.load("per_target_weights", target_side=True)
        res = pipeline.TargetScores(storage.column_matrix(t, "scores").astype(np.float64), t.column("weight").to_numpy(),
                                    float(meta.get("lambda", float("nan"))))
        return cls(res, t.column("sample_id").to_pylist(), np.flatnonzero(t.column("is_landmark").to_numpy(False)),
                   bool(meta.get("direct", False)))


@dataclass
class Subset:
    method: str
    pool_index: np.ndarray
    weights: np.ndarray
    sample_ids: list[str]

    @staticmethod
    def previous(step: Step) -> dict[str, float] | None:
        """The partition's last selection (sample id -> weight, from ``history/``), or None."""
        history = sorted(step.path(name="data.parquet").parent.glob("history/*.parquet"))
        if not history:
            return None
        t = storage.read_table(history[-1])
        return dict(zip(t.column("sample_id").to_pylist(), t.column("weight").to_pylist()))

    def save(self, step: Step) -> None:
        """Write the selection, and keep it in the partition's ``history/`` too (one file per
        re-selection, named by time and run)."""
        n, sel = len(self.pool_index), step.cfg.selection
        now = datetime.now(timezone.utc)
        table = pa.table({"model": [step.model] * n, "task": [step.task] * n, "method": [self.method] * n,
                          "seed": [sel.seed] * n, "k": [sel.k] * n, "sample_id": self.sample_ids,
                          "pool_index": self.pool_index, "rank": np.arange(1, n + 1),
                          "weight": np.asarray(self.weights, dtype=np.float64),
                          "run_id": [step.context.run.run_id] * n,
                          "selected_at": pa.array([now] * n, pa.timestamp("us", tz="UTC"))})
        step.write(table, name=f"history/{now:%Y%m%dT%H%M%S%f}-{step.context.run.run_id[:8]}.parquet")
        step.write(table)

    @classmethod
    def load(cls, step: Step, method: str) -> "Subset":
        t = step.load(f"{method}/selected_subset", target_side=True)
        return cls(method, t.column("pool_index").to_numpy(), t.column("weight").to_numpy(), t.column("sample_id").to_pylist())


@dataclass
class FineTunedModel:
    model_path: str
    bytes: int
    sha256: str
    steps: int
    losses: list[float]
    reused: bool = False

    def save(self, step: Step) -> None:
        step.write(pa.table({"model_path": [self.model_path], "bytes": [self.bytes], "sha256": [self.sha256],
                             "steps": [self.steps], "losses": [json.dumps(self.losses)]}),
                   extra={"model_path": self.model_path, "reused": self.reused, "bytes": self.bytes, "sha256": self.sha256})

    @staticmethod
    def load_path(step: Step, method: str) -> str:
        """The fine-tuned model's folder, verified against its recorded size."""
        return recorded_checkpoint(step.load_meta(f"{method}/fine_tuned_model", target_side=True))

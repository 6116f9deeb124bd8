"""The row cache: rows found by tokens (not ids) under one state, files only ever added, the rows
at a retrained warm-up's weights pruned."""

import json

import numpy as np
import torch

from infdist_assets.store.row_cache import RowCache, prune_warmup_states, sample_key
from infdist_core.config import SelectionConfig
from infdist_core.model.tokenization import TokenizedSample


def _sample(id_: str, tokens: list[int], labels: list[int] | None = None) -> TokenizedSample:
    return TokenizedSample(id_, torch.tensor(tokens), torch.tensor(labels if labels is not None else tokens))


def test_rows_are_keyed_by_tokens_and_labels_under_a_state(tmp_path):
    cfg = SelectionConfig.of(device="cpu")
    a, b = _sample("a", [1, 2, 3]), _sample("b", [4, 5])
    assert sample_key(a) == sample_key(_sample("renamed", [1, 2, 3]))  # a moved or renamed sample: the same row
    assert sample_key(a) != sample_key(_sample("a", [1, 2, 3], [-100, 2, 3]))  # other labels: another row
    assert sample_key(a) != sample_key(_sample("a", [1, 2, 4]))  # an edit: another row
    cache = RowCache.open(tmp_path, "m", "landmark_gradients", "w1", cfg, warmup=True)
    found, _ = cache.lookup([sample_key(a)])
    assert not found.any()
    cache.add([sample_key(a), sample_key(b)], np.array([[1, 2], [3, 4]], np.float32), norm=np.array([0.5, 2.0]))
    found, rows = cache.lookup([sample_key(b), "missing", sample_key(a)])
    assert found.tolist() == [True, False, True]
    assert rows.column("norm").to_pylist() == [2.0, 0.5] and rows.column("vector").to_pylist() == [[3, 4], [1, 2]]
    # another weight, another setting a row depends on, another kind: other states, nothing found
    for other in (RowCache.open(tmp_path, "m", "landmark_gradients", "w2", cfg, warmup=True),
                  RowCache.open(tmp_path, "m", "landmark_gradients", "w1", cfg.with_(projection_dim=128), warmup=True),
                  RowCache.open(tmp_path, "m", "target_gradients", "w1", cfg, warmup=True)):
        assert other.path != cache.path and not other.lookup([sample_key(a)])[0].any()
    # a setting no row depends on: the same state
    assert RowCache.open(tmp_path, "m", "landmark_gradients", "w1", cfg.with_(k=7, pool_size=900), warmup=True).path == cache.path


def test_a_retrained_warmup_prunes_the_rows_at_other_warmup_weights_only(tmp_path):
    cfg = SelectionConfig.of(device="cpu")
    old = RowCache.open(tmp_path, "m", "landmark_gradients", "old", cfg, warmup=True)
    new = RowCache.open(tmp_path, "m", "landmark_gradients", "new", cfg, warmup=True)
    base = RowCache.open(tmp_path, "m", "landmark_gradients", "base-model", cfg, warmup=False)
    other_model = RowCache.open(tmp_path, "m2", "landmark_gradients", "old", cfg, warmup=True)
    assert prune_warmup_states(tmp_path, "m", "new") == 1
    assert not old.path.exists() and new.path.exists() and base.path.exists() and other_model.path.exists()
    assert json.loads((new.path / "state.json").read_text())["weights"] == "new"

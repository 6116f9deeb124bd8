"""Pool files read through ``datasets`` (``pool_rows.PoolRows``): the same records and the same
sample as ``records.load_records``, errors naming the file and line, and nothing parsed that the
sample does not reach."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infdist_core.config import SelectionConfig
from infdist_core.data.pool_rows import PoolRows
from infdist_core.data.records import RecordError, load_records
from infdist_core.pipeline import sample_pool


def _mixed_rows(n: int) -> list[dict]:
    """Rows in every accepted shape, some with ids, some without."""
    out = []
    for i in range(n):
        if i % 4 == 0:
            out.append({"id": f"m{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                                    {"role": "assistant", "content": f"answer {i}"}]})
        elif i % 4 == 1:
            out.append({"conversations": [{"from": "human", "value": f"q {i}"}, {"from": "gpt", "value": f"a {i}"}]})
        elif i % 4 == 2:
            out.append({"id": f"a{i}", "instruction": f"do {i}", "input": "", "output": f"done {i}"})
        else:
            out.append({"prompt": f"p {i}", "completion": f"c {i}"})
    return out


def _jsonl(path, rows, blank_every: int = 0) -> str:
    lines = []
    for i, r in enumerate(rows):
        lines.append(json.dumps(r))
        if blank_every and i % blank_every == 0:
            lines.append(" " * (i % 40) + "\t")  # whitespace-only lines of several lengths
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_rows_equal_load_records_blank_lines_and_mixed_shapes(tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _mixed_rows(23), blank_every=5)
    rows = PoolRows(path, tmp_path / "cache")
    want = load_records(path)
    assert len(rows) == len(want) == 23
    assert [rows[i] for i in range(len(rows))] == want  # ids by record position, blank lines skipped


def test_parquet_and_datasets_folder_equal_load_records(tmp_path):
    import datasets

    recs = [{"id": str(i), "instruction": f"do {i}", "input": None if i % 2 else "ctx", "output": f"ok {i}"} for i in range(9)]
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "pool.parquet")
    datasets.Dataset.from_list(recs).save_to_disk(str(tmp_path / "folder"))
    for path in (tmp_path / "pool.parquet", tmp_path / "folder"):
        rows = PoolRows(path, tmp_path / "cache")
        assert [rows[i] for i in range(len(rows))] == load_records(path), path


def test_same_sample_as_from_a_list(tmp_path, tokenizer):
    path = _jsonl(tmp_path / "pool.jsonl", _mixed_rows(40), blank_every=7)
    cfg = SelectionConfig.of(pool_size=12, n_landmarks=4, k=3, data_seed=5)
    a = sample_pool(PoolRows(path, tmp_path / "cache"), tokenizer, cfg)
    b = sample_pool(load_records(path), tokenizer, cfg)
    assert [s.id for s in a.samples] == [s.id for s in b.samples]
    assert [s.input_ids.tolist() for s in a.samples] == [s.input_ids.tolist() for s in b.samples]


def test_only_the_rows_the_sample_reaches_are_parsed(tmp_path, tokenizer):
    """A malformed row the seeded sample never reaches does not stop the run; reached, it names its line."""
    rows = _mixed_rows(30)
    cfg = SelectionConfig.of(pool_size=5, n_landmarks=2, k=1, data_seed=0)
    order = sample_pool(load_records(_jsonl(tmp_path / "ok.jsonl", rows)), tokenizer, cfg).samples
    used = {s.id for s in order}
    unused = next(i for i, r in enumerate(rows) if r.get("id", str(i)) not in used)
    bad = [dict(r) for r in rows]
    bad[unused] = {"id": f"x{unused}", "text": "no turns"}
    path = _jsonl(tmp_path / "pool.jsonl", bad)
    got = sample_pool(PoolRows(path, tmp_path / "cache"), tokenizer, cfg)
    assert [s.id for s in got.samples] == [s.id for s in order]
    reached = next(i for i, r in enumerate(rows) if r.get("id", str(i)) == order[0].id)
    bad[reached] = {"id": "y", "text": "no turns"}
    path2 = _jsonl(tmp_path / "pool2.jsonl", bad)
    with pytest.raises(RecordError, match=rf"pool2.jsonl: line {reached + 1} has fields \['id', 'text'\]"):
        sample_pool(PoolRows(path2, tmp_path / "cache"), tokenizer, cfg)


@pytest.mark.parametrize("content, message", [
    (b'{"prompt": "a", "completion": "b"}\n{"prompt": "a",\n', r"line 2 is not valid JSON"),
    (b'{"prompt": "a", "completion": "b"}\n\n{"prompt": "\xff", "completion": "b"}\n', r"line 3 is not UTF-8 \(byte 0xff at column 13\)"),
    (b"\n \n", r"contains no records"),
])
def test_bad_files_name_the_line(tmp_path, content, message):
    path = tmp_path / "pool.jsonl"
    path.write_bytes(content)
    with pytest.raises(RecordError, match=message):
        rows = PoolRows(path, tmp_path / "cache")
        [rows[i] for i in range(len(rows))]


def test_duplicate_ids_reached_are_refused(tmp_path):
    rows = [{"id": "same", "prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"},
            {"id": "same", "prompt": "e", "completion": "f"}]
    pool = PoolRows(_jsonl(tmp_path / "pool.jsonl", rows), tmp_path / "cache")
    pool[0], pool[1]
    with pytest.raises(RecordError, match=r"duplicate record id 'same' \(line 1 and line 3\)"):
        pool[2]


def test_a_changed_file_is_converted_again(tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", _mixed_rows(4))
    assert len(PoolRows(path, tmp_path / "cache")) == 4
    _jsonl(path, _mixed_rows(6))
    rows = PoolRows(path, tmp_path / "cache")
    assert len(rows) == 6 and rows[5] == load_records(path)[5]


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        PoolRows(tmp_path / "nope.jsonl")
    (tmp_path / "pool.csv").write_text("a,b\n")
    with pytest.raises(RecordError, match="unsupported file type"):
        PoolRows(tmp_path / "pool.csv", tmp_path / "cache")


def _stable(pool_size: int, data_seed: int = 3) -> SelectionConfig:
    return SelectionConfig.of(pool_size=pool_size, n_landmarks=2, k=1, data_seed=data_seed, pool_sampling="stable")


def _by_hash(ids: list[str], seed: int) -> list[str]:
    """The reference order, written out: ids by the first 8 bytes of SHA-256 of ``"<seed>/pool/<id>"``
    (little endian, shifted to 63 bits)."""
    import hashlib

    return sorted(ids, key=lambda i: int.from_bytes(hashlib.sha256(f"{seed}/pool/{i}".encode()).digest()[:8],
                                                    "little") >> 1)


def _rows(names) -> list[dict]:
    return [{"id": n, "prompt": f"question {n}", "completion": f"answer {n}"} for n in names]


def test_stable_sample_is_the_smallest_hashes_and_survives_appends(tmp_path, tokenizer):
    """Appending rows keeps every old member that no new row outranks, in the same order; the new
    members are exactly the new rows among the smallest hashes (checked against the reference order)."""
    old, new = [f"r{i}" for i in range(40)], [f"n{i}" for i in range(10)]
    cfg = _stable(12)
    before = [s.id for s in sample_pool(load_records(_jsonl(tmp_path / "a.jsonl", _rows(old))), tokenizer, cfg).samples]
    assert before == _by_hash(old, 3)[:12]
    path = _jsonl(tmp_path / "b.jsonl", _rows(old + new))
    after = [s.id for s in sample_pool(PoolRows(path, tmp_path / "cache"), tokenizer, cfg).samples]
    assert after == _by_hash(old + new, 3)[:12]
    entered, left = set(after) - set(before), set(before) - set(after)
    assert entered and entered <= set(new) and len(left) == len(entered)  # this seed: some new rows outrank
    assert [i for i in after if i in before] == [i for i in before if i not in left]  # the rest, in order
    assert sorted(left) == sorted(before[-len(left):])  # the displaced ones are the largest hashes


def test_stable_sample_under_edits_and_removals(tmp_path, tokenizer):
    ids = [f"r{i}" for i in range(30)]
    cfg = _stable(8)
    base = sample_pool(load_records(_jsonl(tmp_path / "a.jsonl", _rows(ids))), tokenizer, cfg).samples
    member = base[3].id
    edited = _rows(ids)
    edited[ids.index(member)]["completion"] = "a different answer, several tokens longer than before"
    got = sample_pool(load_records(_jsonl(tmp_path / "b.jsonl", edited)), tokenizer, cfg).samples
    assert [s.id for s in got] == [s.id for s in base]  # an edited row stays where it was
    assert got[3].input_ids.tolist() != base[3].input_ids.tolist()  # with its new content
    removed = [i for i in ids if i != member]
    got = [s.id for s in sample_pool(load_records(_jsonl(tmp_path / "c.jsonl", _rows(removed))), tokenizer, cfg).samples]
    assert got == [s.id for s in base if s.id != member] + [_by_hash(ids, 3)[8]]  # the next row takes its place


def test_stable_sample_skips_unusable_rows_without_moving_the_others(tmp_path, tokenizer):
    ids = [f"r{i}" for i in range(30)]
    cfg = _stable(8)
    rows = _rows(ids)
    first = _by_hash(ids, 3)[0]
    rows[ids.index(first)]["completion"] = ""  # no label tokens: unusable
    got = sample_pool(load_records(_jsonl(tmp_path / "a.jsonl", rows)), tokenizer, cfg)
    assert [s.id for s in got.samples] == _by_hash(ids, 3)[1:9]
    assert first in got.excluded


def test_pool_sampling_is_checked():
    with pytest.raises(ValueError, match=r"pool_sampling='shuffle': use permutation or stable"):
        SelectionConfig.of(pool_sampling="shuffle")


def _by_name_hash(ids: list[str], seed: int, name: str) -> list[str]:
    import hashlib

    return sorted(ids, key=lambda i: int.from_bytes(hashlib.sha256(f"{seed}/{name}/{i}".encode()).digest()[:8],
                                                    "little") >> 1)


def test_stable_landmarks_and_warmup_subset_follow_the_ids_not_the_positions():
    """With stable sampling the landmarks are the ``n_landmarks`` smallest hashes of the ids under
    the selection seed (the warm-up subset likewise under ``data_seed``), wherever the samples sit:
    a grown pool keeps every landmark no new sample outranks. Permutation sampling keeps the
    paper's uniform draw by position."""
    from infdist_core.maths.landmarks import choose_landmarks
    from infdist_core.pipeline import landmark_indices, seeded_subset

    old, new = [f"r{i}" for i in range(40)], [f"n{i}" for i in range(12)]
    cfg = SelectionConfig.of(pool_size=40, n_landmarks=6, k=1, seed=5, pool_sampling="stable")
    before = [old[i] for i in landmark_indices(old, cfg)]
    assert sorted(before) == sorted(_by_name_hash(old, 5, "landmarks")[:6])
    grown = sorted(old + new)  # other positions for every id
    after = [grown[i] for i in landmark_indices(grown, cfg)]
    assert sorted(after) == sorted(_by_name_hash(old + new, 5, "landmarks")[:6])
    assert set(after) - set(new) <= set(before) and (set(after) - set(new)) | (set(before) - set(after)) == set(before)
    assert seeded_subset(old, 4, 3, "warmup", "stable") == [old.index(i) for i in _by_name_hash(old, 3, "warmup")[:4]]
    assert landmark_indices(old, cfg.with_(pool_sampling="permutation")).tolist() == choose_landmarks(40, 6, 5).tolist()


def test_the_warmup_is_kept_while_enough_of_the_sample_is_unchanged():
    from infdist_core.pipeline import keep_warmup

    trained_on = [f"r{i}" for i in range(100)]
    stable = SelectionConfig.of(pool_size=100, n_landmarks=2, k=1, pool_sampling="stable", pool_refresh=0.5)
    assert keep_warmup(trained_on, trained_on + [f"n{i}" for i in range(100)], stable) == (True, 0.5)  # doubled: kept
    assert keep_warmup(trained_on, trained_on + [f"n{i}" for i in range(101)], stable)[0] is False
    assert keep_warmup(trained_on[:60] + ["x"], trained_on, stable)[0] is True  # removals: 60% still there
    assert keep_warmup(trained_on, trained_on, stable.with_(pool_refresh=0.0)) == (True, 1.0)
    assert keep_warmup(trained_on, trained_on + ["n"], stable.with_(pool_refresh=0.0))[0] is False
    assert keep_warmup(trained_on, trained_on, stable.with_(pool_sampling="permutation"))[0] is False
    with pytest.raises(ValueError, match="pool_refresh=1.5"):
        stable.with_(pool_refresh=1.5)

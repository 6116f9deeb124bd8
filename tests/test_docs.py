"""The documentation is built strictly, its generated page is current, and its examples run: the
README's library and Dagster examples and the architecture page's asset function (here), and
the catalog queries (``test_assets``)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT, load_script

README = (ROOT / "README.md").read_text()


def _python_blocks(text: str) -> list[str]:
    return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


def test_readme_stays_short_and_links_every_docs_page():
    assert len(README.encode()) <= 8 * 1024, f"README.md is {len(README.encode())} bytes: move detail to docs/"
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md") if p.name != "index.md")
    missing = [p for p in pages if f"(docs/{p})" not in README]
    assert not missing, f"README.md links no docs page {missing}"


def test_configuration_page_is_generated_from_the_code():
    page = load_script("gen_docs").configuration_page()
    assert (ROOT / "docs" / "configuration.md").read_text() == page, "run python scripts/gen_docs.py"
    from infdist_core.config import SECTION_OF, field_docs

    for name, doc in field_docs().items():  # every field, with its own docstring
        assert f"| `{name}` |" in page and " ".join(doc.split())[:40].replace("|", "\\|") in page, name
    assert len(field_docs()) == len(SECTION_OF)


def test_docs_build_strictly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()


def test_readme_library_example_selects_k_samples():
    code = _python_blocks(README)[0]
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    picked = eval(res.stdout.strip().splitlines()[-1])  # the example prints the selected ids
    assert len(picked) == 5 and len(set(picked)) == 5 and all(p.startswith("sharegpt-") for p in picked)


def test_architecture_asset_function_example_runs():
    code = _python_blocks((ROOT / "docs" / "architecture.md").read_text())[0]
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["5", "True"]


def test_readme_dagster_example_materialises_the_pool(tmp_path):
    data = tmp_path / "data"  # a data root of its own, sharing the model and files
    data.mkdir()
    for sub in ("models", "pools", "targets", "eval"):
        os.symlink(ROOT / "data" / sub, data / sub)
    code = _python_blocks(README)[1]
    env = {**os.environ, "INFDIST_DATA": str(data)}
    env.pop("INFDIST_REGISTRY", None)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    made = data / "assets" / "sampled_pool" / "smollm2-135m" / "data.parquet"
    assert made.exists() and made.with_name("data.meta.json").exists(), "the example wrote no sampled_pool"

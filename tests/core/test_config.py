"""Every setting is classified by what depends on it, so artefacts are refused and recomputed
when a setting they depend on changes."""

import dataclasses
from pathlib import Path

import pytest

from infdist_core.config import EVAL_FIELDS, RUNTIME_FIELDS, TARGET_SIDE_FIELDS, SelectionConfig, field_docs

ROOT = Path(__file__).resolve().parents[2]


def test_every_field_is_classified():
    classified = set(TARGET_SIDE_FIELDS) | set(EVAL_FIELDS) | set(RUNTIME_FIELDS)
    missing = [f.name for f in dataclasses.fields(SelectionConfig) if f.name not in classified]
    assert not missing, f"classify {missing} in infdist_core.config (data, pool, target, eval or runtime side)"


@pytest.mark.parametrize("field, value", [("heldout_rows", -1), ("eval_subset", -1), ("heldout_max_length", 0)])
def test_bad_evaluation_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        SelectionConfig(**{field: value})


def test_the_new_settings_are_documented():
    docs = field_docs()
    assert all(docs.get(f) for f in ("seed", "data_seed", "heldout_rows", "heldout_max_length", "task_metrics"))


def test_every_field_is_documented():
    """Each setting's docstring is what the Dagster launchpad shows: a new field needs one."""
    docs = field_docs()
    missing = [f.name for f in dataclasses.fields(SelectionConfig) if not docs.get(f.name)]
    assert not missing, f"document {missing} in infdist_core.config.SelectionConfig"


def test_paper_configuration_is_the_papers_regression_and_parameters():
    """Section 5.1 and Eq. 10: down_proj gradients for Llama-2-7B, RBF KRR with the median
    bandwidth, damping 0.01 and no centring; the fixed setting is what the regression uses."""
    import numpy as np

    from infdist_core.pipeline import fit_landmark_regression

    paper = SelectionConfig.paper()
    assert (paper.grad_params, paper.kernel_search, paper.kernel_center, paper.damping) == ("down_proj", False, False, 0.01)
    rng = np.random.default_rng(0)
    E, G = rng.standard_normal((40, 6)), rng.standard_normal((10, 5))
    for center in (False, True):
        cfg = SelectionConfig(pool_size=40, n_landmarks=10, k=5, kernel_search=False, kernel_center=center)
        reg = fit_landmark_regression(E, np.arange(10), G, cfg)
        assert reg.setting.center is center and reg.setting.bandwidth_scale == 1.0 and reg.setting.damping == 0.01


def test_the_package_map_names_every_core_module():
    import pkgutil

    import infdist_core

    missing = [m.name for m in pkgutil.iter_modules(infdist_core.__path__) if f"``{m.name}``" not in infdist_core.__doc__]
    assert not missing, f"infdist_core/__init__.py's module map lacks {missing}"


def test_the_public_api_resolves_without_importing_torch_up_front():
    import subprocess
    import sys

    code = ("import sys, infdist_core\nassert 'torch' not in sys.modules, 'import infdist_core pulled in torch'\n"
            "for name in infdist_core.__all__:\n    assert getattr(infdist_core, name) is not None, name\n"
            "from infdist_core.pipeline import score_targets\nassert infdist_core.score_targets is score_targets\n"
            "print(len(infdist_core.__all__))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.strip()) >= 15


def test_the_settings_resource_is_the_generated_mirror_of_the_config():
    """infdist_assets/settings.py is what scripts/gen_docs.py writes from SelectionConfig: the
    same fields, defaults and docs, closed sets as enums in the launchpad, one conversion."""
    import dagster as dg

    from infdist_assets.settings import SelectionSettings
    from infdist_core.config import SelectionConfig, field_docs
    from tests.conftest import load_script

    gen = load_script("gen_docs")
    assert (ROOT / "infdist_assets" / "settings.py").read_text() == gen.settings_module(), "run python scripts/gen_docs.py"
    assert SelectionSettings().to_core() == SelectionConfig()
    changed = SelectionSettings(k=7, embedding_candidates=["grad-head"], dtype="bfloat16").to_core()
    assert changed == SelectionConfig(k=7, embedding_candidates=("grad-head",), dtype="bfloat16")
    fields = SelectionSettings.model_fields
    assert list(fields) == list(SelectionConfig.__dataclass_fields__)
    assert all(" ".join(field_docs()[n].split()) == fields[n].description for n in fields)

    @dg.asset
    def uses(settings: SelectionSettings) -> None:
        pass

    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type"):
        dg.materialize([uses], resources={"settings": SelectionSettings()},
                       run_config={"resources": {"settings": {"config": {"train_precision": "fp16"}}}})

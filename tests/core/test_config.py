"""Every setting is classified by what depends on it, so artefacts are refused and recomputed
when a setting they depend on changes."""

import dataclasses
from pathlib import Path

import pytest

from infdist_core import config
from infdist_core.config import EVAL_FIELDS, RUNTIME_FIELDS, SECTION_OF, TARGET_SIDE_FIELDS, SelectionConfig, field_docs

ROOT = Path(__file__).resolve().parents[2]


def test_every_field_is_classified():
    classified = set(TARGET_SIDE_FIELDS) | set(EVAL_FIELDS) | set(RUNTIME_FIELDS)
    missing = [name for name in SECTION_OF if name not in classified]
    assert not missing, f"classify {missing} in infdist_core.config (data, pool, target, eval or runtime side)"


@pytest.mark.parametrize("field, value", [("heldout_rows", -1), ("eval_subset", -1), ("heldout_max_length", 0)])
def test_bad_evaluation_settings_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=field):
        SelectionConfig.of(**{field: value})


def test_the_dependency_groups_are_lookups_of_sections():
    """Each setting sits in one section; what an artefact depends on is a union of sections (the
    data side also takes the warm-up's optimiser settings, the pool side the selection seed that
    draws the landmarks)."""
    assert len(SECTION_OF) == sum(len(dataclasses.fields(c)) for c in config.SECTIONS.values()) == 44
    assert set(config.DATA_SIDE_FIELDS) == (set(config.section_fields("data")) - {"target_max_length"}
                                            | set(config.WARMUP_TRAINING_FIELDS))
    assert set(config.POOL_SIDE_FIELDS) == set(config.DATA_SIDE_FIELDS) | set(config.section_fields("pool")) | {"seed"}
    assert set(TARGET_SIDE_FIELDS) == set(config.section_fields("data", "pool", "selection", "training"))
    assert EVAL_FIELDS == config.section_fields("evaluation") and RUNTIME_FIELDS == config.section_fields("runtime")


def test_flat_names_reach_their_sections():
    cfg = SelectionConfig.of(k=7, pool_size=100, train_lr=1e-4, device="cpu")
    assert (cfg.selection.k, cfg.data.pool_size, cfg.training.train_lr, cfg.runtime.device) == (7, 100, 1e-4, "cpu")
    assert cfg.pool == SelectionConfig().pool and cfg.with_(k=8).selection.k == 8 and cfg.selection.k == 7
    assert cfg.to_dict()["k"] == 7 and len(cfg.to_dict()) == len(SECTION_OF)
    assert config.nested({"k": 7, "device": "cpu"}) == {"selection": {"k": 7}, "runtime": {"device": "cpu"}}
    with pytest.raises(ValueError, match=r"unknown settings \['kk'\]"):
        SelectionConfig.of(kk=7)
    with pytest.raises(ValueError, match="k=700 exceeds pool_size=600"):  # a check across sections
        SelectionConfig.of(k=700)


def test_the_settings_digests_did_not_move():
    """Artefacts are addressed and checked by digests of the flat settings: a change of the
    configuration's shape must not change them, or every store made before is recomputed."""
    cfg = SelectionConfig()
    assert cfg.digest(*config.DATA_SIDE_FIELDS) == "263a8753c39ba40e"
    assert cfg.digest(*TARGET_SIDE_FIELDS) == "c9403a15288de26b"
    assert cfg.digest(*config.POOL_SIDE_FIELDS) == "245f5f5d4dea0abd"


def test_targets_have_their_own_limit_and_its_neutral_value_moves_no_digest():
    cfg = SelectionConfig()
    assert cfg.data.target_tokens() == cfg.data.max_length == 128
    longer = SelectionConfig.of(target_max_length=384)
    assert longer.data.target_tokens() == 384 and longer.data.max_length == 128
    assert SelectionConfig.of(target_max_length=0).digest() == cfg.digest()  # as before the setting existed
    # only the target side reads it: the pool side's artefacts and the warm-up's folder stay put
    assert longer.digest(*config.POOL_SIDE_FIELDS) == cfg.digest(*config.POOL_SIDE_FIELDS)
    assert longer.digest(*config.TARGET_SIDE_FIELDS) != cfg.digest(*config.TARGET_SIDE_FIELDS)
    with pytest.raises(ValueError, match="target_max_length"):
        SelectionConfig.of(target_max_length=-1)


def test_the_new_settings_are_documented():
    docs = field_docs()
    assert all(docs.get(f) for f in ("seed", "data_seed", "heldout_rows", "heldout_max_length", "task_metrics"))


def test_every_field_is_documented():
    """Each setting's docstring is what the Dagster launchpad shows: a new field needs one."""
    docs = field_docs()
    missing = [name for name in SECTION_OF if not docs.get(name)]
    assert not missing, f"document {missing} in infdist_core.config.SelectionConfig"


def test_paper_configuration_is_the_papers_regression_and_parameters():
    """Section 5.1 and Eq. 10: down_proj gradients for Llama-2-7B, RBF KRR with the median
    bandwidth, damping 0.01 and no centring; the fixed setting is what the regression uses."""
    import numpy as np

    from infdist_core.pipeline import fit_landmark_regression

    paper = SelectionConfig.paper()
    assert (paper.data.grad_params, paper.pool.kernel_search, paper.pool.kernel_center, paper.pool.damping) == (
        "down_proj", False, False, 0.01)
    rng = np.random.default_rng(0)
    E, G = rng.standard_normal((40, 6)), rng.standard_normal((10, 5))
    for center in (False, True):
        cfg = SelectionConfig.of(pool_size=40, n_landmarks=10, k=5, kernel_search=False, kernel_center=center)
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
    changed = SelectionSettings.of(k=7, embedding_candidates=["grad-head"], dtype="bfloat16").to_core()
    assert changed == SelectionConfig.of(k=7, embedding_candidates=("grad-head",), dtype="bfloat16")
    fields = SelectionSettings.model_fields
    assert list(fields) == list(config.SECTIONS)
    for section, cls in config.SECTIONS.items():
        block = fields[section].default_factory.model_fields
        assert list(block) == [f.name for f in dataclasses.fields(cls)]
        assert all(" ".join(field_docs()[n].split()) == block[n].description for n in block)

    @dg.asset
    def uses(settings: SelectionSettings) -> None:
        pass

    with pytest.raises(dg.DagsterInvalidConfigError, match="not in enum type"):
        dg.materialize([uses], resources={"settings": SelectionSettings()},
                       run_config={"resources": {"settings": {"config": {"training": {"train_precision": "fp16"}}}}})

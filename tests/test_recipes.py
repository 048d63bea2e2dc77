"""The recipes users run are the recipes the benchmarks measured, and pseudo labels load behind one key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from cqbnet.engine.config import load_config
from cqbnet.errors import InputError
from cqbnet.labels.catalogue import PAPER_000_MODULES
from cqbnet.network.build import WeakConfig, check_weak
from cqbnet.sweep.runner import run_config

ROOT = Path(__file__).resolve().parents[1]


def _trained(cfg: dict) -> dict:
    """What decides the network a config trains: the model (weak modules resolved), the solver and the schedule."""
    model = copy.deepcopy(cfg["model"])
    weak = check_weak(model.pop("weak"))
    weak.jtsm.cache = None  # where proposals are cached changes no result
    return {"model": model, "weak": weak, "solver": cfg["solver"]}


@pytest.mark.parametrize(
    ("benchmark", "config", "arm"),
    [("points", "synthetic_points.yaml", "P1-clicked"), ("tags_only", "synthetic_tags.yaml", "tags")],
)
def test_a_recipe_config_trains_the_network_its_benchmark_measured(benchmark, config, arm):
    """``cqbnet train configs/<recipe>.yaml`` trains the very network (model, weak modules on and off, solver) the
    benchmark's arm trained, so the README's commands run what was measured."""
    import importlib

    from benchmarks.recipe_arms import arm_config

    arms = importlib.import_module(f"benchmarks.{benchmark}").ARMS
    spec, cfg = arm_config(arms[arm], seed=0, overrides=[])
    measured = _trained(run_config(cfg, spec, Path("manifest.json")))
    users = _trained(load_config(ROOT / "configs" / config))
    assert users == measured
    assert not any(getattr(users["weak"], m).enabled for m in PAPER_000_MODULES)


def test_cqbnet_boxes_tags_trains_what_its_benchmark_measured():
    """Paper 001's command and its benchmark build their networks through the recipe's one switch
    (:func:`~cqbnet.recipes.boxes_tags_001.network_config`): paper 000's modules off, everything else as given."""
    from cqbnet.recipes.boxes_tags_001 import network_config

    cfg = load_config(ROOT / "configs" / "synthetic_full.yaml")
    net = network_config(cfg)
    weak = check_weak(net["model"]["weak"])
    assert not any(getattr(weak, m).enabled for m in PAPER_000_MODULES)
    assert weak.box2mask.warmup == 500 and weak.points == WeakConfig().points  # the settings themselves are kept
    assert {k: v for k, v in net.items() if k != "model"} == {k: v for k, v in cfg.items() if k != "model"}
    assert cfg["model"]["weak"]["box2mask_warmup"] == 500 and "box2mask" not in cfg["model"]["weak"]  # not mutated


def test_pseudo_labels_that_are_neither_format_are_one_line_errors(tmp_path):
    from cqbnet.labels.pseudo import load_pseudo_labels

    with pytest.raises(InputError, match="no pseudo labels here"):
        load_pseudo_labels(tmp_path, {})
    with pytest.raises(InputError, match="no such file or folder of pseudo labels"):
        load_pseudo_labels(tmp_path / "missing", {})

"""The pilot protocol (paper 000, Table 2) and its Ray runner."""

from __future__ import annotations

import csv

import pytest
import yaml

from cqbnet.errors import InputError
from cqbnet.labels.simulate import assign_kinds
from cqbnet.sweep.protocol import MODULES, MODULES_OF_KIND, table2_runs, unique_specs
from helpers import tiny_model_config


def test_table2_runs_arms_modules_and_shared_runs():
    runs = table2_runs(("P", "I", "B", "S"), (0.1, 0.3, 0.5), (0, 1))
    assert len(runs) == 2 * (4 + 3 * 3 * 3)  # per seed: P at 3 ratios and 1; 3 kinds x 3 arms x 3 ratios
    cells = [r.cell for r in runs]
    assert len(set(cells)) == len(cells)
    specs = unique_specs(runs)
    # identical runs are trained once: full supervision is study P at 1 and the upper bound of B and S (6 cells
    # per seed), tags' upper bound (P + boxes, all modules) is the module arm of boxes (3 per seed), and study P
    # below 1 (the rest unlabelled) is the tags baseline (tags with the tag modules off teach nothing; 3 per seed)
    assert len(specs) == len(runs) - 2 * 6 - 2 * 3 - 2 * 3
    by_cell = {r.cell: r.spec.key for r in runs}
    assert all(by_cell[("I", "upper", "0", rho)] == by_cell[("B", "module", "0", rho)] for rho in (0.1, 0.3, 0.5))
    assert all(by_cell[("P", "full", "0", rho)] == by_cell[("I", "baseline", "0", rho)] for rho in (0.1, 0.3, 0.5))
    full = [r for r in runs if r.spec.ratio == (("P", 1.0),) and r.seed == 0]
    assert {(r.study, r.arm) for r in full} == {("P", "full"), ("B", "upper"), ("S", "upper")}
    assert len({r.spec.key for r in full}) == 1
    for r in runs:
        if r.arm == "baseline":
            assert not set(MODULES_OF_KIND[r.study]) & set(r.spec.modules)
            assert set(r.spec.modules) | set(MODULES_OF_KIND[r.study]) == set(MODULES)
        elif r.study != "P" or r.rho["P"] == 1:
            assert r.spec.modules == MODULES
    upper_i = [r for r in runs if r.study == "I" and r.arm == "upper"]
    assert all(dict(r.spec.ratio).keys() == {"P", "B"} for r in upper_i)  # tags upgraded to boxes
    # fitted arms come before the upper bounds, so a partial pilot is already useful to the planner
    first_upper = min(i for i, r in enumerate(runs) if r.arm == "upper")
    assert all(r.arm == "upper" for r in runs[first_upper:])


def test_a_points_study_switches_paper_003s_branch_on_in_its_module_arm_only(tmp_path):
    """Study PT: the baseline trains on rho_P panoptic labels and clicks without the point branch (the clicks then
    teach the semantic head only), the module arm with it; the P/I/B/S studies' runs are unchanged by it."""
    from cqbnet.engine.config import load_config
    from cqbnet.sweep.protocol import POINTS
    from cqbnet.sweep.runner import run_config

    runs = table2_runs(("P", "PT"), (0.3,), (0,))
    pt = {r.arm: r for r in runs if r.study == "PT"}
    assert POINTS not in pt["baseline"].spec.modules and set(pt["baseline"].spec.modules) == set(MODULES)
    assert pt["module"].spec.modules == (*MODULES, POINTS)
    assert pt["upper"].spec.ratio == (("P", 1.0),)
    cfg = load_config(None)
    on = run_config(cfg, pt["module"].spec, tmp_path / "m.json")["model"]["weak"]
    off = run_config(cfg, pt["baseline"].spec, tmp_path / "m.json")["model"]["weak"]
    assert on[POINTS] and not off[POINTS] and on["relation"] and off["relation"]
    # the other studies' runs (and their folder names, which resumable sweeps find them by) are as before
    assert table2_runs(("P", "I", "B", "S"), (0.3,), (0,)) == [
        r for r in table2_runs(("P", "I", "B", "S", "PT"), (0.3,), (0,)) if r.study != "PT"
    ]


def test_same_seed_draws_the_same_panoptic_images_in_every_study():
    from cqbnet.labels.kinds import parse_kind_set

    ids = list(range(200))
    runs = [r for r in table2_runs(("P", "I", "B", "S"), (0.3,), (4,)) if dict(r.spec.ratio).get("P") == 0.3]
    drawn = []
    for r in runs:
        kinds = assign_kinds(ids, {parse_kind_set(k): v for k, v in r.spec.ratio}, r.spec.seed)
        drawn.append({i for i, k in kinds.items() if k == frozenset({"P"})})
    assert len(drawn[0]) == 60 and all(d == drawn[0] for d in drawn)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"studies": ["clicks"]}, "unknown study 'clicks'"),
        ({"arms": ["best"]}, "unknown arm 'best'"),
        ({"rhos": [1.0]}, "rho_P must lie in (0, 1)"),
        ({"seeds": []}, "no seeds"),
    ],
)
def test_table2_runs_refuses_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        table2_runs(**kwargs)


def _pilot_config(data):
    from cqbnet.engine.config import load_config

    cfg = load_config(None)
    cfg["data"]["root"] = str(data)
    cfg["data"]["flip"] = False
    cfg["model"].update(tiny_model_config())
    cfg["solver"].update(max_iter=2, batch_size=2, warmup_iters=1, steps=[], amp=False)
    cfg["train"].update(checkpoint_period=1, eval_period=0, eval_images=4, log_period=1)
    cfg["pilot"].update(studies=["P", "B"], rho_P=[0.5], seeds=[0], arms=["baseline", "module", "upper"])
    return cfg


def test_pilot_through_ray_writes_a_table_the_planner_fits_and_skips_finished_runs(synth, tmp_path, capsys):
    from cqbnet.cli.main import main
    from cqbnet.planner.pilot_table import load_pilot_table
    from cqbnet.sweep.run_pilot import run_pilot

    cfg = _pilot_config(synth)
    root = tmp_path / "pilot"
    table = run_pilot(cfg, root, log=lambda *_: None)
    with open(table) as f:
        rows = list(csv.DictReader(f))
    assert [(r["study"], r["arm"], float(r["rho_P"])) for r in rows] == [
        ("P", "full", 0.5),
        ("P", "full", 1.0),
        ("B", "baseline", 0.5),
        ("B", "module", 0.5),
        ("B", "upper", 0.5),
    ]
    assert rows[1]["run"] == rows[4]["run"]  # full supervision trained once, reported twice
    assert len(list((root / "runs").iterdir())) == 4
    assert not list(root.glob("runs/*/test_metrics.json"))  # a pilot chooses on val and never looks at test
    assert all(0 <= float(r["pq"]) <= 100 and float(r["rho_B"]) == (0.5 if r["study"] == "B" else 0) for r in rows)
    # study P below 1: the other images are tagged, but with the tag modules off they teach nothing
    study_p = root / "runs" / rows[0]["run"]
    assert '"kinds": ["I"]' in (study_p / "labels" / "manifest.json").read_text()
    weak = yaml.safe_load((study_p / "config.yaml").read_text())["model"]["weak"]
    assert weak["cls2box"] is False and weak["cls2pixel"] is False and weak["relation"] is True
    # restart: nothing is trained again (Ray is not even started) and the table is the same
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("runs/*/result.json")}
    before = table.read_text()
    run_pilot(cfg, root, log=lambda *_: None)
    assert table.read_text() == before
    assert stamps == {p: p.stat().st_mtime_ns for p in root.glob("runs/*/result.json")}
    # the planner fits from its format (two training steps give PQ 0, so put plausible numbers in the PQ cells)
    assert {r.study for r in load_pilot_table(table).rows} == {"P", "B"}
    pq = {("P", "0.5"): (30, 50), ("P", "1"): (40, 60), ("B", "0.5"): (32, 51)}
    for r in rows:
        r["pq_th"], r["pq_st"] = pq[(r["study"], r["rho_P"])]
        if r["arm"] == "module":
            r["pq_th"] += 3
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "plan"
    assert main(["plan", "--pilot", str(table), "--regressor", "poly", "--samples", "300", "--out", str(out)]) == 0
    assert (out / "plan.json").is_file()
    capsys.readouterr()


def test_a_failing_run_is_named_and_the_cli_exits_3(synth, tmp_path, capsys):
    from cqbnet.cli.main import main

    cfg = _pilot_config(synth)
    cfg["pilot"].update(studies=["P"], rho_P=[0.5])
    cfg["model"]["panoptic"]["no_such_knob"] = 1  # every run fails inside its Ray worker
    path = tmp_path / "pilot.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["pilot", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 3
    err = capsys.readouterr().err
    assert "2 run(s) failed" in err and "P0.5-I0.5_box2mask+relation_s0_" in err and "no_such_knob" in err


def test_a_run_folder_keeps_its_recipe_and_refuses_another(tmp_path):
    """A run's key names only labels, modules and seed: a config that trains otherwise must not reuse (or
    resume) a folder made by another, while paths and logging may change."""
    from cqbnet.engine.config import load_config
    from cqbnet.sweep.protocol import RunSpec
    from cqbnet.sweep.runner import RECIPE, RESULT, check_recipe, finished, run_config

    cfg = load_config(None)
    spec = RunSpec((("P", 1.0),), (), 0)
    out = tmp_path / "runs" / spec.key
    check_recipe(out, run_config(cfg, spec, out / "m.json"))  # a new folder records its recipe
    assert (out / RECIPE).is_file()
    moved = {**cfg, "data": {**cfg["data"], "root": "/elsewhere"}, "train": {**cfg["train"], "log_period": 1}}
    check_recipe(out, run_config(moved, spec, tmp_path / "other.json"))  # same recipe: passes
    other = {**cfg, "solver": {**cfg["solver"], "base_lr": 0.5}}
    with pytest.raises(InputError, match=r"runs/P1_none_s0.*another recipe \(solver\.base_lr: .* -> 0\.5\)"):
        check_recipe(out, run_config(other, spec, out / "m.json"))
    (out / RESULT).write_text('{"pq": 1.0}')
    assert finished([spec], tmp_path, cfg) == {spec.key: {"pq": 1.0}}
    with pytest.raises(InputError, match="another recipe"):
        finished([spec], tmp_path, other)
    # a finished folder from before the record is trusted as it is, and not given a recipe it may not have had
    (out / RECIPE).unlink()
    assert finished([spec], tmp_path, other) == {spec.key: {"pq": 1.0}} and not (out / RECIPE).exists()


def test_a_finished_run_is_reported_on_test_without_training_again(synth, tmp_path):
    from cqbnet.sweep.protocol import RunSpec
    from cqbnet.sweep.runner import execute, json_roundtrip

    cfg = _pilot_config(synth)
    spec = RunSpec((("P", 1.0),), (), 0)
    val = execute(spec, cfg, tmp_path)
    weights = (tmp_path / "runs" / spec.key / "model_final.pth").stat().st_mtime_ns
    test = execute(spec, cfg, tmp_path, split="test")
    assert (val["split"], val["images"], test["split"], test["images"]) == ("val", 4, "test", 6)
    assert test["resumed_from"] == test["iterations"] == 2  # evaluated, not trained
    assert (tmp_path / "runs" / spec.key / "model_final.pth").stat().st_mtime_ns == weights
    assert (tmp_path / "runs" / spec.key / "image_counts_test.npz").is_file()
    assert execute(spec, cfg, tmp_path, split="test") == json_roundtrip(test)  # read back, not evaluated again

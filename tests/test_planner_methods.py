"""The planner over label methods (cqbnet.planner.methods): pilot, quality model, compute, costs by content."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cqbnet.cli.main import main
from cqbnet.data.panoptic_format import Category, PanopticRecord, PanopticSet, SegmentInfo
from cqbnet.errors import InputError
from cqbnet.labels.costs import CostModel
from cqbnet.labels.manifest import load_manifest
from cqbnet.labels.simulate import dataset_stats
from cqbnet.planner.methods import (
    FULL,
    Compute,
    FullCurve,
    fit_method_model,
    leave_one_out,
    load_method_pilot,
    loo_mae,
    make_method_plan,
    parse_variable,
    supports,
)
from cqbnet.sweep.protocol import method_runs

FULL_PQ = {0.1: 30.0, 0.3: 45.0, 0.5: 53.0, 1.0: 60.0}
# each method's images are worth this many full labels (the truth the pilot is made from)
WORTH = {"I+B:boxes-tags-001": 0.8, "I:tags-002": 0.3, "PT:points-crf": 0.7}
ITERATIONS = {FULL: 320, "I+B:boxes-tags-001": 1280, "I:tags-002": 320, "PT:points-crf": 640}
# relative costs per image: tags 0.01, boxes 0.04, clicks 0.02; so B+I 0.05, I 0.01, PT 0.02
COSTS = {"relative": {"I": 0.01, "B": 0.04, "S": 0.5, "PT": 0.02}, "units": {"PT": "image"}}


def write_method_pilot(path, worth=WORTH, seeds=3, noise=0.0, rhos=(0.0, 0.1, 0.3)):
    """A pilot whose method cells follow F(rho_P + e_v (1 - rho_P)) on the full curve the model itself fits."""
    curve = FullCurve.fit(np.array(list(FULL_PQ)), np.array(list(FULL_PQ.values())))
    rng = np.random.default_rng(0)
    lines = ["variable,seed,rho_P,pq,iterations,minutes"]
    for s in range(seeds):
        for rho, pq in FULL_PQ.items():
            lines.append(f"{FULL},{s},{rho},{pq + rng.normal(0, noise):.6f},{ITERATIONS[FULL]},4.0")
        for v, e in worth.items():
            for rho in rhos:
                pq = float(curve(np.array(rho + e * (1 - rho)))) + rng.normal(0, noise)
                lines.append(f"{v},{s},{rho},{pq:.6f},{ITERATIONS[v]},{ITERATIONS[v] / 80:.2f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def plan_for(tmp_path, budget, **kw):
    pilot = load_method_pilot(write_method_pilot(tmp_path / "pilot.csv"))
    model = fit_method_model(pilot, bootstrap=0)
    costs = CostModel.from_dict(COSTS)
    return make_method_plan(model, costs, Compute.from_pilot(pilot), budget=budget, per_support=600, **kw), model


def test_model_recovers_worth_and_reproduces_cells(tmp_path):
    pilot = load_method_pilot(write_method_pilot(tmp_path / "pilot.csv"))
    model = fit_method_model(pilot, bootstrap=0)
    for v, e in WORTH.items():
        np.testing.assert_allclose(model.cells[v][1], e, atol=1e-6)
    for (v, rho), runs in pilot.cells().items():
        shares = {FULL: rho} if v == FULL else {FULL: rho, v: 1 - rho}
        assert model.predict(shares)[0] == pytest.approx(np.mean([r.pq for r in runs]), abs=1e-4)
    linear = fit_method_model(pilot, "linear", bootstrap=0)
    for (v, rho), runs in pilot.cells().items():
        shares = {FULL: rho} if v == FULL else {FULL: rho, v: 1 - rho}
        assert linear.predict(shares)[0] == pytest.approx(np.mean([r.pq for r in runs]), abs=1e-4)
    # between cells the two assumptions differ: half boxes+tags, half nothing
    half = {"I+B:boxes-tags-001": 0.5}
    assert model.predict(half)[0] == pytest.approx(float(model.full(np.array(0.4))), abs=1e-6)
    assert linear.predict(half)[0] == pytest.approx(0.5 * float(model.full(np.array(0.8))), abs=1e-6)


def test_full_curve_inverse_and_extension():
    f = FullCurve.fit(np.array([0.1, 0.5, 1.0]), np.array([20.0, 50.0, 60.0]))
    x = np.array([0.0, 0.05, 0.3, 0.77, 1.0])
    np.testing.assert_allclose(f.inverse(f(x)), x, atol=1e-9)
    # beyond full supervision along the last slope (20 PQ per unit share)
    assert f(np.array(1.5)) == pytest.approx(70.0) and f.inverse(np.array(70.0)) == pytest.approx(1.5)
    assert f.inverse(np.array(-3.0)) == 0.0


@pytest.mark.parametrize(
    ("budget", "want"),
    [
        (0.02, {"PT:points-crf": 1.0}),  # clicks for every image beat every mix the budget allows
        (0.05, {"I+B:boxes-tags-001": 1.0}),  # boxes and tags for every image: worth 0.8 each
    ],
)
def test_known_optimum_at_a_vertex(tmp_path, budget, want):
    result, _ = plan_for(tmp_path, budget)
    assert result.recommended.shares == pytest.approx(want)
    assert result.recommended.cost <= budget + 1e-9


def test_known_optimum_mix_with_full_labels(tmp_path):
    # budget 0.5: full labels on s_P of the images and boxes+tags on the rest, s_P = (0.5 - 0.05) / 0.95
    result, model = plan_for(tmp_path, 0.5)
    rec = result.recommended
    assert set(rec.shares) == {FULL, "I+B:boxes-tags-001"}
    assert rec.shares[FULL] == pytest.approx(0.45 / 0.95, abs=0.02)
    best = float(model.full(np.array(0.45 / 0.95 + 0.8 * (1 - 0.45 / 0.95))))
    assert rec.pq == pytest.approx(best, abs=0.3) and rec.pq <= best + 1e-9


def test_compute_budget_is_honoured(tmp_path):
    result, _ = plan_for(tmp_path, 0.05, compute_budget=700)
    assert all(p.iterations <= 700 for p in result.picks.values())
    rec = result.recommended
    assert "I+B:boxes-tags-001" not in rec.shares  # its classifier and rounds cost 960 iterations more
    assert set(rec.shares) == {FULL, "PT:points-crf"} and rec.iterations == 640
    assert rec.shares[FULL] == pytest.approx(0.03 / 0.98, abs=0.01)
    with pytest.raises(InputError, match="no plan trains within 100 iterations; the cheapest needs 320"):
        plan_for(tmp_path, 0.05, compute_budget=100)


def test_compute_counts_each_method_once(tmp_path):
    pilot = load_method_pilot(write_method_pilot(tmp_path / "pilot.csv"))
    c = Compute.from_pilot(pilot)
    assert c.of([FULL]) == (320, 4.0)
    assert c.of(["I+B:boxes-tags-001", "PT:points-crf"])[0] == 320 + 960 + 320
    assert c.of(["I+B:boxes-tags-001", FULL])[0] == 1280


def test_supports_refuse_conflicts_and_shared_kind_sets():
    sups = supports([FULL, "I:tags-002", "I:modules-000", "B:modules-000", "PT:points-003", "PT:points-crf"], 3)
    flat = [set(s) for s in sups]
    assert {"I:tags-002", "I:modules-000"} not in flat  # one kind set, one method
    assert not any({"I:tags-002", "B:modules-000"} <= s for s in flat)  # paper 000's tag modules read 002's images
    assert not any({"PT:points-003", "PT:points-crf"} <= s for s in flat)
    assert {FULL, "I:modules-000", "B:modules-000"} in flat


def test_bounds_and_unavailable_kinds(tmp_path):
    result, _ = plan_for(tmp_path, 0.05, lower={FULL: 0.02}, unavailable={"PT"})
    rec = result.recommended
    assert rec.shares[FULL] >= 0.02 - 1e-9 and not any(v.startswith("PT") for v in rec.shares)
    capped, _ = plan_for(tmp_path, 0.05, upper={"I+B:boxes-tags-001": 0.5})
    assert capped.recommended.shares.get("I+B:boxes-tags-001", 0) <= 0.5 + 1e-9


def test_leave_one_out_on_a_noiseless_pilot(tmp_path):
    pilot = load_method_pilot(write_method_pilot(tmp_path / "pilot.csv", rhos=(0.0, 0.1, 0.2, 0.3)))
    cells = leave_one_out(pilot)
    # interior cells are interpolated exactly (the worth is constant in rho_P); full-curve cells are not
    inner = [c for c in cells if c.variable != FULL and 0 < c.rho_p < 0.3]
    assert len(inner) == 2 * len(WORTH)
    assert max(abs(c.predicted - c.measured) for c in inner) < 1e-4
    full = [c for c in cells if c.variable == FULL]
    assert [c.rho_p for c in full] == [0.1, 0.3, 0.5] and loo_mae(full) > 0.1


def test_close_calls_name_plans_within_the_model_error(tmp_path):
    result, _ = plan_for(tmp_path, 0.05, loo=5.0)
    calls = result.recommended.close_calls
    assert calls and all(c["predicted_pq"] >= result.recommended.pq - 5.0 for c in calls)
    assert all(set(c["methods"]) != set(result.recommended.shares) for c in calls)
    none, _ = plan_for(tmp_path, 0.05, loo=0.0)
    assert none.recommended.close_calls == []


def test_pilot_bad_input(tmp_path):
    p = tmp_path / "p.csv"
    p.write_text("variable,seed,rho_P,pq\nP:full,0,1,60\nB+I:nothing,0,0.1,50\n")
    with pytest.raises(InputError, match=r"line 3: unknown label method 'nothing'"):
        load_method_pilot(p)
    p.write_text("variable,seed,rho_P,pq\nP:full,0,1,60\nPT:tags-002,0,0.1,50\n")
    with pytest.raises(InputError, match=r"line 3: method tags-002 needs label kinds I"):
        load_method_pilot(p)
    p.write_text("variable,seed,rho_P,pq\nP:full,0,0.5,60\n")
    with pytest.raises(InputError, match=r"needs full supervision \(P:full at rho_P = 1\)"):
        load_method_pilot(p)
    p.write_text("variable,seed,rho_P,pq\nP:full,0,1,60\nI:tags-002,0,1,50\n")
    with pytest.raises(InputError, match="line 3: a run of I:tags-002 needs rho_P < 1"):
        load_method_pilot(p)


def _set(objects: int) -> PanopticSet:
    cats = {1: Category(1, "thing", True), 2: Category(2, "stuff", False)}
    segs = [SegmentInfo(i + 1, 1) for i in range(objects)] + [SegmentInfo(objects + 1, 2)]
    return PanopticSet(None, None, cats, [PanopticRecord(1, "a.png", segs)])


@pytest.mark.parametrize("objects", [1, 40])
def test_costs_by_content(objects):
    stats = dataset_stats(_set(objects))
    assert stats["boxes_per_image"] == objects and stats["stuff_per_image"] == 1 and stats["tags_per_image"] == 2
    costs = CostModel.from_dict({"content": {"P": {"thing": 79.2, "stuff": 142}}, "stats": stats})
    full = 79.2 * objects + 142
    assert costs.expected_per_image("P") == pytest.approx(1.0)
    assert costs.expected_per_image("B") == pytest.approx(7 * objects / full)
    assert costs.expected_per_image("I") == pytest.approx(2 / full)
    assert costs.expected_per_image("PT") == pytest.approx(2.4 * (objects + 1) / full)
    assert costs.expected_per_image("S") == pytest.approx(142 / full)
    # one image of the set: its own counts
    assert costs.per_image("B", boxes=3) == pytest.approx(21 / full)


def test_content_costs_bad_input():
    with pytest.raises(InputError, match="content.P"):
        CostModel.from_dict({"content": {"B": {"box": 7}}})
    with pytest.raises(InputError, match="content.B: unknown unit 'boxes'"):
        CostModel.from_dict({"content": {"P": {"thing": 1}, "B": {"boxes": 7}}})
    c = CostModel.from_dict({"content": {"P": {"thing": 80}}})
    with pytest.raises(InputError, match="stats.boxes_per_image"):
        c.expected_per_image("B")


def test_method_runs_protocol():
    runs = method_runs(["I+B:boxes-tags-001", "PT:points-crf"], (0.0, 0.3), (0.1, 0.5), (0, 1))
    full = [r for r in runs if r.study == FULL]
    assert sorted({r.rho["P"] for r in full}) == [0.1, 0.5, 1.0] and len(full) == 6
    bt = [r for r in runs if r.study == "I+B:boxes-tags-001" and r.seed == 0]
    assert [r.spec.ratio for r in bt] == [(("I+B", 1.0),), (("P", 0.3), ("I+B", 0.7))]
    assert all(r.spec.methods == (("I+B", "boxes-tags-001"),) for r in bt)
    assert "boxes-tags-001" in bt[0].spec.key and len({r.spec.key for r in runs}) == len(runs)
    with pytest.raises(InputError, match="pilot.methods: unknown label method"):
        method_runs(["B:nothing"])
    assert parse_variable("I+B:boxes-tags-001").name == "I+B:boxes-tags-001"


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_plan_over_methods_then_simulate(tmp_path, capsys, synth):
    pilot = write_method_pilot(tmp_path / "pilot.csv", noise=0.5)
    costs = tmp_path / "costs.yaml"
    costs.write_text(json.dumps(COSTS))
    out = tmp_path / "plan"
    code, text, err = run(
        capsys, "plan", "--pilot", pilot, "--budget", "0.05", "--costs", costs, "--bootstrap", 20, "--out", out
    )
    assert code == 0, err
    assert "leave-one-out over the pilot's" in text and "<- recommended" in text
    plan = json.loads((out / "plan.json").read_text())
    rec = plan["recommended"]
    assert rec["label_cost"] <= 0.05 + 1e-9 and sum(rec["methods"].values()) == pytest.approx(1.0)
    assert {"predicted_pq", "compute", "ratio"} <= set(rec) and plan["loo_mae_pq"] >= 0
    assert (out / "pareto.png").stat().st_size > 10_000
    code, _, err = run(
        capsys, "labels", "simulate", "--plan", out / "plan.json", "--data", synth, "--out", tmp_path / "l"
    )
    assert code == 0, err
    m = load_manifest(tmp_path / "l" / "manifest.json", check_files=False)
    want = {v.split(":")[0]: v.split(":")[1] for v in rec["methods"]}
    for lab in m.images:
        kinds = "+".join(k for k in ("P", "I", "B", "S", "PT") if k in lab.kinds)
        assert lab.method == want[kinds]


def test_cli_plan_over_methods_bad_bounds(tmp_path, capsys):
    pilot = write_method_pilot(tmp_path / "pilot.csv")
    code, _, err = run(capsys, "plan", "--pilot", pilot, "--min", "B:modules-000=0.2", "--out", tmp_path / "p")
    assert code == 2 and "B:modules-000" in err and err.count("\n") == 1
    code, _, err = run(capsys, "plan", "--pilot", pilot, "--cap", "full", "--out", tmp_path / "p")
    assert code == 2 and "is not KINDS:METHOD=SHARE" in err


def test_quick_pilot_section():
    from cqbnet.sweep.protocol import quick

    p = {"methods": ["PT:points-crf"], "seeds": [3, 4, 5], "method_rho_P": [0.0, 0.1, 0.3], "rho_P": [0.1, 0.3, 0.5]}
    q = quick(p)
    assert q["seeds"] == [3] and q["method_rho_P"] == [0.0, 0.3] and q["rho_P"] == [0.3]
    runs = method_runs(q["methods"], q["method_rho_P"], q["rho_P"], q["seeds"])
    assert len(runs) == 2 + 2  # full at 0.3 and 1; the method alone and beside 30% full labels
    with pytest.raises(InputError, match="--quick is a pilot over label methods"):
        quick({**p, "methods": []})


def test_the_demo_plans_over_methods_within_its_compute(tmp_path, synth):
    from cqbnet.data.panoptic_format import load_panoptic_json
    from cqbnet.data.synthetic import split_paths
    from cqbnet.demo import DEMO_NETWORKS, plan_over_methods

    pilot = write_method_pilot(tmp_path / "pilot.csv")
    gt = load_panoptic_json(*split_paths(synth, "train"))
    ratio, methods, text = plan_over_methods(pilot, gt, 0.05, 0, tmp_path / "out", tmp_path / "figs")
    plan = json.loads((tmp_path / "out" / "plan" / "plan.json").read_text())
    rec = plan["recommended"]
    assert rec["compute"]["iterations"] <= DEMO_NETWORKS * ITERATIONS[FULL] and rec["label_cost"] <= 0.05 + 1e-9
    assert sum(ratio.values()) == pytest.approx(1.0) and set(methods) == set(ratio)
    assert frozenset({"B", "I"}) not in ratio  # paper 001's four networks do not fit the demo
    assert (tmp_path / "figs" / "pareto.png").is_file() and "predicted PQ" in text


def test_random_plans_at_matched_cost():
    from cqbnet.planner.methods import random_method_plans, variable_cost

    costs = CostModel.from_dict(COSTS)
    variables = [FULL, *WORTH]
    plans = random_method_plans(variables, costs, 0.1, 3, seed=1)
    assert len(plans) == 3 and len({tuple(sorted(p)) for p in plans}) == 3  # three different sets of methods
    for p in plans:
        assert sum(p.values()) == pytest.approx(1.0)
        cost = sum(s * variable_cost(costs, v) for v, s in p.items())
        assert abs(cost - 0.1) <= 0.01 + 0.002  # +-10%, and the rounding of shares to 3 decimals
    assert plans == random_method_plans(variables, costs, 0.1, 3, seed=1)
    with pytest.raises(InputError, match="cost 5"):
        random_method_plans(variables, costs, 5.0, 3)


def test_a_pilot_without_compute_columns_still_plans(tmp_path):
    p = tmp_path / "p.csv"
    text = write_method_pilot(tmp_path / "full.csv").read_text().splitlines()
    p.write_text("\n".join(",".join(line.split(",")[:4]) for line in text) + "\n")  # variable,seed,rho_P,pq only
    pilot = load_method_pilot(p)
    model = fit_method_model(pilot, bootstrap=0)
    result = make_method_plan(model, CostModel.from_dict(COSTS), Compute.from_pilot(pilot), budget=0.05)
    assert result.recommended.shares == pytest.approx({"I+B:boxes-tags-001": 1.0})
    with pytest.raises(InputError, match="records no iterations"):
        make_method_plan(model, CostModel.from_dict(COSTS), Compute.from_pilot(pilot), budget=0.05, compute_budget=9)


def test_the_full_curve_never_falls():
    f = FullCurve.fit(np.array([0.1, 0.3, 0.3, 1.0]), np.array([40.0, 35.0, 37.0, 60.0]))  # noise: 0.3 below 0.1
    y = f(np.linspace(0, 1, 11))
    assert np.all(np.diff(y) >= -1e-12) and f(np.array(1.0)) == pytest.approx(60.0)

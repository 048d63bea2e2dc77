"""``cqbnet demo``: the main job on the embedded synthetic scenes.

So far: make the scenes, plan which labels to buy for a budget (paper 000's
published quality model until a pilot on these scenes replaces it), simulate
that plan, print what it costs, and draw the labels it buys and the Pareto
front. Training and evaluation of the trained model join as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.synthetic import generate, synthetic_categories
from cqbnet.evaluation.panoptic_quality import evaluate_panoptic_files
from cqbnet.io import atomic_path, write_image, write_json
from cqbnet.labels.costs import CostModel, cost_table
from cqbnet.labels.simulate import dataset_stats, format_ratio, manifest_cost, parse_ratio, simulate
from cqbnet.planner.plan import format_plan_ratio, make_plan
from cqbnet.planner.presets import named_ratios, preset
from cqbnet.planner.search import Constraints
from cqbnet.visualization.draw import grid
from cqbnet.visualization.labels import label_kinds_figure, write_manifest_pictures
from cqbnet.visualization.pareto_plot import plot_plan


def run_demo(
    out: str | Path,
    seed: int = 0,
    num_train: int = 2000,
    num_val: int = 300,
    ratio: str | None = None,
    budget: float = 0.45,
) -> dict:
    """Run the pipeline; ``ratio`` (e.g. ``"P=0.3,B=0.7"``) skips the planner, else plan for ``budget``."""
    out = Path(out)
    t0 = time.time()
    print(f"[1/5] synthetic scenes: {num_train} train / {num_val} val -> {out / 'data'}")
    data = generate(out / "data", num_train, num_val, seed=seed)
    cats = synthetic_categories()
    print(
        f"      {len(cats)} classes: things "
        + ", ".join(c.name for c in cats.values() if c.isthing)
        + "; stuff "
        + ", ".join(c.name for c in cats.values() if not c.isthing)
        + f" ({time.time() - t0:.1f} s)"
    )

    figs = out / "pictures"
    if ratio is None:
        print(f"[2/5] plan for a budget of {budget:g} (paper 000's Eq. 8 model, 7500 sampled ratios, seed {seed})")
        model = preset("paper-coco")
        result = make_plan(
            model, CostModel(), Constraints(model.kinds), budget=budget, seed=seed, named=named_ratios("paper-coco")
        )
        write_json(out / "plan" / "plan.json", result.to_json(), indent=2)
        plot_plan(result, figs / "pareto.png", budget=budget)
        rec = result.recommended
        ratio = format_plan_ratio(rec.ratio)
        print(f"      recommended ({result.rule}): {ratio}  f1 {rec.f1:.3f}  f2 {rec.f2:.3f}")
        plan = {frozenset([k]): v for k, v in rec.ratio.items() if v > 0}
    else:
        print("[2/5] plan given on the command line")
        plan = parse_ratio(ratio)
        ratio = format_ratio(plan)

    print(f"[3/5] simulate the labelling plan {ratio} (seed {seed})")
    gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train", data / "images" / "train")
    manifest = simulate(gt, plan, out / "labels", seed=seed)
    print(f"      manifest: {manifest.path}")

    print("[4/5] annotation cost (paper 000's relative costs; full panoptic label = 1)")
    costs = CostModel(stats=dataset_stats(gt))
    rows = manifest_cost(manifest, costs)
    table = cost_table(rows, len(manifest.images))
    print(table)

    print("[5/5] pictures and a metric check")
    kinds = grid([label_kinds_figure(gt, r, seed=seed) for r in gt.records[:3]], cols=1)
    write_image(figs / "label_kinds.png", kinds)
    written = [figs / "label_kinds.png", *write_manifest_pictures(manifest, figs, num=12, seed=seed)]
    if (figs / "pareto.png").is_file():
        written.insert(0, figs / "pareto.png")
    # The evaluator on the validation split against itself must give PQ = 100.
    val = evaluate_panoptic_files(
        data / "panoptic_val.json", data / "panoptic_val.json", data / "panoptic" / "val", data / "panoptic" / "val"
    )
    print(f"      val GT against itself: PQ {100 * val.all['pq']:.1f} over {val.num_images} images")
    for p in written:
        print(f"      wrote {p}")
    report = out / "report.md"
    with atomic_path(report) as tmp:
        tmp.write_text(
            "# cqbnet demo\n\n"
            f"Plan: `{ratio}` on {len(manifest.images)} training images (seed {seed}).\n\n"
            "## Annotation cost\n\n```\n" + table + "\n```\n\n"
            "## Pictures\n\n" + "".join(f"- `{p.relative_to(out)}`\n" for p in written)
        )
    print(f"done in {time.time() - t0:.1f} s; report: {report}")
    return {"manifest": manifest.path, "pictures": written, "report": report}

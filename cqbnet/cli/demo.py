"""``cqbnet demo``: the main job on the embedded synthetic scenes.

So far: make the scenes, simulate a labelling plan, print what it costs, and
draw the labels it buys. Later stages (training, evaluation of the trained
model, the planner) join this script as they land.
"""

from __future__ import annotations

import time
from pathlib import Path

from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.synthetic import generate, synthetic_categories
from cqbnet.evaluation.panoptic_quality import evaluate_panoptic_files
from cqbnet.io import write_image
from cqbnet.labels.costs import CostModel, cost_table
from cqbnet.labels.simulate import dataset_stats, manifest_cost, parse_ratio, simulate
from cqbnet.visualization.draw import grid
from cqbnet.visualization.labels import label_kinds_figure, write_manifest_pictures


def run_demo(
    out: str | Path,
    seed: int = 0,
    num_train: int = 2000,
    num_val: int = 300,
    ratio: str = "P=0.29,I=0.355,B=0.29,S=0.065",
) -> dict:
    out = Path(out)
    plan = parse_ratio(ratio)
    t0 = time.time()
    print(f"[1/4] synthetic scenes: {num_train} train / {num_val} val -> {out / 'data'}")
    data = generate(out / "data", num_train, num_val, seed=seed)
    cats = synthetic_categories()
    print(
        f"      {len(cats)} classes: things "
        + ", ".join(c.name for c in cats.values() if c.isthing)
        + "; stuff "
        + ", ".join(c.name for c in cats.values() if not c.isthing)
        + f" ({time.time() - t0:.1f} s)"
    )

    print(f"[2/4] simulate the labelling plan {ratio} (seed {seed})")
    gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train", data / "images" / "train")
    manifest = simulate(gt, plan, out / "labels", seed=seed)
    print(f"      manifest: {manifest.path}")

    print("[3/4] annotation cost (paper 000's relative costs; full panoptic label = 1)")
    costs = CostModel(stats=dataset_stats(gt))
    rows = manifest_cost(manifest, costs)
    table = cost_table(rows, len(manifest.images))
    print(table)

    print("[4/4] pictures and a metric check")
    figs = out / "pictures"
    kinds = grid([label_kinds_figure(gt, r, seed=seed) for r in gt.records[:3]], cols=1)
    write_image(figs / "label_kinds.png", kinds)
    written = [figs / "label_kinds.png", *write_manifest_pictures(manifest, figs, num=12, seed=seed)]
    # The evaluator on the validation split against itself must give PQ = 100.
    val = evaluate_panoptic_files(
        data / "panoptic_val.json", data / "panoptic_val.json", data / "panoptic" / "val", data / "panoptic" / "val"
    )
    print(f"      val GT against itself: PQ {100 * val.all['pq']:.1f} over {val.num_images} images")
    for p in written:
        print(f"      wrote {p}")
    report = out / "report.md"
    report.write_text(
        "# cqbnet demo\n\n"
        f"Plan: `{ratio}` on {len(manifest.images)} training images (seed {seed}).\n\n"
        "## Annotation cost\n\n```\n" + table + "\n```\n\n"
        "## Pictures\n\n" + "".join(f"- `{p.relative_to(out)}`\n" for p in written)
    )
    print(f"done in {time.time() - t0:.1f} s; report: {report}")
    return {"manifest": manifest.path, "pictures": written, "report": report}

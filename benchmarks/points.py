"""Paper 003 (FDD) on the synthetic scenes: panoptic segmentation from one or ten clicks per segment.

Every arm trains the CPU recipe's network at one schedule with paired seeds (``benchmarks/recipe_arms.py``), on
the realistic preset:

* ``full``: full panoptic labels (``configs/synthetic_full.yaml``, with the point recipe's solver);
* ``P1-paper`` / ``P10-paper``: every training image clicked once / ten times per segment, paper 003's branches
  on and its online rule (``configs/synthetic_points.yaml``; lambda_sem 1 for P1 and 0.1 for P10, as the paper
  sets them);
* ablations of paper 003's mechanism: no colour prior, lambda_sem = 0, no pseudo labels (the network learns from
  the clicks themselves: the semantic head at the clicked pixels, as cqbnet did before paper 003), and clicks at
  the segments' centres or borders instead of uniformly;
* beyond the paper: ``P1-clicked`` / ``P10-clicked``, each thing's pseudo mask cut to its parts that hold a click;
  ``P1-offline`` / ``P10-offline``, a fresh network (no point branch) trained at the same schedule on the final
  pseudo labels of the clicked-only run of the same seed (written once into that run's ``pseudo/``);
  ``P1-late`` / ``P10-late``, the clicked-only run with the network's switch to the pseudo labels starting at
  iteration 250 (``model.weak.points_pseudo_start``), online at the same schedule; ``P1-offline-crf`` /
  ``P10-offline-crf``, offline from those pseudo labels refined by the dense CRF (``cqbnet pseudo-labels --crf``;
  written once into the source run's ``pseudo_crf/``). These last are the toolkit's recipe for clicks (README):
  summary.json's ``p10_fraction_of_full`` and ``p1_fraction_of_full`` are theirs.

Each arm with the point branch also scores its pseudo labels on the training images against the hidden ground
truth (PQ and mIoU of the labels themselves). Usage::

    python -m benchmarks.points [overrides, e.g. solver.max_iter=320] --arms full P10-offline-crf --seeds 0 1 [--commit]

Results: ``benchmarks/results/points/runs.json``, ``summary.json`` and ``benchmarks/points.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.recipe_arms import ROOT, Arm, main, solver_overrides, written_pseudo_labels
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.data import dataset_paths
from cqbnet.evaluation.panoptic_quality import PanopticQuality
from cqbnet.sweep.protocol import POINTS

FULL = ROOT / "configs" / "synthetic_full.yaml"
POINTS_CONFIG = ROOT / "configs" / "synthetic_points.yaml"
PAPER, CLICKED = "model.weak.points_clicked_only=false", "model.weak.points_clicked_only=true"
OFF, LATE = "model.weak.points=false", "model.weak.points_pseudo_start=250"
P1, P10 = ["model.weak.points_lambda_sem=1.0", PAPER], ["model.weak.points_lambda_sem=0.1", PAPER]
# full supervision trains with the point recipe's solver, so that every arm shares one schedule
SOLVER = solver_overrides(POINTS_CONFIG)
ARMS = {
    "full": Arm(FULL, "P", SOLVER),
    "P1-paper": Arm(POINTS_CONFIG, "PT", P1, POINTS),
    "P10-paper": Arm(POINTS_CONFIG, "PT", P10, POINTS, clicks=10),
    "P1-no-colour": Arm(POINTS_CONFIG, "PT", [*P1, "model.weak.points_colour=false"], POINTS),
    "P10-no-colour": Arm(POINTS_CONFIG, "PT", [*P10, "model.weak.points_colour=false"], POINTS, clicks=10),
    "P1-lambda0": Arm(POINTS_CONFIG, "PT", ["model.weak.points_lambda_sem=0.0", PAPER], POINTS),
    "P10-lambda0": Arm(POINTS_CONFIG, "PT", ["model.weak.points_lambda_sem=0.0", PAPER], POINTS, clicks=10),
    "P1-direct": Arm(POINTS_CONFIG, "PT", [OFF], POINTS),
    "P1-clicked": Arm(POINTS_CONFIG, "PT", [P1[0], CLICKED], POINTS),
    "P10-clicked": Arm(POINTS_CONFIG, "PT", [P10[0], CLICKED], POINTS, clicks=10),
    "P1-centre": Arm(POINTS_CONFIG, "PT", P1, POINTS, sampling="center"),
    # offline (beyond the paper's online schedule): a fresh network learns from the final pseudo labels of the
    # clicked-only arm of the same seed from its first iteration, at the same schedule
    "P1-offline": Arm(POINTS_CONFIG, "PT", [P1[0], CLICKED, OFF], POINTS, pseudo_from="P1-clicked"),
    "P10-offline": Arm(POINTS_CONFIG, "PT", [P10[0], CLICKED, OFF], POINTS, clicks=10, pseudo_from="P10-clicked"),
    # and from those labels refined by the dense CRF (paper 001's, run once on each image: cqbnet pseudo-labels --crf)
    "P1-offline-crf": Arm(
        POINTS_CONFIG, "PT", [P1[0], CLICKED, OFF], POINTS, pseudo_from="P1-clicked", pseudo_crf=True
    ),
    "P10-offline-crf": Arm(
        POINTS_CONFIG, "PT", [P10[0], CLICKED, OFF], POINTS, clicks=10, pseudo_from="P10-clicked", pseudo_crf=True
    ),
    "P1-border": Arm(POINTS_CONFIG, "PT", P1, POINTS, sampling="border"),
    # online at the same schedule, the network's switch to the pseudo labels starting a quarter in (iterations
    # 250-750 instead of 0-500), while the branch alone learns from the clicks first
    "P1-late": Arm(POINTS_CONFIG, "PT", [P1[0], CLICKED, LATE], POINTS),
    "P10-late": Arm(POINTS_CONFIG, "PT", [P10[0], CLICKED, LATE], POINTS, clicks=10),
}
# fraction of full supervision's PQ (issue 19; paper 003: 84-91%, 69-75%), for paper 003's rule and the recipe's
TARGET = {"P10": 0.88, "P1": 0.72}
VARIANTS = ("paper", "clicked", "offline", "offline-crf", "late")
TARGETS = {f"{p}-{v}": t for p, t in TARGET.items() for v in VARIANTS}
RECIPE = {p.lower(): f"{p}-offline-crf" for p in TARGET}  # summary.json's p10_recipe_fraction_of_full, p1_...
PAPER = {p.lower(): f"{p}-paper" for p in TARGET}  # summary.json's p10_fraction_of_full, p1_...: paper 003's rule


def score_pseudo_labels(arm: str, run: Path, cfg: dict[str, Any], work: Path) -> dict[str, float] | None:
    """PQ, PQ_th, PQ_st and mIoU (percent) of a run's pseudo labels on its training images: those its point
    branch gives, or for an offline arm those it learnt from (``data.pseudo_labels``)."""
    gt = load_panoptic_json(*dataset_paths(cfg["data"], "train", work))
    records = {r.image_id: r for r in gt.records}
    metric = PanopticQuality(gt.categories)
    if cfg["data"].get("pseudo"):
        pseudo = Path(cfg["data"]["pseudo_labels"])
    elif cfg["model"]["weak"].get("points") and arm != "full":
        pseudo = written_pseudo_labels(run)  # written once: an offline arm of its seed learns from them
    else:
        return None
    written = load_panoptic_json(pseudo / "panoptic_pred.json", categories=gt.categories)
    for pred in written.records:
        rec = records[pred.image_id]
        ids = written.read_ids(pred, validate=False)
        metric.update(gt.read_ids(rec, validate=False), rec.segments, ids, pred.segments, pred.image_id)
    r = metric.compute()
    return {
        "pq": 100 * r.all["pq"],
        "pq_th": 100 * r.things["pq"],
        "pq_st": 100 * r.stuff["pq"],
        "sq_th": 100 * r.things["sq"],
        "miou": 100 * r.miou,
        "images": r.num_images,
    }


HEADER = [
    "# Paper 003 (FDD): panoptic segmentation from clicked points, on the synthetic scenes",
    "",
    "Produced by `python -m benchmarks.points`; every row one run (the results folder's `runs.json`). PQ in "
    "percent on the scenes' split named below (val for choices, test for the reported numbers) with the config's "
    "inference mode; *pseudo* columns score the point branch's "
    "pseudo labels on the training images against the hidden ground truth (for the offline arms: the labels they "
    "learnt from, written by the clicked-only run of their seed). The recipe's arms (`*-offline-crf`) train twice "
    "(the branch's run, then the offline run): full supervision at the same total of 2000 iterations is in "
    "`benchmarks/full_test.md` (test) and `benchmarks/points_full2000.md` (val).",
]
COLUMNS = [("pq", "pseudo PQ"), ("pq_th", "pseudo PQ_th"), ("pq_st", "pseudo PQ_st"), ("miou", "pseudo mIoU")]

if __name__ == "__main__":
    here = Path(__file__).parent
    main(
        ARMS,
        ["full", "P1-paper", "P10-paper", "P1-offline-crf", "P10-offline-crf"],
        score_pseudo_labels,
        TARGETS,
        here / "results" / "points",
        here / "points.md",
        HEADER,
        COLUMNS,
        recipe=RECIPE,
        paper=PAPER,
    )

"""Paper 002 (JTSM) on the synthetic scenes: panoptic segmentation from image tags alone.

Every arm trains the CPU recipe's network at one schedule with paired seeds (``benchmarks/recipe_arms.py``), on
the realistic preset:

* ``full``: full panoptic labels (``configs/synthetic_full.yaml``, with the tags recipe's solver);
* ``tags``: every training image labelled with its tags only, paper 002's mining and self-training on
  (``configs/synthetic_tags.yaml``);
* ablations with the paper's signs: no refinement heads (paper: 30.3 against 39.0 PQ), RoIPool instead of MoIPool
  (36.5 against 39.0), no GrabCut re-estimation (36.5 against 39.0).

Each mining arm also measures the CorLoc of its mined segments on (up to 500 of) the training images: the share of
(image, tagged class) pairs whose top segment has mask IoU >= 0.5 with a true segment of that class. Usage::

    python -m benchmarks.tags_only --arms full tags --seeds 0 1 [--commit] [overrides]

Results: ``benchmarks/results/tags_only/runs.json``, ``summary.json`` and ``benchmarks/tags_only.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks.recipe_arms import ROOT, Arm, main, solver_overrides
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.data import dataset_paths
from cqbnet.engine.trainer import load_model
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.weak.jtsm import corloc

FULL = ROOT / "configs" / "synthetic_full.yaml"
TAGS = ROOT / "configs" / "synthetic_tags.yaml"
CORLOC_IMAGES = 500
SOLVER = solver_overrides(TAGS)  # full supervision trains with the tags recipe's solver: one schedule for every arm
ARMS = {
    "full": Arm(FULL, "P", SOLVER),
    "tags": Arm(TAGS, "I"),
    "tags-fpn": Arm(TAGS, "I", ["model.weak.jtsm_features=fpn"]),  # the segments pooled from the FPN's level
    "tags-no-refinement": Arm(TAGS, "I", ["model.weak.jtsm_refinements=0"]),
    "tags-roipool": Arm(TAGS, "I", ["model.weak.jtsm_masked_pooling=false"]),
    "tags-no-grabcut": Arm(TAGS, "I", ["model.weak.jtsm_grabcut=false"]),
}
TARGETS = {"tags": 0.45}  # fraction of full supervision's PQ (issue 21; paper 002: 59% on VOC, 14% on COCO)


def score_mining(arm: str, run: Path, cfg: dict[str, Any], work: Path) -> dict[str, float] | None:
    if not cfg["model"]["weak"].get("jtsm"):
        return None
    model, _ = load_model(run / "model_final.pth", torch.device("cpu"))
    model.jtsm.cache = run / "proposals"  # the proposals the run computed for its training images
    dataset = MixedLabelDataset(run / "labels" / "manifest.json")
    gt = load_panoptic_json(*dataset_paths(cfg["data"], "train", work))
    return corloc(model, dataset, gt, torch.device("cpu"), CORLOC_IMAGES)


HEADER = [
    "# Paper 002 (JTSM): panoptic segmentation from image tags alone, on the synthetic scenes",
    "",
    "Produced by `python -m benchmarks.tags_only`; every row one run (`results/tags_only/runs.json`). PQ in percent "
    "on the scenes' split named below (val for choices, test for the reported numbers) with the config's inference "
    "mode; CorLoc of the mined segments on the training images.",
]
COLUMNS = [("corloc", "CorLoc"), ("corloc_th", "CorLoc th"), ("corloc_st", "CorLoc st")]

if __name__ == "__main__":
    here = Path(__file__).parent
    main(
        ARMS,
        ["full", "tags"],
        score_mining,
        TARGETS,
        here / "results" / "tags_only",
        here / "tags_only.md",
        HEADER,
        COLUMNS,
        headline="tags",
    )

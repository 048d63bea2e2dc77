"""The toolkit's recipe for clicked points (beyond paper 003): offline pseudo labels refined by the dense CRF.

A network with paper 003's point branch (:mod:`cqbnet.weak.fdd_points`) is trained on the clicked images (each
thing's pseudo mask cut to its clicked parts, at half the config's learning rate); its pseudo labels of the clicked
images, refined by the dense CRF, are written once (:func:`write_pseudo_labels`); a fresh network then learns from
them as fixed labels (``data.pseudo_labels``). Inside ``cqbnet fit`` these are the stages ``point-branch/`` and
``pseudo-labels/`` of the method ``points-crf`` (:func:`branch_and_pseudo_labels`); ``benchmarks/points.py`` runs the
same two steps (arms ``P1-offline-crf``, ``P10-offline-crf``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cqbnet.labels.catalogue import POINT_BRANCH, PSEUDO
from cqbnet.labels.manifest import Manifest
from cqbnet.recipes.stages import Context, Stage, bar, network_stage, stage_config, view, with_warmups

# paper 003: lambda_sem is 1 for one click per segment and 0.1 for ten (Sec. 4); from this many clicks on, 0.1
MANY_CLICKS = 5
# the point branch's learning rate as a share of the config's: at the full recipe's 0.02 the network diverges as
# the pseudo labels ramp in (benchmarks/points_collapse.md), at 0.01 it does not
BRANCH_LR = 0.5


def clicks_per_segment(images: list) -> float:
    """Mean clicks per clicked segment over ``images``."""
    counts = [len(lab.points) / max(1, len({p.segment_id for p in lab.points})) for lab in images if lab.points]
    return float(np.mean(counts)) if counts else 1.0


def branch_config(cfg: dict[str, Any], clicked: list) -> dict[str, Any]:
    """The point-branch network's config: ``cfg`` with the branch on, each thing cut to its clicked parts,
    lambda_sem by the clicks per segment (paper 003) and the learning rate at :data:`BRANCH_LR` of the config's."""
    configured = cfg["model"].get("weak") or {}
    out = stage_config(cfg)
    lam = 0.1 if clicks_per_segment(clicked) >= MANY_CLICKS else 1.0
    weak = {**configured, "points": True, "points_clicked_only": True, "points_lambda_sem": lam}
    out["model"]["weak"] = with_warmups(weak, configured, cfg["solver"]["max_iter"])
    out["solver"]["base_lr"] = cfg["solver"]["base_lr"] * BRANCH_LR
    return out


def write_pseudo_labels(
    checkpoint: str | os.PathLike,
    manifest: Manifest | str | os.PathLike,
    folder: Path,
    device: str = "cpu",
    crf: bool = True,
    progress: bool = False,
    overwrite: bool = False,
    crf_keep: float = 0.0,
) -> Path:
    """The pseudo labels a trained point branch (``checkpoint``) gives the point images of ``manifest``, refined by
    the dense CRF when ``crf`` (a segment it shrinks below ``crf_keep`` of its area keeps its pixels), written to
    ``folder`` as COCO panoptic predictions (``panoptic_pred.json``)."""
    import torch

    from cqbnet.engine.inference import write_predictions
    from cqbnet.engine.trainer import load_model
    from cqbnet.labels.dataset import MixedLabelDataset
    from cqbnet.weak.fdd_points import pseudo_label_items

    dev = torch.device(device)
    model, _ = load_model(checkpoint, dev)
    dataset = MixedLabelDataset(manifest)
    n = sum("PT" in lab.kinds for lab in dataset.manifest.images)
    what = PSEUDO + (" (dense CRF)" if crf else "")
    items = bar(pseudo_label_items(model, dataset, dev, crf, crf_keep), n, what, progress)
    return write_predictions(folder, items, dataset.categories, overlays=False, overwrite=overwrite)


def branch_and_pseudo_labels(ctx: Context, clicked: list, masked: list) -> None:
    """``cqbnet fit``'s two stages of ``points-crf``: the point-branch network on the ``clicked`` images (and the
    ``masked`` ones), then its CRF-refined pseudo labels of the clicked images (``fit.crf_keep``)."""
    branch_view = view(ctx.manifest, clicked + masked, "clicked and masked images")
    what = "paper 003's point branch, trained on the clicks (clicked parts only)"
    ctx.add(network_stage(ctx, POINT_BRANCH, what, branch_config(ctx.cfg, clicked), branch_view))

    keep = float(ctx.cfg["fit"]["crf_keep"])

    def make(folder: Path) -> None:
        branch = ctx.out / POINT_BRANCH
        write_pseudo_labels(
            branch / "model_final.pth",
            branch / "manifest.json",
            folder / "labels",
            ctx.device,
            True,
            ctx.progress,
            overwrite=True,
            crf_keep=keep,
        )

    what = "the point branch's pseudo labels of the clicked images, refined by the dense CRF"
    inputs = {"branch": ctx.fingerprints[POINT_BRANCH], "crf": True, **({"crf_keep": keep} if keep else {})}
    ctx.add(Stage(PSEUDO, what, 0, 0, len(clicked), inputs, make))

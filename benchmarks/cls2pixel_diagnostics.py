"""How good are Cls2Pixel's pseudo stuff labels? Measured on a checkpoint against the ground truth.

For the first ``--images`` val scenes the checkpoint's CAM branch gives pseudo stuff labels exactly as in
training (:func:`cqbnet.weak.cls2pixel.pseudo_stuff_labels`, with the scene's true tags), on the semantic
head's stride-4 grid. Reported: the share of ground-truth stuff cells that get a pseudo label (coverage; labels
on thing cells count too, so it can exceed what is right), the share of pseudo-labelled cells whose label is
the ground truth's class (precision), the semantic head's own accuracy on stuff cells, and the precision of a
label drawn at random from the scene's tagged stuff classes (chance).

Usage: ``python -m benchmarks.cls2pixel_diagnostics RUN/model_final.pth --data DIR [--images 60]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.detector_diagnostics import checkpoint_arguments
from cqbnet.data.dataset import IGNORE_INDEX, PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.engine.trainer import load_model
from cqbnet.weak.cls2pixel import IGNORE, class_activation_maps, pseudo_stuff_labels


def pseudo_label_quality(checkpoint: Path, data: Path, images: int = 60) -> dict[str, float]:
    model, _ = load_model(checkpoint, torch.device("cpu"))
    if model.cls2pixel is None:
        raise SystemExit(f"{checkpoint}: trained without Cls2Pixel, so it has no CAM branch to judge")
    val = PanopticDataset(*split_paths(data, "val"))
    stuff = model._stuff_semantic
    labelled = right = stuff_cells = head_right = tag_head_right = 0
    chance = 0.0
    with torch.no_grad():
        for i in range(min(images, len(val))):
            img, t = val[i]
            x = torch.from_numpy(img).permute(2, 0, 1).float() / 255
            _, _, sem_features, sem_logits, _ = model.features([x])
            _, maps = model.cls2pixel.cam_head(sem_features)  # (1, K, h, w)
            tags = torch.zeros(1, sem_logits.shape[1])
            tags[0, np.unique(t["semantic"][t["semantic"] != IGNORE_INDEX])] = 1
            pseudo = pseudo_stuff_labels(class_activation_maps(maps), tags, stuff)[0]  # (h, w)
            gt = F.interpolate(torch.from_numpy(t["semantic"])[None, None].float(), size=pseudo.shape, mode="nearest")
            gt = gt[0, 0].long()  # (h, w) on the same grid
            is_stuff = torch.isin(gt, stuff)
            mask = pseudo != IGNORE
            labelled += int(mask.sum())
            right += int((pseudo[mask] == gt[mask]).sum())
            stuff_cells += int(is_stuff.sum())
            head_right += int((sem_logits[0].argmax(0)[is_stuff] == gt[is_stuff]).sum())
            restricted = sem_logits[0].masked_fill(~tags[0].bool()[:, None, None], float("-inf")).argmax(0)
            tag_head_right += int((restricted[is_stuff] == gt[is_stuff]).sum())
            tagged_stuff = int(tags[0, stuff].sum())
            chance += int(is_stuff.sum()) / max(tagged_stuff, 1)  # a tagged stuff class drawn at random per cell
    return {
        "coverage": labelled / max(stuff_cells, 1),
        "precision": right / max(labelled, 1),
        "semantic_head_stuff_accuracy": head_right / max(stuff_cells, 1),
        "semantic_head_within_tags_stuff_accuracy": tag_head_right / max(stuff_cells, 1),
        "chance_precision_on_stuff": chance / max(stuff_cells, 1),
    }


def main() -> None:
    args = checkpoint_arguments(images=60)
    print({k: round(v, 4) for k, v in pseudo_label_quality(args.checkpoint, args.data, args.images).items()})


if __name__ == "__main__":
    main()

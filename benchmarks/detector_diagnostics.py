"""Where a trained network's thing branch stands: proposal recall and the detector's class accuracy.

    python -m benchmarks.detector_diagnostics CHECKPOINT --data DATA_ROOT [--images 100]

For the first ``--images`` val images: the share of ground-truth things (not crowd) that have an RPN proposal at
IoU >= 0.5, and the share whose best-scoring detection among those at IoU >= 0.5 (score >= 0.05) has the right
class. Used in ``benchmarks/archive/headline_v1.md`` to say why short schedules give PQ_th near 0 on the synthetic
scenes.
:func:`detector_on_true_boxes` asks the cascade about the ground-truth boxes themselves, which separates what
the classifier knows from what the proposals find (``benchmarks/loss_normalization.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.data.transforms import to_tensors
from cqbnet.engine.trainer import load_model
from cqbnet.modeling.panoptic_head import paste_masks
from cqbnet.network.panoptic_net import PanopticNet


@torch.no_grad()
def diagnose(checkpoint: Path, data: Path, images: int = 100) -> dict[str, float]:
    """Proposal recall, class accuracy and mask quality of a checkpoint's thing branch on the first val images.

    Detections are the network's own (revised by relation reasoning when it is on, score >= the cascade's
    threshold). For each ground-truth thing, its detection is the best-scoring one at box IoU >= 0.5: the share
    with one (``detected``), with the right class (``class_accuracy``), with score >= the merge's threshold
    (``confident``), and the mean mask IoU of its mask (pasted, > 0.5) with the true mask, beside that of its
    own box filled (``detection_fill_mask_iou``: what a mask that only fills the detected box would score) and of
    the true box filled (``box_fill_mask_iou``).
    """
    model, _ = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    val = PanopticDataset(*split_paths(data, "val"))
    merge_thresh = model.panoptic_head.merge_score_thresh
    things = recalled = detected = right = confident = 0
    mask_iou: list[float] = []
    fill_iou: list[float] = []
    det_fill_iou: list[float] = []
    for i in range(min(images, len(val))):
        image, target = to_tensors(*val[i])
        found = model.detect([image], mode="heuristic")  # masks predicted for every detection
        proposals, _ = model.rpn(found.image_list, model.backbone(found.image_list.tensors))
        det = found.dets[0]
        keep = target["is_thing"] & ~target["iscrowd"]
        boxes, classes, masks = target["boxes"][keep].float(), target["labels"][keep], target["masks"][keep]
        things += len(boxes)
        if not len(boxes):
            continue
        recalled += int((box_iou(boxes, proposals[0]).max(1).values >= 0.5).sum()) if len(proposals[0]) else 0
        if not len(det["boxes"]):
            continue
        h, w = masks.shape[-2:]
        pasted = paste_masks(det["mask_probs"], det["boxes"], h, w, 1.0) > 0.5  # (D, H, W)
        iou = box_iou(boxes, det["boxes"])  # (G, D)
        for g in range(len(boxes)):
            hit = iou[g] >= 0.5
            if not hit.any():
                continue
            j = int(torch.argmax(torch.where(hit, det["scores"], torch.zeros_like(det["scores"]))))
            detected += 1
            right += int(model.labels.thing_semantic[int(det["labels"][j]) - 1] == int(classes[g]))
            confident += int(det["scores"][j] >= merge_thresh)
            mask_iou.append(_iou(pasted[j], masks[g]))
            fill_iou.append(_iou(box_fill(boxes[g], h, w), masks[g]))
            det_fill_iou.append(_iou(box_fill(det["boxes"][j], h, w), masks[g]))
    n = max(1, things)
    return {
        "things": things,
        "proposal_recall_iou50": recalled / n,
        "detected": detected / n,
        "class_accuracy": right / n,
        "confident": confident / n,
        "mask_iou": sum(mask_iou) / max(1, len(mask_iou)),
        "detection_fill_mask_iou": sum(det_fill_iou) / max(1, len(det_fill_iou)),
        "box_fill_mask_iou": sum(fill_iou) / max(1, len(fill_iou)),
        "chance": 1 / max(1, model.labels.num_things),
    }


def box_fill(box: Tensor, height: int, width: int) -> Tensor:
    """(H, W) bool: the pixels whose centres lie in the xyxy ``box``."""
    ys = torch.arange(height, dtype=box.dtype) + 0.5
    xs = torch.arange(width, dtype=box.dtype) + 0.5
    return ((ys >= box[1]) & (ys < box[3]))[:, None] & ((xs >= box[0]) & (xs < box[2]))[None, :]


def _iou(a: Tensor, b: Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 0.0


@torch.no_grad()
def detector_on_true_boxes(model: PanopticNet, val: PanopticDataset, images: int = 80) -> dict[str, Any]:
    """FPN magnitude, and each cascade stage's foreground probability and accuracy on the true thing boxes."""
    model.eval()
    heads = model.roi_heads
    fg: list[list[Tensor]] = [[] for _ in heads.stages]
    right: list[list[Tensor]] = [[] for _ in heads.stages]
    scale = []
    for i in range(min(images, len(val))):
        image, target = to_tensors(*val[i])
        batch = model.batch([image])
        features = model.backbone(batch.tensors)
        scale.append(torch.stack([v.abs().mean() for v in features.values()]).mean())
        keep = target["is_thing"] & ~target["iscrowd"]
        if not keep.any():
            continue
        boxes = target["boxes"][keep].float()
        labels = torch.tensor([model.labels.thing_semantic.index(int(c)) + 1 for c in target["labels"][keep]])
        for k, stage in enumerate(heads.stages):
            logits, _ = heads._stage_forward(stage, features, [boxes], batch.image_sizes)  # (G, 1 + T)
            probs = F.softmax(logits, dim=-1)
            fg[k].append(1 - probs[:, 0])
            right[k].append((probs[:, 1:].argmax(1) + 1 == labels).float())
    return {
        "fpn_magnitude": float(torch.stack(scale).mean()),
        "foreground_probability": [float(torch.cat(x).mean()) for x in fg],
        "class_accuracy": [float(torch.cat(x).mean()) for x in right],
    }


def checkpoint_arguments(images: int) -> argparse.Namespace:
    """The command line of a diagnostic that judges one checkpoint on the val scenes of a synthetic folder."""
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, required=True, help="a folder made by `cqbnet data synth`")
    ap.add_argument("--images", type=int, default=images)
    return ap.parse_args()


def main() -> None:
    args = checkpoint_arguments(images=100)
    torch.set_num_threads(2)
    print(diagnose(args.checkpoint, args.data, args.images))


if __name__ == "__main__":
    main()

"""Training targets in the layout each head reads, from one image's labels (``cqbnet.data`` targets)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from cqbnet.data.label_space import LabelSpace


def detection_target(t: dict[str, Any], labels: LabelSpace) -> dict[str, Tensor]:
    """Non-crowd things as torchvision detection targets (labels 1..T): segments of P, else boxes of B."""
    det_label = {s: k + 1 for k, s in enumerate(labels.thing_semantic)}
    if "masks" in t:
        sel = t["is_thing"] & ~t["iscrowd"]
        boxes, classes = t["boxes"][sel], t["labels"][sel]
    else:
        sel = ~t["box_iscrowd"]
        boxes, classes = t["box_boxes"][sel], t["box_labels"][sel]
    out = {
        "boxes": boxes.float(),
        "labels": torch.tensor([det_label[int(c)] for c in classes], dtype=torch.int64, device=boxes.device),
    }
    if "masks" in t:
        out["masks"] = t["masks"][sel].to(torch.uint8)
    if "ignore" in t:  # approximate labels (paper 001): pixels no loss reads
        out["ignore"] = t["ignore"].bool()
    return out


def semantic_target(
    t: dict[str, Any], kinds: frozenset[str], size: tuple[int, int], labels: LabelSpace, ignore_index: int
) -> Tensor | None:
    """Pixel labels (H, W) an image carries: full (P), stuff only (S), clicked points (PT); None when it has none.

    In a label space without stuff classes, a panoptic image's unlabelled pixels are the background class.
    """
    if "P" in kinds:
        if labels.background:
            return torch.where(t["panoptic"] == 0, labels.num_classes, t["semantic"])
        return t["semantic"]
    if "S" in kinds:
        return t["stuff_semantic"]
    if "PT" in kinds:
        h, w = size
        out = torch.full((h, w), ignore_index, dtype=torch.int64, device=t["point_xy"].device)
        out[t["point_xy"][:, 1], t["point_xy"][:, 0]] = t["point_labels"]
        return out
    return None


def pad_semantic(maps: list[Tensor | None], size: tuple[int, int], device, ignore_index: int) -> Tensor:
    """Per-image label maps (or None: nothing labelled) padded into one (N, H', W') batch."""
    out = torch.full((len(maps), *size), ignore_index, dtype=torch.int64, device=device)
    for i, m in enumerate(maps):
        if m is not None:
            out[i, : m.shape[0], : m.shape[1]] = m
    return out

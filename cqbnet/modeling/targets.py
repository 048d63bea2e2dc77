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
    if "ignore" in t:  # approximate labels (paper 001): pixels no loss reads, but the mask head the box background
        out["ignore"] = t["ignore"].bool()
        if "box_background" in t:
            out["ignore"] = out["ignore"] & ~t["box_background"].bool()
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


def pseudo_panoptic_target(
    masks: Tensor, classes: Tensor, iscrowd: Tensor, thing_semantic: set[int], ignore_index: int
) -> dict[str, Tensor]:
    """A panoptic target (the keys a P image's target has) from pseudo-label segments: masks (K, H, W) bool, not
    overlapping and not empty, their semantic classes (K,) and crowd flags (K,); segment ids 1..K, tight boxes,
    the semantic map :data:`ignore_index` where no segment is (papers 003 and 002's pseudo labels)."""
    from cqbnet.data.transforms import boxes_of

    k, h, w = masks.shape
    panoptic = torch.zeros((h, w), dtype=torch.int64, device=masks.device)
    semantic = torch.full((h, w), ignore_index, dtype=torch.int64, device=masks.device)
    for j, m in enumerate(masks):
        panoptic[m], semantic[m] = j + 1, classes[j]
    return {
        "masks": masks,
        "labels": classes,
        "segment_ids": torch.arange(1, k + 1, dtype=torch.int64, device=masks.device),
        "iscrowd": iscrowd,
        "is_thing": torch.tensor([int(c) in thing_semantic for c in classes], dtype=torch.bool, device=masks.device),
        "boxes": boxes_of(masks, torch.zeros((k, 4), device=masks.device)),
        "semantic": semantic,
        "panoptic": panoptic,
    }


def with_pseudo_panoptic(t: dict[str, Any], pseudo: dict[str, Tensor]) -> dict[str, Any]:
    """An image's target with pseudo panoptic labels added: its kinds gain P and ``pseudo_panoptic`` marks it, so
    every P loss reads them (:data:`~cqbnet.modeling.supervision.LOSS_IMAGES`) and the branch that made them still
    sees the image as its own."""
    return {**t, **pseudo, "kinds": t["kinds"] | {"P"}, "pseudo_panoptic": True}


def pad_semantic(maps: list[Tensor | None], size: tuple[int, int], device, ignore_index: int) -> Tensor:
    """Per-image label maps (or None: nothing labelled) padded into one (N, H', W') batch."""
    out = torch.full((len(maps), *size), ignore_index, dtype=torch.int64, device=device)
    for i, m in enumerate(maps):
        if m is not None:
            out[i, : m.shape[0], : m.shape[1]] = m
    return out

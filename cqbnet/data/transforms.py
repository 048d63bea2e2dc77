"""Tensors and augmentations for (image, target) pairs of :class:`~cqbnet.data.dataset.PanopticDataset`.

Every transform moves the image and all of its target maps together: masks,
boxes, the semantic map and the panoptic id map. Randomness is passed in (a
``numpy.random.Generator``), so the trainer can make each sample's augmentation
a function of the seed and the sample's position in the data stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Target = dict[str, Any]


def to_tensors(image: np.ndarray, target: Target) -> tuple[Tensor, Target]:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]; target arrays -> tensors (panoptic ids as int64)."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    out: Target = {"image_id": target["image_id"]}
    for k, v in target.items():
        if k in ("image_id", "kinds", "pseudo_panoptic"):
            out[k] = v
            continue
        arr = np.ascontiguousarray(v)
        out[k] = torch.from_numpy(arr.astype(np.int64) if k == "panoptic" else arr)
    return img, out


def to_image_bytes(image: Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8 on the CPU, the inverse of :func:`to_tensors` for the image:
    what the colour cues (GrabCut, proposals, the dense CRF) and written pictures read."""
    return (image.detach().permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy()


# per-pixel targets, last two dims (H, W)
MAPS = ("masks", "semantic", "panoptic", "stuff_semantic", "ignore", "box_background", "semantic_not")
BOXES = ("boxes", "box_boxes")  # xyxy, exclusive right/bottom edge


def hflip(image: Tensor, target: Target) -> tuple[Tensor, Target]:
    """Mirror left-right: maps, boxes and points of whichever label kinds the target has."""
    w = image.shape[-1]
    t = dict(target)
    for k in MAPS:
        if k in t:
            t[k] = target[k].flip(-1)
    for k in BOXES:
        if k in t:
            b = target[k].clone()
            b[:, 0], b[:, 2] = w - target[k][:, 2], w - target[k][:, 0]
            t[k] = b
    if "point_xy" in t:
        p = target["point_xy"].clone()
        p[:, 0] = w - 1 - p[:, 0]
        t["point_xy"] = p
    return image.flip(-1), t


def resize(image: Tensor, target: Target, scale: float) -> tuple[Tensor, Target]:
    """Scale by ``scale``: bilinear for the image, nearest for masks and label maps; boxes from the new masks."""
    h, w = image.shape[-2:]
    size = scaled_size(h, w, scale)
    if size == (h, w):
        return image, target
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    t = dict(target)
    if "masks" in t:
        t["masks"] = F.interpolate(target["masks"][None].float(), size=size, mode="nearest")[0].bool()
    for k in ("semantic", "panoptic", "stuff_semantic", "semantic_not"):
        if k in t:
            t[k] = F.interpolate(target[k][None, None].float(), size=size, mode="nearest")[0, 0].long()
    for k in ("ignore", "box_background"):
        if k in t:
            t[k] = F.interpolate(target[k][None, None].float(), size=size, mode="nearest")[0, 0].bool()
    if "boxes" in t:
        # approximate labels (with ignore) keep their annotated boxes: their masks are only the confident part
        scaled = target["boxes"] * torch.tensor([size[1] / w, size[0] / h] * 2)
        t["boxes"] = scaled if "ignore" in t else boxes_of(t["masks"], target["boxes"] * scale)
    if "box_boxes" in t:
        t["box_boxes"] = target["box_boxes"] * torch.tensor([size[1] / w, size[0] / h] * 2)
    if "point_xy" in t:
        xy = ((target["point_xy"].float() + 0.5) * torch.tensor([size[1] / w, size[0] / h])).long()
        t["point_xy"] = torch.minimum(xy, torch.tensor([size[1] - 1, size[0] - 1]))
    return img, t


def shorter_side_scale(h: int, w: int, short: int, max_size: int | None) -> float:
    """The scale that makes the shorter side ``short`` without the longer one passing ``max_size``."""
    scale = short / min(h, w)
    return scale if max_size is None else min(scale, max_size / max(h, w))


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    return max(1, round(h * scale)), max(1, round(w * scale))


def boxes_of(masks: Tensor, fallback: Tensor) -> Tensor:
    """Tight xyxy boxes (exclusive right/bottom) of (N, H, W) masks; a mask emptied by resizing keeps ``fallback``."""
    out = fallback.clone().float()
    for i, m in enumerate(masks):
        ys = torch.where(m.any(1))[0]
        xs = torch.where(m.any(0))[0]
        if len(ys):
            out[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=out.dtype)
    return out


def train_augment(
    image: Tensor,
    target: Target,
    rng: np.random.Generator,
    flip: bool = True,
    short_sizes: tuple[int, ...] | None = None,
    max_size: int | None = None,
) -> tuple[Tensor, Target]:
    """Random shorter-side resize (one of ``short_sizes``, longer side at most ``max_size``) and random flip."""
    if short_sizes:
        short = short_sizes[int(rng.integers(len(short_sizes)))]
        image, target = resize(image, target, shorter_side_scale(*image.shape[-2:], short, max_size))
    if flip and rng.random() < 0.5:
        image, target = hflip(image, target)
    return image, target


def test_resize(image: Tensor, short: int | None, max_size: int | None) -> Tensor:
    """Resize an image for inference (shorter side ``short``, longer side at most ``max_size``)."""
    if not short:
        return image
    h, w = image.shape[-2:]
    size = scaled_size(h, w, shorter_side_scale(h, w, short, max_size))
    if size == (h, w):
        return image
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]

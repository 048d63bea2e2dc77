"""Box2Mask: boxes teach masks (paper 000, "Bounding Boxes"; after the box-tightness prior and BoxInst).

Two losses on the mask predictions of images that carry boxes only:

* :func:`projection_loss` (box tightness, Hsu et al. 2019; BoxInst's projection term, Tian et al. 2021):
  the box is the tightest rectangle around the instance, so the mask's maximum along every row and every
  column must equal the box's; a dice loss compares the two projections on each axis.
* :func:`pairwise_loss` (BoxInst's pairwise term): neighbouring pixels (3 x 3 neighbourhood at dilation 2)
  whose LAB colours are similar (similarity >= 0.3) should take the same label; the loss is the negative
  log-probability that they do, over pairs inside the box. The colours are those of the image average pooled
  by ``PAIRWISE_POOL`` (BoxInst computes them on the image downsampled to its mask stride): at full resolution
  pixel noise keeps most pairs inside one object below the threshold (``benchmarks/scenes.md``).

:func:`ramp_weight` ramps the pairwise term in over a warm-up, as BoxInst does. All functions work on
mask logits in any frame (an RoI's M x M grid or the image), with the box given as a mask on the same grid.

In a two-stage network the masks live in RoI frames. BoxInst's projection term learns as much from where the
box is *not* (a projection is 0 outside the box) as from where it is; an RoI that is the box itself has no
outside, and there the term is satisfied by a mask that fills the whole RoI. So, as the mask head of Mask R-CNN
learns from proposals rather than from the ground-truth boxes, :func:`sample_box_rois` takes proposals that
overlap a box (IoU >= 0.5), each of which sees its box and some background around it, and :func:`box_in_roi`
draws the box on each RoI's grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab
from torch import Tensor
from torchvision.ops import box_iou

PAIRWISE_DILATION = 2
PAIRWISE_THRESHOLD = 0.3
COLOR_THETA = 2.0  # BoxInst: S = exp(-||c_i - c_j|| / theta)
PAIRWISE_POOL = 4  # the LAB image is average pooled by this before it is sampled on the RoI grids


def dice_loss(pred: Tensor, target: Tensor, eps: float = 1e-5) -> Tensor:
    """1 - 2|p t| / (|p|^2 + |t|^2) per row of (N, L) -> (N,)."""
    inter = (pred * target).sum(-1)
    return 1.0 - 2.0 * inter / (pred.pow(2).sum(-1) + target.pow(2).sum(-1) + eps)


def projection_loss(mask_logits: Tensor, box_masks: Tensor) -> Tensor:
    """Box-tightness loss, mean over instances.

    mask_logits (N, H, W); box_masks (N, H, W) with 1 inside each instance's box. Zero for a mask that
    exactly fills its box.
    """
    probs = mask_logits.sigmoid()
    box = box_masks.to(probs.dtype)
    loss_x = dice_loss(probs.max(dim=1).values, box.max(dim=1).values)  # (N,) projection on x
    loss_y = dice_loss(probs.max(dim=2).values, box.max(dim=2).values)  # (N,) projection on y
    return (loss_x + loss_y).mean()


def neighbour_offsets(dilation: int = PAIRWISE_DILATION) -> list[tuple[int, int]]:
    """The 8 neighbours of a 3 x 3 window at ``dilation``: (dy, dx) pairs."""
    return [(dy * dilation, dx * dilation) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """x[..., i + dy, j + dx] with zero padding, same shape as x."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def lab_similarity(lab: Tensor, dilation: int = PAIRWISE_DILATION, theta: float = COLOR_THETA) -> Tensor:
    """Colour similarity of each pixel to its 8 dilated neighbours: lab (N, 3, H, W) -> (N, 8, H, W) in [0, 1].

    Neighbours outside the image get similarity 0.
    """
    sims = []
    h, w = lab.shape[-2:]
    inside = torch.ones((1, 1, h, w), dtype=lab.dtype, device=lab.device)
    for dy, dx in neighbour_offsets(dilation):
        diff = lab - shift(lab, dy, dx)
        s = torch.exp(-diff.norm(dim=1) / theta)  # (N, H, W)
        sims.append(s * shift(inside, dy, dx)[:, 0])
    return torch.stack(sims, dim=1)


def image_to_lab(image: np.ndarray | Tensor) -> Tensor:
    """(H, W, 3) uint8 RGB (or (3, H, W) float in [0, 1]) -> (3, H, W) float32 CIE-LAB (scikit-image)."""
    if isinstance(image, Tensor):
        image = image.detach().permute(1, 2, 0).cpu().numpy()
    return torch.from_numpy(rgb2lab(np.asarray(image)).astype(np.float32)).permute(2, 0, 1)


def pooled_lab(image: np.ndarray | Tensor, pool: int = PAIRWISE_POOL) -> Tensor:
    """(1, 3, ceil(H / pool), ceil(W / pool)) LAB of an image (as :func:`image_to_lab` takes it), average pooled."""
    lab = image_to_lab(image)[None]  # (1, 3, H, W)
    return F.avg_pool2d(lab, pool, ceil_mode=True) if pool > 1 else lab


def pairwise_loss(
    mask_logits: Tensor,
    similarity: Tensor,
    box_masks: Tensor,
    threshold: float = PAIRWISE_THRESHOLD,
    dilation: int = PAIRWISE_DILATION,
) -> Tensor:
    """-log P(pixel and neighbour share a label), averaged over similar pairs (S >= threshold) inside the box.

    mask_logits (N, H, W); similarity (N, 8, H, W) from :func:`lab_similarity`; box_masks (N, H, W).
    P(same) = p_i p_j + (1 - p_i)(1 - p_j), computed from the logits in log space.
    """
    log_fg = F.logsigmoid(mask_logits)  # (N, H, W)
    log_bg = F.logsigmoid(-mask_logits)
    box = box_masks.to(mask_logits.dtype)
    total = mask_logits.sum() * 0.0
    count = mask_logits.new_zeros(())
    for k, (dy, dx) in enumerate(neighbour_offsets(dilation)):
        same = torch.logaddexp(log_fg + shift(log_fg, dy, dx), log_bg + shift(log_bg, dy, dx))  # (N, H, W)
        weight = (similarity[:, k] >= threshold).to(mask_logits.dtype) * box * shift(box, dy, dx)
        total = total - (same * weight).sum()
        count = count + weight.sum()
    return total / count.clamp(min=1.0)


def box_in_roi(rois: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Where each box lies on its RoI's ``size`` x ``size`` grid: rois, boxes (N, 4) xyxy -> (N, size, size).

    A cell belongs to the box when its centre does (the cell centres are those RoIAlign samples around).
    """
    steps = (torch.arange(size, device=rois.device, dtype=rois.dtype) + 0.5) / size  # (size,)
    xs = rois[:, 0:1] + steps * (rois[:, 2:3] - rois[:, 0:1])  # (N, size) cell centres
    ys = rois[:, 1:2] + steps * (rois[:, 3:4] - rois[:, 1:2])
    in_x = (xs >= boxes[:, 0:1]) & (xs < boxes[:, 2:3])
    in_y = (ys >= boxes[:, 1:2]) & (ys < boxes[:, 3:4])
    return (in_y[:, :, None] & in_x[:, None, :]).to(rois.dtype)


def sample_box_rois(
    proposals: Tensor, boxes: Tensor, per_image: int, iou: float = 0.5, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """RoIs that teach Box2Mask in one image: the boxes themselves plus up to ``per_image - len(boxes)``
    proposals at IoU >= ``iou`` with a box, drawn at random. proposals (P, 4), boxes (G, 4) ->
    (RoIs (R, 4), index of each RoI's box (R,))."""
    own = torch.arange(len(boxes), device=boxes.device)
    if len(proposals) == 0 or len(boxes) == 0:
        return boxes, own
    best, which = box_iou(proposals, boxes).max(dim=1)  # (P,)
    pos = torch.where(best >= iou)[0]
    room = max(0, per_image - len(boxes))
    if len(pos) > room:
        pos = pos[torch.randperm(len(pos), generator=generator, device="cpu")[:room].to(pos.device)]
    return torch.cat([boxes, proposals[pos]]), torch.cat([own, which[pos]])


def ramp_weight(iteration: int, warmup: int = 10000) -> float:
    """A warmed-up term's weight: 0 -> 1 linearly over ``warmup`` iterations (BoxInst's pairwise term; also
    Cls2Pixel's pseudo-label and energy terms)."""
    return min(1.0, iteration / warmup) if warmup > 0 else 1.0

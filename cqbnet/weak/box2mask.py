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

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, roi_align

from cqbnet.cues.pairwise import (
    PAIRWISE_DILATION,
    PAIRWISE_POOL,
    lab_similarity,
    neighbour_offsets,
    pooled_lab,
    shift,
)
from cqbnet.modeling.supervision import zero_loss
from cqbnet.weak.base import WeakModule, setting
from cqbnet.weak.warmup import ramp_weight

PAIRWISE_THRESHOLD = 0.3


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


@dataclass
class Box2MaskConfig:
    """``model.weak.box2mask``: boxes teach masks (projection and pairwise LAB losses on the boxes' mask logits)."""

    enabled: bool = True
    warmup: int = 10000  # iterations over which the pairwise term ramps in (BoxInst)
    pairwise: bool = True
    rois: int = setting(16, minimum=1)  # RoIs per boxes-only image: its boxes, then proposals at IoU >= 0.5


class Box2Mask(WeakModule):
    """Paper 000's L_B2M on a training batch: boxes-only images teach the mask head.

    The images are those :data:`~cqbnet.modeling.supervision.LOSS_IMAGES` gives ``loss_box2mask`` (boxes and no
    panoptic label, at least one box). Their RoIs are each box and proposals at IoU >= 0.5 with it
    (:func:`sample_box_rois`, ``rois_per_image`` in all); their mask logits must project onto the box
    (:func:`projection_loss`) and, after a warm-up of ``warmup`` iterations, agree across similar-coloured
    neighbours inside it (:func:`pairwise_loss`, colours from the image pooled by ``PAIRWISE_POOL``).
    """

    def __init__(self, warmup: int = 10000, pairwise: bool = True, rois_per_image: int = 16):
        super().__init__()
        self.warmup = warmup
        self.pairwise = pairwise
        self.rois_per_image = rois_per_image

    name = "box2mask"

    def losses(self, batch, net) -> dict[str, Tensor]:
        """L_B2M on the boxes images, when the network has a mask head to teach."""
        return {"loss_box2mask": self.loss(batch, net.roi_heads)} if net.roi_heads.with_mask else {}

    def loss(self, batch, roi_heads) -> Tensor:
        """L_B2M of ``batch`` (a :class:`~cqbnet.modeling.supervision.TrainingBatch`) through ``roi_heads``'s
        mask head."""
        idx = batch.images_for("loss_box2mask")
        if not idx:
            return zero_loss(roi_heads.mask_predictor)
        rois, boxes, labels = [], [], []
        for i in idx:
            gt = batch.gt_boxes[i]
            r, which = sample_box_rois(batch.proposals[i], gt["boxes"], self.rois_per_image)
            rois.append(r)
            boxes.append(gt["boxes"][which])
            labels.append(gt["labels"][which])
        _, feats = batch.sub(idx)
        logits = roi_heads.mask_logits(feats, rois, labels, batch.sizes(idx))  # (M, 28, 28)
        inside = box_in_roi(torch.cat(rois), torch.cat(boxes), logits.shape[-1])  # (M, 28, 28)
        loss = projection_loss(logits, inside)
        if self.pairwise:
            lab = [pooled_lab(batch.images[i]).to(logits.device) for i in idx]  # each (1, 3, H / pool, W / pool)
            lab_rois = torch.cat(
                [
                    roi_align(
                        x, [r], logits.shape[-2:], spatial_scale=1.0 / PAIRWISE_POOL, sampling_ratio=2, aligned=True
                    )
                    for x, r in zip(lab, rois)
                ]
            )  # (M, 3, 28, 28)
            loss = loss + ramp_weight(batch.iteration, self.warmup) * pairwise_loss(
                logits, lab_similarity(lab_rois), inside
            )
        return loss

"""Cascade R-CNN box heads (Cai and Vasconcelos 2018) with a Mask R-CNN mask head, from torchvision parts.

Paper 000's base network uses three cascade stages with IoU thresholds 0.5, 0.6
and 0.7 and loss weights 1, 0.5 and 0.25 ("Overall End-to-End Training"). Each
stage re-labels the previous stage's refined boxes at its own, higher IoU
threshold and regresses class-agnostic deltas with its own, tighter box-coder
weights. At inference the class scores of the three stages are averaged and the
last stage's boxes are kept. Everything is torchvision: RoIAlign pooling (on CPU
computed as a sparse product, ``roi_pool.py``), Matcher, BoxCoder, the balanced sampler, batched NMS and the mask loss.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import maskrcnn_inference, maskrcnn_loss, project_masks_on_boxes
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes, roi_align

from cqbnet.modeling.roi_pool import SparseMultiScaleRoIAlign
from cqbnet.modeling.supervision import zero_loss

STAGE_IOUS = (0.5, 0.6, 0.7)
STAGE_WEIGHTS = (1.0, 0.5, 0.25)
STAGE_BOX_WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
# (RoI representations (R, F), class logits (R, classes), deltas (R, 4), RoIs per image) -> new logits, deltas:
# how relation reasoning (paper 000) revises the first stage's predictions at inference
Enhancer = Callable[[Tensor, Tensor, Tensor, list[int]], tuple[Tensor, Tensor]]


class BoxPredictor(nn.Module):
    """Class scores (background + things) and one class-agnostic box delta per RoI."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.cls_score(x), self.bbox_pred(x)


class CascadeStage(nn.Module):
    """One stage: RoI features -> MLP -> scores and deltas, trained at its IoU threshold."""

    def __init__(
        self,
        in_channels: int,
        pool: int,
        representation: int,
        num_classes: int,
        iou: float,
        box_weights: Sequence[float],
    ):
        super().__init__()
        self.head = TwoMLPHead(in_channels * pool * pool, representation)
        self.predictor = BoxPredictor(representation, num_classes)
        self.matcher = det_utils.Matcher(iou, iou, allow_low_quality_matches=False)
        self.box_coder = det_utils.BoxCoder(tuple(box_weights))


def nonempty(boxes: Tensor) -> Tensor:
    """(R, 4) boxes -> (R,) bool: those with positive width and height."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])


def mask_loss_with_ignore(
    mask_logits: Tensor,
    boxes: list[Tensor],
    gt_masks: list[Tensor],
    ignore: list[Tensor | None],
    gt_labels: list[Tensor],
    matched: list[Tensor],
) -> Tensor:
    """Mask R-CNN's per-pixel BCE on the RoI grid, with no loss on the cells that are mostly *ignore* (paper 001,
    Eq. 1: only confident pixels teach): ``ignore`` (H, W) bool per image, or None where every pixel counts."""
    m = mask_logits.shape[-1]
    logits, targets, weights = [], [], []
    start = 0
    for b, gm, ig, gl, idx in zip(boxes, gt_masks, ignore, gt_labels, matched):
        n = len(b)
        if n == 0:
            continue
        rois = torch.cat([torch.zeros_like(b[:, :1]), b], dim=1)
        targets.append(project_masks_on_boxes(gm, b, idx, m))
        if ig is None:
            weights.append(torch.ones((n, m, m), device=b.device))
        else:
            frac = roi_align(ig[None, None].to(b), rois, (m, m), 1.0)[:, 0]
            weights.append((frac < 0.5).to(b))
        lab = gl[idx]
        logits.append(mask_logits[start : start + n][torch.arange(n, device=b.device), lab])
        start += n
    if not targets:
        return mask_logits.sum() * 0
    w = torch.cat(weights)
    bce = F.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(targets), reduction="none")
    return (bce * w).sum() / w.sum().clamp(min=1.0)


class CascadeRoIHeads(nn.Module):
    """Three box stages and a mask head; ``forward`` returns (detections, losses).

    Labels follow torchvision: 0 is background, 1..T the thing classes.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        representation: int = 1024,
        stage_ious: Sequence[float] = STAGE_IOUS,
        stage_weights: Sequence[float] = STAGE_WEIGHTS,
        stage_box_weights: Sequence[Sequence[float]] = STAGE_BOX_WEIGHTS,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        mask_channels: int = 256,
        mask_layers: int = 4,
        with_mask: bool = True,
        canonical_scale: int = 224,
        mask_train_stage: int = -1,
    ):
        super().__init__()
        if not len(stage_ious) == len(stage_weights) == len(stage_box_weights):
            raise ValueError("stage_ious, stage_weights and stage_box_weights must have one entry per stage")
        if not -len(stage_ious) <= mask_train_stage < len(stage_ious):
            raise ValueError(f"mask_train_stage must name one of the {len(stage_ious)} stages, got {mask_train_stage}")
        # the stage whose positive RoIs (at its IoU threshold) train the mask head: detectron2 uses the first (0.5)
        self.mask_train_stage = mask_train_stage % len(stage_ious)
        names = ["0", "1", "2", "3"]
        # an RoI of side s is pooled from FPN level 4 + log2(s / canonical_scale) (FPN paper, Eq. 1): 224 suits
        # ImageNet-sized objects; small images with small objects pool from coarser, more semantic levels
        # when it is lower
        self.box_roi_pool = SparseMultiScaleRoIAlign(
            names, output_size=7, sampling_ratio=2, canonical_scale=canonical_scale
        )
        self.stages = nn.ModuleList(
            CascadeStage(in_channels, 7, representation, num_classes, iou, bw)
            for iou, bw in zip(stage_ious, stage_box_weights)
        )
        self.stage_weights = tuple(stage_weights)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.num_classes = num_classes
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.with_mask = with_mask
        if with_mask:
            self.mask_roi_pool = SparseMultiScaleRoIAlign(
                names, output_size=14, sampling_ratio=2, canonical_scale=canonical_scale
            )
            self.mask_head = MaskRCNNHeads(in_channels, [mask_channels] * mask_layers, 1)
            self.mask_predictor = MaskRCNNPredictor(mask_channels, mask_channels, num_classes)

    # --- training-time labelling ---------------------------------------------------------------------------

    @staticmethod
    def _match(stage: CascadeStage, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]):
        """Per image: matched gt index (clamped) and class label (0 = background) at the stage's IoU."""
        matched, labels = [], []
        for p, gb, gl in zip(proposals, gt_boxes, gt_labels):
            if gb.numel() == 0 or len(p) == 0:  # no gt: all background; no RoI left (all refined off): nothing
                matched.append(torch.zeros(len(p), dtype=torch.int64, device=p.device))
                labels.append(torch.zeros(len(p), dtype=torch.int64, device=p.device))
                continue
            idx = stage.matcher(box_iou(gb, p))
            lab = gl[idx.clamp(min=0)].clone()
            lab[idx < 0] = 0  # below the threshold: background (this matcher has no "between" band)
            matched.append(idx.clamp(min=0))
            labels.append(lab)
        return matched, labels

    def first_stage_targets(
        self, boxes: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Class labels (R,) and regression targets (R, 4) of RoIs at the first stage's IoU (all images joined)."""
        stage = self.stages[0]
        matched, labels = self._match(stage, boxes, gt_boxes, gt_labels)
        reg = stage.box_coder.encode(
            [g[m] if len(g) else torch.zeros_like(b) for g, m, b in zip(gt_boxes, matched, boxes)], boxes
        )
        return torch.cat(labels), torch.cat(reg)

    def _stage_forward(
        self,
        stage: CascadeStage,
        features: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
        enhance: Enhancer | None = None,
    ) -> tuple[Tensor, Tensor]:
        x = stage.head(self.box_roi_pool(features, boxes, image_shapes))  # (R, C, 7, 7) -> (R, representation)
        logits, deltas = stage.predictor(x)  # (R, classes), (R, 4)
        if enhance is not None:
            logits, deltas = enhance(x, logits, deltas, [len(b) for b in boxes])
        return logits, deltas

    def refine(self, stage: CascadeStage, deltas: Tensor, boxes: list[Tensor], image_shapes) -> list[Tensor]:
        """Boxes moved by a stage's (detached) deltas and clipped to their images: the next stage's input."""
        counts = [len(b) for b in boxes]
        pred = stage.box_coder.decode_single(deltas.detach(), torch.cat(boxes))
        return [clip_boxes_to_image(b, s) for b, s in zip(pred.split(counts), image_shapes)]

    def detect(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        score_thresh: float | None = None,
        detections_per_img: int | None = None,
        enhance: Enhancer | None = None,
    ) -> list[dict[str, Tensor]]:
        """Run the cascade on proposals (no sampling, no ground truth): boxes, scores, labels per image.

        Scores stay differentiable, so a later head (paper 004's potential) can train the classifier.
        ``enhance`` revises the first stage's predictions (relation reasoning).
        """
        boxes = proposals
        scores_per_stage = []
        for k, stage in enumerate(self.stages):
            logits, deltas = self._stage_forward(stage, features, boxes, image_shapes, enhance if k == 0 else None)
            scores_per_stage.append(F.softmax(logits, dim=-1))
            boxes = self.refine(stage, deltas, boxes, image_shapes)
        scores = torch.stack(scores_per_stage).mean(0)  # (R, classes): the cascade's ensemble
        return self.postprocess(scores, boxes, image_shapes, score_thresh, detections_per_img)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Training: ([], losses). Inference: (detections, {})."""
        if not self.training:
            return self.detect(features, proposals, image_shapes), {}
        assert targets is not None
        losses: dict[str, Tensor] = {}
        gt_boxes = [t["boxes"] for t in targets]
        gt_labels = [t["labels"] for t in targets]
        boxes = [torch.cat([p, g]) for p, g in zip(proposals, gt_boxes)]  # gt boxes join the first stage
        for k, stage in enumerate(self.stages):
            matched, labels = self._match(stage, boxes, gt_boxes, gt_labels)
            if k == 0:  # sample once; later stages keep the same RoIs, refined (Cascade R-CNN)
                pos, neg = self.sampler(labels)
                keep = [torch.where(p | n)[0] for p, n in zip(pos, neg)]
                boxes = [b[i] for b, i in zip(boxes, keep)]
                matched = [m[i] for m, i in zip(matched, keep)]
                labels = [lab[i] for lab, i in zip(labels, keep)]
            logits, deltas = self._stage_forward(stage, features, boxes, image_shapes)
            reg_targets = stage.box_coder.encode(
                [g[m] if len(g) else torch.zeros_like(b) for g, m, b in zip(gt_boxes, matched, boxes)], boxes
            )
            cls_loss, box_loss = self.box_losses(logits, deltas, torch.cat(labels), torch.cat(reg_targets))
            losses[f"loss_cls_s{k}"] = self.stage_weights[k] * cls_loss
            losses[f"loss_box_s{k}"] = self.stage_weights[k] * box_loss
            if k == self.mask_train_stage:
                mask_rois = (boxes, matched, labels)
            # a refined box clipped to nothing (it left the image) is dropped, as detectron2's cascade does in training
            boxes = [b[nonempty(b)] for b in self.refine(stage, deltas, boxes, image_shapes)]

        if self.with_mask:
            # mask loss on the positive RoIs of stage ``mask_train_stage`` (its input boxes, labelled at its IoU),
            # in the images whose targets have masks (images with boxes only train the boxes)
            pos_boxes, pos_matched, pos_labels = [], [], []
            for b, m, lab, t in zip(*mask_rois, targets):
                p = (lab > 0) & ("masks" in t)
                pos_boxes.append(b[p])
                pos_matched.append(m[p])
                pos_labels.append(lab[p])
            if sum(len(b) for b in pos_boxes):
                x = self.mask_head(self.mask_roi_pool(features, pos_boxes, image_shapes))
                mask_logits = self.mask_predictor(x)
                gt_masks = [t["masks"] if "masks" in t else t["boxes"].new_zeros((0, 1, 1)) for t in targets]
                if any("ignore" in t for t in targets):  # approximate labels (paper 001): ignore pixels get no loss
                    ignore = [t.get("ignore") for t in targets]
                    losses["loss_mask"] = mask_loss_with_ignore(
                        mask_logits, pos_boxes, gt_masks, ignore, gt_labels, pos_matched
                    )
                else:
                    losses["loss_mask"] = maskrcnn_loss(mask_logits, pos_boxes, gt_masks, gt_labels, pos_matched)
            else:
                losses["loss_mask"] = zero_loss(self.mask_predictor)

        return [], losses

    @staticmethod
    def box_losses(logits: Tensor, deltas: Tensor, labels: Tensor, reg_targets: Tensor) -> tuple[Tensor, Tensor]:
        """Classification (cross-entropy) and box (smooth L1 on positives) losses of one stage's predictions."""
        if labels.numel() == 0:  # no RoI in the batch (every box refined off its image): nothing to learn
            return logits.sum() * 0.0, deltas.sum() * 0.0
        cls_loss = F.cross_entropy(logits, labels)
        pos = labels > 0
        box_loss = F.smooth_l1_loss(deltas[pos], reg_targets[pos], beta=1 / 9, reduction="sum") / max(1, labels.numel())
        return cls_loss, box_loss

    def postprocess(
        self,
        scores: Tensor,
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
        score_thresh: float | None = None,
        detections_per_img: int | None = None,
    ) -> list[dict[str, Tensor]]:
        """Per image: score threshold, per-class NMS, top detections; boxes are class-agnostic."""
        thresh = self.score_thresh if score_thresh is None else score_thresh
        top = self.detections_per_img if detections_per_img is None else detections_per_img
        out = []
        for s, b in zip(scores.split([len(x) for x in boxes]), boxes):
            fg = s[:, 1:]  # (R, T)
            r, t = fg.shape
            cand_scores = fg.reshape(-1)
            cand_boxes = b.detach()[:, None].expand(r, t, 4).reshape(-1, 4)
            cand_labels = torch.arange(1, t + 1, device=s.device).repeat(r)
            keep = torch.where(cand_scores > thresh)[0]
            cand_scores, cand_boxes, cand_labels = cand_scores[keep], cand_boxes[keep], cand_labels[keep]
            keep = remove_small_boxes(cand_boxes, 1e-2)
            cand_scores, cand_boxes, cand_labels = cand_scores[keep], cand_boxes[keep], cand_labels[keep]
            keep = batched_nms(cand_boxes, cand_scores.detach(), cand_labels, self.nms_thresh)[:top]
            out.append({"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cand_labels[keep]})
        return out

    def mask_logits(
        self, features: dict[str, Tensor], boxes: list[Tensor], labels: list[Tensor], image_shapes
    ) -> Tensor:
        """Mask logits (M, 28, 28) of the given boxes, each in its own class's channel (labels 1..T)."""
        x = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))  # (M, T+1, 28, 28)
        cls = torch.cat(labels)
        return x[torch.arange(len(cls), device=x.device), cls]

    def predict_masks(self, features: dict[str, Tensor], detections: list[dict[str, Tensor]], image_shapes) -> None:
        """Add ``mask_probs`` (D, 1, 28, 28) to each image's detections (differentiable in training)."""
        if not self.with_mask:
            return
        boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in boxes) == 0:
            for d in detections:
                d["mask_probs"] = torch.zeros((0, 1, 28, 28), device=d["boxes"].device)
            return
        x = self.mask_head(self.mask_roi_pool(features, boxes, image_shapes))
        probs = maskrcnn_inference(self.mask_predictor(x), [d["labels"] for d in detections])
        for d, p in zip(detections, probs):
            d["mask_probs"] = p

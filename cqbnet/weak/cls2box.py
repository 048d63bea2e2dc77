"""Cls2Box: image tags teach detection (paper 000, "Image Labels"; after WSDDN, Bilen and Vedaldi 2016).

A multiple-instance detection (MID) head on the RoI features gives phi_MID (N proposals x C thing classes):
a softmax over classes (what is in this proposal) times a softmax over proposals (which proposal holds
each class). Summed over proposals it is an image-level class score that tags can supervise. Paper 000
multiplies phi_MID with the detector's own classification output and trains it with a cross-entropy
against the tags (L_C2B), so the common detector learns from tag-only images too (``mode="paper"``).

Trained that way the detector's classifiers receive the positive tags' credit on whatever proposals phi_MID
ranks high, mostly background early on, and learn to call background an object. ``mode="pseudo"`` (the
default) keeps phi_MID x detector as the ranking but lets tags reach the detector only through two targets
a tag can vouch for:

* a present class: the proposal ranked first is a pseudo box (OICR, Tang et al. 2017); the proposals at the
  stage's IoU with it are trained as that class, each weighed by the detector's own probability of the pick;
* an absent class: no proposal is of it (the negative bag of multiple-instance learning), a binary
  cross-entropy on the highest probability any proposal gives it.

The MID heads then learn on detached features and detector scores: they rank, they do not train the detector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from cqbnet.modeling.supervision import zero_loss
from cqbnet.weak.box2mask import ramp_weight

EPS = 1e-6
MODES = ("paper", "pseudo")


class MIDHead(nn.Module):
    """WSDDN's two streams on RoI features: (R, F) per image -> phi_MID (R, C), each column summing to at most 1."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.classify = nn.Linear(in_features, num_classes)
        self.detect = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor, counts: list[int]) -> list[Tensor]:
        """Split the batch's RoIs by image (``counts``) and return phi_MID for each image."""
        out = []
        for x in features.split(counts):
            cls = F.softmax(self.classify(x), dim=1)  # over classes
            det = F.softmax(self.detect(x), dim=0)  # over this image's proposals
            out.append(cls * det)  # (R_i, C)
        return out


def image_scores(mid: Tensor, detector_probs: Tensor | None = None) -> Tensor:
    """Image-level class scores (C,) in (0, 1): sum over proposals of phi_MID (times the detector's probabilities).

    ``detector_probs`` (R, C) are the common detector's foreground class probabilities for the same
    proposals (background column removed); paper 000 multiplies them in so the detector is trained too.
    """
    s = mid if detector_probs is None else mid * detector_probs
    return s.sum(0).clamp(EPS, 1 - EPS)


def cls2box_loss(mids: list[Tensor], tags: Tensor, detector_probs: list[Tensor] | None = None) -> Tensor:
    """L_C2B: binary cross-entropy of the image-level scores against the tags (N, C) in {0, 1}, mean over images."""
    if len(mids) == 0:
        return tags.sum() * 0.0
    losses = []
    for i, mid in enumerate(mids):
        probs = None if detector_probs is None else detector_probs[i]
        losses.append(F.binary_cross_entropy(image_scores(mid, probs), tags[i].to(mid.dtype)))
    return torch.stack(losses).mean()


def pseudo_box_targets(boxes: Tensor, ranking: Tensor, tags: Tensor, iou: float) -> tuple[Tensor, Tensor]:
    """OICR's pseudo labels for one image: (labels (R,), pick (R,)) from proposals (R, 4) and ranking (R, C).

    For each present class c (``tags`` (C,) in {0, 1}) the proposal ranking first is the pseudo box; a proposal
    at IoU >= ``iou`` with it gets label c + 1 (0: none) and ``pick`` the index of that pseudo box (-1: none).
    A proposal near the pseudo boxes of two classes takes the one it overlaps most.
    """
    labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    pick = torch.full_like(labels, -1)
    present = tags.nonzero().flatten()
    if len(present) == 0 or len(boxes) == 0:
        return labels, pick
    top = ranking[:, present].argmax(0)  # (P,) one pseudo box per present class
    overlap = box_iou(boxes, boxes[top])  # (R, P)
    best, which = overlap.max(1)
    near = best >= iou
    labels[near] = present[which[near]] + 1
    pick[near] = top[which[near]]
    return labels, pick


def pseudo_loss(logits: Tensor, labels: Tensor, pick: Tensor, tags: Tensor) -> Tensor:
    """Tags on one image's detector logits (R, 1 + C): pseudo-box cross-entropy plus the absent classes' negative bag.

    The cross-entropy of each labelled proposal is weighed by the (detached) probability the detector gives its
    pseudo box's class at the pseudo box; the negative bag is BCE(max_r p[r, c], 0) for each absent class c.
    Both are summed over classes and divided by the number of classes.
    """
    probs = torch.softmax(logits, dim=1)  # (R, 1 + C)
    num = tags.numel()
    total = logits.sum() * 0.0
    near = labels > 0
    if near.any():
        weight = probs[pick[near], labels[near]].detach()  # the detector's confidence in each pseudo box
        ce = F.cross_entropy(logits[near], labels[near], reduction="none")
        per_class = torch.zeros(num + 1, dtype=ce.dtype, device=ce.device).index_add(0, labels[near], weight * ce)
        count = torch.zeros_like(per_class).index_add(0, labels[near], torch.ones_like(ce))
        total = total + (per_class[1:] / count[1:].clamp(min=1)).sum()
    absent = (tags == 0).nonzero().flatten()
    if len(absent) and len(logits):
        worst = probs[:, 1:][:, absent].amax(0).clamp(EPS, 1 - EPS)  # (A,)
        total = total + F.binary_cross_entropy(worst, torch.zeros_like(worst), reduction="sum")
    return total / max(num, 1)


class Cls2Box(nn.Module):
    """Paper 000's L_C2B on a training batch: tag-only images teach the detector's classifiers.

    The images are those :data:`~cqbnet.modeling.supervision.LOSS_IMAGES` gives ``loss_cls2box`` (tags, and no
    boxes or panoptic label). Their first ``proposals`` RPN proposals pass through every cascade stage as at
    test (stage i sees the boxes the stages before it refined); at each stage a MID head of its own times the
    stage's thing probabilities ranks the proposals for each thing tag. Eq. 3: sum_i lambda_i L_C2B, lambda_i the
    stages' loss weights; the whole loss ramps in over ``warmup`` iterations, while the detector learns from the
    labelled images what an object is. ``mode`` says how the tags reach the detector (module docstring).
    """

    def __init__(
        self,
        representation: int,
        thing_semantic: list[int],
        num_stages: int,
        proposals: int = 100,
        mode: str = "pseudo",
        warmup: int = 0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"cls2box mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mid_heads = nn.ModuleList(MIDHead(representation, len(thing_semantic)) for _ in range(num_stages))
        self.proposals = proposals
        self.mode = mode
        self.warmup = warmup
        # the semantic index (of the tags) of each detector label
        self.register_buffer("thing_semantic", torch.tensor(thing_semantic, dtype=torch.int64), persistent=False)

    def stage_loss(self, mid_head: MIDHead, x: Tensor, logits: Tensor, boxes: list[Tensor], tags: Tensor, iou: float):
        """One stage's L_C2B from RoI features x (R, F) and the stage's class logits (R, 1 + C) of the ``boxes``."""
        counts = [len(b) for b in boxes]
        probs = torch.softmax(logits, dim=1)[:, 1:]  # (R, C) things only
        if self.mode == "paper":
            return cls2box_loss(mid_head(x, counts), tags, list(probs.split(counts)))
        mids = mid_head(x.detach(), counts)
        det = [p.detach() for p in probs.split(counts)]
        loss = cls2box_loss(mids, tags, det)  # the MID heads learn to rank
        for mid, p, b, lg, t in zip(mids, det, boxes, logits.split(counts), tags):
            labels, pick = pseudo_box_targets(b, mid.detach() * p, t, iou)
            loss = loss + pseudo_loss(lg, labels, pick, t) / len(boxes)
        return loss

    def loss(self, batch, rpn, roi_heads) -> Tensor:
        """L_C2B of ``batch`` (a :class:`~cqbnet.modeling.supervision.TrainingBatch`)."""
        total = zero_loss(self)
        idx = batch.images_for("loss_cls2box")
        ramp = ramp_weight(batch.iteration, self.warmup)
        if not idx or ramp == 0:
            return total
        images, feats = batch.sub(idx)
        boxes = [p[: self.proposals] for p in rpn.proposals(images, feats)]
        tags = torch.stack([batch.targets[i]["tags"][self.thing_semantic] for i in idx])  # (n, T)
        for stage, mid_head, weight in zip(roi_heads.stages, self.mid_heads, roi_heads.stage_weights):
            x = stage.head(roi_heads.box_roi_pool(feats, boxes, images.image_sizes))  # (R, representation)
            logits, deltas = stage.predictor(x)
            iou = stage.matcher.high_threshold
            total = total + ramp * weight * self.stage_loss(mid_head, x, logits, boxes, tags, iou)
            boxes = roi_heads.refine(stage, deltas, boxes, images.image_sizes)
        return total

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

* a present class: the box ranked first, taken as at test (the last stage's refined boxes ranked by the
  stages' mean probability times their mean phi_MID), is a pseudo box (OICR, Tang et al. 2017); each stage's
  proposals at the stage's IoU with it are trained as that class, weighed by the detector's confidence in it;
* an absent class: no proposal is of it (the negative bag of multiple-instance learning), a binary
  cross-entropy on the highest probability any proposal gives it.

The MID heads then learn on detached features and detector scores: they rank, they do not train the detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou

from cqbnet.modeling.supervision import zero_loss
from cqbnet.weak.base import WeakModule, setting
from cqbnet.weak.warmup import ramp_weight

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


def pseudo_boxes(boxes: Tensor, ranking: Tensor, tags: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """OICR's pseudo ground truth of one image: the top-ranked box of each present class.

    boxes (R, 4) and ranking (R, C) of the same proposals, tags (C,) in {0, 1}. Returns the pseudo boxes (P, 4),
    their classes (P,) and the index (P,) of the proposal each one is.
    """
    present = tags.nonzero().flatten()
    if len(present) == 0 or len(boxes) == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return boxes.new_zeros(0, 4), empty, empty
    top = ranking[:, present].argmax(0)  # (P,)
    return boxes[top], present, top


def pseudo_box_targets(boxes: Tensor, pseudo: Tensor, classes: Tensor, iou: float) -> tuple[Tensor, Tensor]:
    """Labels (R,) of proposals (R, 4) from pseudo boxes (P, 4) of ``classes`` (P,): class + 1 at IoU >= ``iou``
    with one (the one overlapped most), 0 elsewhere; and the index (R,) of that pseudo box (-1: none)."""
    labels = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    which = torch.full_like(labels, -1)
    if len(pseudo) == 0 or len(boxes) == 0:
        return labels, which
    best, k = box_iou(boxes, pseudo).max(1)  # (R,)
    near = best >= iou
    labels[near] = classes[k[near]] + 1
    which[near] = k[near]
    return labels, which


def pseudo_loss(logits: Tensor, labels: Tensor, weights: Tensor, tags: Tensor) -> Tensor:
    """Tags on one image's detector logits (R, 1 + C): pseudo-box cross-entropy plus the absent classes' negative bag.

    ``labels`` (R,) from :func:`pseudo_box_targets`, ``weights`` (R,) each labelled proposal's weight (the
    detector's confidence in its pseudo box). The weighted cross-entropy is a mean over each class's labelled
    proposals; the negative bag is BCE(max_r p[r, c], 0) for each absent class c. Both are summed over classes and
    divided by the number of classes.
    """
    num = tags.numel()
    total = logits.sum() * 0.0
    near = labels > 0
    if near.any():
        ce = weights[near] * F.cross_entropy(logits[near], labels[near], reduction="none")
        per_class = torch.zeros(num + 1, dtype=ce.dtype, device=ce.device).index_add(0, labels[near], ce)
        count = torch.zeros_like(per_class).index_add(0, labels[near], torch.ones_like(ce))
        total = total + (per_class[1:] / count[1:].clamp(min=1)).sum()
    absent = (tags == 0).nonzero().flatten()
    if len(absent) and len(logits):
        worst = torch.softmax(logits, dim=1)[:, 1:][:, absent].amax(0).clamp(EPS, 1 - EPS)  # (A,)
        total = total + F.binary_cross_entropy(worst, torch.zeros_like(worst), reduction="sum")
    return total / max(num, 1)


@dataclass
class Cls2BoxConfig:
    """``model.weak.cls2box``: tags teach detection (WSDDN's MID head times the detector's scores, L_C2B)."""

    enabled: bool = True
    proposals: int = setting(100, minimum=1)  # proposals per tag image fed to the MID heads
    mode: str = setting("pseudo", choices=MODES)  # "paper": L_C2B trains the detector; "pseudo": its pseudo boxes
    warmup: int = 10000  # iterations over which L_C2B ramps in


class Cls2Box(WeakModule):
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

    name = "cls2box"

    def losses(self, batch, net) -> dict[str, Tensor]:
        """L_C2B on the tags images, through the network's RPN and cascade."""
        return {"loss_cls2box": self.loss(batch, net.rpn, net.roi_heads)}

    def loss(self, batch, rpn, roi_heads) -> Tensor:
        """L_C2B of ``batch`` (a :class:`~cqbnet.modeling.supervision.TrainingBatch`)."""
        total = zero_loss(self)
        idx = batch.images_for("loss_cls2box")
        ramp = ramp_weight(batch.iteration, self.warmup)
        if not idx or ramp == 0:
            return total
        images, feats = batch.sub(idx)
        boxes = [p[: self.proposals] for p in rpn.proposals(images, feats)]
        counts = [len(b) for b in boxes]
        tags = torch.stack([batch.targets[i]["tags"][self.thing_semantic] for i in idx])  # (n, T)
        seen = []  # per stage: (RoI features (R, F), class logits (R, 1 + T), the stage's boxes per image)
        for stage in roi_heads.stages:
            x = stage.head(roi_heads.box_roi_pool(feats, boxes, images.image_sizes))  # (R, representation)
            logits, deltas = stage.predictor(x)
            seen.append((x, logits, boxes))
            boxes = roi_heads.refine(stage, deltas, boxes, images.image_sizes)
        if self.mode == "paper":
            for (x, logits, _), mid_head, weight in zip(seen, self.mid_heads, roi_heads.stage_weights):
                probs = torch.softmax(logits, dim=1)[:, 1:].split(counts)  # things only
                total = total + ramp * weight * cls2box_loss(mid_head(x, counts), tags, list(probs))
            return total
        return total + ramp * self.pseudo_box_loss(seen, boxes, counts, tags, roi_heads)

    def pseudo_box_loss(self, seen, final: list[Tensor], counts: list[int], tags: Tensor, roi_heads) -> Tensor:
        """``mode="pseudo"``: pseudo boxes taken as at test (the last stage's refined boxes ranked by the stages'
        mean probability times their mean phi_MID), then every stage's proposals labelled by them at its IoU."""
        probs = [torch.softmax(lg.detach(), dim=1)[:, 1:] for _, lg, _ in seen]  # per stage (R, T)
        mean_probs = torch.stack(probs).mean(0).split(counts)
        mids = [head(x.detach(), counts) for head, (x, _, _) in zip(self.mid_heads, seen)]  # per stage, per image
        total = sum(  # the MID heads learn to rank
            weight * cls2box_loss(mids[k], tags, list(probs[k].split(counts)))
            for k, weight in enumerate(roi_heads.stage_weights)
        )
        targets = []
        for i in range(len(counts)):
            ranking = torch.stack([m[i] for m in mids]).mean(0).detach() * mean_probs[i]  # (R_i, T)
            pseudo, classes, picks = pseudo_boxes(final[i], ranking, tags[i])
            targets.append((pseudo, classes, mean_probs[i][picks, classes]))  # confidence of each pseudo box
        for (_, logits, boxes), stage, weight in zip(seen, roi_heads.stages, roi_heads.stage_weights):
            iou = stage.matcher.high_threshold
            for i, lg in enumerate(logits.split(counts)):
                pseudo, classes, confidence = targets[i]
                labels, which = pseudo_box_targets(boxes[i], pseudo, classes, iou)
                weights = torch.zeros_like(lg[:, 0])
                weights[which >= 0] = confidence[which[which >= 0]]  # no pseudo box (no tag): all 0
                total = total + weight * pseudo_loss(lg, labels, weights, tags[i]) / len(counts)
        return total

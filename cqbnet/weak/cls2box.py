"""Cls2Box: image tags teach detection (paper 000, "Image Labels"; after WSDDN, Bilen and Vedaldi 2016).

A multiple-instance detection (MID) head on the RoI features gives phi_MID (N proposals x C thing classes):
a softmax over classes (what is in this proposal) times a softmax over proposals (which proposal holds
each class). Summed over proposals it is an image-level class score that tags can supervise. Paper 000
multiplies phi_MID with the detector's own classification output and trains it with a cross-entropy
against the tags (L_C2B), so the common detector learns from tag-only images too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cqbnet.modeling.supervision import zero_loss

EPS = 1e-6


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


class Cls2Box(nn.Module):
    """Paper 000's L_C2B on a training batch: tag-only images teach the detector's classifiers.

    The images are those :data:`~cqbnet.modeling.supervision.LOSS_IMAGES` gives ``loss_cls2box`` (tags, and no
    boxes or panoptic label). Their first ``proposals`` RPN proposals pass through every cascade stage as at
    test (stage i sees the boxes the stages before it refined); at each stage a MID head of its own times the
    stage's thing probabilities gives image scores against the thing tags. Eq. 3: sum_i lambda_i L_C2B,
    lambda_i the stages' loss weights.
    """

    def __init__(self, representation: int, thing_semantic: list[int], num_stages: int, proposals: int = 100):
        super().__init__()
        self.mid_heads = nn.ModuleList(MIDHead(representation, len(thing_semantic)) for _ in range(num_stages))
        self.proposals = proposals
        # the semantic index (of the tags) of each detector label
        self.register_buffer("thing_semantic", torch.tensor(thing_semantic, dtype=torch.int64), persistent=False)

    def loss(self, batch, rpn, roi_heads) -> Tensor:
        """L_C2B of ``batch`` (a :class:`~cqbnet.modeling.supervision.TrainingBatch`)."""
        total = zero_loss(self)
        idx = batch.images_for("loss_cls2box")
        if not idx:
            return total
        images, feats = batch.sub(idx)
        boxes = [p[: self.proposals] for p in rpn.proposals(images, feats)]
        counts = [len(b) for b in boxes]
        tags = torch.stack([batch.targets[i]["tags"][self.thing_semantic] for i in idx])  # (n, T)
        for stage, mid_head, weight in zip(roi_heads.stages, self.mid_heads, roi_heads.stage_weights):
            x = stage.head(roi_heads.box_roi_pool(feats, boxes, images.image_sizes))  # (R, representation)
            logits, deltas = stage.predictor(x)
            probs = torch.softmax(logits, dim=1)[:, 1:].split(counts)  # things only
            total = total + weight * cls2box_loss(mid_head(x, counts), tags, list(probs))
            boxes = roi_heads.refine(stage, deltas, boxes, images.image_sizes)
        return total

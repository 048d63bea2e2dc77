"""Cls2Pixel: image tags teach stuff pixels (paper 000, "Image Labels"; after Zhang et al. 2019 and Joy et al. 2019).

For an image with tags only, an extended classification branch on the semantic features gives class
activation maps (CAM, Zhou et al. 2016). Their confident pixels become pseudo stuff labels, the rest is
ignored; an energy term keeps the prediction coherent in colour and space. Paper 000's loss is

    L_C2P = L_pseudo + L_cls + L_energy

* :func:`class_activation_maps` - CAMs from features and the classifier's weights, normalised to [0, 1];
* :func:`classification_loss` - L_cls, multi-label BCE of the globally pooled scores against the tags;
* :func:`pseudo_stuff_labels` - the tagged stuff class whose CAM wins a pixel clearly, or ignore;
* :func:`pseudo_label_loss` - L_pseudo, cross-entropy of the semantic logits on the pseudo labels;
* :func:`energy_loss` - L_energy, sum over neighbouring pixel pairs of colour affinity x (1 - p_i . p_j).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cqbnet.weak.box2mask import lab_similarity, neighbour_offsets, shift

IGNORE = 255


class CAMClassifier(nn.Module):
    """The extended classification branch: 1x1 classifier on features, global average pooling for image scores."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """features (N, C, h, w) -> (image logits (N, K), activation maps (N, K, h, w))."""
        maps = self.classifier(features)
        return maps.mean(dim=(2, 3)), maps


def class_activation_maps(maps: Tensor) -> Tensor:
    """Raw activation maps (N, K, h, w) -> CAMs in [0, 1]: ReLU, then divided by each map's maximum."""
    cams = F.relu(maps)
    peak = cams.flatten(2).max(dim=2).values.clamp(min=1e-6)  # (N, K)
    return cams / peak[:, :, None, None]


def classification_loss(image_logits: Tensor, tags: Tensor) -> Tensor:
    """L_cls: multi-label binary cross-entropy, tags (N, K) in {0, 1}."""
    return F.binary_cross_entropy_with_logits(image_logits, tags.to(image_logits.dtype))


def pseudo_stuff_labels(
    cams: Tensor,
    tags: Tensor,
    stuff_classes: Tensor,
    threshold: float = 0.5,
    margin: float = 0.2,
) -> Tensor:
    """Pseudo stuff labels (N, h, w) from CAMs (N, K, h, w): confident pixels only, IGNORE elsewhere.

    Only the image's tagged classes compete. A pixel takes stuff class c when c's CAM is at least
    ``threshold`` and beats every other tagged class (thing or stuff) by ``margin``.
    """
    present = tags.bool()[:, :, None, None]  # (N, K, 1, 1)
    scores = torch.where(present, cams, torch.full_like(cams, -1.0))
    top2 = scores.topk(2, dim=1) if scores.shape[1] > 1 else (scores, None)
    best_val, best_cls = top2[0][:, 0], top2[1][:, 0]  # (N, h, w)
    second = top2[0][:, 1] if scores.shape[1] > 1 else torch.full_like(best_val, -1.0)
    is_stuff = torch.isin(best_cls, stuff_classes.to(best_cls.device))
    confident = (best_val >= threshold) & (best_val - second >= margin) & is_stuff
    return torch.where(confident, best_cls, torch.full_like(best_cls, IGNORE))


def pseudo_label_loss(semantic_logits: Tensor, pseudo: Tensor) -> Tensor:
    """L_pseudo: cross-entropy on the confident pixels (logits and labels on the same grid)."""
    if (pseudo != IGNORE).any():
        return F.cross_entropy(semantic_logits, pseudo, ignore_index=IGNORE)
    return semantic_logits.sum() * 0.0


def energy_loss(probs: Tensor, lab: Tensor, dilation: int = 1, theta: float = 8.0) -> Tensor:
    """L_energy: mean over neighbour pairs of S_ij (1 - p_i . p_j), S the LAB colour affinity.

    probs (N, K, H, W) softmax outputs; lab (N, 3, H, W). Zero when similar neighbours agree surely.
    """
    sim = lab_similarity(lab, dilation, theta)  # (N, 8, H, W)
    total = probs.sum() * 0.0
    for k, (dy, dx) in enumerate(neighbour_offsets(dilation)):
        agree = (probs * shift(probs, dy, dx)).sum(dim=1)  # (N, H, W)
        total = total + (sim[:, k] * (1.0 - agree)).sum()
    return total / sim.sum().clamp(min=1.0)

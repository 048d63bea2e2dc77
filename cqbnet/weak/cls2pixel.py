"""Cls2Pixel: image tags teach stuff pixels (paper 000, "Image Labels"; after Zhang et al. 2019 and Joy et al. 2019).

For an image with tags only, an extended classification branch on the semantic features gives class
activation maps (CAM, Zhou et al. 2016). Their confident pixels become pseudo stuff labels, the rest is
ignored; an energy term keeps the prediction coherent in colour and space. Paper 000's loss is

    L_C2P = L_pseudo + L_cls + L_energy

* :func:`class_activation_maps` - CAMs from features and the classifier's weights, normalised to [0, 1];
* :func:`classification_loss` - L_cls, multi-label BCE of the globally pooled scores against the tags;
* :func:`pseudo_stuff_labels` - the tagged stuff class whose CAM wins a pixel clearly, or ignore;
* :func:`pseudo_label_loss` - L_pseudo, cross-entropy of the semantic logits on the pseudo labels;
* :func:`energy_loss` - L_energy, sum over neighbouring pixel pairs of colour affinity x (1 - p_i . p_j);
* :func:`tag_consistency_loss` - our addition: multiple-instance BCE of the semantic head itself against the tags
  (after Pathak et al. 2015, "Fully convolutional multi-class multiple instance learning");
* :class:`PseudoLabelGate` - our addition: L_pseudo is weighed by the share of the semantic head's errors (the
  head told the same tags) that the CAM pseudo labels put right, both scored on the batch's fully labelled images;
  0 while the head is at least as right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cqbnet.cues.pairwise import lab_similarity, neighbour_offsets, pooled_lab, shift
from cqbnet.data.dataset import IGNORE_INDEX
from cqbnet.modeling.padding import grid_cells, valid_cells
from cqbnet.modeling.supervision import zero_loss
from cqbnet.weak.base import WeakModule
from cqbnet.weak.warmup import ramp_weight

IGNORE = IGNORE_INDEX  # pixels without a pseudo label: the semantic loss's ignore index


class CAMClassifier(nn.Module):
    """The extended classification branch: 1x1 classifier on features, global average pooling for image scores."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)

    def forward(self, features: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """features (N, C, h, w) -> (image logits (N, K), activation maps (N, K, h, w)).

        ``valid`` (N, 1, h, w) bool: each image's own cells of a padded batch; the global average pools over
        those only (all cells when None).
        """
        maps = self.classifier(features)
        if valid is None:
            return maps.mean(dim=(2, 3)), maps
        v = valid.to(maps.dtype)
        return (maps * v).sum(dim=(2, 3)) / v.sum(dim=(2, 3)).clamp(min=1.0), maps


def class_activation_maps(maps: Tensor, valid: Tensor | None = None) -> Tensor:
    """Raw activation maps (N, K, h, w) -> CAMs in [0, 1]: ReLU, then divided by each map's maximum.

    ``valid`` (N, 1, h, w) bool: cells off the image (padding) get 0 and do not count towards the maximum.
    """
    cams = F.relu(maps)
    if valid is not None:
        cams = cams * valid.to(cams.dtype)
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


def tag_consistency_loss(probs: Tensor, tags: Tensor) -> Tensor:
    """Multiple-instance BCE of the semantic prediction against the tags (after Pathak et al. 2015).

    probs (N, K, h, w) softmax outputs of the semantic head; tags (N, K) in {0, 1}. An image's score for a
    class is its largest probability over pixels: a tagged class must win some pixel, an untagged one none.
    Our addition to L_C2P: the energy term alone is smallest when one class covers the whole image, and with
    few labelled images it drove the stuff prediction to one class; this term forbids that for any image
    tagged with two or more classes.
    """
    score = probs.flatten(2).amax(dim=2).clamp(1e-6, 1 - 1e-6)  # (N, K)
    return F.binary_cross_entropy(score, tags.to(score.dtype))


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


class PseudoLabelGate(nn.Module):
    """Weighs L_pseudo by how much the pseudo labels know beyond the semantic head they would teach.

    Our addition to paper 000's Cls2Pixel. On the batch's panoptic images, whose true semantic map is known,
    pseudo labels are made from their CAMs exactly as for tag images; counted over the pseudo-labelled cells:
    how many the pseudo label gets right and how many the semantic head gets right when told the tags too
    (its argmax over the image's tagged classes: the pseudo labels know the tags, so the fair rival does).
    Both counts are running sums decayed by ``decay`` per update. L_pseudo's weight is the share of the
    head's errors that the pseudo labels would put right, net of the ones they would put wrong:
    ``w = (p_pseudo - p_head) / (1 - p_head)`` clipped to [0, 1]. It is 0 while the head is at least as right
    (the gate is shut) and 1 only for perfect pseudo labels.

    The weight is graded, not all or nothing, so that it vanishes as the CAMs and the head meet: once a head is
    as wrong as the CAMs, an open gate would let them teach in full (the runs behind this rule are training
    versions 3 and 4 in ``benchmarks/thing_modules.md``). With no panoptic image seen the weight is 0 (set
    ``enabled=False`` to trust the CAMs unchecked, as the paper does). Under DDP the counts are summed over
    the processes, so every process's panoptic images score the pseudo labels.
    """

    def __init__(self, enabled: bool = True, decay: float = 0.9):
        super().__init__()
        self.enabled = enabled
        self.decay = decay
        self.register_buffer("pseudo_right", torch.zeros((), dtype=torch.float64))
        self.register_buffer("head_right", torch.zeros((), dtype=torch.float64))
        self.register_buffer("labelled", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, pseudo: Tensor, head_logits: Tensor, tags: Tensor, truth: Tensor, ignore_index: int) -> None:
        """pseudo (n, h, w) with IGNORE; head_logits (n, K, h, w); tags (n, K); truth (n, h, w), ``ignore_index``
        where unknown."""
        scored = (pseudo != IGNORE) & (truth != ignore_index)
        told = head_logits.masked_fill(~tags.bool()[:, :, None, None], float("-inf")).argmax(1)  # (n, h, w)
        counts = torch.stack([((pseudo == truth) & scored).sum(), ((told == truth) & scored).sum(), scored.sum()]).to(
            self.labelled.dtype
        )  # (3,)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)  # the same totals on every process
        for buf, value in zip((self.pseudo_right, self.head_right, self.labelled), counts):
            buf.mul_(self.decay).add_(value)

    @property
    def precision(self) -> tuple[float, float] | None:
        """(pseudo-label precision, tag-restricted head accuracy) on the scored cells; None before any was scored."""
        if float(self.labelled) <= 0:
            return None
        n = float(self.labelled)
        return float(self.pseudo_right) / n, float(self.head_right) / n

    def weight(self) -> float:
        """L_pseudo's weight in [0, 1]: (p_pseudo - p_head) / (1 - p_head), clipped; 1 when the gate is disabled."""
        if not self.enabled:
            return 1.0
        p = self.precision
        if p is None:
            return 0.0
        pseudo, head = p
        if pseudo <= head:
            return 0.0
        return min(1.0, (pseudo - head) / (1.0 - head))

    def is_open(self) -> bool:
        return self.weight() > 0.0


@dataclass
class Cls2PixelConfig:
    """``model.weak.cls2pixel``: tags teach stuff pixels (CAM pseudo labels, classification and energy, L_C2P)."""

    enabled: bool = True
    weight: float = 0.5  # beta of Eq. 3
    warmup: int = 10000  # iterations over which L_pseudo and L_energy ramp in (L_cls from the start)
    gate: bool = True  # L_pseudo only while CAM pseudo labels beat the head told the tags, on P images
    pseudo: bool = True  # the three dense terms of L_C2P, each switchable for ablations
    energy: bool = True
    tag_consistency: bool = True  # our MIL term on the semantic head


class Cls2Pixel(WeakModule):
    """Paper 000's beta L_C2P on a training batch: tag images teach stuff pixels.

    The images are those :data:`~cqbnet.modeling.supervision.LOSS_IMAGES` gives ``loss_cls2pixel`` (tags, and no
    stuff map or panoptic label). L_cls trains the CAM classifier on their tags from the start; the dense
    terms (L_pseudo on confident CAM pixels of tagged stuff classes, L_energy at the semantic stride, and our
    tag-consistency term) ramp in over ``warmup`` iterations, as a classifier's CAMs are noise until it has
    learned. L_pseudo is weighed by :class:`PseudoLabelGate`, which the batch's panoptic images feed.
    Every sum over an image reads only its own cells of the padded batch.
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        stuff_classes: list[int],
        weight: float = 0.5,
        warmup: int = 10000,
        gate: bool = True,
        pseudo: bool = True,
        energy: bool = True,
        tag_consistency: bool = True,
        stride: int = 4,
    ):
        super().__init__()
        self.cam_head = CAMClassifier(channels, num_classes)
        self.gate = PseudoLabelGate(gate)
        self.register_buffer("stuff_classes", torch.tensor(stuff_classes, dtype=torch.int64), persistent=False)
        self.weight = weight  # beta of Eq. 3
        self.warmup = warmup
        self.pseudo = pseudo
        self.energy = energy
        self.tag_consistency = tag_consistency
        self.stride = stride  # of the semantic features and logits

    def _valid(self, batch, idx: list[int]) -> Tensor:
        """(n, 1, h, w): each image's own cells on the semantic grid."""
        return valid_cells(batch.sizes(idx), self.stride, batch.sem_features.shape[-2:], batch.sem_features.device)

    name = "cls2pixel"

    def losses(self, batch, net) -> dict[str, Tensor]:
        """L_C2P on the tags images."""
        return {"loss_cls2pixel": self.loss(batch, net.semantic_head.ignore_index)}

    def loss(self, batch, ignore_index: int) -> Tensor:
        """beta L_C2P of ``batch`` (a :class:`~cqbnet.modeling.supervision.TrainingBatch`); the gate scores the
        pseudo labels of its panoptic images first (``ignore_index``: unlabelled pixels of their maps)."""
        zero = zero_loss(self)
        full = batch.images_for("loss_panoptic")
        if full and self.gate.enabled and self.pseudo:
            self._score_pseudo_labels(batch, full, ignore_index)
        idx = batch.images_for("loss_cls2pixel")
        if not idx:
            return zero
        valid = self._valid(batch, idx)
        image_logits, maps = self.cam_head(batch.sem_features[idx], valid)  # (n, K), (n, K, h, w)
        tags = torch.stack([batch.targets[i]["tags"] for i in idx])
        loss = classification_loss(image_logits, tags)
        ramp = ramp_weight(batch.iteration, self.warmup)
        if ramp == 0:  # the CAMs of a classifier that has not learned yet are noise: no pseudo labels from them
            return self.weight * loss
        sem_logits = batch.sem_logits
        dense = zero
        gate = self.gate.weight() if self.pseudo else 0.0
        if gate > 0:  # CAMs and pseudo labels only when they teach
            cams = class_activation_maps(maps.detach(), valid)  # 0 off the image: no pseudo label there
            dense = gate * pseudo_label_loss(sem_logits[idx], pseudo_stuff_labels(cams, tags, self.stuff_classes))
        for j, i in enumerate(idx):
            h, w = grid_cells(batch.images[i].shape[-2:], self.stride)  # the image's cells on the grid
            probs = torch.softmax(sem_logits[i, :, :h, :w], dim=0)[None]  # (1, K, h, w)
            if self.energy:
                lab = pooled_lab(batch.images[i], self.stride)  # (1, 3, h, w): where the energy fires
                dense = dense + energy_loss(probs, lab.to(sem_logits.device)[..., :h, :w]) / len(idx)
            if self.tag_consistency:
                classes = probs[:, : tags.shape[1]]  # without the background class of a stuff-free label space
                dense = dense + tag_consistency_loss(classes, tags[j : j + 1]) / len(idx)
        return self.weight * (loss + ramp * dense)

    @torch.no_grad()
    def _score_pseudo_labels(self, batch, full: list[int], ignore_index: int) -> None:
        """Pseudo labels for the panoptic images, made as for tag images, scored against their semantic maps."""
        valid = self._valid(batch, full)
        _, maps = self.cam_head(batch.sem_features[full], valid)  # (n, K, h, w) on the padded grid
        cams = class_activation_maps(maps, valid)
        for j, i in enumerate(full):
            h, w = grid_cells(batch.images[i].shape[-2:], self.stride)
            truth = batch.targets[i]["semantic"].to(cams.device)
            grid = F.interpolate(truth[None, None].float(), size=(h, w), mode="nearest")[0].long()  # (1, h, w)
            present = truth[truth != ignore_index].unique()
            tags = torch.zeros(1, cams.shape[1], device=cams.device)
            tags[0, present[present < cams.shape[1]]] = 1.0
            pseudo = pseudo_stuff_labels(cams[j : j + 1, :, :h, :w], tags, self.stuff_classes)  # (1, h, w)
            head = batch.sem_logits[i : i + 1, : tags.shape[1], :h, :w]  # the classes the tags can name
            self.gate.update(pseudo, head, tags, grid, ignore_index)

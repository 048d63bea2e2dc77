"""Which images each loss learns from, by their label kinds, and how a batch's losses are weighed.

One table, :data:`LOSS_IMAGES`, names for every loss the images that carry its label. The network and every
weak module take their images from it (:meth:`TrainingBatch.images_for`), and the loss normalisation counts
the same images, so the two can never disagree.

Kinds: P panoptic masks, I image tags, B boxes, S stuff maps, PT clicked points (``cqbnet.labels.kinds``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

FULL_LABELS = frozenset({"P"})  # the kinds of an image from a plain panoptic dataset
# how a loss that only some of a batch's images carry is weighed: "batch" scales each loss by the share of the
# batch's images that carry its label, so the batch's loss is the mean over images of what each one can teach
# (L = 1/N sum_i L_i); "labelled" takes each loss as a mean over the images that carry it, whatever their share
LOSS_NORMALIZATIONS = ("batch", "labelled")


def zero_loss(module: nn.Module) -> Tensor:
    """A zero connected to ``module``'s parameters (so DDP sees them used when a batch has no image for them)."""
    return sum(p.sum() for p in module.parameters()) * 0.0


def _boxes(t: dict[str, Any]) -> int:
    """Non-crowd boxes of a boxes-only image."""
    return int((~t["box_iscrowd"]).sum()) if "box_iscrowd" in t else 0


# loss (or group of losses) -> (kinds, target) -> whether an image teaches it
LOSS_IMAGES: dict[str, Callable[[frozenset[str], dict[str, Any]], bool]] = {
    "detection": lambda k, t: "P" in k or "B" in k,  # RPN and cascade boxes
    "loss_mask": lambda k, t: "P" in k,
    "loss_semantic": lambda k, t: bool(k & {"P", "S", "PT"}),
    "loss_panoptic": lambda k, t: "P" in k,
    "loss_cls2box": lambda k, t: "I" in k and not k & {"P", "B"},  # tags teach detection where boxes do not
    "loss_cls2pixel": lambda k, t: "I" in k and not k & {"P", "S"},  # tags teach stuff where no map does
    "loss_box2mask": lambda k, t: "B" in k and "P" not in k and _boxes(t) > 0,
    "loss_relation": lambda k, t: bool(k & {"P", "B", "S"}),
    # paper 003's branches learn from the clicks of images without a real panoptic label (pseudo ones allowed)
    "loss_points": lambda k, t: "PT" in k and ("P" not in k or t.get("pseudo_panoptic", False)),
    # paper 002 mines images labelled with tags alone (pseudo panoptic labels of its own allowed)
    "loss_jtsm": lambda k, t: "I" in k and not k - {"I", "P"} and ("P" not in k or t.get("pseudo_panoptic", False)),
}


def loss_group(name: str) -> str:
    """The :data:`LOSS_IMAGES` entry of a loss: a module's terms (``loss_points_pce`` ...) share its entry,
    the RPN's and the cascade's losses share ``detection``."""
    return next((g for g in LOSS_IMAGES if name == g or name.startswith(g + "_")), "detection")


@dataclass
class TrainingBatch:
    """What every loss of one training step reads: the padded batch, its features and each image's labels."""

    images: list[Tensor]  # (3, H, W) each, in [0, 1]
    image_list: ImageList  # normalised and padded, (N, 3, H', W')
    features: dict[str, Tensor]  # FPN levels "0".."3" and "pool", (N, C, H'/s, W'/s)
    sem_features: Tensor  # (N, C, H'/4, W'/4)
    sem_logits: Tensor  # (N, K, H'/4, W'/4)
    body: dict[str, Tensor]  # the backbone body's levels "0".."3" before the FPN, (N, C_l, H'/s, W'/s)
    targets: list[dict[str, Any]]
    iteration: int = 0  # the trainer's step, for warm-ups
    kinds: list[frozenset[str]] = field(init=False)
    proposals: dict[int, Tensor] = field(default_factory=dict)  # image -> RPN proposals (P and B images)
    gt_boxes: dict[int, dict[str, Tensor]] = field(default_factory=dict)  # image -> detection targets

    def __post_init__(self) -> None:
        self.kinds = [t.get("kinds", FULL_LABELS) for t in self.targets]

    def images_for(self, loss: str) -> list[int]:
        """Indices of the images that teach ``loss`` (a key of :data:`LOSS_IMAGES`)."""
        rule = LOSS_IMAGES[loss]
        return [i for i, (k, t) in enumerate(zip(self.kinds, self.targets)) if rule(k, t)]

    def sub(self, idx: list[int]) -> tuple[ImageList, dict[str, Tensor]]:
        """The padded images and FPN features of the images ``idx``."""
        return ImageList(self.image_list.tensors[idx], self.sizes(idx)), {k: v[idx] for k, v in self.features.items()}

    def sizes(self, idx: list[int]) -> list[tuple[int, int]]:
        return [self.image_list.image_sizes[i] for i in idx]

    @property
    def padded(self) -> tuple[int, int]:
        return tuple(self.image_list.tensors.shape[-2:])


def normalise(losses: dict[str, Tensor], batch: TrainingBatch, mode: str) -> dict[str, Tensor]:
    """``batch``: each loss (a mean over the images that carry it) times their share of the batch."""
    if mode == "labelled":
        return losses
    n = len(batch.targets)
    share = {group: len(batch.images_for(group)) / n for group in LOSS_IMAGES}
    return {k: v * share[loss_group(k)] for k, v in losses.items()}

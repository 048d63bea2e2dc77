"""A label space's class indices, as every part of the network numbers them.

Semantic index = the order of the categories; detector label k = the k-th thing class (1-based, 0 is
background, as torchvision numbers them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from cqbnet.data.panoptic_format import Category
from cqbnet.errors import InputError


@dataclass
class LabelSpace:
    """Class indices: semantic index = order of the categories; detector label k = the k-th thing class (1-based).

    A label space without stuff classes (things on an unlabelled background) gets one more semantic class,
    *background*, index ``num_classes``: the semantic head learns it on the void pixels of panoptic images, and
    it is P's whole-image channel, so every pixel has a channel to fall to and an image without detections is
    all void. With stuff classes, void stays unlabelled and the stuff classes are P's whole-image channels.
    """

    categories: dict[int, Category]
    semantic_of: dict[int, int] = field(init=False)  # category id -> semantic index
    thing_semantic: list[int] = field(init=False)  # detector label k -> semantic index (k - 1)
    stuff_semantic: list[int] = field(init=False)
    region_semantic: list[int] = field(init=False)  # semantic index of each whole-image channel of P

    def __post_init__(self) -> None:
        if not self.categories:
            raise InputError("the label space has no categories")
        self.semantic_of = {cid: i for i, cid in enumerate(self.categories)}
        cats = list(self.categories.values())
        self.thing_semantic = [i for i, c in enumerate(cats) if c.isthing]
        self.stuff_semantic = [i for i, c in enumerate(cats) if not c.isthing]
        self.category_of = [c.id for c in cats]  # semantic index -> category id
        self.region_semantic = self.stuff_semantic or [len(cats)]

    @property
    def background(self) -> bool:
        """True when there are no stuff classes: unlabelled pixels are the background class."""
        return not self.stuff_semantic

    @property
    def num_semantic(self) -> int:
        """Outputs of the semantic head: every class, and the background class when there is no stuff."""
        return self.num_classes + int(self.background)

    def region_categories(self) -> list[int | None]:
        """Category id of each whole-image channel of P (None: background, which becomes void)."""
        return (
            [None] * len(self.region_semantic)
            if self.background
            else [self.category_of[c] for c in self.stuff_semantic]
        )

    def detection_categories(self, labels: Tensor) -> list[int]:
        """Category ids of detector labels (1..T)."""
        return [self.category_of[self.thing_semantic[int(k) - 1]] for k in labels]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def num_things(self) -> int:
        return len(self.thing_semantic)

"""Pseudo panoptic labels of weakly labelled images, behind one config key (``data.pseudo_labels``).

A stage of a recipe turns an image's weak labels into a panoptic target with ignore pixels, written to disk; the
network's dataset then reads it as if it were a (partial) mask label. Two formats exist, one per recipe, and
:func:`load_pseudo_labels` tells them apart by their content:

* paper 001's approximate labels of the boxes images (a round folder: ``labels.json`` of format
  :data:`~cqbnet.labels.rounds.ROUND_FORMAT` and its PNGs; :class:`~cqbnet.labels.rounds.ApproximateRound`);
* paper 003's pseudo labels of the point images (a COCO panoptic JSON and its PNGs, as ``cqbnet pseudo-labels``
  and ``cqbnet fit``'s ``pseudo-labels/`` stage write them; :class:`PanopticPseudoLabels`).

Each source names the kind of image it labels (``kind``: ``B`` or ``PT``) and gives, for an image of that kind
without masks, its target (:meth:`target`, None when it does not cover the image).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from cqbnet.data.dataset import panoptic_target
from cqbnet.data.panoptic_format import Category, check_size, load_panoptic_json
from cqbnet.errors import InputError
from cqbnet.io import read_json
from cqbnet.labels.rounds import ROUND_FORMAT, ApproximateRound

PANOPTIC_FILE = "panoptic_pred.json"  # what cqbnet pseudo-labels (and every prediction writer) names its JSON


class PseudoLabels(Protocol):
    """A source of pseudo panoptic targets for the images of one label kind."""

    kind: str  # the label kind of the images it labels ("B", "PT")
    what: str  # how an error names it

    def covered(self) -> set[str]:
        """Ids (as strings) of the images it labels."""

    def target(self, lab, contiguous: dict[int, int], categories: dict[int, Category], ignore_index: int):
        """The panoptic target of the manifest image ``lab`` (None when not covered)."""


class PanopticPseudoLabels:
    """Paper 003's pseudo labels of the point images: a COCO panoptic JSON and its PNGs (offline mode of
    :mod:`cqbnet.weak.fdd_points`). An image it covers gets the full panoptic target of its pseudo labels;
    pixels they leave unlabelled are void. An image whose pseudo labels hold no segment is not covered."""

    kind = "PT"
    what = "pseudo labels"

    def __init__(self, path: str | os.PathLike, categories: dict[int, Category]):
        self.path = Path(path)
        self.set = load_panoptic_json(self.path, categories=categories)
        self.records = {r.image_id: r for r in self.set.records}

    def covered(self) -> set[str]:
        return {str(i) for i in self.records}

    def target(self, lab, contiguous: dict[int, int], categories: dict[int, Category], ignore_index: int):
        rec = self.records.get(lab.image_id)
        if rec is None or not rec.segments:
            return None
        ids = self.set.read_ids(rec)  # checked against its JSON: size, ids, areas, categories
        check_size(ids, lab, self.set.png_path(rec))  # and against the manifest's image
        return panoptic_target(rec, ids, categories, contiguous, ignore_index)


def load_pseudo_labels(path: str | os.PathLike, categories: dict[int, Category]) -> PseudoLabels:
    """The pseudo labels at ``path`` (a folder or its JSON), in whichever of the two formats they are (see the
    module docstring); anything else is a one-line :class:`InputError` naming the path."""
    path = Path(path)
    if path.is_dir():
        if (path / "labels.json").is_file():
            return ApproximateRound.load(path)
        if (path / PANOPTIC_FILE).is_file():
            return PanopticPseudoLabels(path / PANOPTIC_FILE, categories)
        raise InputError(
            f"{path}: no pseudo labels here (neither labels.json of cqbnet labels approximate nor "
            f"{PANOPTIC_FILE} of cqbnet pseudo-labels)"
        )
    if not path.is_file():
        raise InputError(f"{path}: no such file or folder of pseudo labels")
    head = read_json(path, "pseudo labels")
    if isinstance(head, dict) and head.get("format") == ROUND_FORMAT:
        return ApproximateRound.load(path)
    return PanopticPseudoLabels(path, categories)


def as_paths(value: str | os.PathLike | Sequence[str | os.PathLike] | None) -> list[Path]:
    """``data.pseudo_labels`` as a list of paths (one path, a list of them, or none)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def first_target(sources: list[PseudoLabels], lab, contiguous, categories, ignore_index) -> dict[str, Any] | None:
    """The target the first source of the image's kinds gives it (an image with masks gets none)."""
    if "P" in lab.kinds:
        return None
    for src in sources:
        if src.kind in lab.kinds:
            t = src.target(lab, contiguous, categories, ignore_index)
            if t is not None:
                return t
    return None


def unknown_images(covered: set[str], image_ids) -> list[str]:
    """Ids a source labels that the manifest does not have, sorted."""
    return sorted(covered - {str(i) for i in image_ids})


__all__ = [
    "PANOPTIC_FILE",
    "ApproximateRound",
    "PanopticPseudoLabels",
    "PseudoLabels",
    "as_paths",
    "first_target",
    "load_pseudo_labels",
    "unknown_images",
]

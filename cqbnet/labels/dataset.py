"""Training targets from a mixed-label manifest: each image yields exactly the labels its kinds give.

``MixedLabelDataset(manifest)[i]`` is ``(image, target)``. ``target["kinds"]`` is the image's kind set and the
other keys exist only for those kinds, so a loss can only be computed from a label the image carries:

* P: the full panoptic target of :func:`~cqbnet.data.dataset.panoptic_target` (masks, labels, boxes, semantic,
  panoptic ...), read from the manifest's panoptic PNG;
* I: ``tags`` (K,) float32, 1 for every class (semantic index) in the image's tag list;
* B: ``box_boxes`` (M, 4) float32 xyxy, ``box_labels`` (M,) semantic index, ``box_iscrowd`` (M,) bool;
* S: ``stuff_semantic`` (H, W) int64, the stuff class on stuff pixels, ``ignore_index`` on thing and void pixels;
* PT: ``point_xy`` (Q, 2) int64 (x, y), ``point_labels`` (Q,) semantic index, ``point_segments`` (Q,) int64,
  ``point_iscrowd`` (Q,) bool (the click is on a crowd segment).

With ``pseudo_labels`` (one or more sources of :mod:`cqbnet.labels.pseudo`: a round of paper 001's approximate
labels of the boxes images, paper 003's pseudo labels of the point images), an image without masks that a source of
its kind covers also carries the panoptic target the source gives it (its kinds gain P, ``pseudo_panoptic`` is set,
``ignore`` marks the pixels no loss reads, unlabelled pixels are void): a network then learns from fixed pseudo
labels from its first iteration. Those labels come from the image's own weak labels.

Semantic indices follow the order of the manifest's categories, as in
:class:`~cqbnet.data.dataset.PanopticDataset`. Nothing of the ground truth is read for kinds an image lacks.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cqbnet.data.dataset import IGNORE_INDEX, panoptic_target, read_image_of
from cqbnet.data.panoptic_format import read_panoptic_png
from cqbnet.errors import InputError
from cqbnet.labels.manifest import ImageLabels, Manifest, load_manifest
from cqbnet.labels.pseudo import as_paths, first_target, load_pseudo_labels, unknown_images


class MixedLabelDataset:
    """Images of a manifest with the labels each one carries (see the module docstring)."""

    def __init__(
        self,
        manifest: Manifest | str | os.PathLike,
        ignore_index: int = IGNORE_INDEX,
        pseudo_labels: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    ):
        self.manifest = manifest if isinstance(manifest, Manifest) else load_manifest(manifest)
        self.categories = self.manifest.categories
        self.contiguous = {cid: i for i, cid in enumerate(self.categories)}
        self.ignore_index = ignore_index
        self.pseudo_labels = []
        for path in as_paths(pseudo_labels):
            src = load_pseudo_labels(path, self.categories)
            path = getattr(src, "path", path)  # errors name the file read (a folder's panoptic_pred.json)
            if any(other.kind == src.kind for other in self.pseudo_labels):
                raise InputError(f"{path}: a second source of pseudo labels for the {src.kind} images; give one")
            covered = src.covered()
            _all_covered(path, self.manifest, src.kind, covered, src.what)
            unknown = unknown_images(covered, [lab.image_id for lab in self.manifest.images])
            if unknown and src.kind == "PT":  # labels written for another manifest would silently teach nothing
                raise InputError(
                    f"{path}: pseudo labels for {len(unknown)} image(s) the manifest does not have "
                    f"(first: image id {unknown[0]}); write them from this manifest (cqbnet pseudo-labels --manifest)"
                )
            self.pseudo_labels.append(src)

    def __len__(self) -> int:
        return len(self.manifest.images)

    def load_image(self, index: int) -> np.ndarray:
        lab = self.manifest.images[index]
        return read_image_of(self.manifest.image_root / lab.file_name, lab.image_id, lab.height, lab.width, "manifest")

    def load_target(self, index: int) -> dict[str, Any]:
        lab = self.manifest.images[index]
        t: dict[str, Any] = {"image_id": lab.image_id, "kinds": lab.kinds}
        if "P" in lab.kinds:
            ids = read_panoptic_png(self.manifest.panoptic_root / lab.panoptic.file_name)
            t.update(panoptic_target(lab.panoptic, ids, self.categories, self.contiguous, self.ignore_index))
            t["image_id"] = lab.image_id
        if "I" in lab.kinds:
            tags = np.zeros(len(self.categories), dtype=np.float32)
            tags[[self.contiguous[c] for c in lab.tags]] = 1.0
            t["tags"] = tags
        if "B" in lab.kinds:
            t["box_boxes"] = np.array(
                [[b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]] for b in lab.boxes],
                dtype=np.float32,
            ).reshape(-1, 4)
            t["box_labels"] = np.array([self.contiguous[b.category_id] for b in lab.boxes], dtype=np.int64)
            t["box_iscrowd"] = np.array([b.iscrowd for b in lab.boxes], dtype=bool)
        if "S" in lab.kinds:
            t["stuff_semantic"] = self._stuff_semantic(lab)
        if "PT" in lab.kinds:
            t["point_xy"] = np.array([(p.x, p.y) for p in lab.points], dtype=np.int64).reshape(-1, 2)
            t["point_labels"] = np.array([self.contiguous[p.category_id] for p in lab.points], dtype=np.int64)
            t["point_segments"] = np.array([p.segment_id for p in lab.points], dtype=np.int64)
            t["point_iscrowd"] = np.array([p.iscrowd for p in lab.points], dtype=bool)
        pseudo = first_target(self.pseudo_labels, lab, self.contiguous, self.categories, self.ignore_index)
        if pseudo is not None:
            t.update(pseudo)
            t["image_id"] = lab.image_id
            t["kinds"] = lab.kinds | {"P"}
            t["pseudo_panoptic"] = True
        return t

    def _stuff_semantic(self, lab: ImageLabels) -> np.ndarray:
        ids = read_panoptic_png(self.manifest.stuff_root / lab.stuff_map.file_name)
        out = np.full(ids.shape, self.ignore_index, dtype=np.int64)
        for s in lab.stuff_map.segments:
            out[ids == s.id] = self.contiguous[s.category_id]
        return out

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.load_image(index), self.load_target(index)


def _all_covered(source, manifest, kind: str, covered: set[str], what: str) -> None:
    """Labels made for the manifest's ``kind`` images (a round, pseudo labels): covering none of them is an error
    (made for another manifest: the images would silently keep their weak labels alone); covering only some is
    said in a one-line warning naming the first image left out (those images keep their weak labels alone)."""
    needed = [lab.image_id for lab in manifest.images if kind in lab.kinds and "P" not in lab.kinds]
    missing = [i for i in needed if str(i) not in covered]
    text = (
        f"{source}: {what} for {len(needed) - len(missing)} of the {len(needed)} {kind} images of {manifest.path} "
        f"(first left out: image {missing[0] if missing else None})"
    )
    if needed and len(missing) == len(needed):
        raise InputError(f"{text}; were they made for another manifest?")
    if missing:
        warnings.warn(f"{text}; those images keep their {kind} labels alone", stacklevel=3)

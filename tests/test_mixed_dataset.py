"""Mixed-label training targets: each image yields exactly the labels its kinds give, and nothing else."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.mixed_dataset import MixedLabelDataset
from cqbnet.data.panoptic_format import load_panoptic_json, read_panoptic_png, write_panoptic_png
from cqbnet.labels.simulate import parse_ratio, simulate

KEYS = {
    "P": {"masks", "labels", "boxes", "semantic", "panoptic", "segment_ids", "iscrowd", "is_thing", "category_ids"},
    "I": {"tags"},
    "B": {"box_boxes", "box_labels", "box_iscrowd"},
    "S": {"stuff_semantic"},
    "PT": {"point_xy", "point_labels", "point_segments"},
}


@pytest.fixture()
def mixed(tmp_path, synth):
    data = tmp_path / "data"
    shutil.copytree(synth, data)
    gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train", data / "images" / "train")
    ratio = parse_ratio("P=0.25,I=0.2,B=0.2,S=0.15,PT=0.1,B+I=0.1")
    m = simulate(gt, ratio, tmp_path / "labels", seed=1, points_per_segment=2)
    return data, m


def test_each_image_yields_exactly_its_kinds(mixed):
    data, m = mixed
    ds = MixedLabelDataset(m.path)
    full = PanopticDataset(data / "panoptic_train.json", data / "panoptic" / "train", data / "images" / "train")
    full_index = {r.image_id: i for i, r in enumerate(full.set.records)}
    seen = set()
    for i in range(len(ds)):
        img, t = ds[i]
        kinds = t["kinds"]
        seen.add(kinds)
        want = {"image_id", "kinds"}.union(*(KEYS[k] for k in kinds))
        assert set(t) == want, (kinds, set(t) ^ want)
        f_img, f = full[full_index[t["image_id"]]]
        assert np.array_equal(img, f_img)
        if "P" in kinds:
            assert np.array_equal(t["semantic"], f["semantic"]) and np.array_equal(t["masks"], f["masks"])
        if "I" in kinds:
            assert set(np.flatnonzero(t["tags"])) == set(f["labels"].tolist())
        if "B" in kinds:
            things = f["is_thing"]
            assert sorted(map(tuple, t["box_boxes"].tolist())) == sorted(map(tuple, f["boxes"][things].tolist()))
        if "S" in kinds:
            stuff_px = np.isin(f["semantic"], [full.contiguous[c] for c in full.set.stuff_ids])
            assert np.array_equal(t["stuff_semantic"] != 255, stuff_px)
            assert np.array_equal(t["stuff_semantic"][stuff_px], f["semantic"][stuff_px])
        if "PT" in kinds:
            x, y = t["point_xy"][:, 0], t["point_xy"][:, 1]
            assert np.array_equal(f["panoptic"][y, x], t["point_segments"])
            assert np.array_equal(f["semantic"][y, x], t["point_labels"])
    assert len(seen) == 6


def test_hidden_full_labels_of_weak_images_are_never_read(mixed):
    """Overwrite the ground truth of every weak image with nonsense: no target changes."""
    data, m = mixed
    before = [MixedLabelDataset(m.path).load_target(i) for i in range(len(m.images))]
    gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train")
    weak = {lab.image_id for lab in m.images if "P" not in lab.kinds}
    for r in gt.records:
        if r.image_id in weak:
            path = gt.png_path(r)
            ids = read_panoptic_png(path)
            write_panoptic_png(path, np.roll(ids, 7, axis=1) * 0 + 123456)  # one made-up segment everywhere
    after = [MixedLabelDataset(m.path).load_target(i) for i in range(len(m.images))]
    for a, b in zip(before, after):
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])) if k != "kinds" else a[k] == b[k]

"""Thing fit by object size (cqbnet.evaluation.by_size): matched, coverage, box IoU, merges and precision."""

from __future__ import annotations

import numpy as np
import pytest

from cqbnet.data.panoptic_format import Category, SegmentInfo
from cqbnet.evaluation.by_size import SizeFit, box_iou, image_fit, size_bin

CATS = {1: Category(1, "cell", True), 2: Category(2, "other", True), 3: Category(3, "ground", False)}


def scene():
    gt = np.full((20, 40), 3, dtype=np.int64)  # stuff segment id 3
    gt[2:6, 2:6] = 10  # a 16 px thing
    gt[2:6, 6:10] = 11  # a touching 16 px thing of the same class
    gt[10:20, 10:30] = 12  # a 200 px thing
    gt[0:2, 30:32] = 13  # a 4 px thing of another class
    segs = [SegmentInfo(3, 3), SegmentInfo(10, 1), SegmentInfo(11, 1), SegmentInfo(12, 1), SegmentInfo(13, 2)]
    return gt, segs


def test_merged_touching_things_half_a_big_one_and_a_missed_one():
    gt, gsegs = scene()
    ids = np.zeros_like(gt)
    ids[2:6, 2:10] = 1  # one label over both touching things
    ids[10:20, 10:20] = 2  # the left half of the big thing
    ids[0:3, 0:2] = 3  # a labelled thing on stuff
    segs = [SegmentInfo(1, 1), SegmentInfo(2, 1), SegmentInfo(3, 1)]
    things, precision = image_fit(gt, gsegs, ids, segs, CATS)
    by_id = dict(zip([10, 11, 12, 13], things))
    assert by_id[10]["best_iou"] == pytest.approx(0.5) and by_id[10]["matched"] == 0.0  # IoU must exceed 0.5
    assert by_id[10]["merged"] == 1.0 and by_id[10]["coverage"] == 1.0
    assert by_id[10]["box_iou"] == pytest.approx(16 / 32)
    assert by_id[12]["best_iou"] == pytest.approx(0.5) and by_id[12]["coverage"] == pytest.approx(0.5)
    assert by_id[12]["merged"] == 0.0 and by_id[12]["bin"] == "64-256"
    assert by_id[13] == {"bin": "<64", "area": 4, "matched": 0.0, "best_iou": 0.0, "coverage": 0.0, "box_iou": 0.0,
                         "merged": 0.0}  # fmt: skip
    assert sorted(precision) == [("64-256", 1.0), ("<64", 0.0), ("<64", 1.0)]


def test_summary_per_bin_and_perfect_labels():
    gt, gsegs = scene()
    fit = SizeFit()
    fit.add(gt, gsegs, gt, gsegs, CATS)
    s = fit.summary()
    assert s["<64"]["things"] == 3 and s["64-256"]["things"] == 1 and s["all"]["things"] == 4
    for b in ("<64", "64-256", "all"):
        assert s[b]["matched"] == s[b]["coverage"] == s[b]["box_iou"] == s[b]["precision"] == 1.0
        assert s[b]["merged"] == 0.0
    assert s["256-1024"]["things"] == 0 and s["256-1024"]["matched"] is None


def test_helpers():
    assert [size_bin(a) for a in (1, 63, 64, 255, 256, 1023, 1024)] == [
        "<64", "<64", "64-256", "64-256", "256-1024", "256-1024", ">=1024"]  # fmt: skip
    assert box_iou((0, 0, 2, 2), (1, 1, 2, 2)) == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="differ in size"):
        image_fit(np.zeros((2, 2)), [], np.zeros((3, 2)), [], CATS)

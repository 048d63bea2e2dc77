"""PQ parity with panopticapi's pq_compute (the COCO reference), to 1e-9."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from cqbnet.data.panoptic_format import SegmentInfo, load_categories, load_panoptic_json, read_panoptic_png
from cqbnet.evaluation.panoptic_quality import PanopticQuality, evaluate_panoptic_files
from cqbnet.evaluation.perturb import PERTURBATIONS, perturb
from helpers import write_prediction

panopticapi = pytest.importorskip("panopticapi.evaluation")


def reference(gt_json, pred_json, gt_dir, pred_dir):
    with contextlib.redirect_stdout(io.StringIO()):
        return panopticapi.pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))


def assert_same(ours, ref):
    for name, r in (("All", ours.all), ("Things", ours.things), ("Stuff", ours.stuff)):
        for k in ("pq", "sq", "rq"):
            assert r[k] == pytest.approx(ref[name][k], abs=1e-9), (name, k)
        assert r["n"] == ref[name]["n"]
    assert set(ours.per_class) == set(ref["per_class"])
    for cid, v in ref["per_class"].items():
        for k in ("pq", "sq", "rq"):
            assert ours.per_class[cid][k] == pytest.approx(v[k], abs=1e-9), (cid, k)


def coco_gt(tmp_path, coco_sample):
    """The sample JSON with its categories made explicit (panopticapi reads them from the GT)."""
    raw = json.loads((coco_sample / "panoptic_examples.json").read_text())
    raw["categories"] = json.loads((coco_sample / "panoptic_coco_categories.json").read_text())
    j = tmp_path / "gt.json"
    j.write_text(json.dumps(raw))
    return j, coco_sample / "panoptic_examples"


def write_gt_image(tmp_path, ids: np.ndarray, segs, cats) -> None:
    """One ground-truth image as ``tmp_path/gt.json`` + ``tmp_path/gt/1.png`` (image id 1)."""
    from cqbnet.data.panoptic_format import PanopticRecord, write_panoptic_png
    from cqbnet.io import write_json

    (tmp_path / "gt").mkdir()
    write_panoptic_png(tmp_path / "gt" / "1.png", ids)
    record = PanopticRecord(1, "1.png", segs).to_json()
    write_json(tmp_path / "gt.json", {"annotations": [record], "categories": [c.to_json() for c in cats.values()]})


def test_coco_identity(tmp_path, coco_sample):
    gt_json, gt_dir = coco_gt(tmp_path, coco_sample)
    ours = evaluate_panoptic_files(gt_json, gt_json, gt_dir, gt_dir)
    ref = reference(gt_json, gt_json, gt_dir, gt_dir)
    assert_same(ours, ref)
    assert ours.all["pq"] == 1.0


@pytest.mark.parametrize("kind", sorted(PERTURBATIONS))
def test_coco_each_perturbation(tmp_path, coco_sample, kind):
    gt_json, gt_dir = coco_gt(tmp_path, coco_sample)
    gt = load_panoptic_json(gt_json, gt_dir)
    rng = np.random.default_rng(hash(kind) % 2**32)
    preds = {}
    for rec in gt.records:
        ids = read_panoptic_png(gt.png_path(rec))
        preds[rec.image_id] = perturb(ids, rec.segments, gt.categories, rng, [kind, kind])
    pred_json = write_prediction(tmp_path, preds, gt.categories)
    ours = evaluate_panoptic_files(gt_json, pred_json, gt_dir, tmp_path / "pred")
    assert_same(ours, reference(gt_json, pred_json, gt_dir, tmp_path / "pred"))


def test_synthetic_random_mixes(tmp_path, synth):
    """Perturbed every way at once, over a whole split with crowds and void."""
    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    assert any(s.iscrowd for r in gt.records for s in r.segments)  # the crowd rule is exercised
    rng = np.random.default_rng(0)
    preds = {}
    for rec in gt.records:
        ids = read_panoptic_png(gt.png_path(rec))
        preds[rec.image_id] = perturb(ids, rec.segments, gt.categories, rng)
    pred_json = write_prediction(tmp_path, preds, gt.categories)
    gt_json, gt_dir = synth / "panoptic_val.json", synth / "panoptic" / "val"
    ours = evaluate_panoptic_files(gt_json, pred_json, gt_dir, tmp_path / "pred", workers=2)
    ref = reference(gt_json, pred_json, gt_dir, tmp_path / "pred")
    assert_same(ours, ref)
    assert 0.0 < ours.all["pq"] < 1.0


def test_in_memory_equals_files(tmp_path, synth):
    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    rng = np.random.default_rng(1)
    metric = PanopticQuality(gt.categories)
    preds = {}
    for rec in gt.records:
        ids = read_panoptic_png(gt.png_path(rec))
        p_ids, p_segs = perturb(ids, rec.segments, gt.categories, rng)
        preds[rec.image_id] = (p_ids, p_segs)
        # the trainer hands over int64 maps and plain dicts
        metric.update(
            ids.astype(np.int64), rec.segments, p_ids.astype(np.int64), [s.to_json() for s in p_segs], rec.image_id
        )
    pred_json = write_prediction(tmp_path, preds, gt.categories)
    from_files = evaluate_panoptic_files(
        synth / "panoptic_val.json", pred_json, synth / "panoptic" / "val", tmp_path / "pred", workers=1
    )
    mem = metric.compute()
    assert mem.all == from_files.all
    assert mem.per_class == from_files.per_class
    assert mem.miou == from_files.miou


def test_per_image_counts_sum_to_the_totals(synth):
    """keep_images: each image's per-class counts, whose sum gives the same PQ as the metric (for a bootstrap)."""
    from cqbnet.evaluation.panoptic_quality import pq_from_counts

    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    rng = np.random.default_rng(3)
    metric = PanopticQuality(gt.categories, keep_images=True)
    for rec in gt.records:
        ids = read_panoptic_png(gt.png_path(rec))
        p_ids, p_segs = perturb(ids, rec.segments, gt.categories, rng)
        metric.update(ids, rec.segments, p_ids, p_segs, rec.image_id)
    res = metric.compute()
    counts = res.image_counts
    assert counts.shape == (len(gt.records), len(gt.categories), 4)
    total = counts.sum(axis=0)
    isthing = np.array([c.isthing for c in gt.categories.values()])
    for mask, want in ((None, res.all), (isthing, res.things), (~isthing, res.stuff)):
        got = pq_from_counts(total, mask)
        assert got["n"] == want["n"]
        for k in ("pq", "sq", "rq"):
            assert abs(got[k] - want[k]) < 1e-12
    # one image alone is a different PQ from the whole set: the counts are per image, not repeated totals
    assert pq_from_counts(counts[0])["pq"] != pytest.approx(res.all["pq"], abs=1e-6)
    with pytest.raises(ValueError, match="keep_images"):
        PanopticQuality(gt.categories).image_counts()


def test_many_segments_fallback_path(tmp_path):
    """More than 254 segments per image takes the uint16 / bincount path; still identical."""
    from cqbnet.data.panoptic_format import Category

    cats = {1: Category(1, "a", True), 2: Category(2, "b", False)}
    rng = np.random.default_rng(0)
    ids = (np.arange(40 * 40).reshape(40, 40) // 5 + 1).astype(np.uint32)  # 320 segments of 5 px
    segs = [SegmentInfo(int(i), 1 if i % 3 else 2, bool(i % 17 == 0), 5) for i in np.unique(ids)]
    write_gt_image(tmp_path, ids, segs, cats)
    p_ids, p_segs = perturb(ids, segs, cats, rng, ["shift", "split", "extra", "wrong_class"])
    pred_json = write_prediction(tmp_path, {1: (p_ids, p_segs)}, cats)
    ours = evaluate_panoptic_files(tmp_path / "gt.json", pred_json, tmp_path / "gt", tmp_path / "pred")
    assert_same(ours, reference(tmp_path / "gt.json", pred_json, tmp_path / "gt", tmp_path / "pred"))


def test_coco_categories_file_argument(coco_sample):
    cats = load_categories(coco_sample / "panoptic_coco_categories.json")
    r = evaluate_panoptic_files(
        coco_sample / "panoptic_examples.json",
        coco_sample / "panoptic_examples.json",
        coco_sample / "panoptic_examples",
        coco_sample / "panoptic_examples",
        categories=cats,
    )
    assert r.all["pq"] == 1.0 and r.miou == 1.0


def test_small_id_maps_take_the_lut_path_and_agree(synth):
    """Model-style maps (ids 1..N, int32) give the same numbers as the original 24-bit ids."""
    from cqbnet.data.panoptic_format import SegmentInfo

    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    rng = np.random.default_rng(2)
    big, small = PanopticQuality(gt.categories), PanopticQuality(gt.categories)
    for rec in gt.records:
        ids = read_panoptic_png(gt.png_path(rec))
        p_ids, p_segs = perturb(ids, rec.segments, gt.categories, rng)
        big.update(ids, rec.segments, p_ids, p_segs)
        maps = []
        for m, segs in ((ids, rec.segments), (p_ids, p_segs)):
            new = np.zeros(m.shape, np.int32)
            renamed = []
            for k, s in enumerate(segs, start=1):
                new[m == s.id] = k
                renamed.append(SegmentInfo(k, s.category_id, s.iscrowd))
            maps += [new, renamed]
        small.update(*maps)
    a, b = big.compute(), small.compute()
    assert a.all == b.all and a.per_class == b.per_class and a.miou == b.miou


@pytest.mark.parametrize("blocky", [True, False])
def test_run_length_histogram_equals_per_pixel_counts(blocky):
    """The run-length joint histogram and the per-pixel one agree, unknown ids and void included."""
    from cqbnet.evaluation.panoptic_quality import _dense_index, _joint_histogram, _pair_histogram

    rng = np.random.default_rng(3)
    for trial in range(20):
        h, w = rng.integers(1, 30, size=2)
        seg = rng.choice(np.arange(1, 2**24), size=rng.integers(1, 12), replace=False)
        pool = np.concatenate([[0], seg, rng.integers(1, 2**24, size=2)])  # void, known, maybe-unknown
        if blocky:  # a few rectangles: runs
            g = np.zeros((h, w), np.uint32)
            p = np.zeros((h, w), np.uint32)
            for m in (g, p):
                for _ in range(6):
                    y, x = rng.integers(0, h), rng.integers(0, w)
                    m[y : y + rng.integers(1, h + 1), x : x + rng.integers(1, w + 1)] = rng.choice(pool)
        else:  # noise: the per-pixel fallback
            g = rng.choice(pool, size=(h, w)).astype(np.uint32)
            p = rng.choice(pool, size=(h, w)).astype(np.int64)
        g_id, p_id = seg.astype(np.int64), seg[::-1].astype(np.int64)
        expect = _joint_histogram(_dense_index(g, g_id), _dense_index(p, p_id), len(seg) + 2, len(seg) + 2)
        assert np.array_equal(_pair_histogram(g, g_id, p, p_id), expect), trial


def test_bad_id_maps_are_named(synth):
    from cqbnet.errors import InputError

    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    rec = gt.records[0]
    ids = read_panoptic_png(gt.png_path(rec))
    metric = PanopticQuality(gt.categories)
    with pytest.raises(InputError, match=rf"image {rec.image_id}: segment id map must be an integer array"):
        metric.update(ids, rec.segments, ids.astype(np.float32), rec.segments, image_id=rec.image_id)
    bad = ids.astype(np.int64)
    bad[0, 0] = -5
    with pytest.raises(InputError, match=rf"image {rec.image_id}: segment ids must lie in"):
        metric.update(ids, rec.segments, bad, rec.segments, image_id=rec.image_id)


def test_unmatched_prediction_on_crowd_uses_the_last_crowd_segment(tmp_path):
    """Two crowd segments of one category: only the last one excuses an unmatched prediction (as the reference)."""
    from cqbnet.data.panoptic_format import Category

    cats = {1: Category(1, "person", True), 2: Category(2, "grass", False), 3: Category(3, "car", True)}
    gt = np.full((20, 50), 9, np.uint32)  # stuff
    gt[:, :10] = 3  # first crowd of category 1
    gt[:, 10:20] = 8  # the only crowd of category 3
    gt[:, 40:] = 4  # last crowd of category 1
    gt[0:2, 22:38] = 0  # a strip of void
    g_segs = [
        SegmentInfo(i, c, crowd, int((gt == i).sum()))
        for i, c, crowd in ((3, 1, True), (8, 3, True), (4, 1, True), (9, 2, False))
    ]
    pred = np.full((20, 50), 9, np.uint32)
    pred[:, 2:9] = 5  # category 1 on the first crowd only: a false positive
    pred[:, 12:19] = 6  # category 3 on its crowd: ignored
    pred[0:2, 24:30] = 7  # category 1 on void: ignored
    p_segs = [SegmentInfo(5, 1), SegmentInfo(6, 3), SegmentInfo(7, 1), SegmentInfo(9, 2)]
    write_gt_image(tmp_path, gt, g_segs, cats)
    pred_json = write_prediction(tmp_path, {1: (pred, p_segs)}, cats)
    ours = evaluate_panoptic_files(tmp_path / "gt.json", pred_json, tmp_path / "gt", tmp_path / "pred", workers=1)
    assert_same(ours, reference(tmp_path / "gt.json", pred_json, tmp_path / "gt", tmp_path / "pred"))
    assert (ours.per_class[1]["fp"], ours.per_class[1]["tp"], ours.per_class[1]["fn"]) == (1, 0, 0)
    assert (ours.per_class[3]["fp"], ours.per_class[3]["tp"], ours.per_class[3]["fn"]) == (0, 0, 0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda segs: segs + [segs[0]], "duplicate segment id in the prediction"),
        (lambda segs: [{"id": segs[0].id, "category_id": 999}] + segs[1:], "unknown category_id 999"),
        (lambda segs: segs + [{"id": 2**24, "category_id": segs[0].category_id}], "segment id out of range"),
        (lambda segs: segs + [{"id": 77777, "category_id": segs[0].category_id}], "has no pixel in the PNG"),
    ],
)
def test_bad_segment_lists_are_named_in_memory(synth, edit, message):
    from cqbnet.errors import InputError

    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    rec = gt.records[0]
    ids = read_panoptic_png(gt.png_path(rec))
    with pytest.raises(InputError, match=rf"image {rec.image_id}.*{message}"):
        PanopticQuality(gt.categories).update(ids, rec.segments, ids, edit(list(rec.segments)), image_id=rec.image_id)
    wrong_area = [SegmentInfo(s.id, s.category_id, s.iscrowd, (s.area or 0) + 1) for s in rec.segments]
    with pytest.raises(InputError, match=rf"image {rec.image_id}: segment {rec.segments[0].id}: JSON area"):
        PanopticQuality(gt.categories, strict=True).update(ids, wrong_area, ids, rec.segments, image_id=rec.image_id)


def test_ground_truth_defects_are_counted_as_panopticapi_counts_them(tmp_path):
    """A GT segment without pixels (plain and crowd), a GT JSON area that is wrong, and a prediction for an image
    without ground truth: panopticapi passes over all three; so do we by default, with a warning naming the
    image and segment, and the same numbers. ``strict`` refuses each."""
    from cqbnet.data.panoptic_format import Category, PanopticRecord, write_panoptic_png
    from cqbnet.errors import InputError
    from cqbnet.evaluation.panoptic_quality import PanopticWarning
    from cqbnet.io import write_json

    cats = {1: Category(1, "person", True), 2: Category(2, "grass", False), 3: Category(3, "car", True)}
    gt = np.full((20, 40), 9, np.uint32)
    gt[2:10, 2:12] = 3
    gt[12:18, 20:30] = 4
    g_segs = [
        SegmentInfo(3, 1, False, 80),
        SegmentInfo(4, 3, False, 999),  # wrong area: the PNG has 60
        SegmentInfo(5, 1, False, 30),  # no pixel at all: a false negative for panopticapi
        SegmentInfo(6, 3, True, 10),  # an empty crowd region
        SegmentInfo(9, 2, False, int((gt == 9).sum())),
    ]
    write_gt_image(tmp_path, gt, g_segs, cats)
    pred = gt.copy()
    pred[12:18, 20:24] = 9
    p_segs = [SegmentInfo(3, 1), SegmentInfo(4, 3), SegmentInfo(9, 2)]
    (tmp_path / "pred").mkdir()
    records = []
    for iid in (1, 2):  # image 2 has no ground truth
        write_panoptic_png(tmp_path / "pred" / f"{iid}.png", pred)
        records.append(PanopticRecord(iid, f"{iid}.png", p_segs).to_json())
    pred_json = tmp_path / "pred.json"
    write_json(pred_json, {"annotations": records, "categories": [c.to_json() for c in cats.values()]})
    args = (tmp_path / "gt.json", pred_json, tmp_path / "gt", tmp_path / "pred")
    with pytest.warns(PanopticWarning) as caught:
        ours = evaluate_panoptic_files(*args, workers=1)
    texts = [str(w.message) for w in caught]
    assert any("image 1: segment 5" in t and "no pixel" in t for t in texts)
    assert any("image 1: segment 4" in t and "JSON area 999 but 60 pixels" in t for t in texts)
    assert ours.per_class[3]["tp"] == 0  # the IoU takes the JSON's area, so segment 4 is missed
    assert any("image 2" in t and "not in the ground truth" in t for t in texts)
    assert_same(ours, reference(*args))
    assert ours.per_class[1]["fn"] == 1
    with pytest.raises(InputError, match="not in the ground truth"):
        evaluate_panoptic_files(*args, workers=1, strict=True)
    records.pop()
    write_json(pred_json, {"annotations": records, "categories": [c.to_json() for c in cats.values()]})
    with pytest.raises(InputError, match="image 1.*segment 5.*no pixel"):
        evaluate_panoptic_files(*args, workers=1, strict=True)


def test_a_json_area_too_small_for_its_pixels_is_refused_not_scored_above_100_percent():
    """Finding 6 of the probes: GT areas far below their pixel counts gave PQ 1795.7 with a warning."""
    from cqbnet.data.panoptic_format import Category
    from cqbnet.errors import InputError

    cats = {1: Category(1, "person", True), 2: Category(2, "grass", False)}
    ids = np.full((20, 40), 9, np.uint32)
    ids[2:10, 2:12] = 3
    pred_segs = [SegmentInfo(3, 1), SegmentInfo(9, 2)]
    small = [SegmentInfo(3, 1, False, 5), SegmentInfo(9, 2, False, int((ids == 9).sum()))]
    with pytest.raises(InputError, match="image 7: segment 3: JSON area 5 but 80 pixels.*would exceed 1"):
        PanopticQuality(cats).update(ids, small, ids, pred_segs, image_id=7)
    large = [SegmentInfo(3, 1, False, 500), small[1]]  # too large only lowers the IoU: panopticapi's count, warned
    with pytest.warns(UserWarning):
        pq = PanopticQuality(cats)
        pq.update(ids, large, ids, pred_segs, image_id=7)
    assert pq.compute().per_class[1]["tp"] == 0

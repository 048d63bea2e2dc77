"""COCO panoptic reading and writing: id round trips, validation errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.panoptic_format import (
    MAX_ID,
    id2rgb,
    load_panoptic_json,
    read_panoptic_png,
    rgb2id,
    write_panoptic_png,
)
from cqbnet.errors import InputError
from cqbnet.evaluation.panoptic_quality import evaluate_panoptic_files


@given(arrays(np.uint32, st.tuples(st.integers(1, 9), st.integers(1, 9)), elements=st.integers(0, MAX_ID)))
def test_id_rgb_round_trip(ids):
    assert np.array_equal(rgb2id(id2rgb(ids)), ids)


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint32, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, MAX_ID)))
def test_png_round_trip(tmp_path_factory, ids):
    p = tmp_path_factory.mktemp("png") / "x.png"
    write_panoptic_png(p, ids)
    assert np.array_equal(read_panoptic_png(p), ids)


def test_rgb2id_matches_formula():
    rgb = np.array([[[1, 2, 3], [255, 255, 255]]], dtype=np.uint8)
    assert rgb2id(rgb).tolist() == [[1 + 256 * 2 + 65536 * 3, MAX_ID]]


def test_reads_coco_sample(coco_sample):
    ds = PanopticDataset(
        coco_sample / "panoptic_examples.json",
        image_dir=coco_sample / "input_images",
        categories=coco_sample / "panoptic_coco_categories.json",
    )
    assert len(ds) == 2
    raw = json.loads((coco_sample / "panoptic_examples.json").read_text())
    for i, ann in enumerate(raw["annotations"]):
        img, t = ds[i]
        assert img.shape[:2] == t["panoptic"].shape
        assert len(t["masks"]) == len(ann["segments_info"])
        for k, s in enumerate(ann["segments_info"]):
            assert t["masks"][k].sum() == s["area"]
            x, y, w, h = s["bbox"]
            assert t["boxes"][k].tolist() == [x, y, x + w, y + h]
        # every labelled pixel carries its segment's contiguous class
        lab = t["semantic"] != ds.ignore_index
        assert np.array_equal(lab, t["panoptic"] != 0)
        assert t["iscrowd"].dtype == bool and t["is_thing"].any() and (~t["is_thing"]).any()


def _write_set(tmp_path, ids, segments, categories=None, image=None):
    (tmp_path / "pan").mkdir(exist_ok=True)
    write_panoptic_png(tmp_path / "pan" / "1.png", ids)
    doc = {
        "images": [image or {"id": 1, "file_name": "1.jpg", "height": ids.shape[0], "width": ids.shape[1]}],
        "annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": segments}],
        "categories": categories or [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(doc))
    return tmp_path / "gt.json", tmp_path / "pan"


IDS = np.array([[0, 5, 5], [7, 7, 5]], dtype=np.uint32)
SEGS = [{"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 7, "category_id": 2, "iscrowd": 0}]


@pytest.mark.parametrize(
    "segments, message",
    [
        ([SEGS[0]], "segment 7: in the PNG but not in the JSON"),
        (SEGS + [{"id": 9, "category_id": 1, "iscrowd": 0}], "segment 9: in the JSON but has no pixel"),
        ([SEGS[0], {"id": 7, "category_id": 3, "iscrowd": 0}], "segment 7: unknown category_id 3"),
        (SEGS + [SEGS[0]], "segment 5: duplicate segment id"),
        ([dict(SEGS[0], area=4), SEGS[1]], "segment 5: JSON area 4 but 3 pixels"),
    ],
)
def test_bad_segments_are_named(tmp_path, segments, message):
    j, pan = _write_set(tmp_path, IDS, segments)
    with pytest.raises(InputError) as e:
        s = load_panoptic_json(j, pan)
        s.read_ids(s.records[0])
    assert message in str(e.value) and "image 1" in str(e.value)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    "segment, message",
    [
        ({"id": 7, "category_id": 3, "iscrowd": 0}, "segment 7: unknown category_id 3"),
        ({"id": 7, "category_id": "b", "iscrowd": 0}, "segment 7: 'category_id' must be an integer"),
        ({"id": 7, "category_id": 2, "iscrowd": 2}, "segment 7: 'iscrowd' must be 0 or 1"),
        ({"id": 7.0, "category_id": 2, "iscrowd": 0, "bbox": [0.0, 1, 3, 1]}, None),  # floats that are integers
    ],
)
def test_evaluator_checks_prediction_segments_in_its_workers(tmp_path, workers, segment, message):
    """The evaluator parses segments lazily (in its worker processes): same checks, same messages."""
    from cqbnet.evaluation.panoptic_quality import evaluate_panoptic_files

    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    gt_json, pan = _write_set(tmp_path / "gt", IDS, SEGS)
    pred_json, pred_pan = _write_set(tmp_path / "pred", IDS, [SEGS[0], segment])
    for j, segs in ((gt_json, SEGS), (pred_json, [SEGS[0], segment])):  # four images, the last one bad
        doc = json.loads(j.read_text())
        doc["images"] = [dict(doc["images"][0], id=i) for i in range(1, 5)]
        doc["annotations"] = [dict(doc["annotations"][0], image_id=i, segments_info=SEGS) for i in range(1, 4)]
        doc["annotations"].append(dict(doc["annotations"][0], image_id=4, segments_info=segs))
        j.write_text(json.dumps(doc))
    if message is None:
        r = evaluate_panoptic_files(gt_json, pred_json, pan, pred_pan, workers=workers)
        assert r.all["pq"] == 1.0
        return
    with pytest.raises(InputError) as e:
        evaluate_panoptic_files(gt_json, pred_json, pan, pred_pan, workers=workers)
    assert message in str(e.value) and "pred" in str(e.value) and "image 4" in str(e.value)


def test_an_evaluation_worker_that_dies_loses_no_result(tmp_path):
    """A forked worker that ends without sending (killed, crashed) is reported; its blocks are computed in the main
    process, so the results are complete and in order."""
    from cqbnet.evaluation.panoptic_quality import _ordered_map

    parent, died = os.getpid(), tmp_path / "died"

    def square(t: int) -> int:
        if os.getpid() != parent:
            died.touch()
            os._exit(3)  # a worker dies at its first task, holding the block it took
        deadline = time.time() + 60
        while not died.exists() and time.time() < deadline:  # the main process waits for that, so it happens
            time.sleep(0.01)
        return t * t

    with pytest.warns(RuntimeWarning, match="exit code 3"):
        out = list(_ordered_map(square, range(60), 2, ()))
    assert died.exists() and out == [t * t for t in range(60)]


def test_size_mismatch_named(tmp_path):
    j, pan = _write_set(tmp_path, IDS, SEGS, image={"id": 1, "file_name": "1.jpg", "height": 5, "width": 3})
    s = load_panoptic_json(j, pan)
    with pytest.raises(InputError, match=r"1.png: image 1: PNG is 3x2 but the image is 3x5"):
        s.read_ids(s.records[0])


def test_malformed_json_named(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"annotations": [')
    with pytest.raises(InputError, match=r"bad.json: malformed JSON \(line 1"):
        load_panoptic_json(p)


def test_missing_png_named(tmp_path):
    j, pan = _write_set(tmp_path, IDS, SEGS)
    (pan / "1.png").unlink()
    s = load_panoptic_json(j, pan)
    with pytest.raises(InputError, match="1.png: panoptic PNG not found"):
        s.read_ids(s.records[0])


def test_unknown_image_and_duplicate_image(tmp_path):
    j, pan = _write_set(tmp_path, IDS, SEGS)
    doc = json.loads(j.read_text())
    doc["annotations"].append(dict(doc["annotations"][0]))
    j.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="image 1: more than one annotation"):
        load_panoptic_json(j, pan)
    doc["annotations"] = [dict(doc["annotations"][0], image_id=2)]
    j.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="image 2: annotation for an image id not listed"):
        load_panoptic_json(j, pan)


def test_prediction_errors_name_file_image_segment(tmp_path):
    j, pan = _write_set(tmp_path, IDS, SEGS)
    pred = tmp_path / "pred"
    pred.mkdir()
    write_panoptic_png(pred / "1.png", np.array([[0, 5, 5], [8, 8, 5]], dtype=np.uint32))
    pj = tmp_path / "pred.json"
    pj.write_text(json.dumps({"annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": SEGS}]}))
    with pytest.raises(InputError, match=r"pred/1.png: image 1: segment 8: in the PNG but not in the JSON"):
        evaluate_panoptic_files(j, pj, pan, pred)
    pj.write_text(json.dumps({"annotations": [{"image_id": 2, "file_name": "1.png", "segments_info": SEGS}]}))
    with pytest.raises(InputError, match="image 1: no prediction for this image"):
        evaluate_panoptic_files(j, pj, pan, pred)
    write_panoptic_png(pred / "1.png", np.zeros((4, 3), dtype=np.uint32))
    pj.write_text(json.dumps({"annotations": [{"image_id": 1, "file_name": "1.png", "segments_info": []}]}))
    with pytest.raises(InputError, match="image 1: prediction is 3x4, ground truth is 3x2"):
        evaluate_panoptic_files(j, pj, pan, pred)


@pytest.mark.parametrize("image", [np.zeros((4, 5), np.uint8), np.zeros((4, 5, 3), np.uint16)])
def test_non_rgb8_png_rejected(tmp_path, image):
    import cv2

    p = tmp_path / "x.png"
    cv2.imwrite(str(p), image)
    with pytest.raises(InputError, match="x.png: a panoptic PNG must be 8-bit RGB"):
        read_panoptic_png(p)


def test_damaged_png_rejected(tmp_path):
    p = tmp_path / "x.png"
    write_panoptic_png(p, np.arange(12, dtype=np.uint32).reshape(3, 4))
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(InputError, match="x.png: not a readable PNG"):
        read_panoptic_png(p)

"""Label simulation, the manifest and the cost model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cqbnet.data.panoptic_format import load_panoptic_json, read_panoptic_png
from cqbnet.errors import InputError
from cqbnet.labels.costs import CostModel
from cqbnet.labels.kinds import derive_points, point_weights
from cqbnet.labels.manifest import load_manifest
from cqbnet.labels.simulate import exact_counts, manifest_cost, parse_ratio, simulate


def gt_of(synth):
    return load_panoptic_json(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")


@given(st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5), st.integers(0, 5000))
def test_exact_counts_sum_and_closeness(weights, n):
    total = sum(weights)
    ratio = {frozenset([k]): w / total for k, w in zip(["P", "I", "B", "S", "PT"], weights)}
    counts = exact_counts(ratio, n)
    assert sum(counts.values()) == n
    for k, c in counts.items():
        assert abs(c - ratio[k] * n) < 1.0


def test_paper_ratio_counts():
    r = parse_ratio("P=0.29,I=0.355,B=0.29,S=0.065")
    c = {"+".join(sorted(k)): v for k, v in exact_counts(r, 2000).items()}
    assert c == {"P": 580, "I": 710, "B": 580, "S": 130}


@pytest.mark.parametrize(
    "text, msg",
    [
        ("P=0.5,I=0.4", "sum to 0.9"),
        ("P=0.5,X=0.5", "unknown label kind 'X'"),
        ("P=0.5,I=-0.5,B=1", "must be >= 0"),
        ("P=half", "not a number"),
        ("P", "not KIND=SHARE"),
        ("P=0.5,P=0.5", "names P twice"),
    ],
)
def test_bad_ratios(text, msg):
    with pytest.raises(InputError, match=msg):
        parse_ratio(text)


def test_simulation_deterministic_and_exact(tmp_path, synth):
    gt = gt_of(synth)
    r = parse_ratio("P=0.25,I=0.25,B=0.25,S=0.125,PT=0.125")
    a = simulate(gt, r, tmp_path / "a", seed=1, points_per_segment=10)
    b = simulate(gt, r, tmp_path / "b", seed=1, points_per_segment=10)
    c = simulate(gt, r, tmp_path / "c", seed=2, points_per_segment=10)
    ja, jb, jc = (json.loads(m.path.read_text()) for m in (a, b, c))
    assert ja["images"] == jb["images"] and ja["points"] == jb["points"]
    assert ja["images"] != jc["images"]
    assert a.counts() == {"P": 10, "I": 10, "B": 10, "S": 5, "PT": 5}


def test_weak_labels_are_derived_correctly(tmp_path, synth):
    gt = gt_of(synth)
    m = load_manifest(simulate(gt, parse_ratio("B+I=0.5,S+PT=0.5"), tmp_path / "m", seed=0, points_per_segment=3).path)
    recs = gt.by_image_id()
    for im in m.images:
        rec = recs[im.image_id]
        ids = read_panoptic_png(gt.png_path(rec))
        assert im.panoptic is None  # weak images never carry the full label
        if "I" in im.kinds:
            assert im.tags == sorted({s.category_id for s in rec.segments})
        if "B" in im.kinds:
            things = [s for s in rec.segments if gt.categories[s.category_id].isthing]
            assert len(im.boxes) == len(things)
            for b, s in zip(im.boxes, things):
                ys, xs = np.nonzero(ids == s.id)
                assert b.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        if "S" in im.kinds:
            smap = read_panoptic_png(m.stuff_root / im.stuff_map.file_name)
            for s in rec.segments:
                inside = smap[ids == s.id]
                if gt.categories[s.category_id].isthing:
                    assert (inside == 0).all()
                else:
                    assert (inside == s.id).all()
        if "PT" in im.kinds:
            for p in im.points:
                assert ids[p.y, p.x] == p.segment_id
            per_seg = {}
            for p in im.points:
                per_seg[p.segment_id] = per_seg.get(p.segment_id, 0) + 1
            assert set(per_seg) == {s.id for s in rec.segments}
            assert all(v == min(3, (ids == sid).sum()) for sid, v in per_seg.items())


def test_point_sampling_biases():
    mask = np.zeros((41, 41), bool)
    mask[5:36, 5:36] = True
    ys, xs = np.nonzero(mask)
    d2 = (ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2
    means = {s: float((point_weights(mask, s) * d2).sum()) for s in ("center", "uniform", "border")}
    assert means["center"] < means["uniform"] < means["border"]
    with pytest.raises(InputError, match="unknown point sampling"):
        point_weights(mask, "edge")


def test_points_are_seeded():
    from cqbnet.data.panoptic_format import PanopticRecord, SegmentInfo

    ids = np.zeros((20, 20), np.uint32)
    ids[2:10, 2:10] = 4
    rec = PanopticRecord(1, "x.png", [SegmentInfo(4, 1)])
    a = derive_points(ids, rec, 5, "uniform", np.random.default_rng(3))
    b = derive_points(ids, rec, 5, "uniform", np.random.default_rng(3))
    assert a == b and len(a) == 5


def test_costs_add_up(tmp_path, synth):
    gt = gt_of(synth)
    m = simulate(gt, parse_ratio("P=0.3,I=0.3,B=0.2,S=0.2"), tmp_path / "m", seed=0)
    costs = CostModel()
    rows = manifest_cost(m, costs)
    by = {r.kinds: r for r in rows}
    assert by["P"].cost == pytest.approx(12 * 1.0)
    assert by["I"].cost == pytest.approx(12 * 0.006)
    assert by["B"].cost == pytest.approx(8 * 0.03)
    assert by["S"].cost == pytest.approx(8 * 0.68)
    total = sum(r.cost for r in rows) / 40
    assert total == pytest.approx(costs.ratio_cost(parse_ratio("P=0.3,I=0.3,B=0.2,S=0.2")))


def test_paper_o6_cost_arithmetic():
    """Eq. 2 with paper 000's relative costs: O6 = 0.29 + 0.355*0.006 + 0.29*0.03 + 0.065*0.68."""
    f2 = CostModel().ratio_cost(parse_ratio("P=0.29,I=0.355,B=0.29,S=0.065"))
    assert f2 == pytest.approx(0.29 + 0.355 * 0.006 + 0.29 * 0.03 + 0.065 * 0.68)


def test_seconds_yaml_and_per_box_costs(tmp_path, synth):
    y = tmp_path / "c.yaml"
    y.write_text("seconds: {P: 1000, I: 10, B: 5, S: 500, PT: 2}\n")
    c = CostModel.from_yaml(y)
    assert c.value["I"] == pytest.approx(0.01) and c.unit["B"] == "box"
    assert c.per_image("B", boxes=4) == pytest.approx(0.02)
    assert c.per_image("PT", points=10) == pytest.approx(0.02)
    with pytest.raises(InputError, match="needs stats.boxes_per_image"):
        c.ratio_cost(parse_ratio("B=1"))
    m = simulate(gt_of(synth), parse_ratio("B=1"), tmp_path / "m", seed=0)
    boxes = sum(len(i.boxes) for i in m.images)
    assert sum(r.cost for r in manifest_cost(m, c)) == pytest.approx(boxes * 0.005)


@pytest.mark.parametrize(
    "text, msg",
    [
        ("relative: {I: -1}", "cost of I must be a finite number >= 0"),
        ("relative: {Q: 1}", "unknown label kind 'Q'"),
        ("seconds: {I: 3}", "seconds.P"),
        ("relative: {I: 1}\nseconds: {P: 1}", "exactly one of"),
        ("relative: [1, 2", "malformed YAML"),
        ("relative: {I: 0.1}\nunits: {I: pixel}", "unit of I must be one of"),
    ],
)
def test_bad_cost_files(tmp_path, text, msg):
    y = tmp_path / "c.yaml"
    y.write_text(text)
    with pytest.raises(InputError, match=msg) as e:
        CostModel.from_yaml(y)
    assert "c.yaml" in str(e.value)


# ---------------------------------------------------------------- manifest reader
def _manifest(tmp_path, synth):
    return simulate(gt_of(synth), parse_ratio("P=0.2,I=0.2,B=0.2,S=0.2,PT=0.2"), tmp_path / "m", seed=0).path


def test_manifest_round_trip(tmp_path, synth):
    p = _manifest(tmp_path, synth)
    m = load_manifest(p)
    again = m.to_json(p.parent.absolute())
    raw = json.loads(p.read_text())
    assert again["images"] == raw["images"] and again["boxes"] == raw["boxes"] and again["points"] == raw["points"]


MUTATIONS = {
    "leak_full_label": lambda d: d["panoptic"]["annotations"].append(
        dict(d["panoptic"]["annotations"][0], image_id=next(i["id"] for i in d["images"] if i["kinds"] == ["I"]))
    ),
    "unknown_kind": lambda d: d["images"][0].update(kinds=["Q"]),
    "duplicate_image": lambda d: d["images"].append(dict(d["images"][0])),
    "box_outside": lambda d: d["boxes"][0].update(bbox=[60, 60, 10, 10]),
    "point_outside": lambda d: d["points"][0].update(x=-1),
    "tag_unknown_category": lambda d: d["tags"][0].update(category_ids=[999]),
    "missing_kind_label": lambda d: d["tags"].pop(0),
    "stuff_map_with_thing": lambda d: d["stuff_maps"]["annotations"][0]["segments_info"].append(
        {"id": 77, "category_id": 1, "iscrowd": 0}
    ),
    "box_for_stuff": lambda d: d["boxes"][0].update(category_id=7),
    "wrong_format": lambda d: d.update(format="coco"),
    "kinds_not_list": lambda d: d["images"][0].update(kinds="P"),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_manifest_rejects(tmp_path, synth, name):
    p = _manifest(tmp_path, synth)
    d = json.loads(p.read_text())
    MUTATIONS[name](d)
    p.write_text(json.dumps(d))
    with pytest.raises(InputError) as e:
        load_manifest(p)
    assert "manifest.json" in str(e.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_manifest_reader_never_crashes_on_corruption(tmp_path, synth, data):
    """Any corrupted field gives either a valid manifest or an InputError, never another exception."""
    p = tmp_path / "m" / "manifest.json"
    if not p.exists():
        _manifest(tmp_path, synth)
    d = json.loads(p.read_text())
    section = data.draw(st.sampled_from(["images", "boxes", "points", "tags"]))
    if not d[section]:
        return
    i = data.draw(st.integers(0, len(d[section]) - 1))
    key = data.draw(st.sampled_from(sorted(d[section][i])))
    junk = data.draw(
        st.one_of(
            st.none(),
            st.integers(-5, 10**7),
            st.floats(allow_nan=True),
            st.text(max_size=3),
            st.lists(st.integers(-3, 200), max_size=5),
            st.booleans(),
        )
    )
    d[section][i][key] = junk
    q = tmp_path / "corrupt" / "manifest.json"
    q.parent.mkdir(exist_ok=True)
    q.write_text(
        json.dumps(
            {
                **d,
                "image_root": str(p.parent / d["image_root"]),
                "panoptic": {**d["panoptic"], "png_root": str(p.parent / d["panoptic"]["png_root"])},
                "stuff_maps": {**d["stuff_maps"], "png_root": str(p.parent / d["stuff_maps"]["png_root"])},
            }
        )
    )
    try:
        load_manifest(q)
    except InputError:
        pass


def test_shipped_cost_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    paper = CostModel.from_yaml(root / "costs_paper000.yaml")
    assert paper.value == CostModel().value
    sec = CostModel.from_yaml(root / "costs_seconds.yaml")
    assert sec.value["I"] == pytest.approx(7 / 1104) and sec.unit["B"] == "box"
    assert sec.ratio_cost(parse_ratio("P=0.5,B=0.5")) == pytest.approx(0.5 + 0.5 * 7.3 * 7 / 1104)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["points"][0].update(segment_id=0), "names no segment"),
        (
            lambda d: d["points"].append(
                dict(
                    d["points"][0],
                    category_id=next(c["id"] for c in d["categories"] if c["id"] != d["points"][0]["category_id"]),
                )
            ),
            "its points disagree on the class",
        ),
        (lambda d: d["boxes"].append(dict(d["boxes"][0])), "duplicate box id"),
    ],
)
def test_manifest_rejects_points_and_boxes_that_cannot_be(tmp_path, synth, edit, message):
    p = _manifest(tmp_path, synth)
    d = json.loads(p.read_text())
    edit(d)
    p.write_text(json.dumps(d))
    with pytest.raises(InputError, match=message):
        load_manifest(p)

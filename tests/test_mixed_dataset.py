"""Mixed-label training targets: each image yields exactly the labels its kinds give, and nothing else."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.panoptic_format import load_panoptic_json, read_panoptic_png, write_panoptic_png
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.network.build import build_panoptic_net
from helpers import TINY, tiny_model_config

KEYS = {
    "P": {"masks", "labels", "boxes", "semantic", "panoptic", "segment_ids", "iscrowd", "is_thing", "category_ids"},
    "I": {"tags"},
    "B": {"box_boxes", "box_labels", "box_iscrowd"},
    "S": {"stuff_semantic"},
    "PT": {"point_xy", "point_labels", "point_segments", "point_iscrowd"},
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


def test_mixed_label_training_never_uses_hidden_labels(mixed, tmp_path):
    """Train on a manifest, corrupt the full labels of every weak image, train again: identical weights."""
    import torch
    import yaml

    from cqbnet.engine.config import load_config
    from cqbnet.engine.trainer import train

    data, m = mixed
    cfg = {
        "data": {"root": str(data), "manifest": str(m.path)},
        "model": tiny_model_config(),
        "solver": {"max_iter": 4, "batch_size": 4, "base_lr": 0.01, "warmup_iters": 1, "steps": [3]},
        "train": {"checkpoint_period": 4, "eval_period": 0, "log_period": 1},
    }
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump(cfg))

    def weights(out):
        train(load_config(tmp_path / "mixed.yaml"), tmp_path / out, progress=False)
        return torch.load(tmp_path / out / "model_final.pth", weights_only=False)["model"]

    a = weights("a")
    gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train")
    weak = {lab.image_id for lab in m.images if "P" not in lab.kinds}
    for r in gt.records:
        if r.image_id in weak:
            ids = read_panoptic_png(gt.png_path(r))
            write_panoptic_png(gt.png_path(r), ids * 0 + 654321)
    b = weights("b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 4 and all(np.isfinite(v) for v in __import__("json").loads(rows[-1]).values())


def _tiny_model_and_kinds(mixed):
    """The manifest's dataset, its image indices by kind set, and a freshly seeded tiny network in train mode."""
    import torch

    _, m = mixed
    ds = MixedLabelDataset(m.path)
    by_kind: dict = {}
    for i, lab in enumerate(m.images):
        by_kind.setdefault(lab.kinds, []).append(i)
    torch.manual_seed(0)
    return ds, by_kind, build_panoptic_net(ds.categories, **TINY).train()


def test_each_kind_gets_its_own_losses(mixed):

    from cqbnet.data.transforms import to_tensors

    ds, by_kind, model = _tiny_model_and_kinds(mixed)

    def losses(kind):
        items = [to_tensors(*ds[i]) for i in by_kind[frozenset(kind.split("+"))][:2]]
        return {k: float(v.detach()) for k, v in model([x[0] for x in items], [x[1] for x in items]).items()}

    b = losses("B")
    assert b["loss_objectness"] > 0 and b["loss_cls_s0"] > 0 and b["loss_mask"] == 0 and b["loss_panoptic"] == 0
    assert b["loss_semantic"] == 0 and b["loss_box2mask"] > 0  # boxes teach masks through Box2Mask only
    model.iteration = 10**6  # past the warm-up: the pairwise term joins
    assert losses("B")["loss_box2mask"] > b["loss_box2mask"]
    box2mask, model.box2mask = model.box2mask, None  # a module that is None is off
    assert "loss_box2mask" not in losses("B")
    model.box2mask = box2mask
    for kind in ("S", "PT"):
        x = losses(kind)
        assert x["loss_semantic"] > 0 and x["loss_objectness"] == 0 and x["loss_panoptic"] == 0
        assert x["loss_cls2pixel"] == 0 and x["loss_cls2box"] == 0
    model.iteration = 0
    i = losses("I")
    assert i["loss_cls2box"] == 0  # L_C2B ramps in from 0
    assert i["loss_cls2pixel"] > 0  # and stuff pixels through Cls2Pixel: L_cls from the start,
    model.iteration = 10**6
    assert losses("I")["loss_cls2box"] > 0  # after the warm-up tags teach detection through Cls2Box
    gated = losses("I")["loss_cls2pixel"]
    assert gated > i["loss_cls2pixel"]  # energy and tag consistency after the warm-up
    assert model.cls2pixel.gate.precision is None and not model.cls2pixel.gate.is_open()  # no panoptic image scored yet
    model.cls2pixel.gate.enabled = False  # the paper's behaviour: the CAM pseudo labels teach unchecked
    unchecked = losses("I")["loss_cls2pixel"]
    assert unchecked > gated
    model.cls2pixel.gate.enabled = True
    gate_counts = (model.cls2pixel.gate.pseudo_right, model.cls2pixel.gate.head_right, model.cls2pixel.gate.labelled)
    for buf, value in zip(gate_counts, (75.0, 50.0, 100.0)):  # half the head's errors put right: weight 0.5
        buf.fill_(value)
    assert losses("I")["loss_cls2pixel"] == pytest.approx(gated + 0.5 * (unchecked - gated), rel=1e-5)
    for buf in gate_counts:
        buf.zero_()
    for term in ("energy", "tag_consistency"):  # each dense term switched off on its own
        setattr(model.cls2pixel, term, False)
        assert losses("I")["loss_cls2pixel"] < gated
        setattr(model.cls2pixel, term, True)
    model.cls2pixel.pseudo, model.cls2pixel.gate.enabled = False, False  # no L_pseudo: as with the gate shut
    assert losses("I")["loss_cls2pixel"] == pytest.approx(gated, rel=1e-6)
    model.cls2pixel.pseudo, model.cls2pixel.gate.enabled = True, True
    losses("P")  # a panoptic batch scores the pseudo labels against its semantic maps
    assert model.cls2pixel.gate.precision is not None
    model.iteration = 0
    assert all(v == 0 for k, v in i.items() if k != "loss_cls2pixel")
    assert losses("B+I")["loss_cls2pixel"] > 0 and losses("B+I")["loss_cls2box"] == 0  # paper 001's mix
    assert b["loss_cls2box"] == 0 and losses("P")["loss_cls2box"] == 0
    p = losses("P")
    assert all(p[k] > 0 for k in ("loss_objectness", "loss_mask", "loss_semantic", "loss_panoptic"))
    assert p["loss_box2mask"] == 0


def test_relation_reasoning_carries_each_label_into_the_other_branch(mixed):
    """Paper 000: stuff maps teach detection and boxes teach stuff, through the graph, never through labels the
    image lacks."""
    import torch

    from cqbnet.data.transforms import to_tensors

    ds, by_kind, model = _tiny_model_and_kinds(mixed)
    roi_mlp = model.roi_heads.stages[0].head.fc6.weight
    decoder = next(model.semantic_head.decoder.parameters())

    def relation_grads(kind):
        items = [to_tensors(*ds[i]) for i in by_kind[frozenset({kind})][:2]]
        model.zero_grad()
        losses = model([x[0] for x in items], [x[1] for x in items])
        losses["loss_relation"].backward()
        grad = [0.0 if p.grad is None else float(p.grad.abs().sum()) for p in (roi_mlp, decoder)]
        return {k: float(v.detach()) for k, v in losses.items()}, grad

    s, (to_rois, _) = relation_grads("S")
    assert s["loss_relation"] > 0 and s["loss_cls_s0"] == 0
    assert to_rois > 0  # a stuff map trains the RoI features (st -> th)
    b, (_, to_semantic) = relation_grads("B")
    assert b["loss_relation"] > 0 and b["loss_semantic"] == 0
    assert to_semantic > 0  # boxes train the semantic features (th -> st)
    for kind in ("I", "PT"):  # neither boxes nor stuff maps: nothing to reason from
        assert relation_grads(kind)[0]["loss_relation"] == 0
    model.eval()
    with torch.no_grad():
        items = [to_tensors(*ds[i]) for i in by_kind[frozenset({"P"})][:2]]
        for mode in ("argmax", "heuristic"):
            assert len(model([x[0] for x in items], mode=mode)) == 2
    off = build_panoptic_net(ds.categories, **{**TINY, "weak": {"relation": False}}).train()
    assert off.relation is None and "loss_relation" not in off([x[0] for x in items], [x[1] for x in items])


def test_relation_loss_is_on_the_enhanced_predictions_themselves(mixed):
    """L_RR trains the relation module's own predictions, not their average with the base ones: the base stage's
    box predictor and the semantic predictor get no gradient from it, the enhanced heads do (they are averaged
    with the base ones only at test and for the panoptic head's detections)."""
    from cqbnet.data.transforms import to_tensors

    ds, by_kind, model = _tiny_model_and_kinds(mixed)
    items = [to_tensors(*ds[i]) for i in by_kind[frozenset({"P"})][:2]]
    losses = model([x[0] for x in items], [x[1] for x in items])
    model.zero_grad()
    losses["loss_relation"].backward()
    base = [model.roi_heads.stages[0].predictor.cls_score.weight, model.semantic_head.predictor.weight]
    enhanced = [model.relation.cls_en.weight, model.relation.reg_en.weight, model.relation.seg_en.weight]
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in base)
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in enhanced)


def test_batch_normalization_weighs_each_loss_by_the_share_of_images_that_carry_it(mixed):
    """A batch of one P and one B image: detection is carried by both, the dense losses by the P image only and
    Box2Mask by the B image only, so under "batch" those are half their "labelled" (per-carrier mean) value."""
    import pytest
    import torch

    from cqbnet.data.transforms import to_tensors

    ds, by_kind, model = _tiny_model_and_kinds(mixed)
    items = [to_tensors(*ds[by_kind[frozenset({k})][0]]) for k in ("P", "B")]

    def losses(normalization):
        model.loss_normalization = normalization
        torch.manual_seed(1)  # the RPN's and RoI heads' samplers draw from the global generator
        return {k: float(v.detach()) for k, v in model([x[0] for x in items], [x[1] for x in items]).items()}

    labelled, batch = losses("labelled"), losses("batch")
    for k in ("loss_objectness", "loss_cls_s0", "loss_box_s2"):
        assert batch[k] == pytest.approx(labelled[k], rel=1e-6)
    for k in ("loss_semantic", "loss_mask", "loss_panoptic", "loss_box2mask"):
        assert labelled[k] > 0 and batch[k] == pytest.approx(labelled[k] / 2, rel=1e-6)
    with pytest.raises(Exception, match="loss_normalization"):
        build_panoptic_net(ds.categories, **{**TINY, "loss_normalization": "per-pixel"})

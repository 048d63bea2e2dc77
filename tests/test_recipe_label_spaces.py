"""Papers 003, 002 and 001 on label spaces other than the synthetic scenes': things only (an unlabelled
background) and stuff only (no instance at all). Each recipe trains, its losses stay finite and reach the
parameters, and the network predicts only classes of the space."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.transforms import to_tensors
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.labels.rounds import write_round
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.network.build import build_panoptic_net
from cqbnet.weak.approx_ground_truth import round_zero
from helpers import TINY, restrict_label_space

SPACES = {"things only": True, "stuff only": False}


@pytest.fixture(scope="module", params=list(SPACES))
def space(request, synth, tmp_path_factory):
    root = restrict_label_space(synth, tmp_path_factory.mktemp("space"), isthing=SPACES[request.param])
    gt = load_panoptic_json(root / "panoptic_train.json", root / "panoptic" / "train", root / "images" / "train")
    return request.param, gt


def _train_step(ds: MixedLabelDataset, weak: dict, key: str, module: str | None = None) -> None:
    """One training step past the warm-up on the first images that carry labels, then inference; ``key`` a
    loss of the weak ``module`` (default: the one the loss is named after)."""
    index = [i for i, lab in enumerate(ds.manifest.images) if lab.kinds][:3]
    items = [to_tensors(*ds[i]) for i in index]
    images, targets = [x[0] for x in items], [x[1] for x in items]
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": weak}).train()
    model.iteration = 1000
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses[key] > 0
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, module or key[5:]).parameters())
    model.eval()
    with torch.no_grad():
        outs = model(images)
    assert all(s["category_id"] in ds.categories for o in outs for s in o.segments)


@pytest.mark.parametrize("clicked_only", [False, True])
def test_points_train_on_the_label_space(space, clicked_only, tmp_path):
    name, gt = space
    m = simulate(gt, parse_ratio("PT=1"), tmp_path / "labels", seed=0, points_per_segment=2)
    ds = MixedLabelDataset(m.path)
    weak = {"points": True, "points_warmup": 10, "points_clicked_only": clicked_only}
    _train_step(ds, weak, "loss_points_pce", "points")


def test_tags_train_on_the_label_space(space, tmp_path):
    name, gt = space
    m = simulate(gt, parse_ratio("I=1"), tmp_path / "labels", seed=0)
    ds = MixedLabelDataset(m.path)
    weak = {"jtsm": True, "jtsm_warmup": 10, "cls2box": False, "cls2pixel": False, "jtsm_cache": str(tmp_path / "c")}
    _train_step(ds, weak, "loss_jtsm")


def test_boxes_and_tags_give_approximate_labels_on_the_label_space(space, tmp_path):
    """Paper 001's round 0 with stuff CAMs from an untrained Cls2Pixel: things only have no stuff tags (stuff is
    all ignore), stuff only has no boxes (no instance); the network learns from what the round holds."""
    name, gt = space
    four = dataclasses.replace(gt, records=gt.records[:4])  # a round covers every boxes image of its manifest
    m = simulate(four, parse_ratio("B+I=1"), tmp_path / "labels", seed=0)
    torch.manual_seed(0)
    cam_net = build_panoptic_net(m.categories, **{**TINY, "weak": {"cls2pixel": True}}).eval()
    write_round(tmp_path / "r0", round_zero(m, cam_net, box_background=True), "round 0")
    ds = MixedLabelDataset(m.path, pseudo_labels=tmp_path / "r0")
    items = [to_tensors(*ds[i]) for i in range(3)]
    for _, t in items:
        assert t["pseudo_panoptic"]
        if name == "stuff only":
            assert not t["is_thing"].any() and "box_background" not in t  # no box, no box background
    if name == "things only":  # the box background's class losses also work beside a background class
        assert any("semantic_not" in t for _, t in items)
    model = build_panoptic_net(ds.categories, **TINY).train()
    losses = model([x[0] for x in items], [x[1] for x in items])
    assert all(torch.isfinite(v) for v in losses.values()), losses
    key = "loss_mask" if name == "things only" else "loss_semantic"
    assert losses[key] > 0

"""The composed network: backbones, a training step, valid panoptic outputs in both inference modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models import mobilenet_v2, resnet18

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.transforms import hflip, resize, to_tensors
from cqbnet.errors import InputError
from cqbnet.modeling.backbone import build_backbone
from cqbnet.modeling.cascade_rcnn import CascadeRoIHeads, nonempty
from cqbnet.network.build import build_panoptic_net
from helpers import TINY


@pytest.fixture(scope="module")
def dataset(synth):
    return PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")


def batch(dataset, n=2):
    return [to_tensors(*dataset[i]) for i in range(n)]


@pytest.mark.parametrize("name,channels", [("resnet18", 32), ("resnet50", 16), ("mobilenet_v2", 16)])
def test_backbones_give_fpn_strides(name, channels):
    b = build_backbone(name, None, "bn", 5, channels)
    out = b(torch.zeros(1, 3, 64, 96))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    for k, stride in zip(["0", "1", "2", "3", "pool"], [4, 8, 16, 32, 64]):
        assert out[k].shape == (1, channels, 64 // stride if stride < 64 else 1, 96 // stride if stride < 64 else 2)


def test_local_pretrained_weights(tmp_path):
    torch.manual_seed(0)
    ref = resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    b = build_backbone("resnet18", path, "frozen_bn", 3, 32)
    assert torch.equal(b.body.conv1.weight, ref.conv1.weight)
    assert not b.body.conv1.weight.requires_grad and b.body.layer4[0].conv1.weight.requires_grad
    mb = mobilenet_v2()
    torch.save({"state_dict": mb.state_dict()}, tmp_path / "mb.pth")
    m = build_backbone("mobilenet_v2", tmp_path / "mb.pth", "frozen_bn", 2, 16)
    assert torch.equal(m.body["0"][0].weight, mb.features[0][0].weight)
    with pytest.raises(InputError, match="does not fit a torchvision resnet18"):
        build_backbone("resnet18", tmp_path / "mb.pth")
    (tmp_path / "bad.pth").write_text("not weights")
    with pytest.raises(InputError, match="not a PyTorch weights file"):
        build_backbone("resnet18", tmp_path / "bad.pth")
    with pytest.raises(InputError, match="weights file not found"):
        build_backbone("resnet18", tmp_path / "missing.pth")


def test_transforms_keep_targets_aligned(dataset):
    img, t = to_tensors(*dataset[0])
    f_img, f = hflip(img, t)
    assert torch.equal(f["masks"][0], t["masks"][0].flip(-1))
    w = img.shape[-1]
    assert torch.allclose(f["boxes"][:, 0], w - t["boxes"][:, 2])
    r_img, r = resize(img, t, 2.0)
    assert r_img.shape[-2:] == (128, 128) and r["masks"].shape[-2:] == (128, 128)
    for m, b in zip(r["masks"], r["boxes"]):
        ys, xs = torch.where(m)
        assert b.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    # approximate labels' pixel maps (paper 001) follow the image too
    t["ignore"] = torch.rand(t["semantic"].shape) > 0.5
    t["box_background"] = t["ignore"] & (torch.rand(t["semantic"].shape) > 0.5)
    t["semantic_not"] = torch.where(t["box_background"], 1, 255)
    for k in ("ignore", "box_background", "semantic_not"):
        assert torch.equal(hflip(img, t)[1][k], t[k].flip(-1)), k
        assert torch.equal(resize(img, t, 2.0)[1][k], t[k].repeat_interleave(2, 0).repeat_interleave(2, 1)), k


def test_training_step_and_losses(dataset):
    torch.manual_seed(0)
    model = build_panoptic_net(dataset.categories, **TINY)
    model.train()
    b = batch(dataset, 2)
    losses = model([x[0] for x in b], [x[1] for x in b])
    want = {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_mask",
        "loss_semantic",
        "loss_panoptic",
        "loss_box2mask",
        "loss_cls2box",
        "loss_cls2pixel",
        "loss_relation",
    }
    want |= {f"loss_{k}_s{i}" for k in ("cls", "box") for i in range(3)}
    assert set(losses) == want
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for p in (
        model.panoptic_head.affinity.phi0[0].weight,
        model.semantic_head.predictor.weight,
        model.roi_heads.stages[2].predictor.cls_score.weight,
    ):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0  # zero_loss gives idle parameters zeros


def test_weak_plugins_run_in_one_loop_in_a_fixed_order(dataset):
    """Every online weak method is a plug-in of one protocol (cqbnet.weak.base): relabelling ones first, then
    paper 000's modules; each one's losses carry its name."""
    from cqbnet.weak.base import WeakModule, describe

    weak = {"points": True, "jtsm": True, "points_dim": 16, "points_heads": 2, "jtsm_hidden": 16}
    model = build_panoptic_net(dataset.categories, **{**TINY, "weak": weak})
    plugins = model.weak_modules()
    assert [m.name for m in plugins] == ["points", "jtsm", "cls2box", "cls2pixel", "box2mask", "relation"]
    assert [m.relabels for m in plugins] == [True, True, False, False, False, False]
    assert all(isinstance(m, WeakModule) for m in plugins) and describe(plugins)[0]["class"] == "FDDPoints"
    off = {"cls2box": False, "cls2pixel": False, "box2mask": False, "relation": False}
    assert build_panoptic_net(dataset.categories, **{**TINY, "weak": off}).weak_modules() == []
    with pytest.raises(NotImplementedError, match="does not relabel"):
        plugins[2].relabel(None, model)


def _same_stages(heads: CascadeRoIHeads) -> None:
    """Make every stage a copy of the first that does not move its boxes: the same RoIs reach each stage."""
    with torch.no_grad():
        for stage in heads.stages:
            stage.load_state_dict(heads.stages[0].state_dict())
            stage.predictor.bbox_pred.weight.zero_()
            stage.predictor.bbox_pred.bias.zero_()


def _det_targets(dataset, n=2):
    out = []
    for _, t in batch(dataset, n):
        sel = t["is_thing"] & ~t["iscrowd"]
        out.append({"boxes": t["boxes"][sel].float(), "labels": t["labels"][sel] + 1, "masks": t["masks"][sel]})
    return out


def test_cascade_stage_weights(dataset):
    """The three stages' losses carry paper 000's weights 1, 0.5, 0.25: with identical stages at one IoU fed
    the same RoIs, each stage's raw loss is the same, so the ratios are the weights."""
    torch.manual_seed(0)
    heads = CascadeRoIHeads(8, 4, representation=16, stage_ious=(0.5, 0.5, 0.5), stage_box_weights=[(10, 10, 5, 5)] * 3)
    assert heads.stage_weights == (1.0, 0.5, 0.25)
    _same_stages(heads)
    features = {k: torch.randn(2, 8, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32))}
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 28.0]]), "labels": torch.tensor([2])}] * 2
    proposals = [torch.tensor([[5.0, 3.0, 29.0, 30.0], [30.0, 30.0, 60.0, 60.0], [0.0, 0.0, 20.0, 20.0]])] * 2
    _, losses = heads.train()(features, proposals, [(64, 64)] * 2, targets)
    for k in ("cls", "box"):
        first = losses[f"loss_{k}_s0"]
        assert float(first.detach()) > 0
        for i, w in ((1, 0.5), (2, 0.25)):
            torch.testing.assert_close(losses[f"loss_{k}_s{i}"], w * first)


def test_cascade_drops_boxes_refined_off_the_image():
    """In training a box a stage moves off the image (clipped to zero width) is not a RoI of the next stage
    (detectron2's cascade filters them too); the other boxes go on."""
    torch.manual_seed(0)
    heads = CascadeRoIHeads(8, 4, representation=16, stage_ious=(0.5, 0.6, 0.7), with_mask=False)
    for stage in heads.stages:  # every stage moves every box right by two of its widths
        stage.predictor.bbox_pred.weight.data.zero_()
        stage.predictor.bbox_pred.bias.data.zero_()
        stage.predictor.bbox_pred.bias.data[0] = 2.0 * stage.box_coder.weights[0]
    features = {k: torch.randn(1, 8, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32))}
    targets = [{"boxes": torch.tensor([[2.0, 2.0, 14.0, 14.0]]), "labels": torch.tensor([1])}]
    proposals = [torch.tensor([[50.0, 10.0, 62.0, 20.0], [0.0, 30.0, 6.0, 40.0], [2.0, 2.0, 14.0, 13.0]])]
    seen = []
    pool = heads.box_roi_pool.forward

    def spy(feats, boxes, shapes):
        seen.append([b.clone() for b in boxes])
        return pool(feats, boxes, shapes)

    heads.box_roi_pool.forward = spy
    _, losses = heads.train()(features, proposals, [(64, 64)], targets)
    assert len(seen) == 3 and all(torch.isfinite(v) for v in losses.values())
    assert len(seen[1][0]) < len(seen[0][0])  # the box at the right edge left the image after stage 1
    for boxes in seen[1:]:
        assert len(boxes[0]) > 0 and bool(nonempty(boxes[0]).all())


def test_cascade_trains_when_a_stage_refines_every_box_of_an_image_off_it():
    """A stage that diverges early in training can move all of an image's boxes off it: the next stages have no RoI
    in that image and learn nothing from it, where torchvision's matcher would raise."""
    torch.manual_seed(0)
    heads = CascadeRoIHeads(8, 4, representation=16, stage_ious=(0.5, 0.6, 0.7), with_mask=False)
    first = heads.stages[0].predictor.bbox_pred
    first.weight.data.zero_()
    first.bias.data.zero_()
    first.bias.data[0] = 20.0 * heads.stages[0].box_coder.weights[0]  # twenty widths to the right
    features = {k: torch.randn(1, 8, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32))}
    targets = [{"boxes": torch.tensor([[2.0, 2.0, 14.0, 14.0]]), "labels": torch.tensor([1])}]
    proposals = [torch.tensor([[50.0, 10.0, 62.0, 20.0], [0.0, 30.0, 6.0, 40.0]])]
    _, losses = heads.train()(features, proposals, [(64, 64)], targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_cls_s0"] > 0 and losses["loss_cls_s1"] == 0 and losses["loss_cls_s2"] == 0
    sum(losses.values()).backward()
    assert heads.stages[0].predictor.cls_score.weight.grad.abs().sum() > 0


def test_mask_head_trains_on_the_chosen_stage(dataset):
    """``mask_train_stage`` picks whose positives train the mask head: at a last-stage IoU of 1.01 nothing is
    positive there, while the first stage (0.5, detectron2's choice) has positives."""
    torch.manual_seed(0)
    feats = {k: torch.randn(2, 8, 64 // s, 64 // s) for k, s in zip("0123", (4, 8, 16, 32))}
    targets = _det_targets(dataset)
    proposals = [t["boxes"] + torch.tensor([1.0, -1.0, 2.0, 1.0]) for t in targets]
    got = {}
    for stage in (0, -1):
        torch.manual_seed(0)
        heads = CascadeRoIHeads(
            8, 7, representation=16, mask_channels=8, stage_ious=(0.5, 0.6, 1.01), mask_train_stage=stage
        )
        _, losses = heads.train()(feats, proposals, [(64, 64)] * 2, targets)
        got[stage] = float(losses["loss_mask"].detach())
    assert got[0] > 0 and got[-1] == 0
    with pytest.raises(ValueError, match="mask_train_stage"):
        CascadeRoIHeads(8, 7, mask_train_stage=3)


def _loss_reaches(model, losses, name: str, params) -> list[bool]:
    model.zero_grad()
    losses[name].backward(retain_graph=True)
    return [p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params]


def test_weak_losses_and_panoptic_loss_reach_what_they_should(dataset):
    """Eq. 3 sums L_C2B over the cascade stages (each stage's classifier learns from tags); the panoptic
    loss alone reaches the detector's classifier (paper 004, App. A.4) and, as the detections it trains on
    are relation-enhanced as at test, relation reasoning's box classifier."""
    torch.manual_seed(0)
    model = build_panoptic_net(dataset.categories, **TINY).train()
    model.panoptic_head.train_score_thresh = 0.0  # an untrained detector's scores are below 0.3: keep its detections
    model.iteration = 10**6  # past L_C2B's warm-up
    b = batch(dataset, 3)
    targets = [dict(t) for _, t in b]
    for t in targets[1:]:
        t["kinds"] = frozenset({"I"})
        present = torch.zeros(len(dataset.categories))
        present[t["labels"]] = 1.0
        t["tags"] = present
    losses = model([x[0] for x in b], targets)
    stages = [s.predictor.cls_score.weight for s in model.roi_heads.stages]
    assert _loss_reaches(model, losses, "loss_cls2box", stages) == [True, True, True]
    assert _loss_reaches(model, losses, "loss_panoptic", stages) == [True, True, True]
    assert _loss_reaches(model, losses, "loss_panoptic", [model.relation.cls_en.weight]) == [True]


def test_relation_graph_has_the_same_nodes_at_test_as_in_training():
    """The first n RoIs are the thing graph; more RoIs read it without changing what the first n get."""
    from cqbnet.weak.relation_reasoning import RelationReasoning

    torch.manual_seed(0)
    rr = RelationReasoning(32, 8, 4, 6, [3, 4, 5], width=16)
    features, probs = torch.randn(8, 6, 6), torch.softmax(torch.randn(6, 6, 6), 0)
    rois = torch.randn(40, 32)
    few = rr(rois[:10], features, probs, num_nodes=10)
    many = rr(rois, features, probs, num_nodes=10)
    torch.testing.assert_close(many[0][:10], few[0])
    torch.testing.assert_close(many[2], few[2])
    assert not torch.allclose(rr(rois, features, probs)[0][:10], few[0])  # as nodes, the other 30 would change them


@pytest.mark.parametrize("mode", ["argmax", "heuristic"])
def test_inference_outputs_are_valid_panoptic(dataset, mode):
    torch.manual_seed(0)
    model = build_panoptic_net(dataset.categories, **TINY).eval()
    b = batch(dataset, 2)
    with torch.no_grad():
        outs = model([x[0] for x in b], mode=mode)
    assert len(outs) == 2
    for (img, _), out in zip(b, outs):
        assert out.ids.shape == tuple(img.shape[-2:])
        ids = {s["id"] for s in out.segments}
        assert set(np.unique(out.ids)) - {0} == ids
        for s in out.segments:
            assert s["category_id"] in dataset.categories
            assert s["area"] == int((out.ids == s["id"]).sum()) > 0
            assert s["isthing"] == dataset.categories[s["category_id"]].isthing


def test_without_masks_or_affinity(dataset):
    torch.manual_seed(0)
    cfg = dict(TINY, panoptic={**TINY["panoptic"], "use_masks": False, "use_affinity": False})
    model = build_panoptic_net(dataset.categories, **cfg)
    assert model.panoptic_head.affinity is None and not model.roi_heads.with_mask
    b = batch(dataset, 2)
    losses = model.train()([x[0] for x in b], [x[1] for x in b])
    assert "loss_mask" not in losses and torch.isfinite(losses["loss_panoptic"])
    with torch.no_grad():
        model.eval()([x[0] for x in b])


def test_the_affinity_on_a_finer_grid_gives_the_panoptic_maps_of_the_plain_product(dataset, monkeypatch):
    """The affinity on a stride-2 grid (Q at stride 4; projections as matrix products before the upsampling, the
    context product before the residual one) gives the same panoptic maps as the plain computation: 1x1
    convolutions, bilinear upsampling, ReLU, the two products."""
    import torch.nn.functional as F

    from cqbnet.modeling.panoptic_head import DenseInstanceAffinity

    def plain(self, q, psi, scores=None):
        k, h, w = psi.shape
        c = q.shape[0]
        both = torch.cat([phi[0](q[None])[0] for phi in (self.phi0, self.phi1)])  # (2C, h', w')
        a, b = F.interpolate(both[None], size=(h, w), mode="bilinear", align_corners=False)[0].relu().split(c)
        flat = psi.flatten(1)
        weights = flat / flat.sum(1, keepdim=True).clamp(min=1e-6)
        return (flat + (a.flatten(1).T @ (b.flatten(1) @ weights.T)).T).reshape(k, h, w)

    torch.manual_seed(0)
    model = build_panoptic_net(dataset.categories, **dict(TINY, panoptic={**TINY["panoptic"], "stride": 2})).eval()
    images = [x[0] for x in batch(dataset, 3)]
    with torch.no_grad():
        fast = model(images)
        monkeypatch.setattr(DenseInstanceAffinity, "forward", plain)
        slow = model(images)
    assert sum(len(o.segments) for o in fast) > 3
    for f, s in zip(fast, slow):
        assert np.array_equal(f.ids, s.ids) and f.segments == s.segments


def test_weights_inside_an_installed_package(tmp_path, monkeypatch):
    pkg = tmp_path / "my_weights_pkg"
    (pkg / "w").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    torch.manual_seed(0)
    ref = resnet18()
    torch.save(ref.state_dict(), pkg / "w" / "r18.pth")
    monkeypatch.syspath_prepend(str(tmp_path))
    b = build_backbone("resnet18", "pkg://my_weights_pkg/w/r18.pth", "frozen_bn", 3, 16)
    assert torch.equal(b.body.conv1.weight, ref.conv1.weight)
    with pytest.raises(InputError, match="package 'no_such_pkg' is not installed"):
        build_backbone("resnet18", "pkg://no_such_pkg/x.pth")

"""Paper 003 (FDD): the losses of the pseudo-label branch on hand-made cases, the query generator, the pseudo
panoptic labels, and point images teaching the whole network through them."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cqbnet.cues.pairwise import neighbour_offsets
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.transforms import to_tensors
from cqbnet.errors import InputError
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.network.build import build_panoptic_net
from cqbnet.weak.fdd_points import (
    TERMS,
    FDDPoints,
    click_cells,
    clicked_components,
    colour_prior,
    partial_ce,
    segment_queries,
    self_training,
    sine_position,
)
from cqbnet.weak.warmup import image_share
from helpers import TINY


def _points(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The point branch's loss: the sum of its logged terms."""
    return sum(v for k, v in losses.items() if k.startswith("loss_points_"))


def _pairs_within(regions: torch.Tensor, dilation: int = 2) -> torch.Tensor:
    """(8, H, W) affinity 1 exactly between neighbours of the same region (inside the image)."""
    h, w = regions.shape
    out = torch.zeros((8, h, w))
    for n, (dy, dx) in enumerate(neighbour_offsets(dilation)):
        for y in range(h):
            for x in range(w):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and regions[y, x] == regions[yy, xx]:
                    out[n, y, x] = 1.0
    return out


def test_colour_prior_is_zero_for_a_map_constant_on_every_similar_pair_and_positive_otherwise():
    regions = torch.zeros(8, 8, dtype=torch.int64)
    regions[:, 4:] = 1  # two colour regions
    affinity = _pairs_within(regions)
    one_hot = F.one_hot(regions, 2).permute(2, 0, 1).float()
    log_p = torch.log(one_hot.clamp(min=1e-12))
    assert colour_prior(log_p, affinity, 2).abs() < 1e-6
    # a map that splits the left region between the two segments pays for every similar pair it cuts
    split = regions.clone()
    split[:4, :4] = 1
    cut = torch.log(F.one_hot(split, 2).permute(2, 0, 1).float().clamp(min=1e-6))
    assert colour_prior(cut, affinity, 2) > 1.0
    # uniform probabilities over K segments: -log(1/K) on every pair
    uniform = torch.full((4, 8, 8), math.log(0.25))
    assert float(colour_prior(uniform, affinity, 2)) == pytest.approx(math.log(4), abs=1e-5)


def test_partial_ce_reads_the_clicked_cells_only():
    logits = torch.randn(3, 5, 5)
    log_p = F.log_softmax(logits, 0)
    cells = torch.tensor([0, 12, 24])
    labels = torch.tensor([2, 0, 1])
    want = -(log_p[2, 0, 0] + log_p[0, 2, 2] + log_p[1, 4, 4]) / 3
    assert float(partial_ce(log_p, cells, labels)) == pytest.approx(float(want), abs=1e-6)


def test_self_training_targets_its_own_argmax_and_is_a_fixed_target():
    logits = torch.randn(4, 6, 6, requires_grad=True)
    loss = self_training(logits)
    want = F.cross_entropy(logits[None], logits.argmax(0)[None])
    assert float(loss.detach()) == pytest.approx(float(want.detach()), abs=1e-6)
    loss.backward()
    # the gradient only sharpens: it raises each pixel's winning logit
    win = logits.argmax(0)
    assert (logits.grad.gather(0, win[None]) < 0).all()


def test_clicked_components_drop_a_things_fragments_without_a_click():
    masks = torch.zeros((3, 8, 8), dtype=torch.bool)
    masks[0, 0:2, 0:2] = True  # thing: the clicked blob ...
    masks[0, 6:8, 6:8] = True  # ... and a far fragment
    masks[1, 4:6, 0:2] = True  # thing whose click another mask holds: left whole
    masks[1, 0:2, 6:8] = True
    masks[2, 3, :] = True  # stuff: not cut
    masks[2, 7, 0] = True
    xy = torch.tensor([[1, 1], [0, 0], [4, 3], [0, 3]])  # (x, y): two clicks on mask 0, one of mask 1 on row 3
    seg = torch.tensor([0, 0, 1, 2])
    out = clicked_components(masks, xy, seg, torch.tensor([True, True, False]))
    assert out[0].sum() == 4 and out[0, 0:2, 0:2].all() and not out[0, 6:, 6:].any()
    assert torch.equal(out[1], masks[1]) and torch.equal(out[2], masks[2])


def test_click_cells_expand_each_click_and_the_nearest_click_wins():
    # two clicks 10 px apart on a stride-8 grid of 4 x 4 cells, squares of 17 px: they meet in the middle
    xy = torch.tensor([[4, 4], [20, 4]])
    cells, click = click_cells(xy, 17, 4, 4, 8)
    owner = dict(zip(cells.tolist(), click.tolist()))
    assert owner[0] == 0 and owner[2] == 1  # each click's own cell
    assert owner[1] == 0  # cell centre (12, 4) is 8 from the first click, 8 from the second: the first (argmin)
    assert 3 not in owner or owner[3] == 1
    # a tiny square still keeps the click's own cell
    cells, click = click_cells(torch.tensor([[30, 30]]), 1, 4, 4, 8)
    assert cells.tolist() == [3 * 4 + 3] and click.tolist() == [0]


def test_segment_queries_are_the_channel_wise_max_over_their_cells():
    memory = torch.randn(16, 5)  # a 4 x 4 grid, 5 channels
    xy = torch.tensor([[4, 4], [12, 4], [28, 28]])  # segment 0 clicked twice (cells 0 and 1), segment 1 once
    seg = torch.tensor([0, 0, 1])
    q = segment_queries(memory, xy, seg, 2, 1, 4, 4)
    assert torch.equal(q[0], torch.maximum(memory[0], memory[1]))
    assert torch.equal(q[1], memory[15])
    # two segments clicked in one cell: the nearer click owns it, the other segment falls back to that cell
    q = segment_queries(memory, torch.tensor([[1, 1], [6, 6]]), torch.tensor([0, 1]), 2, 1, 4, 4)
    assert torch.isfinite(q).all() and torch.equal(q[1], memory[0])


def test_sine_position_codes_differ_by_place_and_have_the_width_asked():
    p = sine_position(3, 4, 8, torch.device("cpu"))
    assert p.shape == (12, 8) and torch.unique(p, dim=0).shape[0] == 12


def test_the_image_ramp_is_fixed_per_image_and_spreads_over_the_warm_up():
    shares = [image_share(i) for i in range(2000)]
    assert all(0 <= s < 1 for s in shares) and len(set(shares)) > 1900
    assert [image_share(i) for i in reversed(range(2000))][::-1] == shares  # a function of the image alone
    half = sum(s < 0.5 for s in shares) / len(shares)
    assert 0.45 < half < 0.55  # about half the images are in at mid warm-up


def test_pseudo_target_turns_the_argmax_into_panoptic_segments():
    module = FDDPoints(8, 8, 3, thing_semantic=[0, 1])
    logits = torch.full((3, 4, 4), -5.0)  # three clicked segments on a 16 x 16 image (masks at stride 4)
    logits[0, :, :2] = 5.0
    logits[1, :2, 2:] = 5.0
    logits[2, 2:, 2:] = 5.0
    t = {
        "point_segments": torch.tensor([11, 30, 30, 40]),
        "point_labels": torch.tensor([0, 1, 1, 2]),
        "point_iscrowd": torch.tensor([False, True, False, False]),
    }
    p = module.pseudo_target(t, logits, (16, 16), 255)
    assert p["labels"].tolist() == [0, 1, 2] and p["is_thing"].tolist() == [True, True, False]
    assert p["iscrowd"].tolist() == [False, True, False]
    assert p["masks"].sum(dim=(1, 2)).tolist() == [128, 64, 64]
    assert p["boxes"][0].tolist() == [0, 0, 8, 16] and p["boxes"][2].tolist() == [8, 8, 16, 16]
    assert set(p["panoptic"].unique().tolist()) == {1, 2, 3}
    assert (p["semantic"][p["masks"][2]] == 2).all()


def test_the_crf_moves_a_pseudo_border_onto_the_colour_edge():
    """With the image given, the segments' maps are refined by the dense CRF before the argmax: a border the
    stride-4 maps put two pixels inside the background moves onto the object's colour edge."""
    module = FDDPoints(8, 8, 3, thing_semantic=[0, 1])
    image = np.full((32, 32, 3), 204, dtype=np.uint8)
    image[:, :10] = 51  # a dark object in columns 0-9 on a light background
    logits = torch.zeros((2, 8, 8))  # the maps say columns 0-11 (three stride-4 cells)
    logits[0, :, :3] = 1.0
    logits[1, :, 3:] = 1.0
    t = {"point_segments": torch.tensor([1, 2]), "point_labels": torch.tensor([0, 2])}
    plain = module.pseudo_target(t, logits, (32, 32), 255)
    refined = module.pseudo_target(t, logits, (32, 32), 255, image)
    assert (plain["masks"][0].sum(1) == 12).all()
    assert (refined["masks"][0].sum(1) == 10).all() and refined["masks"][0][:, :10].all()


def test_with_crf_keep_a_segment_the_crf_swallows_keeps_its_pixels():
    """A one-cell segment without a colour edge is swallowed by the CRF; with ``crf_keep`` it keeps its pixels."""
    module = FDDPoints(8, 8, 3, thing_semantic=[0, 1])
    image = np.full((32, 32, 3), 204, dtype=np.uint8)
    logits = torch.zeros((2, 8, 8))
    logits[0, 3, 3] = 1.0  # a 4 x 4 pixel object the maps place on a uniform background
    logits[1] = 1.0
    logits[1, 3, 3] = 0.0
    t = {"point_segments": torch.tensor([1, 2]), "point_labels": torch.tensor([0, 2])}
    plain = module.pseudo_target(t, logits, (32, 32), 255)
    swallowed = module.pseudo_target(t, logits, (32, 32), 255, image)
    kept = module.pseudo_target(t, logits, (32, 32), 255, image, crf_keep=0.5)
    assert int(plain["masks"][0].sum()) >= 8 and plain["masks"][0][13:15, 13:15].all()
    assert 0 not in swallowed["labels"].tolist() or int(swallowed["masks"][0].sum()) < 8
    assert torch.equal(kept["masks"][0], plain["masks"][0])


@pytest.fixture()
def points_data(tmp_path, synth):
    gt = load_panoptic_json(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")
    m = simulate(gt, parse_ratio("PT=0.5,P=0.5"), tmp_path / "labels", seed=1, points_per_segment=2)
    ds = MixedLabelDataset(m.path)
    pt = [i for i, lab in enumerate(m.images) if lab.kinds == frozenset({"PT"})]
    return ds, pt


def test_point_images_teach_the_whole_network_through_their_pseudo_labels(points_data):
    ds, pt = points_data
    items = [to_tensors(*ds[i]) for i in pt[:2]]
    images, targets = [x[0] for x in items], [x[1] for x in items]
    torch.manual_seed(0)
    plain = build_panoptic_net(ds.categories, **TINY).train()
    without = plain(images, targets)  # points alone: only the semantic head learns, at the clicks
    assert without["loss_cls_s0"] == 0 and without["loss_mask"] == 0 and without["loss_semantic"] > 0
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": {"points": True, "points_warmup": 100}}).train()
    # switching the branch on leaves every other module's initialisation as it was
    assert torch.equal(
        model.roi_heads.stages[0].predictor.cls_score.weight, plain.roi_heads.stages[0].predictor.cls_score.weight
    )
    model.iteration = 0  # before the warm-up: the branch learns, the network does not see pseudo labels yet
    early = model(images, targets)
    assert _points(early) > 0 and early["loss_cls_s0"] == 0
    model.iteration = 100  # after it: every point image is a (pseudo) panoptic image
    late = model(images, targets)
    assert {f"loss_points_{k}" for k in TERMS} <= set(late) and late["loss_points_self"] > 0
    for k in (
        "loss_points_pce",
        "loss_points_colour",
        "loss_points_sem",
        "loss_objectness",
        "loss_cls_s0",
        "loss_mask",
        "loss_semantic",
        "loss_panoptic",
    ):
        assert torch.isfinite(late[k]) and late[k] > 0, k
    model.zero_grad()
    _points(late).backward(retain_graph=True)
    for p in (model.points.proj[0].weight, model.points.position.weight, model.points.layers[0].ffn[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the pseudo labels are targets: the detector's losses send nothing back into the point branch
    model.zero_grad()
    late["loss_cls_s0"].backward()
    assert model.points.mask_embed[0].weight.grad is None or model.points.mask_embed[0].weight.grad.abs().sum() == 0


def test_the_pseudo_labels_ramp_in_over_images_from_their_start():
    """Image i learns from its pseudo labels from iteration pseudo_start + warmup * u_i on: none before the start,
    a share that grows linearly with the iteration during the ramp, all after it; the switch turns them off."""
    ids = list(range(400))
    shares = sorted(image_share(i) for i in ids)
    for start in (0, 300):
        branch = FDDPoints(8, 8, 3, [0], warmup=200, pseudo_start=start)

        def share(it: int, branch: FDDPoints = branch) -> float:
            return sum(branch.ramped_in({"image_id": i}, it) for i in ids) / len(ids)

        assert share(start) == 0 and share(start + 200) == 1 and share(10**6) == 1
        assert start == 0 or share(start - 1) == 0 and share(0) == 0
        assert share(start + 100) == sum(u < 0.5 for u in shares) / len(ids)  # half-way: the images with u_i < 1/2
        assert share(start + 50) < share(start + 100) < share(start + 150)
    branch = FDDPoints(8, 8, 3, [0], warmup=200, pseudo_labels=False)
    assert not any(branch.ramped_in({"image_id": i}, 10**6) for i in ids)


def test_panoptic_images_are_left_to_their_own_labels(points_data):
    ds, pt = points_data
    full = [i for i in range(len(ds)) if i not in pt][:2]
    items = [to_tensors(*ds[i]) for i in full]
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": {"points": True, "points_warmup": 1}}).train()
    model.iteration = 10
    losses = model([x[0] for x in items], [x[1] for x in items])
    assert _points(losses) == 0 and losses["loss_cls_s0"] > 0


@pytest.mark.parametrize("pixels", ["fpn", "semantic"])
def test_the_masks_read_the_features_chosen_and_nothing_else(points_data, pixels):
    """With ``fpn`` the branch's loss reaches the FPN but not the semantic head's decoder; with ``semantic`` it
    reaches both."""
    ds, pt = points_data
    items = [to_tensors(*ds[i]) for i in pt[:2]]
    torch.manual_seed(0)
    weak = {"points": True, "points_warmup": 100, "points_pixels": pixels}
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": weak}).train()
    model.iteration = 0
    _points(model([x[0] for x in items], [x[1] for x in items])).backward()
    decoder = [p.grad for p in model.semantic_head.decoder.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in decoder)
    assert reached == (pixels == "semantic")
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.fpn.parameters())


def test_an_unknown_pixel_source_is_a_clear_error(points_data):
    ds, _ = points_data
    with pytest.raises(InputError, match="points_pixels"):
        build_panoptic_net(ds.categories, **{**TINY, "weak": {"points": True, "points_pixels": "rgb"}})


@pytest.mark.parametrize(
    "switch", ["points_colour", "points_self_training", "points_auxiliary", "points_pseudo_labels"]
)
def test_each_part_can_be_switched_off(points_data, switch):
    ds, pt = points_data
    items = [to_tensors(*ds[i]) for i in pt[:2]]
    torch.manual_seed(0)
    weak = {"points": True, "points_warmup": 1, switch: False}
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": weak}).train()
    model.iteration = 10
    losses = model([x[0] for x in items], [x[1] for x in items])
    assert torch.isfinite(_points(losses)) and _points(losses) > 0
    assert (losses["loss_cls_s0"] == 0) == (switch == "points_pseudo_labels")


def test_a_config_trains_from_points_alone_and_its_pseudo_labels_are_written_and_scored(tmp_path, synth, capsys):
    """End to end: data.labels simulates one click per segment, the point branch trains with the network,
    ``cqbnet pseudo-labels`` writes the pseudo labels as COCO panoptic and scores them against the hidden truth."""
    import json

    import yaml

    from cqbnet.cli.main import main
    from helpers import tiny_model_config

    model = tiny_model_config()
    model["weak"] = {"points": True, "points_warmup": 2}
    cfg = {
        "data": {"root": str(synth), "labels": {"ratio": "PT=1", "points_per_segment": 1, "seed": 3}},
        "model": model,
        "solver": {
            "max_iter": 3,
            "batch_size": 2,
            "base_lr": 0.01,
            "warmup_iters": 1,
            "steps": [2],
            "clip_grad_norm": 5.0,
        },
        "train": {"checkpoint_period": 3, "eval_period": 0, "log_period": 1},
    }
    path = tmp_path / "points.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    manifest = tmp_path / "run" / "labels" / "manifest.json"
    assert {tuple(sorted(i["kinds"])) for i in json.loads(manifest.read_text())["images"]} == {("PT",)}
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_points_pce"] > 0 and r["loss_points_colour"] > 0 for r in rows)
    assert all(r["grad_norm"] > 0 for r in rows if "loss" in r)  # the norm before clipping is logged
    capsys.readouterr()
    argv = ["pseudo-labels", "--checkpoint", str(tmp_path / "run" / "model_final.pth"), "--manifest", str(manifest)]
    argv += ["--data", str(synth), "--out", str(tmp_path / "pseudo"), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Things" in out and "mIoU" in out
    pred = json.loads((tmp_path / "pseudo" / "panoptic_pred.json").read_text())
    n = len(json.loads(manifest.read_text())["images"])
    assert len(pred["annotations"]) == n and all(a["segments_info"] for a in pred["annotations"])
    # --crf: the same images and segments, maps refined by the dense CRF
    assert main([*argv[:-3], str(tmp_path / "pseudo_crf"), *argv[-2:], "--crf"]) == 0
    assert "Things" in capsys.readouterr().out
    refined = json.loads((tmp_path / "pseudo_crf" / "panoptic_pred.json").read_text())
    assert [a["image_id"] for a in refined["annotations"]] == [a["image_id"] for a in pred["annotations"]]
    # offline: a fresh network without the branch learns from the written pseudo labels (every P loss reads them)
    cfg["model"]["weak"] = {"points": False}
    cfg["data"] = {"root": str(synth), "manifest": str(manifest), "pseudo_labels": str(tmp_path / "pseudo")}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "offline"), "--quiet", "--device", "cpu"]) == 0
    rows = [json.loads(r) for r in (tmp_path / "offline" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_mask"] > 0 for r in rows if "loss" in r) and "loss_points_pce" not in rows[0]
    # a network trained without the branch has no pseudo labels to give: one clear line, exit code 2
    cfg["data"] = {"root": str(synth), "labels": {"ratio": "PT=1", "points_per_segment": 1, "seed": 3}}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "plain"), "--quiet", "--device", "cpu"]) == 0
    argv[2] = str(tmp_path / "plain" / "model_final.pth")
    argv[-3] = str(tmp_path / "pseudo2")
    assert main(argv) == 2
    assert "no point branch" in capsys.readouterr().err


def test_written_pseudo_labels_are_the_point_images_panoptic_targets(tmp_path, points_data):
    """Offline mode: ``MixedLabelDataset(pseudo_labels=...)`` gives each point image the panoptic target of the pseudo
    labels a point branch wrote (the same target the branch gives online, crowd flags kept); images the file does
    not cover keep their clicks alone; a pseudo PNG of another size, or a file with images the manifest does not
    have, is one clear error naming it."""
    import json

    from cqbnet.data.panoptic_format import read_panoptic_png, write_panoptic_png
    from cqbnet.engine.inference import write_predictions
    from cqbnet.weak.fdd_points import pseudo_label_items

    ds, pt = points_data
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": {"points": True}}).eval()
    items = list(pseudo_label_items(model, ds, torch.device("cpu")))
    first = items[0][0]["id"]
    items[0][2].segments[0]["iscrowd"] = True  # a crowd segment keeps its flag through the file
    write_predictions(tmp_path / "pseudo", items[:-1], ds.categories, overlays=False)
    with pytest.warns(UserWarning, match=r"pseudo labels for \d+ of the \d+ PT images .*first left out: image"):
        offline = MixedLabelDataset(ds.manifest, pseudo_labels=tmp_path / "pseudo")  # not silently partial
    by_id = {lab.image_id: i for i, lab in enumerate(ds.manifest.images)}
    for info, _, out in items[:-1]:
        _, t = offline[by_id[info["id"]]]
        assert t["kinds"] == {"PT", "P"} and t["pseudo_panoptic"]
        assert np.array_equal(t["panoptic"], out.ids) and len(t["masks"]) == len(out.segments)
        for m, sid, c, crowd in zip(t["masks"], t["segment_ids"], t["category_ids"], t["iscrowd"]):
            seg = next(s for s in out.segments if s["id"] == sid)
            assert np.array_equal(m, out.ids == sid) and c == seg["category_id"] and crowd == seg["iscrowd"]
        assert info["id"] != first or t["iscrowd"][t["segment_ids"] == out.segments[0]["id"]].all()
        assert "point_xy" in t  # the clicks stay
    _, t = offline[by_id[items[-1][0]["id"]]]  # not in the file: its clicks alone
    assert t["kinds"] == {"PT"} and "masks" not in t
    # a pseudo PNG that is not the image's size
    rec = json.loads((tmp_path / "pseudo" / "panoptic_pred.json").read_text())["annotations"][0]
    png = tmp_path / "pseudo" / "panoptic_pred" / rec["file_name"]
    ids = read_panoptic_png(png)
    write_panoptic_png(png, np.pad(ids, ((0, 2), (0, 0))))
    bad = MixedLabelDataset(ds.manifest, pseudo_labels=tmp_path / "pseudo" / "panoptic_pred.json")
    with pytest.raises(InputError, match=rec["file_name"]):
        bad[by_id[rec["image_id"]]]
    # pseudo labels written for another manifest: an error when the dataset is made, not clicks silently alone
    other = replace(ds.manifest, images=[lab for lab in ds.manifest.images if lab.image_id != first])
    with pytest.raises(InputError, match=rf"panoptic_pred\.json: pseudo labels for 1 image.*image id {first}\b"):
        MixedLabelDataset(other, pseudo_labels=tmp_path / "pseudo")
    # data.pseudo_labels takes one source per label kind
    with pytest.raises(InputError, match="a second source of pseudo labels for the PT images"):
        MixedLabelDataset(ds.manifest, pseudo_labels=[tmp_path / "pseudo", tmp_path / "pseudo"])

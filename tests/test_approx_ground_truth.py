"""Paper 001's approximate ground truth: GrabCut and proposals agree on drawn objects, the ignore rules, CAM stuff."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cqbnet.cues.grabcut import grabcut_foreground
from cqbnet.cues.segment_proposals import segment_proposals
from cqbnet.errors import InputError
from cqbnet.labels.rounds import BACKGROUND
from cqbnet.weak.approx_ground_truth import IGNORE, approximate_panoptic, best_proposal, stuff_cues, thing_cues


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A red disc and a blue square on a noisy green ground, 64 x 64: (image, disc mask, square mask)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((64, 64, 3), np.float64)
    img[:] = (40, 150, 40)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 30) ** 2 + (xx - 20) ** 2 < 11**2
    square = (yy >= 8) & (yy < 26) & (xx >= 40) & (xx < 58)
    img[disc] = (200, 40, 40)
    img[square] = (40, 40, 200)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8), disc, square


def box_holds(box: np.ndarray, y: int, x: int) -> bool:
    """Whether pixel (y, x) is one the xyxy box touches."""
    return np.floor(box[0]) <= x < np.ceil(box[2]) and np.floor(box[1]) <= y < np.ceil(box[3])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_grabcut_and_the_best_proposal_each_find_a_drawn_object():
    img, disc, square = _scene()
    box = np.array([8, 18, 32, 42.0])
    assert _iou(grabcut_foreground(img, box), disc) > 0.9
    props = segment_proposals(img)
    assert props.members.shape[1] == props.superpixels.max() + 1
    s = props.members.shape[1]
    # one grouping adds a region per merge; the strategies together add distinct regions only
    assert len(np.unique(props.members, axis=0)) == len(props.members) >= 2 * s - 1
    assert _iou(best_proposal(props, box), disc) > 0.7
    # a box on the image's edge still has background around it (mirrored border)
    edge = img.copy()
    edge[:, :12] = (200, 40, 40)
    fg = grabcut_foreground(edge, np.array([0, 0, 12, 64.0]))
    assert fg[:, :12].mean() > 0.9 and fg[:, 14:].mean() < 0.05
    # a tiny box is its own foreground
    assert grabcut_foreground(img, np.array([1, 1, 3, 3.0])).sum() == 4


def test_thing_cues_label_only_where_the_cues_agree_and_ignore_the_rest_of_the_box():
    img, disc, square = _scene()
    boxes = np.array([[8, 18, 32, 42.0], [39, 7, 59, 27]])
    masks, labels, ignore, background = thing_cues(img, boxes, np.array([1, 2]))
    assert labels.tolist() == [1, 2]
    assert (masks[0] & disc).sum() / masks[0].sum() > 0.95 and (masks[1] & square).sum() / masks[1].sum() > 0.95
    box0 = np.zeros_like(disc)
    box0[18:42, 8:32] = True
    assert not (masks[0] & ~box0).any()  # nothing outside its box
    assert np.array_equal(ignore & box0, box0 & ~masks.any(0))  # the rest of the box is ignore
    assert not ignore[~(box0 | (np.mgrid[:64, :64][0] < 27))].any()  # nothing outside the boxes is ignore
    # the box background: ignore pixels both cues call background, nearly all of the box around the disc
    assert not (background & ~ignore).any() and (background & disc).sum() <= 0.02 * background.sum()
    assert (background & box0).sum() > 0.5 * (box0 & ~disc).sum()
    # one cue alone: its background is all the ignore of a lone box; the no-ignore ablation labels every box pixel
    _, _, ig, bg = thing_cues(img, boxes[:1], np.array([1]), cue="grabcut")
    assert bg.any() and np.array_equal(bg, ig)
    full, _, ig, bg = thing_cues(img, boxes, np.array([1, 2]), cue="box")
    assert full[0].sum() == 24 * 24 and not ig.any() and not bg.any()
    with pytest.raises(InputError, match="unknown thing cue"):
        thing_cues(img, boxes, np.array([1, 2]), cue="mcg")


def test_same_class_overlaps_are_ignore_and_crowd_boxes_give_no_instance():
    img, disc, _ = _scene()
    boxes = np.array([[8, 18, 32, 42.0], [8, 18, 32, 42.0]])  # two boxes of one class on one object
    masks, _, ignore, background = thing_cues(img, boxes, np.array([1, 1]), cue="box")
    assert not masks.any() and ignore[18:42, 8:32].all() and not background.any()  # an overlap is no background
    masks, _, ignore, _ = thing_cues(img, boxes, np.array([1, 2]), cue="box")  # two classes: no rule applies
    assert masks.all(axis=0)[18:42, 8:32].all()
    masks, labels, ignore, background = thing_cues(img, boxes[:1], np.array([1]), np.array([True]))
    assert len(masks) == 0 and len(labels) == 0 and ignore[disc].mean() > 0.9
    assert not background.any()  # a crowd box's pixels are nobody's background
    # a pixel one box's cues call background and another's call foreground is no background
    two = np.array([[8, 18, 32, 42.0], [8, 18, 36, 42]])
    _, _, _, alone = thing_cues(img, two[:1], np.array([1]))
    masks, _, _, both = thing_cues(img, two, np.array([1, 2]))
    box1 = np.zeros_like(disc)
    box1[18:42, 8:32] = True
    assert not (both & masks.any(0)).any() and not (both & ~alone & box1).any()  # a second box only takes away


def test_stuff_cues_threshold_each_map_at_half_its_maximum_and_the_smaller_region_wins():
    cams = np.zeros((2, 10, 10))
    cams[0, :, :6] = 1.0  # class 7: the left 60%
    cams[0, :, 6:] = 0.4  # below half its maximum
    cams[1, :, 4:8] = 0.9  # class 9: a smaller strip overlapping class 7's region
    out = stuff_cues(cams, [7, 9])
    assert (out[:, :4] == 7).all() and (out[:, 4:8] == 9).all() and (out[:, 8:] == IGNORE).all()
    assert (stuff_cues(np.zeros((0, 4, 4)), []) == IGNORE).all()


def test_the_approximate_panoptic_map_keeps_instances_stuff_and_ignore_apart():
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1:3, 1:3] = True
    ignore = np.zeros((6, 6), dtype=bool)
    ignore[0:4, 0:4] = True
    ignore[1:3, 1:3] = False  # the box minus its instance
    stuff = np.full((6, 6), 5)
    stuff[5] = IGNORE
    ids, segs = approximate_panoptic(masks, np.array([2]), ignore, stuff, {5, 6})
    assert segs == [(1, 2, True), (2, 5, False)]
    assert (ids[1:3, 1:3] == 1).all() and (ids[ignore] == 0).all() and (ids[5] == 0).all()
    assert (ids[4, :] == 2).all()


def test_the_mask_loss_reads_no_ignore_pixel_and_equals_mask_rcnns_without_ignore():
    import torch
    from torchvision.models.detection.roi_heads import maskrcnn_loss

    from cqbnet.modeling.cascade_rcnn import mask_loss_with_ignore

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 14, 14)
    boxes = [torch.tensor([[2.0, 2, 20, 20], [5, 5, 30, 25], [0, 0, 31, 31]])]
    gt = [(torch.rand(2, 32, 32) > 0.5).to(torch.uint8)]
    labels, matched = [torch.tensor([1, 3])], [torch.tensor([0, 1, 1])]
    want = maskrcnn_loss(logits, boxes, gt, labels, matched)
    assert torch.allclose(mask_loss_with_ignore(logits, boxes, gt, [None], labels, matched), want)
    none = torch.zeros(32, 32, dtype=torch.bool)
    assert torch.allclose(mask_loss_with_ignore(logits, boxes, gt, [none], labels, matched), want)
    everything = torch.ones(32, 32, dtype=torch.bool)
    assert mask_loss_with_ignore(logits, boxes, gt, [everything], labels, matched) == 0
    # ignoring the right half: a RoI inside it teaches nothing, whatever its logits
    half = none.clone()
    half[:, 16:] = True
    boxes2 = [torch.tensor([[2.0, 2, 14, 20], [18, 2, 30, 14], [18, 2, 30, 14]])]
    a = mask_loss_with_ignore(logits, boxes2, gt, [half], labels, matched)
    changed = logits.clone()
    changed[1:] += 100.0
    assert torch.isfinite(a) and a > 0
    assert torch.allclose(mask_loss_with_ignore(changed, boxes2, gt, [half], labels, matched), a)
    changed[0] += 100.0
    assert not torch.allclose(mask_loss_with_ignore(changed, boxes2, gt, [half], labels, matched), a)


def test_round_zero_writes_labels_the_dataset_and_the_network_learn_from(tmp_path, synth, capsys):
    """End to end on tiny scenes: boxes + tags images, a network with Cls2Pixel for the CAMs, round 0 written and
    scored by the CLI, then the network trained with the round: the boxes images now teach masks."""
    import json

    import torch
    import yaml

    from cqbnet.cli.main import main
    from cqbnet.data.transforms import to_tensors
    from cqbnet.labels.dataset import MixedLabelDataset
    from cqbnet.modeling.targets import detection_target
    from cqbnet.network.build import build_panoptic_net
    from helpers import TINY, tiny_model_config

    labels = tmp_path / "labels"
    assert main(["labels", "simulate", "--data", str(synth), "--ratio", "P=0.25,B+I=0.75", "--out", str(labels)]) == 0
    cfg = {
        "data": {"root": str(synth), "manifest": str(labels / "manifest.json")},
        "model": tiny_model_config(),
        "solver": {"max_iter": 2, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 1, "steps": [1]},
        "train": {"checkpoint_period": 2, "eval_period": 0, "log_period": 1},
    }
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    argv = ["labels", "approximate", "--manifest", str(labels / "manifest.json"), "--out", str(tmp_path / "r0")]
    argv += ["--checkpoint", str(tmp_path / "run" / "model_final.pth"), "--data", str(synth), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "precision_th" in out and "coverage_st" in out
    saved = json.loads((tmp_path / "r0" / "labels.json").read_text())
    manifest = json.loads((labels / "manifest.json").read_text())
    weak = [i for i in manifest["images"] if "P" not in i["kinds"]]
    assert len(saved["images"]) == len(weak)
    ds = MixedLabelDataset(labels / "manifest.json", pseudo_labels=tmp_path / "r0")
    index = [i for i, lab in enumerate(ds.manifest.images) if "P" not in lab.kinds]
    _, t = ds[index[0]]
    lab = ds.manifest.images[index[0]]
    assert t["pseudo_panoptic"] and "P" in t["kinds"] and t["ignore"].any()
    boxes = [b for b in lab.boxes if not b.iscrowd]
    assert t["is_thing"].sum() == len(boxes)  # every box an instance, even one with no confident pixel
    assert np.allclose(t["boxes"][: len(boxes), 2] - t["boxes"][: len(boxes), 0], [b.bbox[2] for b in boxes])
    assert not (t["masks"].any(0) & t["ignore"]).any()
    items = [to_tensors(*ds[i]) for i in index[:2]]
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **TINY).train()
    losses = model([x[0] for x in items], [x[1] for x in items])
    assert losses["loss_mask"] > 0 and losses["loss_panoptic"] > 0 and torch.isfinite(losses["loss_mask"])
    plain = MixedLabelDataset(labels / "manifest.json")
    items = [to_tensors(*plain[i]) for i in index[:2]]
    assert model([x[0] for x in items], [x[1] for x in items])["loss_mask"] == 0  # boxes alone teach no mask loss
    # a round of refinement: train on round 0, refine with the CRF and the cleaning rules, score
    cfg["data"]["pseudo_labels"] = str(tmp_path / "r0")
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "run1"), "--quiet", "--device", "cpu"]) == 0
    rows = [json.loads(r) for r in (tmp_path / "run1" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_mask"] > 0 for r in rows)
    capsys.readouterr()
    argv = ["labels", "refine", "--manifest", str(labels / "manifest.json"), "--cues", str(tmp_path / "r0")]
    argv += ["--checkpoint", str(tmp_path / "run1" / "model_final.pth"), "--out", str(tmp_path / "r1")]
    assert main([*argv, "--data", str(synth), "--device", "cpu"]) == 0
    assert "labelled_share" in capsys.readouterr().out
    assert len(json.loads((tmp_path / "r1" / "labels.json").read_text())["images"]) == len(weak)
    # the box background: ignore for every class as before, the mask head's negative, kept by a refinement round
    argv = ["labels", "approximate", "--manifest", str(labels / "manifest.json"), "--out", str(tmp_path / "r0b")]
    argv += ["--checkpoint", str(tmp_path / "run" / "model_final.pth"), "--data", str(synth), "--device", "cpu"]
    assert main([*argv, "--box-background"]) == 0
    assert "box_background_share" in capsys.readouterr().out
    marked = MixedLabelDataset(labels / "manifest.json", pseudo_labels=tmp_path / "r0b")
    i = next(i for i in index if marked[i][1]["box_background"].any())
    (_, t), (_, t0) = marked[i], ds[i]
    bg = t["box_background"]
    assert "box_background" not in t0 and "semantic_not" not in t0  # an unmarked round: nothing new to learn
    assert (t["ignore"] == t0["ignore"]).all() and (t["masks"] == t0["masks"]).all()
    assert (t["panoptic"][bg] == 0).all() and (t["semantic"][bg] == ds.ignore_index).all()
    # the semantic head learns that a box-background pixel is not its box's class
    assert (t["semantic_not"][~bg] == ds.ignore_index).all()
    things = t["is_thing"]
    assert np.isin(t["semantic_not"][bg], t["labels"][things]).all()
    for y, x in zip(*np.nonzero(bg)):
        holders = [k for k in np.nonzero(things)[0] if box_holds(t["boxes"][k], y, x)]
        assert t["semantic_not"][y, x] in t["labels"][holders]
    with_bg, without = to_tensors(*marked[i]), to_tensors(*ds[i])
    assert model([with_bg[0]], [with_bg[1]])["loss_semantic"] != model([without[0]], [without[1]])["loss_semantic"]
    det = detection_target(to_tensors(*marked[i])[1], model.labels)
    assert torch.equal(det["ignore"], torch.from_numpy(t["ignore"] & ~bg))
    rows = json.loads((tmp_path / "r0b" / "labels.json").read_text())["images"][str(marked.manifest.images[i].image_id)]
    assert [c for _, c, j in rows["segments"] if j == BACKGROUND] == [-1]  # one segment, no class
    argv = ["labels", "refine", "--manifest", str(labels / "manifest.json"), "--cues", str(tmp_path / "r0b")]
    argv += ["--checkpoint", str(tmp_path / "run1" / "model_final.pth"), "--out", str(tmp_path / "r1b")]
    assert main([*argv, "--device", "cpu"]) == 0
    kept = json.loads((tmp_path / "r1b" / "labels.json").read_text())["images"]
    assert any(j == BACKGROUND for im in kept.values() for _, _, j in im["segments"])


def test_the_dense_crf_cleans_a_noisy_unary_along_the_image_colours():
    from cqbnet.cues.dense_crf import dense_crf

    img, disc, _ = _scene(1)
    rng = np.random.default_rng(2)
    truth = disc.astype(int)
    noisy = np.where(rng.random(truth.shape) < 0.3, 1 - truth, truth)  # 30% of the pixels flipped
    probs = np.stack([np.where(noisy == 0, 0.6, 0.4), np.where(noisy == 1, 0.6, 0.4)]).astype(np.float32)
    q = dense_crf(probs, img).numpy()
    assert q.shape == probs.shape and np.allclose(q.sum(0), 1, atol=1e-4)
    before, after = (probs.argmax(0) == truth).mean(), (q.argmax(0) == truth).mean()
    assert before < 0.75 and after > 0.95


def test_the_cleaning_rules_on_a_hand_made_map():
    from cqbnet.weak.approx_ground_truth import clean_prediction, instances_from_boxes

    things = {1, 2}
    pred = np.full((8, 8), 5)  # stuff 5 everywhere ...
    pred[1:4, 1:4] = 1  # ... a thing of class 1 in its box
    pred[6, 6] = 1  # ... and outside every box of class 1 (box prior: ignore)
    pred[0, 7] = 2  # a thing the cues do not have (ignore)
    score = np.ones((8, 8))
    score[7, 0] = 0.5  # unsure: ignore
    cues = np.full((8, 8), IGNORE)
    cues[2, 2] = 1
    boxes = np.array([[1, 1, 4, 4.0], [4, 4, 8, 8]])  # a box of class 1, and one of class 2 its pixels never show
    out = clean_prediction(pred, score, cues, boxes, np.array([1, 2]), things, tags={1, 2, 5})
    assert out[7, 0] == IGNORE and out[0, 7] == IGNORE and out[6, 6] != 1
    # thing 1: predicted where the cue is ignore -> ignore, except its cue pixel; then low coverage fills its box
    assert (out[1:4, 1:4] == 1).all()
    assert (out[4:8, 4:8] == 2).all()  # class 2's empty box is filled (its stuff and ignore pixels)
    assert out[0, 0] == 5
    # a class the image is not tagged with is ignore
    untagged = clean_prediction(
        np.full((4, 4), 6),
        np.ones((4, 4)),
        np.full((4, 4), IGNORE),
        np.zeros((0, 4)),
        np.zeros(0, dtype=int),
        things,
        tags={5},
    )
    assert (untagged == IGNORE).all()
    masks, classes, ignore = instances_from_boxes(out, boxes, np.array([1, 2]), np.array([False, False]), things)
    assert masks[0].sum() == 9 and masks[1].sum() == 16 and classes.tolist() == [1, 2]
    overlap = np.array([[1, 1, 4, 4.0], [2, 2, 4, 4]])
    masks, _, ignore = instances_from_boxes(out, overlap, np.array([1, 1]), np.array([False, False]), things)
    assert ignore[2:4, 2:4].all() and not masks[:, 2:4, 2:4].any() and masks[0].sum() == 5


def test_the_predicted_fill_rule_fills_only_what_the_network_gives_the_box_class():
    from cqbnet.weak.approx_ground_truth import clean_prediction

    things = {1}
    pred = np.full((6, 6), 5)  # stuff 5 ...
    pred[1:5, 1] = 1  # ... and a thin object of class 1 down the box's left column, predicted unsure
    score = np.full((6, 6), 0.5)
    cues = np.full((6, 6), IGNORE)
    cues[2, 1] = 1  # the cue knows one of its pixels: coverage 1 / 16, under the low-coverage share
    box = np.array([[1, 1, 5, 5.0]])
    released = clean_prediction(pred, score, cues, box, np.array([1]), things, fill="box")
    assert (released[1:5, 1:5] == 1).all()  # the released rule fills the whole box, background included
    predicted = clean_prediction(pred, score, cues, box, np.array([1]), things, fill="predicted")
    assert (predicted[1:5, 1] == 1).all() and (predicted[1:5, 2:5] == IGNORE).all()
    assert (predicted[0] == IGNORE).all()  # outside the box: the unsure stuff is ignore under both rules
    with pytest.raises(InputError, match="fill rule"):
        clean_prediction(pred, score, cues, box, np.array([1]), things, fill="all")


def test_the_command_line_offers_the_fill_rules_and_default_of_the_refinement():
    """``--fill`` of ``labels refine`` and ``boxes-tags`` is written out in the CLI (no torch at start-up): its
    choices and default are those of the refinement itself."""
    from cqbnet.cli.main import build_parser
    from cqbnet.weak.approx_ground_truth import DEFAULT_FILL, FILL_RULES

    parser = build_parser()
    refine = ["labels", "refine", "--manifest", "m", "--cues", "c", "--checkpoint", "k", "--out", "o"]
    recipe = ["boxes-tags", "c.yaml", "--manifest", "m", "--out", "o"]
    for argv in (refine, recipe):
        assert parser.parse_args(argv).fill == DEFAULT_FILL
        for rule in FILL_RULES:
            assert parser.parse_args([*argv, "--fill", rule]).fill == rule
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--fill", "everything"])


@pytest.mark.slow  # its stages are cqbnet fit's, whose end-to-end test runs by default
def test_the_whole_recipe_runs_from_one_command_and_resumes_between_rounds(tmp_path, synth, capsys):
    import json

    import yaml

    from cqbnet.cli.main import main
    from helpers import tiny_model_config

    labels = tmp_path / "labels"
    assert main(["labels", "simulate", "--data", str(synth), "--ratio", "B+I=1", "--out", str(labels)]) == 0
    cfg = {
        "data": {"root": str(synth)},
        "model": tiny_model_config(),
        "solver": {"max_iter": 1, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 1, "steps": [1]},
        "train": {"checkpoint_period": 1, "eval_period": 0, "log_period": 1},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    argv = ["boxes-tags", str(tmp_path / "c.yaml"), "--manifest", str(labels / "manifest.json"), "--out"]
    argv += [str(tmp_path / "bt"), "--rounds", "1", "--data", str(synth), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "round 0:" in out and "round 1:" in out and "coverage th" in out
    for step in ("classifier", "round0", "train0", "round1_fill-predicted", "train1_fill-predicted"):
        assert (tmp_path / "bt" / step).is_dir(), step  # the predicted-pixels fill rule is the default
    # the CAMs come from a classifier of the tags alone (paper 001, Eq. 6): no box reaches it, no other loss
    view = json.loads((tmp_path / "bt" / "classifier" / "tags_only.json").read_text())
    assert {k for im in view["images"] for k in im["kinds"]} == {"I"} and not view["boxes"]
    assert len(view["tags"]) == len(view["images"]) == len(json.loads((labels / "manifest.json").read_text())["images"])
    rows = [json.loads(r) for r in (tmp_path / "bt" / "classifier" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(r["loss_cls2pixel"] > 0 for r in rows)
    assert all(v == 0 for r in rows for k, v in r.items() if k.startswith("loss_") and k != "loss_cls2pixel")
    stamp = (tmp_path / "bt" / "train1_fill-predicted" / "model_final.pth").stat().st_mtime_ns
    assert main(argv) == 0  # a finished recipe is not run again
    assert (tmp_path / "bt" / "train1_fill-predicted" / "model_final.pth").stat().st_mtime_ns == stamp
    # the released code's fill rule refines from the same round 0 and network into folders of its own
    first = (tmp_path / "bt" / "train0" / "model_final.pth").stat().st_mtime_ns
    assert main(argv + ["--fill", "box"]) == 0
    assert (tmp_path / "bt" / "train0" / "model_final.pth").stat().st_mtime_ns == first
    assert (tmp_path / "bt" / "round1" / "labels.json").is_file()
    assert (tmp_path / "bt" / "train1" / "model_final.pth").is_file()
    assert (tmp_path / "bt" / "train1_fill-predicted" / "model_final.pth").stat().st_mtime_ns == stamp
    # marking the box background starts again from a round 0 of its own, and the classifier is reused
    classifier = (tmp_path / "bt" / "classifier" / "model_final.pth").stat().st_mtime_ns
    rounds = argv.index("--rounds") + 1
    assert main([*argv[:rounds], "0", *argv[rounds + 1 :], "--box-background"]) == 0
    assert (tmp_path / "bt" / "classifier" / "model_final.pth").stat().st_mtime_ns == classifier
    assert (tmp_path / "bt" / "round0_box-background" / "score.json").is_file()
    assert (tmp_path / "bt" / "train0_box-background" / "model_final.pth").is_file()


def test_the_classifier_learns_from_the_tags_alone_of_every_image_that_has_them(tmp_path, synth):
    """Paper 001's classifier (Sec. 3.3) sees each image as tags only: boxes dropped, a panoptic image tagged with
    its segments' classes; its config switches off every loss but Cls2Pixel's classification term, and evaluation."""
    from cqbnet.cli.main import main
    from cqbnet.data.panoptic_format import load_panoptic_json
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.recipes.boxes_tags_001 import classifier_config, tags_only

    labels = tmp_path / "labels"
    assert main(["labels", "simulate", "--data", str(synth), "--ratio", "P=0.5,B+I=0.5", "--out", str(labels)]) == 0
    m = load_manifest(labels / "manifest.json")
    view = load_manifest(tags_only(m, tmp_path / "view" / "tags.json"))
    assert len(view.images) == len(m.images) and {im.kinds for im in view.images} == {frozenset({"I"})}
    assert all(im.boxes is None and im.panoptic is None for im in view.images)
    gt = {r.image_id: r for r in load_panoptic_json(synth / "panoptic_train.json").records}
    for before, after in zip(m.images, view.images):
        expected = before.tags if before.tags is not None else {s.category_id for s in gt[before.image_id].segments}
        assert set(after.tags) == set(expected), before.image_id
    cfg = classifier_config({"data": {"pseudo_labels": "r0"}, "model": {"weak": {"relation": True}}}, Path("v.json"))
    weak = cfg["model"]["weak"]
    assert weak["cls2pixel"] and not any(weak[k] for k in ("box2mask", "cls2box", "relation", "points", "jtsm"))
    assert not any(weak[f"cls2pixel_{k}"] for k in ("pseudo", "energy", "tag_consistency"))
    assert cfg["data"] == {"manifest": "v.json", "pseudo_labels": None}
    assert cfg["train"] == {"eval_period": 0, "test_at_end": False}  # a classifier, never scored as panoptic


def test_segments_the_crf_swallows_get_their_pixels_back_and_the_others_keep_its_borders():
    import torch

    from cqbnet.cues.dense_crf import keep_shrunk_segments

    before = torch.zeros(3, 20, 20)
    before[0] = 0.9  # background
    before[1, 2:4, 2:4], before[0, 2:4, 2:4] = 0.9, 0.1  # a 4-pixel segment
    before[2, 10:20, 10:20], before[0, 10:20, 10:20] = 0.9, 0.1  # a 100-pixel segment
    before = before / before.sum(0, keepdim=True)
    after = before.clone()
    after[:, 2:4, 2:4] = before[:, 0:2, 0:2]  # the CRF swallowed the small one
    after[:, 10, 10:20] = before[:, 0, 0:10]  # and moved the large one's border by a row (90 of 100 px left)
    kept = keep_shrunk_segments(before, after, 0.5)
    assert (kept.argmax(0)[2:4, 2:4] == 1).all()  # given back, with its own marginals
    assert torch.equal(kept[:, 2:4, 2:4], before[:, 2:4, 2:4])
    assert torch.equal(kept[:, 10:20, 10:20], after[:, 10:20, 10:20])  # the border move stays
    assert torch.equal(keep_shrunk_segments(before, before.clone(), 0.5), before)  # nothing shrunk: unchanged

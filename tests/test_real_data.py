"""Real COCO images end to end: two sizes in one batch, 133 categories, training, prediction and evaluation."""

from __future__ import annotations

import json

import pytest
import yaml

from cqbnet.cli.main import main
from helpers import tiny_model_config


def test_coco_samples_train_predict_and_evaluate_at_native_sizes(coco_sample, tmp_path, capsys):
    """The two COCO val images (640 x 427 and 640 x 360) as one batch of training data, at their own sizes."""
    sample = {
        "json": str(coco_sample / "panoptic_examples.json"),
        "png": str(coco_sample / "panoptic_examples"),
        "images": str(coco_sample / "input_images"),
    }
    data = {f"{split}_{k}": v for split in ("train", "val") for k, v in sample.items()}
    data["categories"] = str(coco_sample / "panoptic_coco_categories.json")
    data["flip"] = False
    model = tiny_model_config()
    model["anchor_sizes"] = [32, 64, 128, 256, 512]
    model["panoptic"] = {**model["panoptic"], "min_thing_area": 16, "min_stuff_area": 256}
    cfg = {
        "data": data,
        "model": model,
        "solver": {"max_iter": 3, "batch_size": 2, "base_lr": 0.005, "warmup_iters": 1, "steps": [2]},
        "train": {"checkpoint_period": 3, "eval_period": 3, "log_period": 1},
    }
    path = tmp_path / "coco.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log if "loss" in r] == [1, 2, 3]
    pred = tmp_path / "pred"
    ck = str(tmp_path / "run" / "model_final.pth")
    assert (
        main(["predict", "--checkpoint", ck, "--images", sample["images"], "--out", str(pred), "--device", "cpu"]) == 0
    )
    written = json.loads((pred / "panoptic_pred.json").read_text())
    assert len(written["annotations"]) == 2
    capsys.readouterr()
    gt = ["--gt-json", sample["json"], "--gt-dir", sample["png"], "--categories", data["categories"]]
    code = main(
        ["evaluate", *gt, "--checkpoint", ck, "--image-dir", sample["images"], "--out", str(tmp_path / "m.json")]
    )
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["num_images"] == 2 and 0.0 <= metrics["All"]["pq"] <= 1.0


# (name, labels, model.weak, a loss the case must give); the variants of the paper methods run with -m slow
TEACHING_CASES = [
    ("points", "PT=1", {"points": True, "points_warmup": 1}, "loss_points_pce"),
    pytest.param(
        "clicked parts",
        "PT=1",
        {"points": True, "points_warmup": 1, "points_clicked_only": True},
        "loss_mask",
        marks=pytest.mark.slow,
    ),
    pytest.param(  # 55 s (segment proposals of two 640 px images and their mirrors): the full run has it
        "tags",
        "I=1",
        {"jtsm": True, "jtsm_warmup": 1, "cls2box": False, "cls2pixel": False},
        "loss_jtsm",
        marks=pytest.mark.slow,
    ),
    ("boxes and tags", "B+I=1", {}, "loss_mask"),
    pytest.param("boxes, box background", "B+I=1", {}, "loss_mask", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name,ratio,weak,loss", TEACHING_CASES)
def test_coco_samples_teach_through_papers_003_002_and_001_at_native_sizes(
    coco_sample, tmp_path, name, ratio, weak, loss
):
    """Clicks (paper 003), tags alone (paper 002) and boxes with approximate labels (paper 001) on the two real
    COCO images, 133 categories, at their own sizes in one batch: every branch gives a finite, positive loss."""
    import torch

    from cqbnet.data.panoptic_format import load_panoptic_json
    from cqbnet.data.transforms import to_tensors
    from cqbnet.labels.dataset import MixedLabelDataset
    from cqbnet.labels.rounds import write_round
    from cqbnet.labels.simulate import parse_ratio, simulate
    from cqbnet.network.build import build_panoptic_net
    from cqbnet.weak.approx_ground_truth import round_zero

    gt = load_panoptic_json(
        coco_sample / "panoptic_examples.json",
        coco_sample / "panoptic_examples",
        coco_sample / "input_images",
        categories=coco_sample / "panoptic_coco_categories.json",
    )
    model_cfg = tiny_model_config()
    model_cfg["anchor_sizes"] = [32, 64, 128, 256, 512]
    m = simulate(gt, parse_ratio(ratio), tmp_path / name, seed=0, points_per_segment=2)
    approx = None
    if ratio == "B+I=1":
        marked = name == "boxes, box background"
        entries = round_zero(m, box_background=marked)
        approx = write_round(tmp_path / name / "r0", entries, "round 0 without CAMs")
    ds = MixedLabelDataset(m.path, pseudo_labels=approx)
    items = [to_tensors(*ds[i]) for i in range(len(ds))]
    assert {tuple(x[0].shape[1:]) for x in items} == {(427, 640), (360, 640)}
    if approx is not None:
        assert all(("semantic_not" in x[1]) == marked for x in items), name
    torch.manual_seed(0)
    net = build_panoptic_net(ds.categories, **{**model_cfg, "weak": weak}).train()
    net.iteration = 10
    losses = net([x[0] for x in items], [x[1] for x in items])
    assert all(torch.isfinite(v) for v in losses.values()), name
    assert losses[loss] > 0 and losses["loss_semantic"] > 0 and losses["loss_objectness"] > 0, name

"""Label spaces other than the synthetic scenes': things only on an unlabelled background (review A6.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cqbnet.cli.main import main
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.label_space import LabelSpace
from cqbnet.data.transforms import to_tensors
from cqbnet.network.build import build_panoptic_net
from helpers import TINY, restrict_label_space, tiny_model_config


@pytest.fixture(scope="module")
def things_only(synth, tmp_path_factory) -> Path:
    return restrict_label_space(synth, tmp_path_factory.mktemp("things_only"), isthing=True)


def _dataset(root: Path, synth: Path, split: str) -> PanopticDataset:
    return PanopticDataset(root / f"panoptic_{split}.json", root / "panoptic" / split, synth / "images" / split)


def test_a_thing_only_label_space_has_a_background_channel(things_only, synth):
    ds = _dataset(things_only, synth, "train")
    labels = LabelSpace(ds.categories)
    assert labels.background and labels.num_semantic == labels.num_classes + 1
    assert labels.region_semantic == [labels.num_classes] and labels.region_categories() == [None]
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **TINY)
    assert model.relation is not None  # the background is its one stuff node
    b = [to_tensors(*ds[i]) for i in range(2)]
    losses = model.train()([x[0] for x in b], [x[1] for x in b])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.semantic_head.predictor.weight.grad[labels.num_classes].abs().sum() > 0  # background learned
    model.eval()
    with torch.no_grad():
        outs = model([x[0] for x in b])
        assert all(
            s["category_id"] in ds.categories and ds.categories[s["category_id"]].isthing
            for o in outs
            for s in o.segments
        )
        model.panoptic_head.test_score_thresh = 1.01  # no detection at all: the image is void, not an error
        empty = model([x[0] for x in b])
    assert all(o.segments == [] and not o.ids.any() for o in empty)


def test_a_thing_only_data_set_trains_predicts_and_evaluates(things_only, synth, tmp_path, capsys):
    cfg = {
        "data": {"root": str(things_only)},
        "model": tiny_model_config(),
        "solver": {"max_iter": 3, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 1, "steps": [2]},
        "train": {"checkpoint_period": 3, "eval_period": 3, "eval_images": 4, "log_period": 1},
    }
    path = tmp_path / "things.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    pred = tmp_path / "pred"
    argv = ["predict", "--checkpoint", str(tmp_path / "run" / "model_final.pth"), "--data", str(things_only)]
    assert main([*argv, "--split", "val", "--out", str(pred), "--no-overlays", "--device", "cpu"]) == 0
    gt = ["--gt-json", str(things_only / "panoptic_val.json"), "--gt-dir", str(things_only / "panoptic" / "val")]
    files = ["--pred-json", str(pred / "panoptic_pred.json"), "--pred-dir", str(pred / "panoptic_pred")]
    capsys.readouterr()
    assert main(["evaluate", *gt, *files, "--out", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["Stuff"]["n"] == 0 and "pq" in metrics["Things"]

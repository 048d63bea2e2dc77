"""Restructuring without changing the math: the losses of one fixed mixed-label batch are pinned.

``tests/data/fixed_batch_losses.json`` holds the losses that the network gave this batch before the model was
split into heads and weak modules that own their wiring (review 2026-12-01, B1). Regenerate it only when a
change of the math is meant: ``python tests/test_structure.py``.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.synthetic import SceneConfig, generate
from cqbnet.data.transforms import to_tensors
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.network.build import build_panoptic_net

sys.path.insert(0, str(Path(__file__).parent))
from helpers import TINY  # noqa: E402

PINNED = Path(__file__).parent / "data" / "fixed_batch_losses.json"
KIND_SETS = ("P", "I", "B", "S", "PT", "B+I")


def fixed_batch_losses(work: Path, synth: Path) -> dict[str, float]:
    """The losses of a seeded tiny network on one image of each kind set (warm-ups over)."""
    data = work / "data"
    shutil.copytree(synth, data)
    gt = load_panoptic_json(data / "panoptic_train.json", data / "panoptic" / "train", data / "images" / "train")
    m = simulate(gt, parse_ratio("P=0.25,I=0.2,B=0.2,S=0.15,PT=0.1,B+I=0.1"), work / "labels", 1, points_per_segment=2)
    ds = MixedLabelDataset(m.path)
    first = {}
    for i, lab in enumerate(m.images):
        first.setdefault("+".join(sorted(lab.kinds, key=("P", "B", "I", "S", "PT").index)), i)
    items = [to_tensors(*ds[first[k]]) for k in KIND_SETS]
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **TINY).train()
    model.iteration = 10**6
    torch.manual_seed(1)
    losses = model([x[0] for x in items], [x[1] for x in items])
    return {k: float(v.detach()) for k, v in sorted(losses.items())}


def test_losses_of_a_fixed_batch_are_unchanged(tmp_path, synth):
    got = fixed_batch_losses(tmp_path, synth)
    want = json.loads(PINNED.read_text())
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), k


if __name__ == "__main__":  # regenerate the pinned numbers
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "synth", 40, 12, seed=3, cfg=SceneConfig(size=64, min_size=6, max_size=30), num_test=4)
        (tmp / "work").mkdir()
        PINNED.write_text(json.dumps(fixed_batch_losses(tmp / "work", tmp / "synth"), indent=2) + "\n")
        print(f"wrote {PINNED}")

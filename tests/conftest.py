"""Shared fixtures: the real COCO samples in ../shared/data and small synthetic scenes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cqbnet.data.synthetic import SceneConfig, generate

ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    for cand in (os.environ.get("CQBNET_SHARED"), ROOT.parent / "shared", ROOT.parent.parent / "shared"):
        if cand and (Path(cand) / "data" / "coco_panoptic_sample").is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    d = shared_dir()
    if d is None:
        pytest.skip("../shared/data/coco_panoptic_sample not found (set CQBNET_SHARED)")
    return d / "data" / "coco_panoptic_sample"


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    """A small synthetic dataset (40 train / 12 val / 6 test, 64 px)."""
    out = tmp_path_factory.mktemp("synth") / "data"
    generate(out, 40, 12, seed=3, cfg=SceneConfig(size=64, min_size=6, max_size=30), num_test=6)
    return out

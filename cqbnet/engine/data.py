"""Training data as a deterministic stream: which sample and which augmentation depend only on the seed and position.

The stream concatenates one seeded permutation of the dataset per epoch. In
iteration i, rank r of W processes takes positions (i W + r) B ... (i W + r + 1) B - 1
for batch size B per process, and each sample's random flip/resize is drawn from
a generator seeded by (seed, position). A run resumed at iteration i therefore
sees exactly the batches an uninterrupted run would have seen, for any number of
loader workers.

What a run trains from is made before it (:func:`prepare_data`): generated scenes and a simulated label mix, once.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import add_test_split, generate, scene_config, split_paths
from cqbnet.data.transforms import to_tensors, train_augment
from cqbnet.engine.config import check_data
from cqbnet.errors import InputError


def dataset_paths(data: dict[str, Any], split: str, out_dir: Path) -> tuple[Path, Path | None, Path | None]:
    """(json, png dir, image dir) of ``split`` from the ``data`` config section."""
    root = data.get("root")
    if root is None and data.get("synthetic") is not None and data.get(f"{split}_json") is None:
        root = out_dir / "data"
    if root is not None:
        return split_paths(root, split)
    j = data.get(f"{split}_json")
    if j is None:
        raise InputError(f"config: data.root or data.{split}_json is needed (or data.synthetic to generate scenes)")
    png, img = data.get(f"{split}_png"), data.get(f"{split}_images")
    return Path(j), None if png is None else Path(png), None if img is None else Path(img)


SCENE_KEYS = ("size", "min_instances", "max_instances", "min_size", "max_size")  # data.synthetic's scene settings


def ensure_synthetic(data: dict[str, Any], out_dir: Path) -> None:
    """Generate the synthetic scenes into ``out_dir/data`` if the config asks for them and they are not there."""
    syn = data.get("synthetic")
    if syn is None or data.get("root") is not None:
        return
    check_data({"synthetic": syn})  # the rules load_config applies, for a config built in code
    target = out_dir / "data"
    preset = str(syn.get("preset", "realistic"))
    existing = target / "panoptic_val.json"
    if existing.is_file():
        val = json.loads(existing.read_text())
        info = val.get("info", {}).get("config", {})
        have = info.get("preset", "camouflage")  # scenes written before presets existed are camouflage scenes
        if have != preset:
            raise InputError(
                f"{target}: holds {have} scenes but the config asks for data.synthetic.preset={preset}; "
                "use another output folder or delete that one"
            )
        # the scenes were made from these settings: others would need other scenes, never these reused silently
        made = {
            "seed": val.get("info", {}).get("seed"),
            "num_val": len(val.get("images", [])),
            "num_train": len(json.loads((target / "panoptic_train.json").read_text()).get("images", [])),
            **{k: info.get(k) for k in SCENE_KEYS},
        }
        for key, was in made.items():
            if key in syn and was is not None and syn[key] != was:
                raise InputError(
                    f"{target}: holds scenes made with data.synthetic.{key}={was}, the config asks for {syn[key]}; "
                    "use another output folder or delete that one"
                )
        num_test = int(syn.get("num_test", 300))
        if num_test > 0 and not (target / "panoptic_test.json").is_file():  # written before test splits existed
            add_test_split(target, num_test)
        return
    generate(
        target,
        int(syn.get("num_train", 2000)),
        int(syn.get("num_val", 300)),
        int(syn.get("seed", 0)),
        scene_config(
            preset, **{k: syn.get(k) for k in ("size", "min_instances", "max_instances", "min_size", "max_size")}
        ),
        num_test=int(syn.get("num_test", 300)),
    )


def simulate_labels(dcfg: dict[str, Any], out: Path) -> Path:
    """``data.labels``: the config's label mix simulated once from the train split into ``out/labels`` (kept on
    resume); the manifest's path."""
    from cqbnet.data.panoptic_format import load_panoptic_json
    from cqbnet.labels.simulate import parse_ratio, simulate

    check_data({"labels": dcfg["labels"]})  # the rules load_config applies, for a config built in code
    spec = dict(dcfg["labels"])
    target = out / "labels" / "manifest.json"
    if not target.is_file():
        gt = load_panoptic_json(*dataset_paths(dcfg, "train", out))
        simulate(
            gt,
            parse_ratio(str(spec["ratio"])),
            out / "labels",
            seed=int(spec.get("seed", 0)),
            points_per_segment=int(spec.get("points_per_segment", 1)),
            point_sampling=str(spec.get("point_sampling", "uniform")),
        )
    return target


def prepare_data(dcfg: dict[str, Any], out: Path, write: bool = True) -> dict[str, Any]:
    """The data section ready to train from: the generated scenes (``data.synthetic``) in ``out/data`` and the
    label mix (``data.labels``) simulated into ``out/labels``, each made once (kept on resume; made only where
    ``write``, the main process of a distributed run); the section with ``manifest`` naming the simulated labels."""
    if write:
        ensure_synthetic(dcfg, out)
        if dcfg.get("labels") and not dcfg.get("manifest"):
            simulate_labels(dcfg, out)
    if dcfg.get("labels") and not dcfg.get("manifest"):
        dcfg = {**dcfg, "manifest": str(out / "labels" / "manifest.json")}
    return dcfg


def shared_data_config(cfg: dict[str, Any], root: Path) -> dict[str, Any]:
    """The config every run trains from: the synthetic scenes (if asked for) generated once into ROOT/data."""
    cfg = copy.deepcopy(cfg)
    ensure_synthetic(cfg["data"], root)
    if cfg["data"].get("synthetic") is not None and cfg["data"].get("root") is None:
        cfg["data"]["root"] = str((root / "data").absolute())
        cfg["data"]["synthetic"] = None
    return cfg


def load_split(data: dict[str, Any], split: str, out_dir: Path) -> PanopticDataset:
    j, png, img = dataset_paths(data, split, out_dir)
    return PanopticDataset(j, png, img, categories=data.get("categories"))


class StreamDataset(Dataset):
    """Item ``position`` of the seeded stream, augmented as that position dictates."""

    def __init__(
        self,
        dataset: PanopticDataset,
        seed: int,
        flip: bool = True,
        short_sizes: tuple[int, ...] | None = None,
        max_size: int | None = None,
    ):
        self.dataset = dataset
        self.seed = seed
        self.flip = flip
        self.short_sizes = tuple(short_sizes) if short_sizes else None
        self.max_size = max_size
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def index(self, position: int) -> int:
        n = len(self.dataset)
        epoch = position // n
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._epoch = epoch
        return int(self._perm[position % n])

    def __getitem__(self, position: int):
        image, target = to_tensors(*self.dataset[self.index(position)])
        rng = np.random.default_rng([self.seed, 1, position])
        return train_augment(image, target, rng, self.flip, self.short_sizes, self.max_size)

    def __len__(self) -> int:  # the stream is unbounded; the sampler decides what is read
        return 2**62


def batch_positions(iteration: int, batch_size: int, world: int = 1, rank: int = 0) -> list[int]:
    start = (iteration * world + rank) * batch_size
    return list(range(start, start + batch_size))


class _Batches:
    def __init__(self, start: int, stop: int, batch_size: int, world: int, rank: int):
        self.args = (start, stop, batch_size, world, rank)

    def __iter__(self) -> Iterator[list[int]]:
        start, stop, b, w, r = self.args
        for it in range(start, stop):
            yield batch_positions(it, b, w, r)

    def __len__(self) -> int:
        return self.args[1] - self.args[0]


def _collate(items):
    return [i[0] for i in items], [i[1] for i in items]


def make_loader(
    stream: StreamDataset,
    start_iter: int,
    max_iter: int,
    batch_size: int,
    world: int = 1,
    rank: int = 0,
    workers: int = 0,
) -> DataLoader:
    """Batches of iterations ``start_iter .. max_iter - 1`` for this rank, in order."""
    return DataLoader(
        stream,
        batch_sampler=_Batches(start_iter, max_iter, batch_size, world, rank),
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
    )


def move_to(images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device):
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets
    ]
    return images, targets

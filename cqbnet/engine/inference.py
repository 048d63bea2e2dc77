"""Running a trained network: predictions in COCO panoptic format, overlays, and PQ in memory."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cqbnet.data.dataset import PanopticDataset, read_rgb
from cqbnet.data.panoptic_format import (
    Category,
    PanopticRecord,
    SegmentInfo,
    bbox_of,
    panoptic_json,
    write_panoptic_png,
)
from cqbnet.data.transforms import test_resize
from cqbnet.errors import InputError
from cqbnet.evaluation.panoptic_quality import PanopticQuality, PQResult
from cqbnet.io import atomic_directory, write_image, write_json
from cqbnet.modeling.panoptic_head import PanopticOutput
from cqbnet.network.panoptic_net import PanopticNet
from cqbnet.visualization.draw import draw_panoptic


@torch.no_grad()
def predict_images(
    model: PanopticNet,
    images: Iterable[np.ndarray],
    device: torch.device,
    mode: str = "argmax",
    short_size: int | None = None,
    max_size: int | None = None,
    batch_size: int = 4,
) -> Iterator[PanopticOutput]:
    """Panoptic outputs at each image's own resolution (predictions made at the test size are resized back)."""
    was_training = model.training
    model.eval()
    pending: list[tuple[torch.Tensor, tuple[int, int]]] = []

    def flush() -> Iterator[PanopticOutput]:
        outs = model([p[0] for p in pending], mode=mode)
        for (_, size), out in zip(pending, outs):
            if out.ids.shape != size:
                ids = torch.from_numpy(out.ids)[None, None].float()
                out.ids = F.interpolate(ids, size=size, mode="nearest")[0, 0].numpy().astype(np.int32)
                for s in out.segments:
                    s["area"] = int((out.ids == s["id"]).sum())
                out.segments = [s for s in out.segments if s["area"] > 0]
            yield out
        pending.clear()

    try:
        for img in images:
            t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255.0)
            resized = test_resize(t, short_size, max_size)
            pending.append((resized.to(device), tuple(img.shape[:2])))
            if len(pending) == batch_size:
                yield from flush()
        if pending:
            yield from flush()
    finally:
        model.train(was_training)


def evaluate_model(
    model: PanopticNet,
    dataset: PanopticDataset,
    device: torch.device,
    mode: str = "argmax",
    limit: int | None = None,
    short_size: int | None = None,
    max_size: int | None = None,
    keep_images: bool = False,
) -> PQResult:
    """PQ of the model on (the first ``limit`` images of) a dataset, with the project's evaluator
    (``keep_images``: the result also holds each image's per-class counts, for a bootstrap over images)."""
    check_categories(model.labels.categories, dataset.categories, dataset.set.json_path)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    pq = PanopticQuality(dataset.categories, keep_images=keep_images)
    images = (dataset.load_image(i) for i in range(n))
    for i, out in enumerate(predict_images(model, images, device, mode, short_size, max_size)):
        rec = dataset.set.records[i]
        gt = dataset.set.read_ids(rec, validate=False)
        pq.update(gt, rec.segments, out.ids, out.segments, image_id=rec.image_id)
    return pq.compute()


def check_categories(model_cats: dict[int, Category], data_cats: dict[int, Category], source: Any) -> None:
    """The model's categories must be the data's (same ids, names and thing/stuff split)."""
    for cid, c in model_cats.items():
        d = data_cats.get(cid)
        if d is None or d.name != c.name or d.isthing != c.isthing:
            found = "absent" if d is None else f"{d.name!r} ({'thing' if d.isthing else 'stuff'})"
            raise InputError(
                f"{source}: the model was trained on category {cid} {c.name!r} "
                f"({'thing' if c.isthing else 'stuff'}), the data has {found}: not the same label set"
            )


def to_segment_infos(out: PanopticOutput) -> list[SegmentInfo]:
    return [
        SegmentInfo(
            s["id"], s["category_id"], bool(s.get("iscrowd", False)), s["area"], bbox_of(out.ids == s["id"]), s["score"]
        )
        for s in out.segments
    ]


def write_predictions(
    out_dir: str | os.PathLike,
    items: Iterable[tuple[dict[str, Any], np.ndarray, PanopticOutput]],
    categories: dict[int, Category],
    overlays: bool = True,
    inputs=(),
    overwrite: bool = False,
) -> Path:
    """Write ``panoptic_pred.json``, ``panoptic_pred/*.png`` and ``overlays/*.png`` from (info, image, output) items.

    The folder appears complete or not at all.
    """
    out_dir = Path(out_dir)
    with atomic_directory(out_dir, inputs, overwrite) as tmp:
        records, infos, names = [], [], set()
        for info, image, out in items:
            name = f"{Path(info['file_name']).stem}.png"
            if name in names:  # a.jpg and a.png: the second keeps its whole name, a.png.png
                name = f"{Path(info['file_name']).name}.png"
            if name in names:
                raise InputError(f"{info['file_name']}: two images would share the prediction file {name}")
            names.add(name)
            write_panoptic_png(tmp / "panoptic_pred" / name, out.ids)
            segs = to_segment_infos(out)
            records.append(PanopticRecord(info["id"], name, segs))
            infos.append(info)
            if overlays:
                write_image(tmp / "overlays" / name, draw_panoptic(image, out.ids, segs, categories))
        write_json(tmp / "panoptic_pred.json", panoptic_json(categories, infos, records), indent=None)
    return out_dir / "panoptic_pred.json"


def image_items(paths: list[Path]) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """(COCO image info, RGB array) for loose image files; ids are 1, 2, ... in the given order."""
    for i, p in enumerate(paths, start=1):
        img = read_rgb(p)
        yield {"id": i, "file_name": p.name, "height": img.shape[0], "width": img.shape[1]}, img

"""Why paper 002's mining finds no thing on the synthetic scenes: three measurements, each ruling a cause in or out.

1. ``proposals``: can the segment proposals hold the answer at all? Per (image, class present) pair of the first
   ``--images`` training scenes, whether some proposal has mask IoU >= 0.5 with a true segment of the class (the
   CorLoc an oracle picking among the proposals reaches) and the share of proposals that do (a random pick's CorLoc).
2. ``run``: what a trained run's mining picks. The image-level scores' separation of tagged from untagged classes
   (AUC), and for the top segment of each tagged class, under S^MIL and under the averaged refinement heads:
   CorLoc, IoU, containment (share of the true segment it covers), purity (share of it on the true segment), the
   median of its area over the true segment's, and what lies under it (the class, another thing, stuff).
3. ``heads``: can the mining heads learn the tags at all? Fresh heads fitted by SGD for 300 steps (batch 8) on the
   frozen pooled features of a run's first 96 training images, at each ``--lrs``; L_MIL on 16 held-out images.
4. ``frozen``: does the mining find the objects when the features are fixed? Fresh heads (WSDDN and the
   refinement heads) fitted on the frozen features of any trained network (``--ckpts``) for the first ``--images``
   images of a tags manifest, for each pooling variant (``--variants`` source+level:moi|roi, the source ``fpn`` or
   ``body`` (the backbone before the FPN), level "0" at stride 4 or "1" at stride 8); the CorLoc of S^MIL's and
   each refinement head's picks on those same images (the mining's task), and an oracle's.
5. ``grabcut``: does the GrabCut re-estimation (Sec. 3.4) improve the mined masks? For a trained run's top segment
   of each tagged class (averaged refinement heads) on the first ``--images`` training images, the IoU with the
   best true segment of the class before and after GrabCut, the CorLoc of both, and the area after over before,
   for things and for stuff.

Usage::

    python -m benchmarks.jtsm_diagnostics proposals --images 60
    python -m benchmarks.jtsm_diagnostics run --run runs/diag_mine --images 150
    python -m benchmarks.jtsm_diagnostics heads --run runs/diag_mine --lrs 0.01 0.001
    python -m benchmarks.jtsm_diagnostics grabcut --run runs/tags_only/tags_1fdf3a4f/runs/<run> --images 150
    python -m benchmarks.jtsm_diagnostics frozen --ckpts A/model_final.pth --manifest M --gt G --images 200 \\
        --steps 1000 --variants fpn1:moi body1:moi

Each prints a JSON line; ``benchmarks/jtsm_diagnostics.md`` keeps what was measured.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torchvision.ops import roi_pool

from cqbnet.cues.segment_proposals import segment_proposals
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.synthetic import SceneConfig, make_scene, scene_rng, synthetic_categories
from cqbnet.data.transforms import to_image_bytes, to_tensors
from cqbnet.engine.data import dataset_paths
from cqbnet.engine.trainer import load_model
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.weak.jtsm import (
    POOL,
    MiningHeads,
    MiningOutput,
    Segments,
    mining_loss,
    moi_pool,
    pool_rois,
    proposal_cache,
)


def best_iou_by_class(masks: np.ndarray, ids: np.ndarray, segments) -> dict[int, np.ndarray]:
    """Per category id among ``segments`` (each with ``id`` and ``category_id`` in the panoptic id map ``ids``),
    each proposal's best mask IoU (R,) with a segment of that category; masks (R, H, W)."""
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    size = flat.sum(1)
    out: dict[int, np.ndarray] = {}
    for seg in segments:
        m = (ids == seg.id).reshape(-1).astype(np.float32)
        inter = flat @ m
        out[seg.category_id] = np.maximum(out.get(seg.category_id, 0), inter / (size + m.sum() - inter))
    return out


def proposals(images: int) -> dict:
    cats = synthetic_categories()
    cfg = SceneConfig(size=128, preset="realistic")
    rows, counts = [], []
    for i in range(images):
        scene = make_scene(scene_rng(0, "train", i), cfg)
        p = segment_proposals(scene.image)
        counts.append(len(p.members))
        segments = [seg for seg in scene.segments if not seg.iscrowd]
        for c, best in best_iou_by_class(p.members[:, p.superpixels], scene.ids, segments).items():
            rows.append((cats[c].isthing, (best >= 0.5).any(), (best >= 0.5).mean()))
    a = np.array(rows, dtype=float)
    out = {"images": images, "proposals_per_image": float(np.mean(counts))}
    for name, sel in (("th", a[:, 0] == 1), ("st", a[:, 0] == 0)):
        out[f"oracle_corloc_{name}"] = 100 * a[sel, 1].mean()
        out[f"chance_corloc_{name}"] = 100 * a[sel, 2].mean()
    return out


ROOT = Path(__file__).resolve().parents[1]


def _load(run: Path):
    ckpt = run / "model_final.pth"
    model, _ = load_model(ckpt, torch.device("cpu"))
    model.jtsm.cache = run / "proposals"
    ds = MixedLabelDataset(run / "labels" / "manifest.json")
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    json_path, png_dir, _ = dataset_paths(cfg["data"], "train", run)  # the run's own scenes, wherever they are
    return model, ds, load_panoptic_json(json_path, png_dir)


@torch.no_grad()
def run_picks(run: Path, images: int) -> dict:
    model, ds, gt = _load(run)
    model.eval()
    branch, records, cats = model.jtsm, {r.image_id: r for r in gt.records}, list(ds.categories)
    stats: dict[bool, list] = {True: [], False: []}
    under: Counter = Counter()
    present, absent = [], []
    streams: dict[str, list[float]] = {
        k: []
        for k in (
            "cls_on_object",
            "cls_on_stuff_tagged",
            "cls_on_stuff_untagged",
            "det_on_object",
            "det_on_stuff",
            "share_object",
            "share_stuff",
        )
    }
    for index, lab in enumerate(ds.manifest.images[:images]):
        image, t = to_tensors(*ds[index])
        batch = model.training_batch([image], [t])
        segments = branch.proposals(t, image)
        out, masks = branch.image_outputs(batch, 0, segments), segments.masks()
        y, tags = out.mil.sum(0), t["tags"] > 0
        present += y[tags].tolist()
        absent += y[~tags].tolist()
        rec = records[lab.image_id]
        ids = gt.read_ids(rec, validate=False)
        category_of = {s.id: s.category_id for s in rec.segments}
        m = masks.numpy().astype(bool)
        cls, det = torch.softmax(out.classify, 1), torch.softmax(out.detect, 0)  # (R, K) each
        flat = m.reshape(len(m), -1)
        size = np.maximum(flat.sum(1), 1)
        stuff_px = np.isin(ids, [s.id for s in rec.segments if not ds.categories[s.category_id].isthing])
        on_stuff = torch.from_numpy((flat & stuff_px.reshape(-1)).sum(1) / size > 0.95)
        for c in range(len(cats)):
            if not ds.categories[cats[c]].isthing:
                continue
            if not tags[c]:
                if on_stuff.any():
                    streams["cls_on_stuff_untagged"].append(float(cls[on_stuff, c].mean()))
                continue
            obj = np.isin(ids, [s.id for s in rec.segments if s.category_id == cats[c]]).reshape(-1)
            inside = torch.from_numpy((flat & obj).sum(1) / size > 0.95)
            if inside.any() and on_stuff.any():
                streams["cls_on_object"].append(float(cls[inside, c].mean()))
                streams["cls_on_stuff_tagged"].append(float(cls[on_stuff, c].mean()))
                streams["det_on_object"].append(float(det[inside, c].sum()))
                streams["det_on_stuff"].append(float(det[on_stuff, c].sum()))
                streams["share_object"].append(float(inside.float().mean()))
                streams["share_stuff"].append(float(on_stuff.float().mean()))
        for c in torch.nonzero(tags).squeeze(1).tolist():
            thing = ds.categories[cats[c]].isthing
            truths = [ids == s.id for s in rec.segments if s.category_id == cats[c]]
            row = []
            for scores in (out.mil, out.scores()):
                top = m[int(scores[:, c].argmax())]
                best = max(truths, key=lambda g: (top & g).sum() / max((top | g).sum(), 1))
                inter = (top & best).sum()
                row += [inter / max((top | best).sum(), 1), inter / best.sum(), inter / max(top.sum(), 1)]
                row.append(top.sum() / best.sum())
            if thing:
                kinds = Counter()
                for v in ids[top].tolist():  # the refined pick's pixels
                    cc = category_of.get(v)
                    kinds[
                        "void"
                        if cc is None
                        else "class"
                        if cc == cats[c]
                        else "thing"
                        if ds.categories[cc].isthing
                        else "stuff"
                    ] += 1
                under[kinds.most_common(1)[0][0] if kinds else "void"] += 1
            stats[thing].append(row)
    p, a = np.array(present), np.array(absent)
    res: dict = {"run": str(run), "images": images, "tag_auc": float((p[:, None] > a[None]).mean())}
    for thing, name in ((True, "th"), (False, "st")):
        s = np.array(stats[thing])
        for k, head in enumerate(("mil", "refined")):
            v = s[:, 4 * k : 4 * k + 4]
            res[f"{head}_{name}"] = {
                "corloc": 100 * float((v[:, 0] >= 0.5).mean()),
                "iou": float(v[:, 0].mean()),
                "containment": float(v[:, 1].mean()),
                "purity": float(v[:, 2].mean()),
                "area_ratio_median": float(np.median(v[:, 3])),
            }
    res["refined_th_under_top"] = dict(under)
    # things: mean class probability of segments inside an object of the class / on stuff, and the detection
    # stream's mass there against the share of segments there
    res["things_streams"] = {k: float(np.mean(v)) for k, v in streams.items()}
    return res


@torch.no_grad()
def grabcut_effect(run: Path, images: int) -> dict:
    from cqbnet.cues.grabcut import grabcut_from_segment

    model, ds, gt = _load(run)
    model.eval()
    branch, records, cats = model.jtsm, {r.image_id: r for r in gt.records}, list(ds.categories)
    rows: dict[str, list[tuple[float, float, float]]] = {"things": [], "stuff": []}
    for index, lab in enumerate(ds.manifest.images[:images]):
        image, t = to_tensors(*ds[index])
        segments = branch.proposals(t, image)
        scores = branch.image_outputs(model.training_batch([image], [t]), 0, segments)
        scores = scores.scores()
        img = to_image_bytes(image)
        rec = records[lab.image_id]
        ids = gt.read_ids(rec, validate=False)
        for c in torch.nonzero(t["tags"] > 0).squeeze(1).tolist():
            r = int(scores[:, c].argmax())
            before = segments.mask(r).numpy()
            after = grabcut_from_segment(img, before, segments.boxes[r].numpy())
            both = np.stack([before, after])
            iou = best_iou_by_class(both, ids, [s for s in rec.segments if s.category_id == cats[c]]).get(cats[c])
            iou = np.zeros(2) if iou is None else iou
            kind = "things" if ds.categories[cats[c]].isthing else "stuff"
            rows[kind].append((float(iou[0]), float(iou[1]), after.sum() / max(before.sum(), 1)))
    out: dict = {"run": str(run), "images": images}
    for kind, v in rows.items():
        a = np.array(v).reshape(-1, 3)
        out[kind] = {
            "pairs": len(a),
            "iou_before": round(100 * float(a[:, 0].mean()), 1),
            "iou_after": round(100 * float(a[:, 1].mean()), 1),
            "corloc_before": round(100 * float((a[:, 0] >= 0.5).mean()), 1),
            "corloc_after": round(100 * float((a[:, 1] >= 0.5).mean()), 1),
            "median_area_after_over_before": round(float(np.median(a[:, 2])), 2),
        }
    return out


def heads_fit(run: Path, lrs: list[float], steps: int = 300) -> dict:
    model, ds, _ = _load(run)
    model.eval()
    branch, data, got = model.jtsm, [], {}
    hook = branch.heads.fc.register_forward_hook(lambda m, i, o: got.__setitem__("x", i[0]))
    with torch.no_grad():
        for index in range(96):
            image, t = to_tensors(*ds[index])
            segments = branch.proposals(t, image)
            branch.image_outputs(model.training_batch([image], [t]), 0, segments)
            data.append((got["x"], t["tags"], segments.iou()))
    hook.remove()
    channels, classes = data[0][0].shape[1], len(ds.categories)
    out: dict = {"run": str(run), "steps": steps}
    for lr in lrs:
        torch.manual_seed(0)
        heads = MiningHeads(channels, classes, branch.heads.classify.in_features, 0)
        opt = torch.optim.SGD(heads.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
        curve = {}
        for step in range(steps + 1):
            if step % 50 == 0:
                heads.eval()
                with torch.no_grad():
                    curve[step] = float(np.mean([mining_loss(heads(x), t, i).item() for x, t, i in data[-16:]]))
                heads.train()
            if step == steps:
                break
            opt.zero_grad()
            for k in np.random.default_rng(step).choice(len(data) - 16, 8, replace=False):
                x, t, i = data[k]
                o = heads(x)
                (mining_loss(MiningOutput(o.classify, o.detect, []), t, i) / 8).backward()
            opt.step()
        out[f"lr={lr:g}"] = curve
    return out


def _pooled(model, image: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, variant: str) -> torch.Tensor:
    """(R, C, 7, 7) pooled features of one image's segments for a variant ``source+level:pooling``, e.g.
    ``body1:moi`` (the backbone body's stride-8 level, MoIPool) or ``fpn0:roi`` (the FPN's stride-4 level, RoIPool)."""
    where, how = variant.split(":")
    source, level = where[:-1], where[-1]
    stride = 4 * 2 ** int(level)
    _, fpn, _, _, body = model.features([image])
    f = (body if source == "body" else fpn)[level]
    f = f[:, :, : -(-image.shape[1] // stride), : -(-image.shape[2] // stride)]
    if how == "moi":
        return moi_pool(f, masks, boxes, stride)
    return roi_pool(f, pool_rois(boxes, torch.zeros(len(boxes))), POOL, 1.0 / stride)


def frozen_fit(
    ckpts: list[Path], manifest: Path, gt_json: Path, images: int, variants: list[str], steps: int, lr: float
) -> dict:
    ds = MixedLabelDataset(manifest)
    gt = load_panoptic_json(gt_json, gt_json.parent / "panoptic" / gt_json.stem.replace("panoptic_", ""))
    records, cats = {r.image_id: r for r in gt.records}, list(ds.categories)
    cache = ROOT / "runs" / "jtsm_probe" / "proposals"
    base = []  # per image: the image, its tags, the segments' mask IoUs, masks and boxes, per class their best IoU
    for index in range(images):
        image, t = to_tensors(*ds[index])
        p = proposal_cache(to_image_bytes(image), cache / f"{t['image_id']}.npz")
        segments = Segments(*(torch.from_numpy(p[k]) for k in ("superpixels", "members", "boxes")))
        masks = segments.masks()
        rec = records[ds.manifest.images[index].image_id]
        by_id = best_iou_by_class(masks.numpy(), gt.read_ids(rec, validate=False), rec.segments)
        truth = {cats.index(c): best for c, best in by_id.items()}  # keyed by tag index
        base.append((image, t["tags"], segments.iou(), masks, segments.boxes, truth))
    thing = [ds.categories[c].isthing for c in cats]
    out: dict = {"images": images, "steps": steps, "lr": lr}
    for ckpt in ckpts:
        model, _ = load_model(ckpt, torch.device("cpu"))
        for variant in variants:
            with torch.no_grad():
                data = [_pooled(model, b[0], b[3], b[4], variant) for b in base]
            torch.manual_seed(0)
            heads = MiningHeads(data[0].shape[1], len(cats), 256, 4)
            opt = torch.optim.SGD(heads.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
            rng = np.random.default_rng(0)
            for _ in range(steps):
                opt.zero_grad()
                for k in rng.choice(len(data), 8, replace=False):
                    (mining_loss(heads(data[k]), base[k][1], base[k][2]) / 8).backward()
                torch.nn.utils.clip_grad_norm_(heads.parameters(), 10.0)
                opt.step()
            heads.eval()
            hits: dict[str, list[float]] = {}
            with torch.no_grad():
                for x, (_, tags, _, _, _, truth) in zip(data, base):
                    o = heads(x)
                    for c in torch.nonzero(tags > 0).squeeze(1).tolist():
                        kind = "th" if thing[c] else "st"
                        picks = [("mil", o.mil)] + [
                            (f"head{i + 1}", F.softmax(r, 1)[:, :-1]) for i, r in enumerate(o.refined)
                        ]
                        for name, scores in [*picks, ("refined", o.scores())]:
                            hits.setdefault(f"{name}_{kind}", []).append(truth[c][int(scores[:, c].argmax())] >= 0.5)
                        hits.setdefault(f"oracle_{kind}", []).append(truth[c].max() >= 0.5)
            key = f"{ckpt.parent.name}/{variant}"
            out[key] = {k: round(100 * float(np.mean(v)), 1) for k, v in sorted(hits.items())}
            print(json.dumps({key: out[key]}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["proposals", "run", "heads", "frozen", "grabcut"])
    ap.add_argument("--ckpts", nargs="+", type=Path)
    ap.add_argument("--manifest", type=Path)
    ap.add_argument("--gt", type=Path)
    ap.add_argument("--variants", nargs="+", default=["fpn1:moi", "body1:moi", "fpn0:moi", "fpn1:roi"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--run", type=Path)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.001])
    args = ap.parse_args()
    if args.what == "proposals":
        res = proposals(args.images)
    elif args.what == "run":
        res = run_picks(args.run, args.images)
    elif args.what == "grabcut":
        res = grabcut_effect(args.run, args.images)
    elif args.what == "heads":
        res = heads_fit(args.run, args.lrs)
    else:
        res = frozen_fit(args.ckpts, args.manifest, args.gt, args.images, args.variants, args.steps, args.lr)
    print(json.dumps(res))


if __name__ == "__main__":
    main()

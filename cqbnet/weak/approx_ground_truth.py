"""Paper 001 (Li, Arnab and Torr, ECCV 2018): approximate panoptic ground truth from boxes and image tags.

Only pixels one is confident about get a label; the rest is *ignore* (void in the COCO panoptic PNG, 255 in the
semantic map), and no loss reads it (Eq. 1).

* Things from boxes (Sec. 3.2, after Khoreva et al.'s "Simple Does It"): per box, GrabCut initialised by the
  rectangle (:func:`grabcut_foreground`) and the segment proposal that best fits the box (:func:`best_proposal`);
  a pixel takes the box's class only where both agree, the rest of the box is ignore, each box is one instance,
  and where two same-class instances overlap the overlap is ignore (:func:`thing_cues`).
* Box background (cqbnet's addition, off by default): the pixels of a box that every cue calls background are no
  box's instance. They stay ignore for every class (the paper's rule), but the mask head, which predicts one box's
  instance, learns them as that box's background, and the semantic head that they are not the box's class
  (``box_background`` in :func:`round_zero`; :meth:`ApproximateRound.target`).
* Segment proposals: MCG has no Python port; :func:`~cqbnet.cues.segment_proposals.segment_proposals` groups
  Felzenszwalb superpixels hierarchically as selective search does, every region kept as its set of superpixels.
* Refinement (Sec. 3.4): the network's own predictions through a dense CRF (:mod:`cqbnet.cues.dense_crf`), then
  the released code's cleaning rules (:func:`clean_prediction`), instances box by box.
* Stuff from tags (Sec. 3.3): the class activation maps of the tagged stuff classes (CAM equals Grad-CAM up to a
  positive factor for a global-average-pooled linear classifier), each thresholded at 50% of its maximum; where
  maps overlap the smaller region wins; uncovered pixels stay ignore (:func:`stuff_cues`).
"""

from __future__ import annotations

import numpy as np

from cqbnet.cues.dense_crf import dense_crf
from cqbnet.cues.grabcut import grabcut_foreground
from cqbnet.cues.segment_proposals import Proposals, segment_proposals
from cqbnet.errors import InputError
from cqbnet.labels.rounds import (  # the round's file format
    BACKGROUND,
    STUFF,
    ApproximateRound,
    box_pixels,
)

IGNORE = 255
CAM_THRESHOLD = 0.5  # of each map's maximum (paper 001; Grad-CAM's own is 0.15)


def best_proposal(proposals: Proposals, box: np.ndarray) -> np.ndarray:
    """(H, W) bool: the proposal whose mask has the highest IoU with the box's rectangle."""
    sp = proposals.superpixels
    h, w = sp.shape
    inside = np.zeros((h, w), dtype=bool)
    x1, y1, x2, y2 = box_pixels(box, h, w)
    inside[y1:y2, x1:x2] = True
    n = proposals.members.shape[1]
    in_box = np.bincount(sp[inside], minlength=n).astype(float)
    area = np.bincount(sp.ravel(), minlength=n).astype(float)
    m = proposals.members.astype(float)
    inter, total = m @ in_box, m @ area
    iou = inter / (total + inside.sum() - inter)
    return proposals.mask(int(np.argmax(iou)))


def thing_cues(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    iscrowd: np.ndarray | None = None,
    proposals: Proposals | None = None,
    cue: str = "both",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paper 001's things from boxes: (instance masks (M, H, W) bool, each box's class (M,), ignore (H, W) bool:
    the pixels of a box that are not confidently its instance, and same-class overlaps; background (H, W) bool:
    the ignore pixels that every cue of every box holding them calls background, outside crowd boxes).

    ``cue``: ``both`` (the paper: GrabCut and the best proposal must agree), ``grabcut`` or ``proposal`` alone
    (ablations), ``box`` (every box pixel its class, the no-ignore ablation: overlaps still ignore).
    """
    if cue not in ("both", "grabcut", "proposal", "box"):
        raise InputError(f"unknown thing cue {cue!r}; choose both, grabcut, proposal or box")
    h, w = image.shape[:2]
    iscrowd = np.zeros(len(boxes), dtype=bool) if iscrowd is None else np.asarray(iscrowd, dtype=bool)
    if cue in ("both", "proposal") and proposals is None and len(boxes):
        proposals = segment_proposals(image)
    masks = np.zeros((len(boxes), h, w), dtype=bool)
    in_box = np.zeros((len(boxes), h, w), dtype=bool)
    doubt = np.zeros((h, w), dtype=bool)  # a box pixel some cue gives the box's object
    for k, b in enumerate(boxes):
        x1, y1, x2, y2 = box_pixels(b, h, w)
        in_box[k, y1:y2, x1:x2] = True
        if cue == "box":
            masks[k] = in_box[k]
            continue
        said = []  # (H, W) bool: each cue's foreground
        if cue in ("both", "grabcut"):
            said.append(grabcut_foreground(image, b))
        if cue in ("both", "proposal"):
            said.append(best_proposal(proposals, b))
        masks[k] = np.logical_and.reduce(said) & in_box[k]
        doubt |= np.logical_or.reduce(said) & in_box[k]
    doubt |= masks.any(0) | in_box[iscrowd].any(0)
    ignore = in_box.any(0) & ~masks.any(0)
    for c in np.unique(labels):
        same = masks[labels == c]
        if len(same) > 1:
            ignore |= same.sum(0) > 1
    masks &= ~ignore[None]
    # a crowd box labels nothing as an instance: its confident pixels stay ignore as well
    ignore |= masks[iscrowd].any(0) if iscrowd.any() else False
    keep = ~iscrowd
    return masks[keep], np.asarray(labels)[keep], ignore, ignore & ~doubt


def image_thing_cues(image: np.ndarray, boxes: list, cue: str = "both"):
    """:func:`thing_cues` of one image from its manifest boxes (:class:`~cqbnet.labels.kinds.Box` list)."""
    xyxy = np.array([[b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]] for b in boxes])
    return thing_cues(
        image,
        xyxy.reshape(-1, 4),
        np.array([b.category_id for b in boxes], dtype=np.int64),
        np.array([b.iscrowd for b in boxes], dtype=bool),
        cue=cue,
    )


def stuff_cues(cams: np.ndarray, classes: list[int], threshold: float = CAM_THRESHOLD) -> np.ndarray:
    """Paper 001's stuff from tags: (H, W) int semantic map, each tagged stuff class where its CAM (already at
    image size, one (H, W) map per entry of ``classes``) is at least ``threshold`` of its maximum; where several
    are, the class whose thresholded region is smallest; elsewhere :data:`IGNORE`."""
    out = np.full(cams.shape[1:], IGNORE, dtype=np.int64)
    if not len(classes):
        return out
    peak = cams.reshape(len(cams), -1).max(1).clip(min=1e-12)
    on = cams >= threshold * peak[:, None, None]  # (K, H, W)
    for k in np.argsort(-on.reshape(len(on), -1).sum(1), kind="stable"):  # largest first, smaller ones paint over
        out[on[k]] = classes[k]
    return out


def approximate_panoptic(
    masks: np.ndarray, mask_classes: np.ndarray, ignore: np.ndarray, stuff: np.ndarray, stuff_classes: set[int]
) -> tuple[np.ndarray, list[tuple[int, int, bool]]]:
    """The round's approximate ground truth as a panoptic id map (0 = ignore) and its segments (id, semantic
    class, is_thing): instances first (their confident pixels), then one segment per stuff class from the stuff
    map on pixels no box claims (inside a box, a non-instance pixel is ignore)."""
    ids = np.zeros(ignore.shape, dtype=np.int32)
    segments: list[tuple[int, int, bool]] = []
    for m, c in zip(masks, mask_classes):
        if m.any():
            ids[m] = len(segments) + 1
            segments.append((len(segments) + 1, int(c), True))
    free = (ids == 0) & ~ignore
    for c in sorted(stuff_classes):
        m = free & (stuff == c)
        if m.any():
            ids[m] = len(segments) + 1
            segments.append((len(segments) + 1, int(c), False))
    return ids, segments


def with_box_index(segments: list[tuple[int, int, bool]], masks: np.ndarray, boxes: list) -> list[tuple[int, int, int]]:
    """(segment id, category id, box index; :data:`STUFF` for stuff) rows for :func:`write_round`: the instances of
    :func:`approximate_panoptic` come first, in the order of the non-crowd boxes, those with no pixel left out."""
    box_of = [j for j, b in enumerate(boxes) if not b.iscrowd]
    out, k = [], 0
    for sid, cid, is_thing in segments:
        if is_thing:
            while not masks[k].any():
                k += 1
            out.append((sid, cid, box_of[k]))
            k += 1
        else:
            out.append((sid, cid, STUFF))
    return out


def with_background(
    ids: np.ndarray, rows: list[tuple[int, int, int]], background: np.ndarray | None
) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The round's id map and rows with the still unlabelled pixels of ``background`` as one more segment, the box
    background (category id -1, box index :data:`BACKGROUND`); unchanged when there are none."""
    if background is None:
        return ids, rows
    free = background & (ids == 0)
    if not free.any():
        return ids, rows
    sid = int(ids.max()) + 1
    ids = ids.copy()
    ids[free] = sid
    return ids, [*rows, (sid, -1, BACKGROUND)]


def stuff_cams(model, image: np.ndarray, device) -> np.ndarray:
    """(K, H, W) class activation maps in [0, 1] of a trained network's Cls2Pixel classifier (trained on the
    images' tags), at image resolution."""
    import torch
    import torch.nn.functional as F

    from cqbnet.weak.cls2pixel import class_activation_maps

    if getattr(model, "cls2pixel", None) is None:
        raise InputError("the network has no Cls2Pixel classifier (model.weak.cls2pixel was off): no CAMs for stuff")
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0).to(device)
    with torch.no_grad():
        sem_features = model.features([x]).sem_features
        _, maps = model.cls2pixel.cam_head(sem_features)
        size = tuple(4 * int(d) for d in sem_features.shape[-2:])  # the semantic features are at stride 4
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
        return class_activation_maps(maps)[0].cpu().numpy()


def round_zero(
    manifest,
    model=None,
    device="cpu",
    cue: str = "both",
    limit: int | None = None,
    box_background: bool = False,
    cues: dict | None = None,
):
    """Paper 001's round-0 labels of every boxes image of a manifest: (image id, id map, segments) entries for
    :func:`write_round`. Things from the boxes (:func:`thing_cues`, or an image's entry of ``cues`` when given:
    image id -> its result, prepared beforehand, e.g. in worker processes by :mod:`cqbnet.recipes.prepare`); stuff
    from the tagged stuff classes' CAMs of ``model`` (a network trained on the manifest with Cls2Pixel on) when
    the image has tags, else all ignore. With ``box_background`` the box background is marked for the mask head
    (:func:`with_background`)."""
    from cqbnet.data.dataset import read_image_of

    cats = manifest.categories
    contiguous = {cid: i for i, cid in enumerate(cats)}
    stuff_ids = {cid for cid, c in cats.items() if not c.isthing}
    done = 0
    for lab in manifest.images:
        if "B" not in lab.kinds or "P" in lab.kinds:
            continue
        if limit is not None and done >= limit:
            return
        done += 1
        image = read_image_of(manifest.image_root / lab.file_name, lab.image_id, lab.height, lab.width, "manifest")
        boxes = lab.boxes or []
        if cues is not None and lab.image_id in cues:
            masks, classes, ignore, background = cues[lab.image_id]
        else:
            masks, classes, ignore, background = image_thing_cues(image, boxes, cue)
        tagged = [c for c in (lab.tags or []) if c in stuff_ids]
        if model is not None and tagged:
            cams = stuff_cams(model, image, device)[[contiguous[c] for c in tagged]]
            stuff = stuff_cues(cams, tagged)
        else:
            stuff = np.full(image.shape[:2], IGNORE, dtype=np.int64)
        ids, segs = approximate_panoptic(masks, classes, ignore, stuff, set(tagged))
        rows = with_box_index(segs, masks, boxes)
        yield lab.image_id, *with_background(ids, rows, background if box_background else None)


def score_round(labels: ApproximateRound, manifest, gt) -> dict[str, float]:
    """The approximate labels against the hidden ground truth ``gt`` (a PanopticSet of the same images):
    precision and coverage of the labelled pixels for things and stuff (percent), the share of pixels labelled,
    and PQ (percent) with ignore as void."""
    from cqbnet.evaluation.panoptic_quality import PanopticQuality

    cats = manifest.categories
    records = {r.image_id: r for r in gt.records}
    metric = PanopticQuality(cats)
    right = {True: 0, False: 0}
    said = {True: 0, False: 0}
    there = {True: 0, False: 0}
    labelled = total = background = 0
    for lab in manifest.images:
        entry = labels.images.get(str(lab.image_id))
        if entry is None:
            continue
        rec = records.get(lab.image_id)
        if rec is None:
            raise InputError(f"image {lab.image_id} of {manifest.path} is not in the ground truth given")
        gt_ids = gt.read_ids(rec, validate=False)
        gt_cls = paint_classes(gt_ids, [(seg.id, seg.category_id) for seg in rec.segments], 0)
        ids, rows, aside = labels.read(lab.image_id)  # the box background is ignore for every class
        rows = [(sid, cid) for sid, cid, _ in rows]
        background += int(aside.sum())
        cls = paint_classes(ids, rows, 0)
        for thing in (True, False):
            kind = np.isin(gt_cls, [c for c, k in cats.items() if k.isthing == thing])
            mine = np.isin(cls, [c for c, k in cats.items() if k.isthing == thing])
            right[thing] += int((mine & (cls == gt_cls)).sum())
            said[thing] += int(mine.sum())
            there[thing] += int(kind.sum())
        labelled += int((ids > 0).sum())
        total += ids.size
        segments = [{"id": sid, "category_id": cid, "area": int((ids == sid).sum()), "iscrowd": 0} for sid, cid in rows]
        metric.update(gt_ids, rec.segments, ids, [s for s in segments if s["area"] > 0], lab.image_id)
    r = metric.compute()
    out = {"images": r.num_images, "labelled_share": 100 * labelled / max(total, 1)}
    if background:
        out["box_background_share"] = 100 * background / max(total, 1)
    for thing, name in ((True, "th"), (False, "st")):
        out[f"precision_{name}"] = 100 * right[thing] / max(said[thing], 1)
        out[f"coverage_{name}"] = 100 * right[thing] / max(there[thing], 1)
    out.update(pq=100 * r.all["pq"], pq_th=100 * r.things["pq"], pq_st=100 * r.stuff["pq"], sq_th=100 * r.things["sq"])
    return out


# --- refinement rounds (Sec. 3.4): the network's own predictions, a dense CRF, the cleaning rules ----------------

CONFIDENCE = 0.99  # round t+1 keeps pixels the refined prediction is at least this sure of (the released code)
LOW_COVERAGE = 0.5  # a box labelled with its class on less than this share is filled (the released code)
FILL_RULES = ("box", "predicted")  # what rule 5 fills: the released code's whole box, or the predicted pixels only
DEFAULT_FILL = "predicted"  # the refinement's rule (+4.1 PQ over the released one at round 1, benchmarks/boxes_tags.md)


def check_fill(fill: str) -> None:
    """A one-line InputError for a fill rule that is not one of :data:`FILL_RULES`."""
    if fill not in FILL_RULES:
        raise InputError(f"unknown fill rule {fill!r}; choose {' or '.join(FILL_RULES)}")


def clean_prediction(
    pred: np.ndarray,
    score: np.ndarray,
    cues: np.ndarray,
    boxes: np.ndarray,
    box_classes: np.ndarray,
    things: set[int],
    tags: set[int] | None = None,
    fill: str = "box",
) -> np.ndarray:
    """The released code's five cleaning steps (paper 001, Sec. 3.4), on class maps of category ids with
    :data:`IGNORE`: ``pred`` the refined prediction and ``score`` its confidence, ``cues`` round 0's labels (M&G).

    1. pixels predicted with less than :data:`CONFIDENCE` become ignore;
    2. a predicted class absent from the image's ``tags`` (when given) becomes ignore;
    3. merged with the cues: a cue thing always wins; a cue stuff/ignore pixel keeps a predicted stuff class; a
       predicted thing where the cue is not a thing becomes ignore;
    4. box prior: a thing pixel outside every box of its class becomes ignore;
    5. a box labelled with its class on less than :data:`LOW_COVERAGE` of its area gets its ignore and stuff
       pixels filled with the class (boxes from large to small; other things untouched). ``fill="box"`` is the
       released code's rule; ``fill="predicted"`` fills only the pixels whose prediction (``pred``, at any
       confidence) is the box's class, so that a box the object covers sparsely is not filled with its background.
    """
    check_fill(fill)
    out = pred.copy()
    out[score < CONFIDENCE] = IGNORE
    if tags is not None:
        out[~np.isin(out, list(tags) + [IGNORE])] = IGNORE
    cue_thing = np.isin(cues, list(things))
    out_thing = np.isin(out, list(things))
    out = np.where(cue_thing, cues, np.where(out_thing, IGNORE, out))
    h, w = out.shape
    inside = {c: np.zeros((h, w), dtype=bool) for c in things}
    rects = []
    for b, c in zip(boxes, box_classes):
        x1, y1, x2, y2 = box_pixels(b, h, w)
        inside.setdefault(int(c), np.zeros((h, w), dtype=bool))[y1:y2, x1:x2] = True
        rects.append((x1, y1, x2, y2, int(c)))
    for c, m in inside.items():
        out[(out == c) & ~m] = IGNORE
    stuff_or_ignore = ~np.isin(out, list(things))
    for x1, y1, x2, y2, c in sorted(rects, key=lambda r: -(r[2] - r[0]) * (r[3] - r[1])):
        region = out[y1:y2, x1:x2]
        if region.size and (region == c).mean() < LOW_COVERAGE:
            open_ = stuff_or_ignore[y1:y2, x1:x2]
            region[open_ & (pred[y1:y2, x1:x2] == c) if fill == "predicted" else open_] = c
    return out


def instances_from_boxes(
    semantic: np.ndarray, boxes: np.ndarray, box_classes: np.ndarray, iscrowd: np.ndarray, things: set[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Instances of a cleaned class map, box by box: box k's instance is its class's pixels inside it; where two
    same-class boxes both claim a pixel it is ignore. Returns (masks (M, H, W), classes (M,), ignore (H, W)) for
    the non-crowd boxes, with ignore also holding the map's own ignore pixels inside the boxes."""
    h, w = semantic.shape
    masks = np.zeros((len(boxes), h, w), dtype=bool)
    for k, (b, c) in enumerate(zip(boxes, box_classes)):
        x1, y1, x2, y2 = box_pixels(b, h, w)
        masks[k, y1:y2, x1:x2] = semantic[y1:y2, x1:x2] == c
    ignore = (semantic == IGNORE) | np.isin(semantic, list(things)) & ~masks.any(0)
    for c in np.unique(box_classes):
        same = masks[box_classes == c]
        if len(same) > 1:
            ignore |= same.sum(0) > 1
    masks &= ~ignore[None]
    keep = ~np.asarray(iscrowd, dtype=bool)
    ignore |= masks[~keep].any(0) if (~keep).any() else False
    return masks[keep], np.asarray(box_classes)[keep], ignore


def class_map(labels: ApproximateRound, image_id) -> np.ndarray:
    """A round's labels of one image as a map of category ids (:data:`IGNORE` where unlabelled)."""
    ids, rows, _ = labels.read(image_id)
    return paint_classes(ids, [(sid, cid) for sid, cid, _ in rows], IGNORE)


def paint_classes(ids: np.ndarray, segments: list[tuple[int, int]], fill: int) -> np.ndarray:
    """(H, W) category ids of an id map from (segment id, category id) pairs; ``fill`` where no segment is."""
    out = np.full(ids.shape, fill, dtype=np.int64)
    for sid, cid in segments:
        out[ids == sid] = cid
    return out


def refined_probabilities(model, image: np.ndarray, classes: int, device) -> np.ndarray:
    """(K, H, W) the network's semantic probabilities of an (H, W, 3) image over its first ``classes`` classes (a
    background class, if any, left out), at image resolution, refined by :func:`dense_crf` (paper 001, Sec. 3.4)."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0).to(device)
    with torch.no_grad():
        sem_logits = model.features([x]).sem_logits
        size = tuple(4 * int(d) for d in sem_logits.shape[-2:])  # the semantic logits are at stride 4
        logits = F.interpolate(sem_logits, size=size, mode="bilinear", align_corners=False)[0, :, :h, :w]
        probs = logits[:classes].softmax(0).cpu()
    return dense_crf(probs, image).numpy()


def refine_round(
    model, manifest, cues: ApproximateRound, device="cpu", limit: int | None = None, fill: str = DEFAULT_FILL
):
    """Round t+1 of paper 001's labels (Sec. 3.4): for every boxes image, the trained network's semantic
    probabilities refined by :func:`dense_crf`, cleaned against round 0's cues and the boxes
    (:func:`clean_prediction` with rule 5's ``fill``), then instances box by box (:func:`instances_from_boxes`);
    round 0's box background, where the round leaves it unlabelled, is kept; entries for :func:`write_round`."""
    from cqbnet.data.dataset import read_image_of

    check_fill(fill)  # before any image is refined
    cats = manifest.categories
    order = list(cats)  # semantic index -> category id
    things = {c for c, k in cats.items() if k.isthing}
    stuff_ids = {c for c, k in cats.items() if not k.isthing}
    was = model.training
    model.eval()
    done = 0
    try:
        for lab in manifest.images:
            if "B" not in lab.kinds or "P" in lab.kinds or str(lab.image_id) not in cues.images:
                continue
            if limit is not None and done >= limit:
                return
            done += 1
            image = read_image_of(manifest.image_root / lab.file_name, lab.image_id, lab.height, lab.width, "manifest")
            q = refined_probabilities(model, image, len(order), device)
            pred = np.asarray(order)[q.argmax(0)]
            boxes = lab.boxes or []
            xyxy = np.array([[b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]] for b in boxes])
            xyxy = xyxy.reshape(-1, 4)
            classes = np.array([b.category_id for b in boxes], dtype=np.int64)
            crowd = np.array([b.iscrowd for b in boxes], dtype=bool)
            tags = set(lab.tags) | set(classes.tolist()) if lab.tags is not None else None
            cue_ids, cue_rows, cue_background = cues.read(lab.image_id)  # round 0, read once
            cues_map = paint_classes(cue_ids, [(sid, cid) for sid, cid, _ in cue_rows], IGNORE)
            cleaned = clean_prediction(pred, q.max(0), cues_map, xyxy, classes, things, tags, fill)
            masks, mclasses, ignore = instances_from_boxes(cleaned, xyxy, classes, crowd, things)
            present = {int(c) for c in np.unique(cleaned)} & stuff_ids
            ids, segs = approximate_panoptic(masks, mclasses, ignore, cleaned, present)
            rows = with_box_index(segs, masks, boxes)
            yield lab.image_id, *with_background(ids, rows, cue_background)
    finally:
        model.train(was)

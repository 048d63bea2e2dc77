"""Paper 004's heuristic-free panoptic head (Li, Qi and Torr, CVPR 2020), and the heuristic merge it replaces.

* :func:`dynamic_potential` (Sec. 3.4.1, Eqs. 1-2): one channel per detection,
  s_k * V(c_k) inside the detection's box (with its mask: V * M, variant B, or
  V + M, variant C), plus one whole-image channel per stuff class.
* :class:`DenseInstanceAffinity` (Sec. 3.4.2, Eqs. 3-4): P = Psi + phi0(Q) (phi1(Q)^T Psi),
  evaluated right to left so the HW x HW affinity matrix never exists.
* :func:`match_segments` and :func:`panoptic_targets` (Sec. 3.5, Eq. 5): ground
  truth segments are matched to *predicted* detections by box IoU (same class,
  IoU >= t, one-to-one, maximum total IoU); unmatched ground truth is ignored and
  duplicate detections of a matched segment are dropped.
* :func:`panoptic_from_logits`: inference is argmax over P; tiny segments become void.
* :func:`heuristic_merge`: the Panoptic FPN / detectron2 rule (instances by score,
  overlap test, then stuff from the semantic argmax with an area limit), as the
  second inference mode on the same checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_iou

from cqbnet.modeling.semantic_head import FPNDecoder

IGNORE = -100
POTENTIAL_VARIANTS = ("B", "C")


def box_region(boxes: Tensor, height: int, width: int, stride: float) -> Tensor:
    """(D, 4) image-pixel boxes -> (D, h, w) bool: grid cells whose centre lies in the box."""
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    inside_y = (ys[None] >= y1) & (ys[None] <= y2)  # (D, h)
    inside_x = (xs[None] >= x1) & (xs[None] <= x2)  # (D, w)
    return inside_y[:, :, None] & inside_x[:, None, :]


def paste_masks(mask_probs: Tensor, boxes: Tensor, height: int, width: int, stride: float) -> Tensor:
    """(D, 1, m, m) box-relative mask probabilities -> (D, h, w) on the grid, differentiably (grid_sample)."""
    d = len(boxes)
    if d == 0:
        return mask_probs.new_zeros((0, height, width))
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    u = (xs[None] - x1) / (x2 - x1).clamp(min=1e-3) * 2 - 1  # (D, w) in [-1, 1] inside the box
    v = (ys[None] - y1) / (y2 - y1).clamp(min=1e-3) * 2 - 1  # (D, h)
    grid = torch.stack([u[:, None, :].expand(d, height, width), v[:, :, None].expand(d, height, width)], dim=-1)
    out = F.grid_sample(mask_probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0]


def dynamic_potential(
    sem_prob: Tensor,
    boxes: Tensor,
    classes: Tensor,
    scores: Tensor,
    stuff_classes: Tensor,
    stride: float,
    masks: Tensor | None = None,
    variant: str = "C",
) -> Tensor:
    """Psi (D + N_st, h, w) from semantic probabilities (K, h, w) and D detections (paper 004, Eqs. 1-2).

    ``classes`` are the detections' semantic class indices; ``masks`` (D, h, w) are
    pasted mask probabilities or None (box-only potential, Eq. 1).
    """
    h, w = sem_prob.shape[-2:]
    v = sem_prob[classes]  # (D, h, w)
    if masks is not None:
        v = v * masks if variant == "B" else v + masks
    inside = box_region(boxes, h, w, stride)
    thing = scores[:, None, None] * v * inside
    stuff = sem_prob[stuff_classes]  # (N_st, h, w): whole-image boxes with score 1
    return torch.cat([thing, stuff], dim=0)


AFFINITY_NORMS = ("pixels", "mass", "mass_score")


class DenseInstanceAffinity(nn.Module):
    """P = Psi + phi0(Q) (phi1(Q)^T Psi) (paper 004, Eq. 4), in memory linear in the pixel count.

    Q comes from a feature decoder of the same architecture as the semantic
    head's (Appendix A.1), C = 128 channels at stride 4. phi0 and phi1 are 1x1
    convolutions followed by ReLU. The paper leaves the scale of the product
    open; ``norm`` picks it (our choice either way):

    * ``"pixels"``: divide by the number of pixels, so the scale does not depend on the image size;
    * ``"mass"``: divide channel k's context phi1(Q)^T Psi_k by its mass sum_i Psi_ik, so the added
      term is each pixel's affinity to the channel's mean feature. Large stuff regions then no longer
      outweigh small instances just by their area.
    * ``"mass_score"``: as ``"mass"``, times the channel's score s_k (1 for stuff). Dividing by the mass
      removes s_k from the context (Psi_k carries it as a factor); this puts it back, so an unconfident
      detection's boost is attenuated by its score as Sec. 3.4.1 intends.
    """

    def __init__(self, in_channels: int, channels: int = 128, norm: str = "mass"):
        super().__init__()
        if norm not in AFFINITY_NORMS:
            raise ValueError(f"unknown affinity norm {norm!r}; choose one of {', '.join(AFFINITY_NORMS)}")
        self.decoder = FPNDecoder(in_channels, channels)
        self.phi0 = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.phi1 = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.norm = norm

    def features(self, fpn: list[Tensor]) -> Tensor:
        """Q: (N, C, H/4, W/4)."""
        return self.decoder(fpn)

    def forward(self, q: Tensor, psi: Tensor, scores: Tensor | None = None) -> Tensor:
        """q (C, h', w'), psi (K, h, w) -> P (K, h, w); never forms the (hw, hw) matrix (Eq. 3).

        ``scores`` (K,): each channel's score, needed by the ``"mass_score"`` norm.

        A Q coarser than Psi's grid is taken to it by bilinear upsampling. phi0 and phi1 are then applied
        before the upsampling and their ReLU after it: a 1x1 convolution commutes with bilinear
        interpolation (whose weights sum to 1), so P is the same and the projections cost a quarter at stride 2.
        """
        k, h, w = psi.shape
        c = q.shape[0]
        if q.shape[-2:] == (h, w):
            a, b = (_project(phi, q.flatten(1)).relu_() for phi in (self.phi0, self.phi1))  # (C, hw) each
        else:
            both = torch.cat([_project(phi, q.flatten(1)) for phi in (self.phi0, self.phi1)])  # (2C, h'w')
            both = F.interpolate(both.view(1, 2 * c, *q.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False)
            a, b = both[0].flatten(1).relu_().split(c)  # (C, hw) each
        flat = psi.flatten(1)  # (K, hw)
        # each channel's weights are scaled before the sum over pixels, never after: a sum over the ~67k cells of
        # a COCO image would overflow float16 under autocast (its largest value is 65504)
        if self.norm in ("mass", "mass_score"):
            weights = flat / flat.float().sum(1, keepdim=True).clamp(min=1e-6)  # (K, hw), each row sums to 1
            if self.norm == "mass_score":
                if scores is None:
                    raise ValueError("the mass_score affinity norm needs each channel's score")
                weights = weights * scores[:, None].to(weights.dtype)
        else:
            weights = flat / (h * w)
        context = b @ weights.T  # (C, K): phi1(Q)^T Psi, scaled
        return torch.addmm(flat, context.T, a).reshape(k, h, w)  # Psi + context^T phi0(Q): (K, h, w)


def _project(phi: nn.Sequential, flat: Tensor) -> Tensor:
    """The 1x1 convolution of phi (before its ReLU) applied to (C_in, hw) features as one matrix product.

    The same numbers as the convolution, about twice as fast on CPU for these wide, flat maps: (C_out, hw).
    """
    conv = phi[0]
    return torch.addmm(conv.bias[:, None], conv.weight.flatten(1), flat)


def match_segments(
    gt_boxes: Tensor, gt_classes: Tensor, det_boxes: Tensor, det_classes: Tensor, threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Eq. 5: the permutation of ground-truth segments that maximises total box IoU with the detections.

    Pairs of different classes count as IoU 0, pairs below ``threshold`` cannot
    match. Returns, per ground-truth segment, its detection index or -1, and a
    (D,) bool of detections to keep: all but the unmatched ones that overlap a
    matched segment of their class at >= threshold (duplicates, removed as the paper says).
    """
    g, d = len(gt_boxes), len(det_boxes)
    match = torch.full((g,), -1, dtype=torch.int64)
    keep = torch.ones(d, dtype=torch.bool)
    if g == 0 or d == 0:
        return match, keep
    iou = box_iou(gt_boxes.detach().float(), det_boxes.detach().float()).cpu()
    iou[gt_classes.cpu()[:, None] != det_classes.cpu()[None, :]] = 0.0
    iou[iou < threshold] = 0.0
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    for r, c in zip(rows, cols):
        if iou[r, c] > 0:
            match[r] = int(c)
    matched_dets = set(match[match >= 0].tolist())
    matched_gts = match >= 0
    for c in range(d):
        if c not in matched_dets and bool((iou[matched_gts, c] > 0).any()):
            keep[c] = False
    return match, keep


def panoptic_targets(
    gt_ids: Tensor,
    gt_segments: list[dict],
    match: Tensor,
    keep: Tensor,
    stuff_classes: list[int],
    stride: int,
    background: bool = False,
) -> Tensor:
    """Channel index per grid cell for the cross-entropy on P (IGNORE where nothing is matched).

    ``gt_segments`` rows: id, semantic class, is_thing, iscrowd, in the order of
    ``match`` for the thing segments. Channels: kept detections first, then one
    per stuff class; with ``background`` (a label space without stuff), the one background channel, which
    void cells (id 0) take. Negative ids (off the image) are ignored.
    """
    kept_index = torch.cumsum(keep.long(), 0) - 1  # new channel of each kept detection
    num_kept = int(keep.sum())
    off = stride // 2
    ids = gt_ids[off::stride, off::stride]
    target = torch.full(ids.shape, IGNORE, dtype=torch.int64, device=gt_ids.device)
    stuff_pos = {c: i for i, c in enumerate(stuff_classes)}
    if background:
        target[ids == 0] = num_kept
    thing_k = 0
    for seg in gt_segments:
        if seg["is_thing"] and not seg["iscrowd"]:
            det = int(match[thing_k])
            thing_k += 1
            if det >= 0 and bool(keep[det]):
                target[ids == seg["id"]] = int(kept_index[det])
        elif not seg["is_thing"]:
            target[ids == seg["id"]] = num_kept + stuff_pos[seg["class"]]
    return target


@dataclass
class PanopticOutput:
    """One image's panoptic prediction: an id map and its segments (COCO panoptic ``segments_info``)."""

    ids: np.ndarray  # (H, W) int32, 0 = void
    segments: list[dict]


def max_filter3(x: Tensor) -> Tensor:
    """3x3 maximum filter over the last two dims of (..., h, w), edges padded with -inf.

    The same values as ``F.max_pool2d(x, 3, 1, 1)``, from four element-wise maxima of shifted views
    (about ten times faster on CPU than max pooling at stride 1).
    """
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])  # (..., h, w + 2)
    return torch.maximum(torch.maximum(rows[..., :-2], rows[..., 1:-1]), rows[..., 2:])


def candidate_cells(logits: Tensor) -> Tensor:
    """(K, h, w) bool: channel k may win the argmax somewhere inside grid cell (i, j) after bilinear upsampling.

    An upsampled pixel inside a cell is a convex combination of the cells in its 3x3 window. So channel k
    reaches there at most its largest value in the window, while the winner reaches at least
    max_j (channel j's smallest value in the window). A channel below that level cannot win in the cell;
    dropping it is exact.
    """
    floor = (-max_filter3(-logits)).amax(0)  # (h, w): what the best channel is sure to reach
    return max_filter3(logits) >= floor  # (K, h, w)


def candidate_channels(logits: Tensor) -> Tensor:
    """(K,) bool: channels of (K, h, w) logits that can win the upsampled argmax anywhere (see candidate_cells)."""
    return candidate_cells(logits).flatten(1).any(1)


# Cost model of upsample_argmax on CPU (measured on the benchmark machine): a tile costs a fixed ~40 us of
# small tensor operations, the same time as upsampling and comparing about 9,000 channel-pixels.
TILE_OVERHEAD_CHANNEL_PIXELS = 9000


def upsample_argmax(logits: Tensor, stride: int, size: tuple[int, int], tile: int | None = 16) -> Tensor:
    """argmax over channels of P upsampled ``stride`` times (bilinear), cropped to ``size``: (H, W) channel index.

    Equal to upsampling all K channels at once, but only channels that can win (:func:`candidate_cells`)
    are upsampled. With many channels (e.g. 100 detections) the grid is taken in ``tile`` x ``tile`` cell
    tiles, each with one cell of context on every side (which makes a tile's interpolation the same as the
    whole map's), upsampling only the channels that can win in that tile; a tile sees a handful of segments,
    so this does a fraction of the work and never holds the (K, H, W) upsampled tensor. With few channels the
    whole grid is done at once, which is then cheaper; ``tile=None`` forces that.
    """
    if logits.device.type != "cpu":  # the tile loop's cost model is the CPU's; a GPU takes the whole map at once
        tile = None
    ok = _crop_candidates(logits, stride, size)  # (K, rows, cols)
    keep = torch.nonzero(ok.flatten(1).any(1)).flatten()
    if tile is not None and len(keep) > 1:
        per_tile = tile_candidates(ok, keep, tile)  # (k, tiles down, across)
        work_tiled = float(per_tile.sum()) * (tile * stride) ** 2 + per_tile[0].numel() * TILE_OVERHEAD_CHANNEL_PIXELS
        if work_tiled < len(keep) * size[0] * size[1]:
            return _tiled_upsample_argmax(logits, keep, per_tile, stride, size, tile)
    return _upsample_argmax_of(logits, keep, stride, size, (0, ok.shape[1]), (0, ok.shape[2]))


def _crop_candidates(logits: Tensor, stride: int, size: tuple[int, int], block: int = 16) -> Tensor:
    """candidate_cells (K, rows, cols) of the grid cells that reach into the crop ``size``.

    Their windows see one cell beyond, so each block of rows is tested with one row of context each side.
    """
    h, w = logits.shape[-2:]
    if size[0] > h * stride or size[1] > w * stride:
        raise ValueError(f"crop {tuple(size)} is larger than the {h}x{w} grid upsampled {stride} times")
    rows, cols = -(-size[0] // stride), -(-size[1] // stride)
    blocks = []
    for r0 in range(0, rows, block):  # a block of rows at a time keeps the (K, rows, w) temporaries in cache
        r1, a = min(rows, r0 + block), max(0, r0 - 1)
        blocks.append(candidate_cells(logits[:, a : r1 + 1, : cols + 1])[:, r0 - a : r1 - a, :cols])
    return torch.cat(blocks, dim=1)


def _upsample_argmax_of(
    logits: Tensor, keep: Tensor, stride: int, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]
) -> Tensor:
    """Winning channel (from ``keep``) of the upsampled grid cells ``rows`` x ``cols``, cropped to ``size``."""
    if len(keep) == 0:  # only with NaN logits, where no channel passes the test: compare them all, as before
        keep = torch.arange(len(logits), device=logits.device)
    height = min(size[0], rows[1] * stride) - rows[0] * stride  # the output pixels of these cells
    width = min(size[1], cols[1] * stride) - cols[0] * stride
    if len(keep) == 1:
        return torch.full((height, width), int(keep[0]), dtype=torch.int64, device=logits.device)
    h, w = logits.shape[-2:]
    a, b, c, d = max(0, rows[0] - 1), min(h, rows[1] + 1), max(0, cols[0] - 1), min(w, cols[1] + 1)  # with context
    x = logits[keep, a:b, c:d][None].contiguous(memory_format=torch.channels_last)  # channels last: argmax reads rows
    up = F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)[0]  # (k, (b-a)s, (d-c)s)
    top, left = (rows[0] - a) * stride, (cols[0] - c) * stride
    return keep[up[:, top : top + height, left : left + width].argmax(0)]


def tile_candidates(ok: Tensor, keep: Tensor, tile: int) -> Tensor:
    """(k, tiles down, across) bool: which of the ``keep`` channels may win somewhere in each ``tile`` x ``tile``
    block of cells, from the per-cell candidates ``ok`` (K, rows, cols)."""
    return F.max_pool2d(ok[keep].to(torch.float32)[None], tile, ceil_mode=True)[0] > 0


def _tiled_upsample_argmax(
    logits: Tensor, keep: Tensor, per_tile: Tensor, stride: int, size: tuple[int, int], tile: int
) -> Tensor:
    """upsample_argmax tile by tile, each tile upsampling only its own candidates (``per_tile`` of ``keep``)."""
    out = torch.empty(size, dtype=torch.int64, device=logits.device)  # (H, W)
    rows, cols = -(-size[0] // stride), -(-size[1] // stride)
    for i, r0 in enumerate(range(0, rows, tile)):
        for j, c0 in enumerate(range(0, cols, tile)):
            part = _upsample_argmax_of(
                logits, keep[per_tile[:, i, j]], stride, size, (r0, min(rows, r0 + tile)), (c0, min(cols, c0 + tile))
            )
            out[r0 * stride : r0 * stride + part.shape[0], c0 * stride : c0 * stride + part.shape[1]] = part
    return out


def panoptic_from_logits(
    logits: Tensor,
    det_labels: list[int],
    det_scores: list[float],
    stuff_categories: list[int | None],
    min_thing_area: int,
    min_stuff_area: int,
) -> PanopticOutput:
    """Segments from the winning channel per pixel, (H, W) (or P itself, (K, H, W), to take its argmax).

    Channel k < D is detection k, the rest the whole-image channels: a stuff category, or None for the
    background of a label space without stuff (void). Thing segments below ``min_thing_area`` pixels and stuff
    segments below ``min_stuff_area`` become void.
    """
    num_channels = len(det_labels) + len(stuff_categories)
    channel = (logits.argmax(0) if logits.dim() == 3 else logits).cpu().numpy()
    d = len(det_labels)
    areas = np.bincount(channel.ravel(), minlength=num_channels)
    lut = np.zeros(num_channels, dtype=np.int32)  # channel -> segment id (0: void)
    segments = []
    limit = np.full(num_channels, max(min_stuff_area, 1))
    limit[:d] = max(min_thing_area, 1)
    for k in np.flatnonzero(areas >= limit):
        if k >= d and stuff_categories[k - d] is None:
            continue  # background: void
        seg_id = len(segments) + 1
        lut[k] = seg_id
        if k < d:
            seg = {"id": seg_id, "category_id": det_labels[k], "isthing": True, "score": det_scores[k]}
        else:
            seg = {"id": seg_id, "category_id": stuff_categories[k - d], "isthing": False, "score": 1.0}
        seg["area"] = int(areas[k])
        segments.append(seg)
    return PanopticOutput(lut[channel], segments)


def heuristic_merge(
    masks: np.ndarray,
    det_labels: list[int],
    det_scores: list[float],
    semantic: np.ndarray,
    stuff_class_to_category: dict[int, int],
    score_thresh: float = 0.5,
    overlap_thresh: float = 0.5,
    stuff_area_limit: int = 4096,
) -> PanopticOutput:
    """Panoptic FPN's merge (detectron2's ``combine_semantic_and_instance_outputs``).

    ``masks`` (D, H, W) bool instance masks; ``semantic`` (H, W) argmax class index.
    Instances in order of score: skip below ``score_thresh`` or when more than
    ``overlap_thresh`` of the mask is taken, else claim its free pixels. Then each
    stuff class of the semantic argmax takes its free pixels if they reach
    ``stuff_area_limit``.
    """
    ids = np.zeros(semantic.shape, dtype=np.int32)
    segments = []
    for k in np.argsort(-np.asarray(det_scores, dtype=float), kind="stable"):
        if det_scores[k] < score_thresh:
            break
        m = masks[k]
        area = int(m.sum())
        if area == 0:
            continue
        taken = int((m & (ids > 0)).sum())
        if taken / area > overlap_thresh:
            continue
        m = m & (ids == 0)
        seg_id = len(segments) + 1
        ids[m] = seg_id
        segments.append({"id": seg_id, "category_id": det_labels[k], "isthing": True, "score": float(det_scores[k])})
    for cls in np.unique(semantic):
        if int(cls) not in stuff_class_to_category:
            continue
        m = (semantic == cls) & (ids == 0)
        if m.sum() < stuff_area_limit:
            continue
        seg_id = len(segments) + 1
        ids[m] = seg_id
        segments.append(
            {"id": seg_id, "category_id": stuff_class_to_category[int(cls)], "isthing": False, "score": 1.0}
        )
    for s in segments:
        s["area"] = int((ids == s["id"]).sum())
    return PanopticOutput(ids, segments)

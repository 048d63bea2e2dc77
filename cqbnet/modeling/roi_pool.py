"""Multi-scale RoIAlign whose CPU backward is a sparse matrix product.

RoIAlign (He et al. 2017) is linear in the features: every output cell is a fixed weighted sum of at most
``4 * sampling_ratio**2`` feature pixels (bilinear corners of its sample points). On CPU, torchvision's kernel
computes the forward quickly but its backward scatters into the feature gradient one RoI at a time, and in a
training step of the CPU recipe it took about 0.42 of 1.38 s (``benchmarks/step_profile.md``). Here the weights
of all RoIs and all FPN levels form one sparse CSR matrix ``A`` (rows: output cells, columns: feature pixels of
every level), the output is ``A @ F`` and the backward ``A^T @ dL/dOut``: the same numbers as torchvision's
``roi_align`` (tested to float rounding), about 4x faster forward and backward together.

:class:`SparseMultiScaleRoIAlign` is torchvision's :class:`~torchvision.ops.MultiScaleRoIAlign` (same level
mapping, same scales, ``aligned=False`` as torchvision's pooler uses) with that product on CPU; on other devices,
or with an adaptive sampling ratio, it is torchvision's own.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign


def _axis_weights(start: Tensor, length: Tensor, size: Tensor, bins: int, sr: int) -> tuple[Tensor, Tensor]:
    """Bilinear corners along one axis: start, length, size (R,) in feature pixels of each RoI's level ->
    indices and weights (R, bins, sr, 2), with torchvision's border rules (0 beyond one pixel outside the map,
    clamped to its border inside that pixel)."""
    k = (torch.arange(bins * sr, dtype=start.dtype, device=start.device) + 0.5) / (bins * sr)  # (bins * sr,)
    v = start[:, None] + k * length[:, None]  # (R, bins * sr) sample coordinates
    last = (size - 1).to(v.dtype)[:, None]
    valid = ((v >= -1) & (v <= last + 1)).to(v.dtype)
    v = torch.minimum(v.clamp(min=0), last)
    lo = v.floor()
    hi = torch.minimum(lo + 1, last)
    frac = v - lo
    idx = torch.stack([lo, hi], -1).long().view(-1, bins, sr, 2)
    w = (torch.stack([1 - frac, frac], -1) * valid[..., None]).view(-1, bins, sr, 2)
    return idx, w


def roi_align_matrix(
    rois: Tensor,
    level_of: Tensor,
    shapes: list[tuple[int, int, int]],
    scales: list[float],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool = False,
) -> Tensor:
    """Sparse CSR (R * oh * ow, sum_l N H_l W_l) of RoIAlign weights.

    rois (R, 5) as (image index, x1, y1, x2, y2) in image pixels; level_of (R,) the level of each RoI;
    shapes[l] = (N, H_l, W_l) and scales[l] of every level. Column of (level l, image n, y, x) is
    offset_l + (n * H_l + y) * W_l + x, offset_l the pixels of the levels before l.
    """
    oh, ow = output_size
    sr = sampling_ratio
    dev = rois.device
    offsets = torch.tensor([0] + [n * h * w for n, h, w in shapes], device=dev).cumsum(0)[:-1][level_of]  # (R,)
    scale = torch.tensor(scales, dtype=rois.dtype, device=dev)[level_of]  # (R,)
    h = torch.tensor([h for _, h, _ in shapes], device=dev)[level_of]  # (R,) the level's height and width
    w = torch.tensor([w for _, _, w in shapes], device=dev)[level_of]
    shift = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * scale - shift, rois[:, 2] * scale - shift
    rw, rh = rois[:, 3] * scale - shift - x1, rois[:, 4] * scale - shift - y1
    if not aligned:  # torchvision: malformed RoIs are forced to 1 x 1
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    yi, yw = _axis_weights(y1, rh, h, oh, sr)  # (R, oh, sr, 2)
    xi, xw = _axis_weights(x1, rw, w, ow, sr)  # (R, ow, sr, 2)
    base = offsets + rois[:, 0].long() * (h * w)  # (R,)
    # (R, oh, ow, sr_y, 2_y, sr_x, 2_x): every output cell's sample corners, one row of the matrix each
    col = (base.view(-1, 1, 1, 1) + yi * w.view(-1, 1, 1, 1))[:, :, None, :, :, None, None] + xi[:, None, :, None, None]
    val = yw[:, :, None, :, :, None, None] * (xw / (sr * sr))[:, None, :, None, None]
    per_row = 4 * sr * sr
    rows = len(rois) * oh * ow
    crow = torch.arange(0, rows * per_row + 1, per_row, device=dev)
    total = sum(n * hh * ww for n, hh, ww in shapes)
    with warnings.catch_warnings():  # torch calls CSR support beta; matrix products with it are what is used here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col.reshape(-1), val.reshape(-1), (rows, total), check_invariants=False)


def sparse_multiscale_roi_align(
    features: list[Tensor],
    rois: Tensor,
    level_of: Tensor,
    scales: list[float],
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign of every RoI on its level: features[l] (N, C, H_l, W_l), rois (R, 5) -> (R, C, oh, ow)."""
    c = features[0].shape[1]
    oh, ow = output_size
    if len(rois) == 0:
        return features[0].new_zeros((0, c, oh, ow))
    flat = torch.cat([f.float().permute(0, 2, 3, 1).reshape(-1, c) for f in features])  # (sum N H W, C)
    shapes = [(f.shape[0], f.shape[2], f.shape[3]) for f in features]
    a = roi_align_matrix(rois.float(), level_of, shapes, scales, output_size, sampling_ratio, aligned)
    out = a @ flat  # (R * oh * ow, C)
    return out.view(len(rois), oh, ow, c).permute(0, 3, 1, 2).to(features[0].dtype)


class SparseMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-scale RoIAlign, computed as one sparse product on CPU (see the module docstring)."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        feats = [x[k] for k in self.featmap_names]
        if feats[0].device.type != "cpu" or self.sampling_ratio <= 0:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            super().forward(x, [b[:0] for b in boxes], image_shapes)  # torchvision sets its scales and level mapper
        count = sum(len(b) for b in boxes)
        levels = self.map_levels(boxes) if len(feats) > 1 else torch.zeros(count, dtype=torch.int64)
        ids = torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype) for i, b in enumerate(boxes)])
        rois = torch.cat([ids, torch.cat(boxes)], dim=1)  # (R, 5)
        return sparse_multiscale_roi_align(feats, rois, levels, self.scales, self.output_size, self.sampling_ratio)

"""Exact argmax over P upsampled to the image, computing only what can win (paper 004's inference, made cheap).

Paper 004 upsamples P (K channels at stride 4) to the image and takes the argmax per pixel. With 100
detections that is a (100, H, W) tensor. :func:`upsample_argmax` gives the same answer while upsampling only
the channels that can win somewhere (:func:`candidate_cells`), tile by tile where that is cheaper on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


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

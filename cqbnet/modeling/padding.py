"""A padded batch's own cells per image.

:meth:`PanopticNet.batch` pads every image to the batch's largest size. Whatever sums, averages or takes a
maximum over an image (the affinity context of paper 004, a CAM's pooling and peak, a stuff node's pooling)
must read only the cells that lie on the image, or an image's prediction and losses would change with the
sizes of the other images in its batch.
"""

from __future__ import annotations

import torch
from torch import Tensor


def grid_cells(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(rows, cols) of a stride-``stride`` grid that an image of ``size`` (H, W) reaches: ceil(H/s), ceil(W/s)."""
    return -(-int(size[0]) // stride), -(-int(size[1]) // stride)


def valid_cells(sizes: list[tuple[int, int]], stride: int, shape: tuple[int, int], device=None) -> Tensor:
    """(N, 1, h, w) bool: the cells of a padded (h, w) grid that lie on each image of ``sizes``."""
    out = torch.zeros((len(sizes), 1, *shape), dtype=torch.bool, device=device)
    for i, size in enumerate(sizes):
        rows, cols = grid_cells(size, stride)
        out[i, :, :rows, :cols] = True
    return out

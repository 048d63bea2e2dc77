"""Colour affinity between neighbouring pixels, shared by Box2Mask's pairwise term and Cls2Pixel's energy.

Both compare each pixel with its 8 neighbours of a dilated 3 x 3 window in CIE-LAB (BoxInst, Tian et al.
2021): S_ij = exp(-||lab_i - lab_j|| / theta). They read it at the scale where it fires: the image average
pooled to the stride of the predictions it teaches (:func:`pooled_lab`), where pixel noise no longer keeps
most pairs inside one object apart (``benchmarks/scenes.md``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab
from torch import Tensor

PAIRWISE_DILATION = 2
COLOR_THETA = 2.0  # BoxInst: S = exp(-||c_i - c_j|| / theta)
PAIRWISE_POOL = 4  # Box2Mask's LAB image is average pooled by this before it is sampled on the RoI grids


def neighbour_offsets(dilation: int = PAIRWISE_DILATION) -> list[tuple[int, int]]:
    """The 8 neighbours of a 3 x 3 window at ``dilation``: (dy, dx) pairs."""
    return [(dy * dilation, dx * dilation) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def shift(x: Tensor, dy: int, dx: int) -> Tensor:
    """x[..., i + dy, j + dx] with zero padding, same shape as x."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[..., yd, xd] = x[..., ys, xs]
    return out


def lab_similarity(lab: Tensor, dilation: int = PAIRWISE_DILATION, theta: float = COLOR_THETA) -> Tensor:
    """Colour similarity of each pixel to its 8 dilated neighbours: lab (N, 3, H, W) -> (N, 8, H, W) in [0, 1].

    Neighbours outside the image get similarity 0.
    """
    sims = []
    h, w = lab.shape[-2:]
    inside = torch.ones((1, 1, h, w), dtype=lab.dtype, device=lab.device)
    for dy, dx in neighbour_offsets(dilation):
        diff = lab - shift(lab, dy, dx)
        s = torch.exp(-diff.norm(dim=1) / theta)  # (N, H, W)
        sims.append(s * shift(inside, dy, dx)[:, 0])
    return torch.stack(sims, dim=1)


def image_to_lab(image: np.ndarray | Tensor) -> Tensor:
    """(H, W, 3) uint8 RGB (or (3, H, W) float in [0, 1]) -> (3, H, W) float32 CIE-LAB (scikit-image)."""
    if isinstance(image, Tensor):
        image = image.detach().permute(1, 2, 0).cpu().numpy()
    return torch.from_numpy(rgb2lab(np.asarray(image)).astype(np.float32)).permute(2, 0, 1)


def pooled_lab(image: np.ndarray | Tensor, pool: int = PAIRWISE_POOL) -> Tensor:
    """(1, 3, ceil(H / pool), ceil(W / pool)) LAB of an image (as :func:`image_to_lab` takes it), average pooled."""
    lab = image_to_lab(image)[None]  # (1, 3, H, W)
    return F.avg_pool2d(lab, pool, ceil_mode=True) if pool > 1 else lab

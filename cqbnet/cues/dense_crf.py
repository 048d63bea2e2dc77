"""Krähenbühl and Koltun's fully connected CRF (NIPS 2011) by mean field in PyTorch, for paper 001's refinement:
the compiled pydensecrf packages do not build here.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CRF_ITERATIONS = 10  # DeepLab-v2's mean-field iterations
CRF_POSITION = (3.0, 3.0)  # (weight, sigma in px) of the Gaussian kernel
CRF_BILATERAL = (4.0, 67.0 / 513.0, 3.0)  # (weight, sigma_xy as a share of the image's longer side, sigma_rgb)
CRF_MAX_PIXELS = 4096  # the exact dense kernel is N x N: the CRF runs on the image pooled to at most this many
# kernel exponents are floored here: exp(-60) ~ 1e-26 is nothing beside the diagonal's neighbours, and below about
# -87 float32 exp gives subnormal numbers, which the CPU handles some 50 times slower
EXP_FLOOR = -60.0


def dense_crf(probs, image: np.ndarray, iterations: int = CRF_ITERATIONS):
    """Krähenbühl and Koltun's fully connected CRF with Potts compatibility, by mean field, in PyTorch: the
    unary is -log ``probs`` (K, H, W), the pairwise a Gaussian kernel on position and a bilateral one on position
    and colour with DeepLab's parameters (sigma_xy scaled to the image). The kernel is exact (N x N), on the image
    average pooled until N <= :data:`CRF_MAX_PIXELS`; the marginals are upsampled back. Returns (K, H, W)."""
    probs = torch.as_tensor(probs, dtype=torch.float32)
    k, h, w = probs.shape
    s = 1
    while -(-h // s) * -(-w // s) > CRF_MAX_PIXELS:
        s += 1
    rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    if s > 1:
        rgb = F.avg_pool2d(rgb, s, ceil_mode=True)
        unary = F.avg_pool2d(probs[None], s, ceil_mode=True)[0]
    else:
        unary = probs
    hh, ww = unary.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(hh) * s + s / 2, torch.arange(ww) * s + s / 2, indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1)  # (N, 2) in image pixels
    col = rgb[0].flatten(1).t()  # (N, 3)
    d2 = torch.cdist(pos, pos).pow_(2)  # (N, N) squared distances in pixels
    w_g, s_g = CRF_POSITION
    w_b, s_xy, s_rgb = CRF_BILATERAL
    s_xy = s_xy * max(h, w)
    # w_b exp(-d2 / 2 s_xy^2 - dc2 / 2 s_rgb^2) + w_g exp(-d2 / 2 s_g^2), built in place (N x N is 64 MB)
    kernel = torch.cdist(col, col).pow_(2).mul_(-1 / (2 * s_rgb**2)).sub_(d2, alpha=1 / (2 * s_xy**2))
    kernel = kernel.clamp_(min=EXP_FLOOR).exp_().mul_(w_b)
    kernel.add_(d2.mul_(-1 / (2 * s_g**2)).clamp_(min=EXP_FLOOR).exp_(), alpha=w_g)
    kernel.fill_diagonal_(0.0)
    log_u = unary.clamp(min=1e-8).log().flatten(1)  # (K, N)
    q = log_u.softmax(0)
    for _ in range(iterations):
        q = (log_u + q @ kernel).softmax(0)  # Potts: each label is rewarded by its similar neighbours' belief
    q = q.reshape(k, hh, ww)
    if s > 1:
        q = F.interpolate(q[None], scale_factor=s, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return q


def keep_shrunk_segments(before, after, keep: float):
    """``after`` (K, H, W), the CRF's marginals of ``before``'s maps, with every segment the CRF shrank below
    ``keep`` of its area in ``before``'s argmax given its pixels back (its ``before`` marginals there): the CRF's
    kernels span tens of pixels, so it moves large segments' borders onto colour edges but swallows segments of a
    few pixels whole (``benchmarks/crf_small_objects.md``)."""
    before = torch.as_tensor(before, dtype=torch.float32)
    label_before, label_after = before.argmax(0), after.argmax(0)
    k = before.shape[0]
    area_before = torch.bincount(label_before.flatten(), minlength=k)
    area_after = torch.bincount(label_after.flatten(), minlength=k)
    shrunk = (area_after < keep * area_before) & (area_before > 0)  # (K,)
    if not bool(shrunk.any()):
        return after
    back = shrunk[label_before]  # (H, W): pixels of a shrunk segment
    return torch.where(back[None], before, after)

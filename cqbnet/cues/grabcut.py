"""GrabCut (Rother et al. 2004, ``cv2.grabCut``) as papers 001 and 002 use it to turn a box or a segment into a mask.

Deterministic (OpenCV's RNG is seeded before each call); the image is given a mirrored border so that a box on the
image's edge still has background around it.
"""

from __future__ import annotations

import cv2
import numpy as np

GRABCUT_ITERATIONS = 5  # the released JTSM code's count; paper 001 gives none
GRABCUT_MIN_AREA = 9  # boxes smaller than this (px^2) are their own foreground (also from the JTSM code)
GRABCUT_PAD = 8  # px of mirrored border, so that a box touching the image edge still has background around it


def grabcut_foreground(image: np.ndarray, box: np.ndarray, iterations: int = GRABCUT_ITERATIONS) -> np.ndarray:
    """(H, W) bool: GrabCut's foreground (sure or probable) initialised by the rectangle ``box`` (x1, y1, x2, y2,
    exclusive); a box under :data:`GRABCUT_MIN_AREA` px^2, or one GrabCut empties, is its own foreground.
    Deterministic (OpenCV's RNG is seeded)."""
    h, w = image.shape[:2]
    x1, y1 = int(np.floor(box[0])), int(np.floor(box[1]))
    x2, y2 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    out = np.zeros((h, w), dtype=bool)
    if x2 <= x1 or y2 <= y1:
        return out
    if (x2 - x1) * (y2 - y1) < GRABCUT_MIN_AREA:
        out[y1:y2, x1:x2] = True
        return out
    p = GRABCUT_PAD
    padded = cv2.copyMakeBorder(np.ascontiguousarray(image[..., ::-1]), p, p, p, p, cv2.BORDER_REFLECT)
    mask = np.zeros(padded.shape[:2], dtype=np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    cv2.grabCut(padded, mask, (x1 + p, y1 + p, x2 - x1, y2 - y1), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    fg = np.isin(mask[p : p + h, p : p + w], (cv2.GC_FGD, cv2.GC_PR_FGD))
    if not fg.any():
        out[y1:y2, x1:x2] = True
        return out
    return fg


def grabcut_from_segment(image: np.ndarray, mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Paper 002, Sec. 3.4: GrabCut with firm foreground inside the segment ``mask``, firm background outside its
    ``box``, probable foreground elsewhere in the box; (H, W) bool (the segment itself if GrabCut empties it)."""
    h, w = mask.shape
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    init = np.full((h, w), cv2.GC_BGD, dtype=np.uint8)
    init[y1:y2, x1:x2] = cv2.GC_PR_FGD
    init[mask] = cv2.GC_FGD
    if (init == cv2.GC_BGD).sum() == 0 or (init == cv2.GC_FGD).sum() == 0:
        return mask.copy()
    p = GRABCUT_PAD
    img = cv2.copyMakeBorder(np.ascontiguousarray(image[..., ::-1]), p, p, p, p, cv2.BORDER_REFLECT)
    m = cv2.copyMakeBorder(init, p, p, p, p, cv2.BORDER_CONSTANT, value=int(cv2.GC_BGD))
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(img, m, None, bgd, fgd, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a colour model it cannot fit (e.g. a one-colour image): keep the segment
        return mask.copy()
    out = np.isin(m[p : p + h, p : p + w], (cv2.GC_FGD, cv2.GC_PR_FGD))
    return out if out.any() else mask.copy()

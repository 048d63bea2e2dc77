"""Draw panoptic segmentations and weak labels on images (OpenCV, RGB uint8 arrays).

Each segment is filled with its category colour, jittered per instance so that
touching instances of one class stay apart, with a dark outline; crowd
segments are hatched; void stays the image.
"""

from __future__ import annotations

import cv2
import numpy as np

from cqbnet.data.panoptic_format import Category, SegmentInfo
from cqbnet.labels.kinds import Box, Point


def _color(cat: Category | None, seg_id: int) -> np.ndarray:
    base = np.array(cat.color if cat else (200, 200, 200), dtype=np.float32)
    if cat is not None and cat.isthing:
        rng = np.random.default_rng(seg_id)
        base = np.clip(base + rng.integers(-60, 61, 3), 0, 255)
    return base


def upscale(img: np.ndarray, scale: int) -> np.ndarray:
    if scale == 1:
        return img
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)


def draw_panoptic(
    image: np.ndarray,
    ids: np.ndarray,
    segments: list[SegmentInfo],
    categories: dict[int, Category],
    alpha: float = 0.55,
    scale: int = 1,
) -> np.ndarray:
    """Overlay a panoptic id map on an RGB image; returns a new (sH, sW, 3) uint8 image."""
    img = upscale(image, scale).astype(np.float32)
    ids = upscale(ids.astype(np.int32), scale)
    out = img.copy()
    for s in segments:
        m = ids == s.id
        if not m.any():
            continue
        col = _color(categories.get(s.category_id), s.id)
        out[m] = (1 - alpha) * img[m] + alpha * col
        if s.iscrowd:
            hatch = m & ((np.add.outer(np.arange(m.shape[0]), np.arange(m.shape[1])) // 3) % 3 == 0)
            out[hatch] = col * 0.5
    edges = _boundaries(ids)
    out[edges] = out[edges] * 0.3
    return np.clip(out, 0, 255).astype(np.uint8)


def _boundaries(ids: np.ndarray) -> np.ndarray:
    e = np.zeros(ids.shape, dtype=bool)
    e[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    e[1:, :] |= ids[1:, :] != ids[:-1, :]
    return e


def draw_boxes(image: np.ndarray, boxes: list[Box], categories: dict[int, Category], scale: int = 1) -> np.ndarray:
    """Draw COCO boxes with their class names."""
    out = upscale(image, scale).copy()
    for b in boxes:
        x, y, w, h = (v * scale for v in b.bbox)
        col = tuple(int(c) for c in (categories[b.category_id].color if b.category_id in categories else (255, 0, 0)))
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), col, 1 if scale < 3 else 2)
        name = categories[b.category_id].name if b.category_id in categories else str(b.category_id)
        label(out, name + (" (crowd)" if b.iscrowd else ""), (x + 1, max(y - 2, 8)), col)
    return out


def draw_points(image: np.ndarray, points: list[Point], categories: dict[int, Category], scale: int = 1) -> np.ndarray:
    """Draw clicked points as filled dots in their class colour with a white rim."""
    out = upscale(image, scale).copy()
    r = max(2, scale)
    for p in points:
        col = tuple(int(c) for c in categories[p.category_id].color) if p.category_id in categories else (255, 0, 0)
        c = (int((p.x + 0.5) * scale), int((p.y + 0.5) * scale))
        cv2.circle(out, c, r + 1, (255, 255, 255), -1)
        cv2.circle(out, c, r, col, -1)
    return out


def draw_tags(image: np.ndarray, tags: list[int], categories: dict[int, Category], scale: int = 1) -> np.ndarray:
    """Write the image's tags in a banner at the top."""
    out = upscale(image, scale).copy()
    names = [categories[t].name if t in categories else str(t) for t in tags]
    lines, cur = [], ""
    for n in names:
        cur2 = (cur + ", " + n) if cur else n
        if len(cur2) * 6 > out.shape[1] - 4 and cur:
            lines.append(cur)
            cur = n
        else:
            cur = cur2
    if cur:
        lines.append(cur)
    banner = 11 * len(lines) + 3
    out[:banner] = (out[:banner] * 0.35).astype(np.uint8)
    for i, line in enumerate(lines):
        label(out, line, (2, 10 + 11 * i), (255, 255, 255), box=False)
    return out


def label(img: np.ndarray, text: str, org: tuple[int, int], color, box: bool = True) -> None:
    """Small text with a dark backing for legibility."""
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.33
    (tw, th), _ = cv2.getTextSize(text, font, fs, 1)
    x, y = org
    if box:
        cv2.rectangle(img, (x - 1, y - th - 1), (x + tw + 1, y + 2), (0, 0, 0), -1)
    cv2.putText(img, text, (x, y), font, fs, tuple(int(c) for c in color), 1, cv2.LINE_AA)


def titled(img: np.ndarray, title: str) -> np.ndarray:
    """Add a 14-px title bar above an image."""
    bar = np.full((14, img.shape[1], 3), 30, dtype=np.uint8)
    label(bar, title, (3, 10), (255, 255, 255), box=False)
    return np.concatenate([bar, img], axis=0)


def grid(images: list[np.ndarray], cols: int, pad: int = 4) -> np.ndarray:
    """Tile images in a grid; each cell is as large as the largest image."""
    h = max(i.shape[0] for i in images)
    w = max(i.shape[1] for i in images)
    rows = (len(images) + cols - 1) // cols
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        out[y : y + im.shape[0], x : x + im.shape[1]] = im
    return out

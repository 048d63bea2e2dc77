"""Synthetic panoptic scenes: the embedded default dataset.

Two presets share one geometry (the same shapes, layouts, occlusion, crowds and
void) and differ in how things and stuff look; a third changes the geometry:

* ``realistic`` (the default) has the appearance statistics of photographs:
  each thing class has a typical colour family (two hue modes, the second shared
  with another class, so colour tells a good deal about the class without
  settling it) and a finish that is mostly smooth colour with shading and mild
  texture; each stuff class has its own texture and typical colours (grass is
  green, water blue); objects stand out from their surroundings, except a
  minority (``camouflage_prob``) that wears the texture and colours of the stuff
  around them.
* ``camouflage`` is the hard case: things differ only by *shape* (disk, square,
  triangle, ring, cross, star) and every instance draws its two colours and its
  texture (solid, stripes, checker, dots) from one palette shared by all
  classes; stuff differs by texture only, in palette colours too.
* ``dense`` stands in for crowded real data (cells under a microscope, cars and
  roofs from the air): 256 px scenes of 20-80 small things (4-20 px) that touch
  and overlap often, over 1-3 stuff classes, in colours that hint at the class
  far less than the realistic preset's (each instance takes its class's own hue
  only a third of the time), under stronger blur and noise. A development stand-in
  for crowded data, not a target to tune to (:data:`PRESET_DEFAULTS`).

Common to all:

* Stuff (5 classes: grass, brick, water, gravel, weave) as irregular regions,
  the argmax of smooth random fields, never just straight bands.
* 0 to ``max_instances`` instances per image, log-uniform sizes over a wide
  scale range (default 10 to 56 px, 5.6x), occlusion by painting order, and
  touching instances of the same class (a neighbour placed against an
  instance of its class).
* A little void: tiny occluded remnants and small unlabelled clutter patches.
* Crowd segments: now and then a tight cluster of small objects of one class
  labelled as one ``iscrowd`` region, as COCO does.

Every image has its own random stream seeded by ``(seed, split, index)``, so a
split is reproduced exactly whatever the order or number of worker processes.
"""

from __future__ import annotations

import colorsys
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cqbnet.data.panoptic_format import (
    Category,
    PanopticRecord,
    SegmentInfo,
    bbox_of,
    panoptic_json,
    write_panoptic_png,
)
from cqbnet.errors import InputError
from cqbnet.io import OUTPUT_MARK, add_to_record, atomic_directory, read_json, write_json

THING_SHAPES = ("disk", "square", "triangle", "ring", "cross", "star")
STUFF_TEXTURES = ("grass", "brick", "water", "gravel", "weave")
THING_TEXTURES = ("solid", "stripes", "checker", "dots")

PRESETS = ("realistic", "camouflage", "dense")

# The camouflage preset's one palette for every class (RGB): colour is never a class cue there.
PALETTE = np.array(
    [
        [200, 60, 50],
        [60, 160, 70],
        [50, 90, 190],
        [220, 190, 60],
        [150, 80, 170],
        [60, 180, 180],
        [230, 130, 40],
        [120, 120, 120],
        [235, 235, 225],
        [40, 40, 45],
        [140, 100, 60],
        [230, 140, 170],
    ],
    dtype=np.float32,
)

_THING_COLORS = [(220, 20, 60), (0, 130, 200), (255, 200, 0), (60, 180, 75), (145, 30, 180), (245, 130, 48)]
_STUFF_COLORS = [(120, 200, 90), (170, 90, 70), (70, 130, 220), (150, 150, 130), (210, 170, 210)]


def synthetic_categories() -> dict[int, Category]:
    """Thing ids 1-6 (shapes), stuff ids 7-11 (textures)."""
    cats: dict[int, Category] = {}
    for i, name in enumerate(THING_SHAPES):
        cats[i + 1] = Category(i + 1, name, True, _THING_COLORS[i])
    for j, name in enumerate(STUFF_TEXTURES):
        cid = len(THING_SHAPES) + j + 1
        cats[cid] = Category(cid, name, False, _STUFF_COLORS[j])
    return cats


@dataclass
class SceneConfig:
    """The generator's knobs (all documented in the README)."""

    size: int = 128  # image side in pixels
    max_instances: int = 10  # instances per image are drawn uniformly from min_instances..max_instances
    min_instances: int = 0
    min_size: float = 10.0  # smallest thing extent in pixels
    max_size: float = 56.0  # largest thing extent in pixels
    touch_prob: float = 0.3  # chance that an instance is placed against one of its own class
    crowd_prob: float = 0.15  # chance that an image has a crowd cluster
    clutter_prob: float = 0.4  # chance of small unlabelled (void) clutter patches
    void_border_prob: float = 0.25  # chance that an instance's 1-px rim is left unlabelled
    min_area: int = 12  # visible thing pixels below this become void
    min_stuff_area: int = 24  # stuff segments below this become void
    stuff_per_image: tuple[int, int] = (2, 4)  # how many stuff classes an image shows
    noise: float = 6.0  # std of pixel noise (0-255 scale)
    blur: float = 0.5  # sigma in pixels of the final Gaussian blur
    preset: str = "realistic"  # "realistic" (class-typical appearance), "camouflage" (shape is the only cue), "dense"
    camouflage_prob: float = 0.1  # realistic and dense presets: share of instances that wear the surrounding stuff

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0 <= self.camouflage_prob <= 1:
            raise InputError(f"camouflage_prob must lie in [0, 1], got {self.camouflage_prob}")
        if self.size < 32:
            raise InputError(f"size must be at least 32, got {self.size}")
        if not 0 < self.min_size <= self.max_size:
            raise InputError(f"need 0 < min_size <= max_size, got {self.min_size}, {self.max_size}")
        if self.max_size > self.size:
            raise InputError(f"max_size {self.max_size:g} is larger than the {self.size} px image")
        if not 0 <= self.min_instances <= self.max_instances:
            raise InputError(
                f"need 0 <= min_instances <= max_instances, got {self.min_instances}, {self.max_instances}"
            )
        if self.noise < 0 or self.blur < 0:
            raise InputError(f"noise and blur must be >= 0, got {self.noise}, {self.blur}")
        lo, hi = self.stuff_per_image
        if not 1 <= lo <= hi <= len(STUFF_TEXTURES):
            raise InputError(f"stuff_per_image must lie in [1, {len(STUFF_TEXTURES)}]")


# settings a preset changes from SceneConfig's defaults (the realistic preset's); a setting given explicitly wins
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "realistic": {},
    "camouflage": {},
    "dense": {
        "size": 256,
        "min_instances": 20,
        "max_instances": 80,
        "min_size": 4.0,
        "max_size": 20.0,
        "touch_prob": 0.6,
        "crowd_prob": 0.05,
        "min_area": 6,
        "stuff_per_image": (1, 3),
        "noise": 10.0,
        "blur": 0.9,
    },
}


def scene_config(preset: str = "realistic", **given: Any) -> SceneConfig:
    """The scene settings of ``preset`` with the settings ``given`` (those that are not None) on top."""
    if preset not in PRESETS:
        raise InputError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    return SceneConfig(
        preset=preset, **{**PRESET_DEFAULTS[preset], **{k: v for k, v in given.items() if v is not None}}
    )


# ----------------------------------------------------------------------------- shapes
def _rot(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]], dtype=np.float64)


def _poly_mask(size: int, pts: np.ndarray) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return m


def _ellipse_mask(size: int, cx: float, cy: float, ax: float, ay: float, angle: float) -> np.ndarray:
    """Filled ellipse (sub-pixel centre and axes through OpenCV's 4-bit fixed point)."""
    m = np.zeros((size, size), np.uint8)
    centre, axes = (int(cx * 16), int(cy * 16)), (int(ax * 16), int(ay * 16))
    cv2.ellipse(m, centre, axes, math.degrees(angle), 0, 360, 1, -1, lineType=cv2.LINE_8, shift=4)
    return m.astype(bool)


def shape_mask(shape: str, size: int, cx: float, cy: float, extent: float, angle: float, aspect: float) -> np.ndarray:
    """Boolean (size, size) mask of one thing shape centred at (cx, cy)."""
    r = extent / 2.0
    sx, sy = r * aspect, r / aspect
    centre = np.array([cx, cy])
    if shape in ("disk", "ring"):
        m = _ellipse_mask(size, cx, cy, sx, sy, angle)
        if shape == "ring":
            m &= ~_ellipse_mask(size, cx, cy, sx / 2, sy / 2, angle)
        return m
    if shape == "square":
        pts = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]]) * 0.85
        return _poly_mask(size, _rot(pts, angle) + centre).astype(bool)
    if shape == "triangle":
        k = np.array([math.pi / 2 + i * 2 * math.pi / 3 for i in range(3)])
        pts = np.stack([np.cos(k) * sx, -np.sin(k) * sy], axis=1)
        return _poly_mask(size, _rot(pts, angle) + centre).astype(bool)
    if shape == "cross":
        w = 0.32
        a = np.array([[-sx, -sy * w], [sx, -sy * w], [sx, sy * w], [-sx, sy * w]])
        b = np.array([[-sx * w, -sy], [sx * w, -sy], [sx * w, sy], [-sx * w, sy]])
        return (_poly_mask(size, _rot(a, angle) + centre) | _poly_mask(size, _rot(b, angle) + centre)).astype(bool)
    if shape == "star":
        k = np.arange(10) * math.pi / 5 + math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        pts = np.stack([np.cos(k) * sx * rad, -np.sin(k) * sy * rad], axis=1)
        return _poly_mask(size, _rot(pts, angle) + centre).astype(bool)
    raise ValueError(f"unknown shape {shape}")


# ----------------------------------------------------------------------------- textures
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x, y


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), sigma)
    n -= n.mean()
    return n / (n.std() + 1e-6)


def thing_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Blend weights in [0, 1] for a thing's two colours (one of THING_TEXTURES)."""
    x, y = _grid(size)
    kind = THING_TEXTURES[rng.integers(len(THING_TEXTURES))]
    if kind == "solid":
        return np.zeros((size, size), np.float32)
    th = rng.uniform(0, math.pi)
    period = rng.uniform(4, 9)
    if kind == "stripes":
        u = x * math.cos(th) + y * math.sin(th)
        return (np.sin(2 * math.pi * u / period) > 0).astype(np.float32)
    if kind == "checker":
        u, v = _rot(np.stack([x.ravel(), y.ravel()], 1), th).T.reshape(2, size, size)
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    ox, oy = rng.uniform(0, period, 2)
    dx = (x + ox) % period - period / 2
    dy = (y + oy) % period - period / 2
    return (dx**2 + dy**2 < (period * 0.3) ** 2).astype(np.float32)


def stuff_texture(kind: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Blend weights in [0, 1] for a stuff class's texture family."""
    x, y = _grid(size)
    if kind == "grass":  # fine noise stretched vertically: blades
        n = rng.standard_normal((size, size)).astype(np.float32)
        n = cv2.GaussianBlur(n, (0, 0), sigmaX=0.6, sigmaY=2.5)
        return np.clip(0.5 + 0.9 * n / (n.std() + 1e-6) * 0.5, 0, 1)
    if kind == "brick":  # offset courses with mortar lines
        h = rng.uniform(5, 8)
        w = h * rng.uniform(1.8, 2.6)
        row = np.floor(y / h)
        xs = x + (row % 2) * w / 2
        mortar = ((y % h) < 1.2) | ((xs % w) < 1.2)
        return np.where(mortar, 1.0, 0.15 * rng.random((size, size))).astype(np.float32)
    if kind == "water":  # wobbly horizontal-ish waves
        lam = rng.uniform(5, 8)
        wob = _smooth_noise(rng, size, 6) * rng.uniform(2, 4)
        th = rng.uniform(-0.4, 0.4)
        u = y * math.cos(th) + x * math.sin(th) + wob
        return (0.5 + 0.5 * np.sin(2 * math.pi * u / lam)).astype(np.float32)
    if kind == "gravel":  # blotches
        n = _smooth_noise(rng, size, 1.6)
        return (n > 0.3).astype(np.float32) * 0.85 + 0.15 * (n > -0.6)
    if kind == "weave":  # diagonal cloth: two crossed fine gratings
        p = rng.uniform(3, 4.5)
        a = np.sin(2 * math.pi * (x + y) / p)
        b = np.sin(2 * math.pi * (x - y) / p)
        return (0.5 + 0.25 * (a + b)).astype(np.float32)
    raise ValueError(f"unknown stuff texture {kind}")


def _two_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    i, j = rng.choice(len(PALETTE), size=2, replace=False)
    return PALETTE[i], PALETTE[j]


def _paint(img: np.ndarray, mask: np.ndarray, weights: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> None:
    w = weights[mask][:, None]
    img[mask] = c0 * (1 - w) + c1 * w


# ----------------------------------------------------------------------------- appearance
# Realistic preset. Each thing class has two hue modes (degrees): its own and, less often, the first mode of
# another class, so that colour narrows a thing's class down without settling it.
THING_HUES = {
    "disk": (0.0, 28.0),
    "square": (215.0, 180.0),
    "triangle": (52.0, 0.0),
    "ring": (125.0, 52.0),
    "cross": (285.0, 215.0),
    "star": (28.0, 125.0),
}
THING_PRIMARY_PROB = 0.55  # chance of a class's own hue mode
# Each stuff class: hue range (degrees), saturation range and value range of its base colour.
STUFF_LOOKS = {
    "grass": ((80.0, 135.0), (0.35, 0.7), (0.3, 0.6)),
    "brick": ((0.0, 22.0), (0.4, 0.65), (0.4, 0.65)),
    "water": ((190.0, 225.0), (0.35, 0.75), (0.4, 0.75)),
    "gravel": ((0.0, 360.0), (0.0, 0.1), (0.35, 0.7)),
    "weave": ((25.0, 45.0), (0.12, 0.35), (0.6, 0.88)),
}
MIN_CONTRAST = 30.0  # LAB distance a non-camouflaged object keeps from its surroundings' mean colour (redraws)


def _hsv(h: float, sat: float, val: float) -> np.ndarray:
    """RGB (0-255, float32) of a hue in degrees, saturation and value in [0, 1]."""
    return np.array(colorsys.hsv_to_rgb((h % 360.0) / 360.0, sat, val), np.float32) * 255


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIE LAB (L in 0-100) of RGB colours in 0-255, any leading shape."""
    a = np.asarray(rgb, np.float32).reshape(-1, 1, 3) / 255
    return cv2.cvtColor(a, cv2.COLOR_RGB2LAB).reshape(np.shape(rgb))


DENSE_PRIMARY_PROB = 1 / 3  # dense preset: chance of a class's own hue; else the first hue of any class


def thing_colour(rng: np.random.Generator, shape: str, dense: bool = False) -> np.ndarray:
    """One instance's base colour, drawn from its class's colour family (dense: mostly from any class's)."""
    primary, secondary = THING_HUES[shape]
    if dense:
        hues = [h for h, _ in THING_HUES.values()]
        hue = primary if rng.random() < DENSE_PRIMARY_PROB else hues[int(rng.integers(len(hues)))]
        return _hsv(hue + rng.normal(0, 8), rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))
    hue = primary if rng.random() < THING_PRIMARY_PROB else secondary
    return _hsv(hue + rng.normal(0, 8), rng.uniform(0.45, 0.95), rng.uniform(0.45, 0.95))


def stuff_colours(rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A stuff region's two colours: its class's typical base colour and a darker shade of it."""
    (h0, h1), (s0, s1), (v0, v1) = STUFF_LOOKS[kind]
    base = _hsv(rng.uniform(h0, h1), rng.uniform(s0, s1), rng.uniform(v0, v1))
    return base, base * rng.uniform(0.55, 0.8)


class CamouflageLook:
    """The camouflage preset: shared-palette colours and textures for every class."""

    def stuff(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, kind: str) -> None:
        tex = stuff_texture(kind, rng, img.shape[0])
        _paint(img, mask, tex, *_two_colours(rng))

    def thing(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, shape: str, under: np.ndarray) -> None:
        tex = thing_texture(rng, img.shape[0])
        c0, c1 = _two_colours(rng)
        _paint(img, mask, tex, c0, c1)


class RealisticLook:
    """The realistic preset: class-typical colours; smooth shaded objects that mostly stand out."""

    def __init__(self, camouflage_prob: float, dense: bool = False) -> None:
        self.camouflage_prob = camouflage_prob
        self.dense = dense  # colour hints at the class far less (the dense preset)
        self.stuff_colours: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def stuff(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, kind: str) -> None:
        tex = stuff_texture(kind, rng, img.shape[0])
        self.stuff_colours[kind] = stuff_colours(rng, kind)
        _paint(img, mask, tex, *self.stuff_colours[kind])

    def thing(self, rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, shape: str, under: np.ndarray) -> None:
        """Paint one instance; ``under`` holds the stuff texture index of every pixel (-1 where none)."""
        s = img.shape[0]
        ring = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & ~mask
        if not ring.any():
            ring = mask
        if rng.random() < self.camouflage_prob:  # wears the look of the stuff around it
            kinds = under[ring]
            kinds = kinds[kinds >= 0]
            if kinds.size:
                kind = STUFF_TEXTURES[int(np.bincount(kinds).argmax())]
                _paint(img, mask, stuff_texture(kind, rng, s), *self.stuff_colours[kind])
                return
        around = lab(img[ring].mean(0))
        for _ in range(4):  # objects usually stand out from what surrounds them
            colour = thing_colour(rng, shape, self.dense)
            if np.linalg.norm(lab(colour) - around) >= MIN_CONTRAST:
                break
        # finish: a linear shading across the object and mild smooth texture
        x, y = _grid(s)
        py, px = np.nonzero(mask)
        extent = max(np.ptp(px), np.ptp(py)) + 1.0
        th = rng.uniform(0, 2 * math.pi)
        ramp = ((x - px.mean()) * math.cos(th) + (y - py.mean()) * math.sin(th)) / extent  # about -0.5..0.5
        shade = 1 + rng.uniform(0.1, 0.3) * ramp + 0.03 * _smooth_noise(rng, s, 1.5)
        img[mask] = np.clip(colour[None] * shade[mask][:, None], 0, 255)


def scene_look(cfg: SceneConfig) -> CamouflageLook | RealisticLook:
    """The painter of ``cfg.preset`` (one per scene: the realistic look remembers its stuff colours)."""
    if cfg.preset == "camouflage":
        return CamouflageLook()
    return RealisticLook(cfg.camouflage_prob, dense=cfg.preset == "dense")


# ----------------------------------------------------------------------------- scenes
@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    ids: np.ndarray  # (H, W) uint32 panoptic ids, 0 = void
    segments: list[SegmentInfo]


def _stuff_layout(rng: np.random.Generator, cfg: SceneConfig) -> tuple[np.ndarray, list[int]]:
    """Irregular stuff regions: argmax of smooth random fields, one per chosen class."""
    lo, hi = cfg.stuff_per_image
    k = int(rng.integers(lo, hi + 1))
    classes = sorted(rng.choice(len(STUFF_TEXTURES), size=k, replace=False).tolist())
    s = cfg.size
    fields = []
    for _ in classes:
        f = _smooth_noise(rng, s, sigma=s / rng.uniform(5, 10))
        # a random tilt lets some regions look like a horizon, others like islands
        g = rng.normal(0, 1.2, 2)
        x, y = _grid(s)
        fields.append(f + (g[0] * (x / s - 0.5) + g[1] * (y / s - 0.5)) * 2)
    label = np.argmax(np.stack(fields), axis=0)
    return label, classes


def _place(rng: np.random.Generator, cfg: SceneConfig, extent: float) -> tuple[float, float]:
    m = extent * 0.3
    return rng.uniform(m, cfg.size - m), rng.uniform(m, cfg.size - m)


def make_scene(rng: np.random.Generator, cfg: SceneConfig) -> Scene:
    """Render one scene and its panoptic ground truth."""
    s = cfg.size
    n_things = len(THING_SHAPES)
    img = np.zeros((s, s, 3), np.float32)
    ids = np.zeros((s, s), np.uint32)

    look = scene_look(cfg)

    # Stuff first: one texture family per class, colours as the preset says.
    layout, stuff_classes = _stuff_layout(rng, cfg)
    stuff_label = np.zeros((s, s), np.int32)  # category id per pixel under the things
    under = np.full((s, s), -1, np.int64)  # stuff texture index per pixel
    for k, c in enumerate(stuff_classes):
        m = layout == k
        look.stuff(rng, img, m, STUFF_TEXTURES[c])
        stuff_label[m] = n_things + 1 + c
        under[m] = c

    # Things: list of (class index, mask), painted in order; later ones occlude.
    things: list[tuple[int, np.ndarray, bool]] = []
    n = int(rng.integers(cfg.min_instances, cfg.max_instances + 1))
    for _ in range(n):
        extent = math.exp(rng.uniform(math.log(cfg.min_size), math.log(cfg.max_size)))
        if things and rng.random() < cfg.touch_prob:
            cls, prev, _ = things[int(rng.integers(len(things)))]
            py, px = np.nonzero(prev)
            if py.size == 0:
                continue
            pcx, pcy = px.mean(), py.mean()
            pext = max(np.ptp(px), np.ptp(py)) + 1
            extent = float(np.clip(pext * rng.uniform(0.7, 1.3), cfg.min_size, cfg.max_size))
            d = (pext + extent) / 2 * rng.uniform(0.75, 0.95)
            a = rng.uniform(0, 2 * math.pi)
            cx, cy = pcx + d * math.cos(a), pcy + d * math.sin(a)
        else:
            cls = int(rng.integers(n_things))
            cx, cy = _place(rng, cfg, extent)
        mask = shape_mask(THING_SHAPES[cls], s, cx, cy, extent, rng.uniform(0, 2 * math.pi), rng.uniform(0.8, 1.25))
        if mask.sum() == 0:
            continue
        things.append((cls, mask, False))

    # A crowd: a tight cluster of small objects of one class, one iscrowd region.
    if rng.random() < cfg.crowd_prob:
        cls = int(rng.integers(n_things))
        cx, cy = _place(rng, cfg, 30)
        union = np.zeros((s, s), bool)
        for _ in range(int(rng.integers(4, 9))):
            ox, oy = rng.normal(0, 6, 2)
            union |= shape_mask(THING_SHAPES[cls], s, cx + ox, cy + oy, rng.uniform(5, 8), rng.uniform(0, 6.3), 1.0)
        if union.any():
            things.insert(int(rng.integers(len(things) + 1)), (cls, union, True))

    top = np.full((s, s), -1, np.int32)  # the last thing painted over each pixel: the one that shows
    for k, (cls, mask, _) in enumerate(things):
        look.thing(rng, img, mask, THING_SHAPES[cls], under)
        top[mask] = k
    visible = [top == k for k in range(len(things))]

    # Void clutter: a few small jagged patches of speckle, unlabelled (no thing class looks like them).
    void = np.zeros((s, s), bool)
    if rng.random() < cfg.clutter_prob:
        for _ in range(int(rng.integers(1, 3))):
            cx, cy = rng.uniform(0, s, 2)
            k = np.sort(rng.uniform(0, 2 * math.pi, 7))
            rad = rng.uniform(2, 7, 7)
            pts = np.stack([cx + rad * np.cos(k), cy + rad * np.sin(k)], axis=1)
            m = _poly_mask(s, pts).astype(bool)
            speckle = rng.random((s, s)) > 0.5
            img[m & speckle] = PALETTE[int(rng.integers(len(PALETTE)))]
            img[m & ~speckle] = PALETTE[int(rng.integers(len(PALETTE)))]
            void |= m

    segments: list[SegmentInfo] = []
    occupied = void.copy()
    counters = np.zeros(n_things, int)
    for (cls, _, crowd), vis in zip(things, visible):
        vis = vis & ~void
        if not crowd and rng.random() < cfg.void_border_prob:  # an annotator's loose outline
            inner = cv2.erode(vis.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            occupied |= vis & ~inner
            vis = inner
        if vis.sum() < cfg.min_area and not crowd:
            occupied |= vis  # a remnant too small to label: void
            continue
        if not vis.any():
            continue
        counters[cls] += 1
        sid = (cls + 1) * 1000 + int(counters[cls])
        ids[vis] = sid
        occupied |= vis
        segments.append(SegmentInfo(sid, cls + 1, crowd, int(vis.sum()), bbox_of(vis)))
    for c in stuff_classes:
        cid = n_things + 1 + c
        m = (stuff_label == cid) & ~occupied
        if m.sum() < cfg.min_stuff_area:
            continue
        sid = cid * 1000
        ids[m] = sid
        segments.append(SegmentInfo(sid, cid, False, int(m.sum()), bbox_of(m)))

    img += rng.normal(0, cfg.noise, img.shape).astype(np.float32)
    if cfg.blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), cfg.blur)
    return Scene(np.clip(img, 0, 255).astype(np.uint8), ids, segments)


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: independent of generation order."""
    split_code = sum(ord(ch) * 131**i for i, ch in enumerate(split)) % (2**31)
    return np.random.default_rng([seed, split_code, index])


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path, Path]:
    """(panoptic JSON, panoptic PNG folder, image folder) of ``split`` in a folder written by :func:`generate`."""
    root = Path(root)
    return root / f"panoptic_{split}.json", root / "panoptic" / split, root / "images" / split


def write_split(out: Path, split: str, num: int, seed: int, cfg: SceneConfig, start_id: int = 1) -> dict[str, Any]:
    """Render ``num`` scenes into ``out`` in the COCO panoptic layout; return the JSON."""
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "panoptic" / split).mkdir(parents=True, exist_ok=True)
    cats = synthetic_categories()
    images, records = [], []
    for i in range(num):
        scene = make_scene(scene_rng(seed, split, i), cfg)
        image_id = start_id + i
        stem = f"{image_id:08d}"
        cv2.imwrite(str(out / "images" / split / f"{stem}.png"), scene.image[..., ::-1])
        write_panoptic_png(out / "panoptic" / split / f"{stem}.png", scene.ids)
        images.append({"id": image_id, "file_name": f"{stem}.png", "height": cfg.size, "width": cfg.size})
        records.append(PanopticRecord(image_id, f"{stem}.png", scene.segments, f"{stem}.png", cfg.size, cfg.size))
    info = {"description": "cqbnet synthetic panoptic scenes", "split": split, "seed": seed, "config": asdict(cfg)}
    doc = panoptic_json(cats, images, records, info)
    write_json(out / f"panoptic_{split}.json", doc)
    return doc


SPLIT_START_IDS = {"train": 1, "val": 1_000_001, "test": 2_000_001}  # image ids never collide across splits


def generate(
    out: str | os.PathLike,
    num_train: int = 2000,
    num_val: int = 300,
    seed: int = 0,
    cfg: SceneConfig | None = None,
    overwrite: bool = False,
    num_test: int = 300,
) -> Path:
    """Write train, val and test splits under ``out`` (built aside, moved into place when complete).

    Layout: ``images/{split}/*.png``, ``panoptic/{split}/*.png`` and
    ``panoptic_{split}.json`` (COCO panoptic, categories included). Each split draws from its own random
    streams (:func:`scene_rng`), so adding the test split leaves train and val identical for the same seed.
    Choices are made on val; test is for the numbers reported after them.
    """
    cfg = cfg or SceneConfig()
    cfg.validate()
    if num_train < 0 or num_val < 0 or num_test < 0:
        raise InputError("image counts must be >= 0")
    out = Path(out)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        for split, num in (("train", num_train), ("val", num_val), ("test", num_test)):
            if split != "test" or num > 0:  # no test split at all rather than an empty one
                write_split(tmp, split, num, seed, cfg, start_id=SPLIT_START_IDS[split])
    return out


def add_test_split(root: str | os.PathLike, num_test: int = 300) -> Path:
    """Write the test split into a folder :func:`generate` wrote before test splits existed, with the seed and
    scene settings its val split records (so it is the split :func:`generate` would write today). Its JSON is
    written last: an interrupted call leaves no ``panoptic_test.json`` and is simply repeated."""
    root = Path(root)
    info = read_json(root / "panoptic_val.json", "val split").get("info", {})
    if "seed" not in info or not isinstance(info.get("config"), dict):
        raise InputError(f"{root}: not written by 'cqbnet data synth' (no seed and scene config in its val JSON)")
    known = {f.name for f in fields(SceneConfig)}
    given = {k: v for k, v in info["config"].items() if k in known}
    if isinstance(given.get("stuff_per_image"), list):  # JSON has no tuples
        given["stuff_per_image"] = tuple(given["stuff_per_image"])
    cfg = SceneConfig(**given)
    cfg.validate()
    write_split(root, "test", num_test, int(info["seed"]), cfg, start_id=SPLIT_START_IDS["test"])
    if (root / OUTPUT_MARK).is_file():  # cqbnet's own files, not the user's
        add_to_record(root, [Path("images/test"), Path("panoptic/test"), Path("panoptic_test.json")])
    return root

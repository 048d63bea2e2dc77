"""Warm-ups of the weak-supervision terms: a loss weight that ramps in, and a ramp over images.

A term learned from an untrained network's guesses (BoxInst's pairwise term, Cls2Pixel's pseudo labels, paper 003's
self-training and pseudo labels, paper 002's mined labels) is brought in gradually.
"""

from __future__ import annotations

from typing import Any


def ramp_weight(iteration: int, warmup: int = 10000) -> float:
    """A warmed-up term's weight: 0 -> 1 linearly over ``warmup`` iterations (BoxInst's pairwise term; also
    Cls2Pixel's pseudo-label and energy terms)."""
    return min(1.0, iteration / warmup) if warmup > 0 else 1.0


def image_share(image_id: Any) -> float:
    """u_i in [0, 1), fixed per image id: when in the warm-up an image starts learning from its pseudo labels."""
    h = 0
    for ch in str(image_id):
        h = (h * 1000003 + ord(ch)) % 2**32
    return ((h * 2654435761) % 2**32) / 2**32

"""Paper 000's published planner: Eq. 8's coefficients and the ratios of Tables 1 and 2.

``paper-coco`` is the quality model the paper fitted on COCO with ResNet-50
(Eq. 8, ascending powers of the kind's ratio). Paper 000 leaves no stuff curve
for stuff maps (Eq. 8, "not a valid weak supervision") and gives no curve for
points, so a plan from this preset never buys points.

Two readings of Eqs. 5-7 are offered:

* ``paper-coco``: every curve is a marginal rate integrated from 0 to rho
  (Eq. 7 applied to all kinds). The panoptic curve of Eq. 5 falls from 0.31 at
  rho_P = 0 to -0.12 at rho_P = 1, i.e. it is the diminishing gain of adding
  panoptic labels, so it is integrated like the others.
* ``paper-coco-literal``: the panoptic curve is used as printed (Eq. 5 is not
  integrated in the text), the weak curves integrated (Eq. 7). With it f1 falls
  as rho_P grows, so its front favours the cheapest plans.

Neither reading reproduces Table 1's f1 column, and Table 1's f2 column only
adds up with boxes at C_B = 0.30 per image where the text and Table 2 use
0.03; the README records the arithmetic (``tests/test_planner.py`` checks it).
"""

from __future__ import annotations

import numpy as np

from cqbnet.errors import InputError
from cqbnet.planner.quality_model import QualityModel, Term
from cqbnet.planner.regression import PolynomialCurve

COCO_THING_SHARE = 80 / 133  # r_th of Eq. 4: 80 thing and 53 stuff classes

# Eq. 8: (kind, region) -> coefficients of 1, rho, rho^2, rho^3.
PAPER_COCO_COEFFICIENTS = {
    ("P", "th"): (0.3101, -1.407, 2.420, -1.439),
    ("P", "st"): (0.3324, -1.592, 2.927, -1.850),
    ("I", "th"): (0.0043, 0.0422, -0.2969, 0.5146),
    ("I", "st"): (-0.0089, 0.0439, 0.19, -3.148),
    ("B", "th"): (0.0047, 0.0910, -0.4602, 0.8664),
    ("B", "st"): (0.024, -0.1548, 0.4131, -0.3491),
    ("S", "th"): (0.0096, -0.1837, 0.7641, -0.7982),
}

# Table 1 (right): name -> (rho_P, rho_I, rho_B, rho_S), PQ_all, f1, f2 as printed (ResNet-50).
# O7's f1 is missing from the text.
PAPER_TABLE1 = {
    "O1": ((0.067, 0.733, 0.067, 0.133), 39.2, 1.208, 0.182),
    "O2": ((0.125, 0.687, 0.063, 0.125), 39.6, 1.336, 0.233),
    "O3": ((0.083, 0.457, 0.375, 0.083), 41.6, 1.400, 0.255),
    "O4": ((0.120, 0.440, 0.360, 0.080), 41.9, 1.509, 0.285),
    "O5": ((0.214, 0.394, 0.321, 0.071), 42.1, 1.714, 0.362),
    "O6": ((0.290, 0.355, 0.290, 0.065), 42.3, 1.817, 0.423),
    "O7": ((0.500, 0.166, 0.167, 0.167), 42.7, None, 0.664),
    "R1": ((0.10, 0.40, 0.10, 0.40), 36.5, 1.159, 0.404),
    "R2": ((0.15, 0.55, 0.20, 0.10), 37.9, 1.463, 0.281),
    "R3": ((0.20, 0.15, 0.45, 0.20), 39.0, 1.527, 0.472),
    "R4": ((0.25, 0.25, 0.25, 0.25), 39.5, 1.556, 0.496),
    "R5": ((0.30, 0.20, 0.30, 0.20), 40.8, 1.610, 0.527),
    "R6": ((0.40, 0.10, 0.45, 0.05), 41.7, 1.713, 0.570),
    "R7": ((0.30, 0.24, 0.23, 0.23), 41.2, 1.735, 0.530),
}
TABLE1_KINDS = ("P", "I", "B", "S")
TABLE1_BOX_COST = 0.30  # the C_B that Table 1's f2 column implies

# Table 2: module -> (kinds of the non-panoptic images in the baseline, in the upper bound),
# region, and per rho_P in (0.1, 0.3, 0.5): (baseline, module, upper) PQ and (baseline, upper) cost.
PAPER_TABLE2 = {
    "Cls2Box": (
        ("I",),
        ("B",),
        "th",
        ((40.1, 44.0, 47.3), (47.7, 49.2, 50.7), (50.4, 51.4, 51.7)),
        ((0.10, 0.13), (0.30, 0.32), (0.50, 0.51)),
    ),
    "Box2Mask": (
        ("B",),
        ("thing masks",),
        "th",
        ((47.3, 48.8, 49.4), (50.7, 51.0, 51.2), (51.7, 52.0, 52.1)),
        ((0.13, 0.38), (0.32, 0.52), (0.51, 0.66)),
    ),
    "GR st->th": (
        ("S",),
        ("S", "B"),
        "th",
        ((39.1, 39.7, 47.5), (47.6, 48.3, 50.6), (49.9, 50.6, 51.8)),
        ((0.71, 0.74), (0.78, 0.80), (0.84, 0.86)),
    ),
    "Cls2Pixel": (
        ("I",),
        ("S",),
        "st",
        ((25.3, 26.5, 31.6), (30.3, 31.5, 33.2), (32.0, 32.5, 33.3)),
        ((0.10, 0.71), (0.30, 0.78), (0.50, 0.84)),
    ),
    "GR th->st": (
        ("B",),
        ("B", "S"),
        "st",
        ((24.4, 26.1, 30.8), (29.9, 31.3, 33.4), (31.3, 32.8, 32.7)),
        ((0.13, 0.74), (0.32, 0.80), (0.51, 0.86)),
    ),
}
TABLE2_RHO_P = (0.1, 0.3, 0.5)

PRESETS = ("paper-coco", "paper-coco-literal")


def paper_coco(literal: bool = False, objective: str = "product") -> QualityModel:
    """Eq. 8 as a quality model; ``literal`` uses the panoptic curve unintegrated."""
    terms = [
        Term(kind, region, PolynomialCurve(np.asarray(c, dtype=float)), integrate=not (literal and kind == "P"))
        for (kind, region), c in PAPER_COCO_COEFFICIENTS.items()
    ]
    name = "paper 000 Eq. 8 (COCO, ResNet-50)" + (", literal reading" if literal else "")
    return QualityModel(terms, objective, COCO_THING_SHARE, name)


def preset(name: str, objective: str = "product") -> QualityModel:
    if name == "paper-coco":
        return paper_coco(False, objective)
    if name == "paper-coco-literal":
        return paper_coco(True, objective)
    raise InputError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")


def named_ratios(name: str) -> dict[str, dict[str, float]]:
    """The preset's named plans (Table 1's O1-O7 and R1-R7) as kind -> share."""
    if not name.startswith("paper-coco"):
        return {}
    return {n: dict(zip(TABLE1_KINDS, row[0])) for n, row in PAPER_TABLE1.items()}

"""The catalogue of label methods: how an image with a given set of label kinds is learnt from.

One entry per method, read by ``cqbnet fit``, ``cqbnet labels simulate`` (which writes each image's method into
the manifest), the docs and the tests. An entry names the label kinds an image needs, its per-image preparation,
the stages it needs before the final network (shared by every image of the fit that needs them), and what its
images give the final network: losses inside the network (its weak modules on), or pseudo panoptic targets with
ignore pixels. The paper's own method keeps its entry beside the toolkit's improved variant.

==========================  ======  ===========================================================================
method                      kinds   what the final network learns from
==========================  ======  ===========================================================================
``full``                    P       the panoptic masks
``modules-000``             I/B/S   paper 000's modules inside the network (Cls2Box, Cls2Pixel, Box2Mask, RR)
``tags-002``                I       paper 002's mining over segment proposals, inside the network
``boxes-tags-001``          B+I     paper 001's approximate labels, refined over ``fit.rounds`` rounds (predicted fill)
``boxes-tags-001-released`` B+I     paper 001's released rule: the whole-box fill, one refinement round
``points-003``              PT      paper 003's point branch inside the network (its online rule)
``points-crf``              PT      offline: a point-branch network's pseudo labels, refined by the dense CRF
==========================  ======  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from cqbnet.errors import InputError
from cqbnet.labels.kinds import kind_set_name

# stages a method can need before the final network (run once per fit, shared by every image that needs them)
CLASSIFIER = "classifier"  # paper 001 Sec. 3.3: the tag classifier whose CAMs give round 0's stuff
ROUND0 = "round0"  # paper 001: approximate labels from each image's boxes (GrabCut, proposals) and the CAMs
ROUNDS = "rounds"  # paper 001: networks trained on round r, round r + 1 refined from them
POINT_BRANCH = "point-branch"  # paper 003: a network with the point branch, trained on the clicks
PSEUDO = "pseudo-labels"  # its pseudo labels of the point images, refined by the dense CRF
PROPOSALS = "proposals"  # paper 002: each tags image's segment proposals, made before training
# paper 000's four weak modules (model.weak switches); papers 001 and 003's recipes train with them off
PAPER_000_MODULES = ("box2mask", "cls2box", "cls2pixel", "relation")


@dataclass(frozen=True)
class Method:
    """A way of learning from images of some label kinds (see the module docstring)."""

    name: str
    paper: str  # "000" .. "004", or "" for full supervision
    needs: frozenset[str]  # kinds an image must carry
    allows: frozenset[str]  # kinds it may carry besides (read by the in-network modules only)
    stages: tuple[str, ...]  # before the final network, in order
    gives: str  # what its images give the final network
    preparation: str  # per-image work before training ("" when none)
    weak: dict[str, Any] = field(default_factory=dict)  # model.weak switches the final network needs
    lr_factor: float = 1.0  # the final network's learning rate is the config's times the smallest factor of its mix
    fill: str = "predicted"  # paper 001's refinement rule (boxes-and-tags methods)
    rounds: int | None = None  # paper 001's refinement rounds (None: the config's fit.rounds)
    departs: str = ""  # where it departs from its paper
    compute: str = "the final network"  # the networks it trains (a fit shares each stage among its methods)

    def accepts(self, kinds: frozenset[str]) -> bool:
        """Whether an image with ``kinds`` can be learnt with this method."""
        return self.needs <= kinds and kinds <= self.needs | self.allows


_OPTIONAL = frozenset({"I", "B", "S"})
_BOXES_TAGS = Method(
    "boxes-tags-001",
    "001",
    frozenset({"B", "I"}),
    frozenset({"S"}),
    (CLASSIFIER, ROUND0, ROUNDS),
    "pseudo panoptic targets with ignore pixels (approximate labels)",
    "GrabCut and selective-search proposals per box, CAMs per tagged stuff class",
    fill="predicted",
    departs="rule 5 of the refinement fills only the pixels the network predicts (+4.1 PQ at round 1, "
    "benchmarks/boxes_tags.md); the classifier shares the network's backbone",
    compute="the tag classifier (fit.classifier_iter iterations), a network per refinement round (fit.rounds), "
    "the final network",
)
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "full",
            "",
            frozenset({"P"}),
            frozenset({"I", "B", "S", "PT"}),
            (),
            "its panoptic masks",
            "",
        ),
        Method(
            "modules-000",
            "000",
            frozenset(),
            _OPTIONAL,
            (),
            "losses inside the network: Cls2Box and Cls2Pixel (tags), Box2Mask (boxes), relation reasoning",
            "",
            weak={"box2mask": True, "cls2box": True, "cls2pixel": True},
            departs="Cls2Box teaches the detector through its pseudo boxes (model.weak.cls2box_mode); "
            "see docs/paper_000_cqbnet.md",
        ),
        Method(
            "tags-002",
            "002",
            frozenset({"I"}),
            frozenset(),
            (PROPOSALS,),
            "losses inside the network: segments mined from the tags (WSDDN + OICR over MoIPool), self-training",
            "selective-search segment proposals per image and its mirror image (worker processes, cached)",
            weak={"jtsm": True, "cls2box": False, "cls2pixel": False},
            departs="segments are pooled from the backbone at stride 8; see docs/paper_002_tags.md",
        ),
        _BOXES_TAGS,
        replace(
            _BOXES_TAGS,
            name="boxes-tags-001-released",
            fill="box",
            rounds=1,
            departs="the released code's rules, one refinement round; the classifier shares the network's backbone",
            compute="the tag classifier (fit.classifier_iter iterations), one network for the refinement round, the "
            "final network",
        ),
        Method(
            "points-003",
            "003",
            frozenset({"PT"}),
            _OPTIONAL,
            (),
            "losses inside the network: the point branch's dense pseudo labels, learnt online",
            "",
            weak={"points": True, "points_clicked_only": False},
            lr_factor=0.5,  # at the recipe's 0.02 the network diverges as the pseudo labels ramp in (points_collapse)
            departs="the paper's rule; lambda_sem is 1 for one click per segment and 0.1 for more (paper 003)",
        ),
        Method(
            "points-crf",
            "003",
            frozenset({"PT"}),
            _OPTIONAL,
            (POINT_BRANCH, PSEUDO),
            "pseudo panoptic targets: a point-branch network's labels, refined by the dense CRF",
            "the dense CRF per point image",
            departs="beyond paper 003: offline (a fresh network learns from fixed labels), each thing cut to its "
            "clicked parts, the CRF of paper 001 (benchmarks/points.md)",
            compute="the point-branch network, the final network",
        ),
    )
}
# the method an image gets when its manifest names none: the toolkit's best measured method for its kind set
DEFAULTS = {frozenset({"P"}): "full", frozenset({"B", "I"}): "boxes-tags-001", frozenset({"PT"}): "points-crf"}
# in-network methods that cannot share one final network (their modules would act on each other's images)
CONFLICTS = ({"modules-000", "tags-002"}, {"points-003", "points-crf"}, {"boxes-tags-001", "boxes-tags-001-released"})


def default_method(kinds: frozenset[str]) -> str:
    """The catalogue's method for an image with ``kinds`` when its manifest names none."""
    if kinds in DEFAULTS:
        return DEFAULTS[kinds]
    if "P" in kinds:
        return "full"
    if "PT" in kinds:
        return "points-crf"
    return "modules-000"


def method_of(name: str | None, kinds: frozenset[str], where: str = "") -> Method:
    """The catalogue entry an image is learnt with (its own ``method``, else the default for its kinds); an
    unknown name, or one whose kinds the image lacks, is an error naming the image (``where``)."""
    name = name or default_method(kinds)
    m = METHODS.get(name)
    if m is None:
        raise InputError(f"{where}unknown label method {name!r}; known methods: {', '.join(METHODS)}")
    if not m.accepts(kinds):
        need = kind_set_name(m.needs) or "some of I, B, S"
        raise InputError(
            f"{where}method {name} needs label kinds {need} (besides: {kind_set_name(m.allows) or 'none'}), "
            f"the image carries {kind_set_name(kinds)}"
        )
    return m


def check_mix(methods: set[str]) -> None:
    """Methods that cannot share one final network are refused (their modules would act on each other's images:
    paper 000's tag modules would also read paper 002's images, the online point branch the offline ones')."""
    for group in CONFLICTS:
        both = sorted(group & methods)
        if len(both) > 1:
            raise InputError(f"label methods {' and '.join(both)} cannot share one fit; give their images one of them")


def final_weak(methods: set[str], configured: dict[str, Any]) -> dict[str, Any]:
    """``model.weak`` of the final network: the configured settings with the switches every method of the mix
    needs (paper 002 turns paper 000's tag modules off, which would read its images too). The other modules stay
    as configured: each acts only on images of its kinds (``cqbnet.modeling.supervision``), and an image whose
    labels a stage turned into pseudo panoptic targets is no longer one of them."""
    weak = dict(configured)
    for name in sorted(methods):
        weak.update(METHODS[name].weak)
    return weak


def describe() -> list[dict[str, Any]]:
    """The catalogue as rows (``cqbnet fit --methods``, the docs)."""
    return [
        {
            "method": m.name,
            "paper": m.paper or "-",
            "kinds": kind_set_name(m.needs) or "any of I, B, S",
            "also": (kind_set_name(m.allows) if m.needs else "") or "-",
            "stages": list(m.stages),
            "preparation": m.preparation or "-",
            "gives": m.gives,
            "departs": m.departs or "-",
            "compute": m.compute,
            "default_for": [kind_set_name(k) for k, v in DEFAULTS.items() if v == m.name],
        }
        for m in METHODS.values()
    ]

"""Evaluation: panoptic quality (PQ/SQ/RQ), semantic mIoU, box and mask AP."""

from cqbnet.evaluation.panoptic_quality import PanopticQuality, PQResult, evaluate_panoptic_files

__all__ = ["PanopticQuality", "PQResult", "evaluate_panoptic_files"]

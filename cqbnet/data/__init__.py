"""Data formats (COCO panoptic PNG + JSON), datasets and the synthetic scenes."""

"""Model parts: backbones, semantic head, cascade R-CNN, the panoptic head of paper 004, the composed network."""

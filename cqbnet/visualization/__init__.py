"""Pictures a person can look at: panoptic overlays and weak labels drawn on images."""

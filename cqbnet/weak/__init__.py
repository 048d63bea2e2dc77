"""Weak supervision: paper 000's four modules (Cls2Box, Box2Mask, Cls2Pixel, relation reasoning), paper 003's
clicked points (fdd_points), paper 001's boxes and tags (approx_ground_truth), paper 002's tags alone (jtsm). The
online methods are plug-ins of one protocol (base.py: ``relabel`` or ``losses``, each reading its own images)."""

"""Weak-supervision modules of CQB-Net (paper 000): Cls2Box, Box2Mask, and more as they land."""

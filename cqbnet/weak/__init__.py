"""Weak-supervision modules of CQB-Net (paper 000): Cls2Box, Box2Mask, Cls2Pixel, relation reasoning."""

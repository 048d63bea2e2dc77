"""cqbnet: label-efficient panoptic segmentation.

Plan which labels to buy, train one panoptic model from whatever mix of labels a
dataset has, and evaluate it with metrics that agree with the COCO reference.
"""

__version__ = "0.1.0"

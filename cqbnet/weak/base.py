"""The plug-in protocol every online weak-supervision method follows, so that the network adds them in one loop.

A method is an ``nn.Module`` with a ``name`` (its losses are ``loss_<name>`` or ``loss_<name>_<term>``) and one of
two roles, both reading the batch's features and labels (:class:`~cqbnet.modeling.supervision.TrainingBatch`) and
the network's parts they need (``net``: the composed :class:`~cqbnet.network.panoptic_net.PanopticNet`, which
the plug-ins only read and never import, as it composes them):

* a **relabelling** method (``relabels = True``: paper 003's point branch, paper 002's mining) runs before the
  network's own losses: :meth:`WeakModule.relabel` returns its losses and the batch with the pseudo panoptic labels
  it gives its images, which the network's heads then learn from as from full labels;
* every other method (paper 000's Cls2Box, Cls2Pixel, Box2Mask, relation reasoning) adds losses after the
  network's detection and semantic losses: :meth:`WeakModule.losses`.

Which images a method teaches is its row of :data:`cqbnet.modeling.supervision.LOSS_IMAGES`; it reads them with
``batch.images_for(...)``, so routing and loss normalisation cannot disagree.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from torch import Tensor, nn

from cqbnet.modeling.supervision import TrainingBatch


def setting(default: Any, minimum: float = 0, choices: tuple[str, ...] | None = None) -> Any:
    """A field of a weak method's config dataclass (its ``model.weak.<name>`` block): its default, the smallest
    value a number may take and the values a choice may take, which :func:`cqbnet.network.build.check_weak`
    enforces when a config is read."""
    return field(default=default, metadata={"minimum": minimum, "choices": choices})


class WeakModule(nn.Module):
    """Base class of the online weak-supervision methods (see the module docstring)."""

    name: str = ""
    relabels: bool = False

    def relabel(self, batch: TrainingBatch, net: nn.Module) -> tuple[dict[str, Tensor], TrainingBatch]:
        """Losses, and the batch with this method's pseudo panoptic labels on its images (relabelling methods)."""
        raise NotImplementedError(f"{type(self).__name__} does not relabel")

    def losses(self, batch: TrainingBatch, net: nn.Module) -> dict[str, Tensor]:
        """This method's losses on its images (after the network's own losses)."""
        raise NotImplementedError(f"{type(self).__name__} adds no losses after the network's")

    def extra_repr(self) -> str:
        return f"name={self.name!r}" + (", relabels" if self.relabels else "")


def describe(modules: list[WeakModule]) -> list[dict[str, Any]]:
    """The plug-ins of a network, in the order it runs them."""
    return [{"name": m.name, "relabels": m.relabels, "class": type(m).__name__} for m in modules]

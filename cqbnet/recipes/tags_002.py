"""Paper 002's recipe from tags alone: the mining branch inside the network (:mod:`cqbnet.weak.jtsm`, switched on by
the method ``tags-002``) and, before training, the segment proposals of the tags images and their mirror images,
made once in worker processes and cached (:func:`proposals`), which the mining branch pools the segments from."""

from __future__ import annotations

from pathlib import Path

from cqbnet.labels.catalogue import PROPOSALS
from cqbnet.recipes.stages import Context, Stage, digest


def proposals_folder(ctx: Context) -> Path:
    """Where the proposals go: the shared cache when there is one (they depend on the image alone), else the fit's
    own folder."""
    return (ctx.cache / "segment_proposals") if ctx.cache is not None else (ctx.out / PROPOSALS)


def proposals(ctx: Context, mined: list) -> Path:
    """``cqbnet fit``'s stage ``proposals``: the segment proposals of the ``mined`` images (and their mirror
    images, when training flips). With ``data.train_short_sizes`` the network meets resized copies, whose
    proposals it makes as it meets them: no stage then. Where the mining branch reads them."""
    folder = proposals_folder(ctx)
    if ctx.cfg["data"].get("train_short_sizes"):
        return folder

    def make(_: Path) -> None:
        from cqbnet.recipes.prepare import segment_proposal_files

        ids = [lab.image_id for lab in mined]
        flip = bool(ctx.cfg["data"]["flip"])
        segment_proposal_files(ctx.manifest, ids, folder, flip, ctx.workers, ctx.progress, ctx.ray_address)

    what = "paper 002's segment proposals of the tags images (and their mirror images)"
    ctx.add(Stage(PROPOSALS, what, 0, 0, len(mined), {"images": digest([lab.image_id for lab in mined])}, make))
    return folder

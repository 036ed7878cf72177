"""The test-time views of a batch: mirrors, turns and a zoom (what TTA averages and training's out-of-fold
predictions keep)."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.choices import VIEWS

ZOOM = 0.875  # the zoom view keeps the centre 7/8 of each side (as a 224 crop of a 256 resize), scaled back up


def view_of(x: torch.Tensor, view: str | None) -> torch.Tensor:
    """The batch as ``view`` shows it: mirrored (``hflip``), upside down (``vflip``), turned (``rot90``...), or its
    centre scaled up to the full size (``zoom``, ``zoom-hflip``: then mirrored)."""
    if view is None:
        return x
    if view == "hflip":
        return torch.flip(x, dims=[3])
    if view == "vflip":
        return torch.flip(x, dims=[2])
    if view in ("zoom", "zoom-hflip"):
        h, w = x.shape[-2:]
        dh, dw = round(h * (1 - ZOOM) / 2), round(w * (1 - ZOOM) / 2)
        zoomed = nn.functional.interpolate(x[..., dh:h - dh, dw:w - dw], size=(h, w), mode="bilinear",
                                           align_corners=False)
        return torch.flip(zoomed, dims=[3]) if view == "zoom-hflip" else zoomed
    turns = {"rot90": 1, "rot180": 2, "rot270": 3}
    if view not in turns:
        raise ValueError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    return torch.rot90(x, turns[view], dims=(2, 3))

"""What the model's outputs mean: for two classes one logit (the log-odds of the positive class) with binary
cross-entropy, for K classes K logits with cross-entropy; and the test-time views (mirrors, turns) of a batch.

Two classes keep one logit: the cats-versus-dogs figures (and every run made so far) are one-logit models, and
a second logit adds nothing a sigmoid does not give.
"""

from __future__ import annotations

import torch
from torch import nn

VIEWS = ("hflip", "vflip", "rot90", "rot180", "rot270")  # what a TTA view does to an NCHW batch (square images)


def view_of(x: torch.Tensor, view: str | None) -> torch.Tensor:
    """The batch as ``view`` shows it: mirrored (``hflip``), upside down (``vflip``) or turned (``rot90``...)."""
    if view is None:
        return x
    if view == "hflip":
        return torch.flip(x, dims=[3])
    if view == "vflip":
        return torch.flip(x, dims=[2])
    turns = {"rot90": 1, "rot180": 2, "rot270": 3}
    if view not in turns:
        raise ValueError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
    return torch.rot90(x, turns[view], dims=(2, 3))


class Task:
    """The loss, accuracy and probabilities of a model with ``n_classes`` classes.

    Args:
        n_classes: 2 (one logit) or more (one logit per class).
    """

    def __init__(self, n_classes: int = 2):
        self.n_classes, self.binary = n_classes, n_classes == 2

    @property
    def outputs(self) -> int:
        return 1 if self.binary else self.n_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Binary cross-entropy on P(positive) targets, or cross-entropy on class indices or soft (n, K) targets."""
        if self.binary:
            return nn.functional.binary_cross_entropy_with_logits(logits.view(-1), target, reduction=reduction)
        return nn.functional.cross_entropy(logits, target if target.is_floating_point() and target.ndim == 2
                                           else target.long(), reduction=reduction)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """How many of the batch's images the logits put in their class (a tensor on the device: no sync)."""
        if self.binary:
            return ((logits.view(-1) > 0).float() == y).sum()
        return (logits.argmax(dim=1) == y.long()).sum()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """P(positive) per image (two classes), or the (n, K) class probabilities."""
        return torch.sigmoid(logits.view(-1)) if self.binary else torch.softmax(logits, dim=1)

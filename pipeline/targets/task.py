"""What the model's outputs mean: for two classes one logit (the log-odds of the positive class) with binary
cross-entropy, for K classes K logits with cross-entropy (the test-time views are :mod:`pipeline.compute.views`).

Two classes keep one logit: the cats-versus-dogs figures (and every run made so far) are one-logit models, and
a second logit adds nothing a sigmoid does not give.
"""

from __future__ import annotations

import torch
from torch import nn


class Task:
    """The loss, accuracy and probabilities of a model with ``n_classes`` classes.

    Args:
        n_classes: 2 (one logit) or more (one logit per class).
        two_logits: two classes with a logit each (softmax) instead of one; only ``benchmarks/binary_head.py``
            uses it, to measure the one-logit head against it. Its probabilities are P(positive) either way.
    """

    def __init__(self, n_classes: int = 2, two_logits: bool = False):
        self.n_classes, self.binary, self.two_logits = n_classes, n_classes == 2, two_logits and n_classes == 2

    @property
    def outputs(self) -> int:
        return 2 if self.two_logits else 1 if self.binary else self.n_classes

    def loss(self, logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Binary cross-entropy on P(positive) targets, or cross-entropy on class indices or soft (n, K) targets."""
        if self.two_logits:
            p = target.float().view(-1)
            return nn.functional.cross_entropy(logits, torch.stack([1 - p, p], dim=1), reduction=reduction)
        if self.binary:
            return nn.functional.binary_cross_entropy_with_logits(logits.view(-1), target, reduction=reduction)
        return nn.functional.cross_entropy(logits, target if target.is_floating_point() and target.ndim == 2
                                           else target.long(), reduction=reduction)

    def correct(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """How many of the batch's images the logits put in their class (a tensor on the device: no sync); a soft
        label (a pseudo-labelled photo) counts its most likely class."""
        if self.two_logits:
            return ((logits[:, 1] > logits[:, 0]) == (y >= 0.5)).sum()
        if self.binary:
            return ((logits.view(-1) > 0) == (y >= 0.5)).sum()
        return (logits.argmax(dim=1) == (y.argmax(dim=1) if y.ndim == 2 else y.long())).sum()

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """P(positive) per image (two classes), or the (n, K) class probabilities."""
        if self.two_logits:
            return torch.softmax(logits, dim=1)[:, 1]
        return torch.sigmoid(logits.view(-1)) if self.binary else torch.softmax(logits, dim=1)

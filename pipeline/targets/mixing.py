"""Mixup, CutMix and label smoothing of a batch's targets (timm's ``Mixup``), for one logit or K classes."""

from __future__ import annotations

import torch


class BinaryMix:
    """timm's Mixup/CutMix and label smoothing for a one-logit model: the soft target is the mixed
    batch's P(dog), ``target[:, 1]`` of timm's two-class soft labels.

    timm mixes a batch with its own mirror and needs an even batch; an odd last batch only gets
    the label smoothing. Its draws come from numpy's global generator, seeded per fold and saved
    in last.pt with the other random states.
    """

    def __init__(self, mixup: float, cutmix: float, prob: float, smoothing: float):
        from timm.data import Mixup

        self.smoothing = smoothing
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=smoothing,
                         num_classes=2) if (mixup or cutmix) and prob else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None and len(x) % 2 == 0:
            x, target = self.mix(x, y.long())
            return x, target[:, 1].to(y.dtype)
        return x, y * (1 - self.smoothing) + self.smoothing / 2


class ClassMix:
    """timm's Mixup/CutMix and label smoothing for K classes: (n, K) soft targets for the cross-entropy.

    As :class:`BinaryMix`, an odd batch only gets the label smoothing (of timm's kind: ``eps / K`` on every
    class, ``1 - eps + eps / K`` on the true one).
    """

    def __init__(self, n_classes: int, mixup: float, cutmix: float, prob: float, smoothing: float):
        from timm.data import Mixup

        self.n_classes, self.smoothing = n_classes, smoothing
        self.mix = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=prob, label_smoothing=smoothing,
                         num_classes=n_classes) if (mixup or cutmix) and prob else None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mix is not None and len(x) % 2 == 0:
            return self.mix(x, y.long())
        soft = y.float() if y.ndim == 2 else torch.nn.functional.one_hot(y.long(), self.n_classes).float()
        return x, soft * (1 - self.smoothing) + self.smoothing / self.n_classes


def make_mix(n_classes: int, mixup: float, cutmix: float, prob: float, smoothing: float):
    """The batch mixing a recipe asks for (None: the targets are the labels)."""
    if not (mixup or cutmix or smoothing):
        return None
    if n_classes == 2:
        return BinaryMix(mixup, cutmix, prob, smoothing)
    return ClassMix(n_classes, mixup, cutmix, prob, smoothing)

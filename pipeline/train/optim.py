"""The optimizer and its per-step learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from pipeline.recipe import Recipe


def build_optimizer(recipe: Recipe, model: nn.Module, steps_per_epoch: int, device: torch.device | None = None):
    """AdamW (or SGD Nesterov) without weight decay on biases and norms, and its per-step schedule.

    On a GPU AdamW runs fused (one kernel for every parameter, as timm and nanoGPT use it).

    With ``layer_decay`` below 1, timm's layer-wise groups: the head learns at ``lr``, each block
    before it at ``layer_decay`` times the next block's rate (pretrained features move less).
    """
    if recipe.layer_decay < 1:
        from timm.optim import param_groups_layer_decay

        groups = param_groups_layer_decay(model, weight_decay=recipe.weight_decay, layer_decay=recipe.layer_decay)
    else:
        decay, no_decay = [], []
        for p in model.parameters():
            (no_decay if p.ndim <= 1 else decay).append(p)
        groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    for g in groups:
        g["lr"] = recipe.lr * g.get("lr_scale", 1.0)
    if recipe.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    else:
        opt = torch.optim.AdamW(groups, lr=recipe.lr, fused=fused_adamw(device))
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=total)
    else:
        warm = max(1, int(recipe.warmup_epochs * steps_per_epoch))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, sched


def fused_adamw(device: torch.device | None) -> bool | None:
    """True on a GPU (fused AdamW); None elsewhere: torch's own choice, so CPU runs keep their figures."""
    return True if device is not None and device.type == "cuda" else None

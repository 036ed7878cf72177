"""One place that prepares a model for the process that runs it: device, memory format, DistributedDataParallel
and ``torch.compile``. Training and prediction both call :func:`place_model`."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.compute.runtime import Runtime


@dataclass
class Placed:
    """A model ready to run.

    Args:
        model: the plain module on the device (checkpoints hold its state_dict).
        net: what forward passes go through: the model, or its DDP and/or compiled wrapper.
        channels_last: whether inputs should be channels_last (a conv net with the option on).
    """

    model: nn.Module
    net: nn.Module
    channels_last: bool


def place_model(model: nn.Module, rt: Runtime, *, channels_last: bool = True, ddp: bool = False,
                compile: bool = False) -> Placed:
    """Move ``model`` to ``rt``'s device (channels_last for conv nets when asked and ``rt.channels_last``) and
    wrap it.

    Args:
        model: a freshly built (or loaded) plain module.
        rt: the process's runtime (its ``channels_last`` comes from the setting and the GPU's capability:
            :func:`pipeline.compute.runtime.choose_channels_last`).
        channels_last: use channels_last memory for models with convolutions (where ``rt`` allows it).
        ddp: wrap in DistributedDataParallel (every process trains this model together); under nccl
            BatchNorm layers become SyncBatchNorm first (:func:`sync_batchnorm`).
        compile: ``torch.compile`` the forward pass.
    """
    conv = channels_last and rt.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
    model = model.to(rt.device, memory_format=torch.channels_last if conv else torch.contiguous_format)
    net = model
    if ddp and rt.distributed:
        if rt.backend == "nccl":
            model = sync_batchnorm(model, rt.tensor_group)
        net = nn.parallel.DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda"
                                                  else None, process_group=rt.tensor_group)
    if compile:
        net = torch.compile(net)
    return Placed(model, net, conv)


def sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """``model`` with every BatchNorm synchronised over ``process_group``, its fused activations kept.

    timm's conversion, not torch's: ``nn.SyncBatchNorm.convert_sync_batchnorm`` turns timm's
    ``BatchNormAct2d`` (EfficientNet, MobileNet, RegNet, ...) into a plain SyncBatchNorm and drops its
    ``act`` and ``drop`` children, so the network trained is not the one saved.
    """
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model, process_group)


def evaluation_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` for weights that are only evaluated and averaged (the EMA, a soup, SWA).

    Under ``--parallel ddp`` on GPUs every SyncBatchNorm holds the nccl ``ProcessGroup``, which cannot be copied
    (``TypeError: cannot pickle 'ProcessGroup'`` from ``copy.deepcopy`` and timm's ``ModelEmaV3``). The copy's
    layers hold no group instead (the memo maps each group to None): these weights never train, and in eval
    mode a SyncBatchNorm normalises with its running statistics like a BatchNorm, without any collective.
    A copy without a group can itself be copied again (``ModelEmaV3`` deep-copies what it is given) and
    cannot enter a collective by mistake; its state_dict has the same keys as the model's.
    """
    groups = {id(m.process_group): None for m in model.modules()
              if isinstance(m, nn.SyncBatchNorm) and m.process_group is not None}
    return copy.deepcopy(model, groups)

"""The GPU path's second review (issue 26), decided on the CPU: SyncBatchNorm with EMA and weight averaging (on a
gloo group), and the device decisions with the device queries stubbed."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import timm
import torch
import torch.distributed as dist
from torch import nn

import pipeline.train.fold as fold_module
from pipeline.rundir import RunDir
from pipeline.train.placement import evaluation_copy, place_model, sync_batchnorm
from pipeline.train.session import train
from tests.conftest import tiny_config


# ---- 1. --parallel ddp (SyncBatchNorm) with EMA, soup and SWA ---------------------------------------------
@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group, and a second group in it: what SyncBatchNorm holds under nccl."""
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield dist.new_group(backend="gloo")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("ema,average", [(True, "soup"), (False, "swa")])
def test_sync_batchnorm_with_ema_and_weight_averaging_trains_and_resumes(ema, average, gloo_group, data_copy, tmp_path,
                                                                         monkeypatch):
    """Before, each SyncBatchNorm held the ProcessGroup, and timm's ModelEmaV3 (at fit start) and the soup's or
    SWA's deepcopy (at fit end) raised ``TypeError: cannot pickle 'ProcessGroup'``, again on every resume. The
    conversion is forced here as nccl does it; BatchNorm is frozen because SyncBatchNorm trains on GPUs only."""
    def converted(model, rt, **kwargs):
        return place_model(sync_batchnorm(model, gloo_group), rt, **kwargs)

    monkeypatch.setattr(fold_module, "place_model", converted)
    folds = pd.read_csv(data_copy / "folds.csv")
    folds.groupby("fold").head(32).to_csv(data_copy / "folds.csv", index=False)  # 2 steps an epoch
    request = tiny_config(data_copy, tmp_path / "runs", run_name="sync", arch="resnet18", img_size=32, epochs=2,
                          folds=[0], freeze_bn=True, ema=ema, average=average, average_epochs=2)
    cv = train(request)
    assert cv["overall"]["n"] == 32
    run = RunDir(tmp_path / "runs" / "sync")
    last = torch.load(run.last(0), weights_only=False)
    assert len(last["extra"]["average"]["kept"]) == 2 and (not ema or last["extra"]["ema"]["steps"] > 0)
    run.fold_oof(0).unlink()  # the fold again from its last.pt: EMA and the average are rebuilt
    assert train(request, resume=True)["overall"]["n"] == 32


def test_an_evaluation_copy_holds_no_process_group_and_computes_the_same(gloo_group):
    torch.manual_seed(0)
    model = sync_batchnorm(timm.create_model("resnet18", num_classes=1), gloo_group).eval()
    copied = evaluation_copy(model)
    synced = [m for m in copied.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert len(synced) == 20 and all(m.process_group is None for m in synced)
    assert all(m.process_group is gloo_group for m in model.modules() if isinstance(m, nn.SyncBatchNorm))
    copy.deepcopy(copied)  # what ModelEmaV3 does with it
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(copied(x), model(x))

"""Tests that need a CUDA GPU (marker ``cuda``): they skip here and in CI, and run where a GPU is lent
(``benchmarks/gpu_check.py`` runs them after its table). What they check is decided on the CPU in
tests/test_gpu_decisions.py; here the GPU itself answers."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.compute.evaluation import Amp
from pipeline.compute.runtime import BF16_CAPABILITY, Runtime
from pipeline.models import build_model
from pipeline.predict.inference import predict_run
from pipeline.recipe import Recipe
from pipeline.train.engine import train_step
from pipeline.train.optim import build_optimizer
from pipeline.train.session import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.cuda


def test_cuda_precision_auto_follows_the_compute_capability():
    rt = Runtime.from_env("cuda", "auto")
    capability = torch.cuda.get_device_capability(rt.device)
    assert rt.dtype == (torch.bfloat16 if capability >= BF16_CAPABILITY else torch.float16)
    assert torch.backends.cudnn.benchmark


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_mixed_precision_steps_are_finite(dtype):
    device = torch.device("cuda", 0)
    if dtype == torch.bfloat16 and torch.cuda.get_device_capability(device) < BF16_CAPABILITY:
        pytest.skip("bf16 needs compute capability 8.0")
    torch.manual_seed(0)
    model = build_model("resnet18", 64).to(device, memory_format=torch.channels_last)
    recipe = Recipe(arch="resnet18", img_size=64).resolved()
    opt, sched = build_optimizer(recipe, model, 10, device)
    assert opt.defaults.get("fused") is True
    amp = Amp(device, dtype)
    assert amp.scaler.is_enabled() == (dtype == torch.float16)
    x = torch.randn(16, 3, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(16, device=device) % 2).float()
    for _ in range(3):
        loss, _ = train_step(model, x, y, opt, sched, amp)
        assert math.isfinite(loss.item())


def test_cuda_tiny_run_trains_and_predicts(data_copy, tmp_path):
    cv = train(tiny_config(data_copy, tmp_path / "runs", run_name="gpu", arch="resnet18", img_size=64, epochs=2,
                           folds=[0], device="cuda"))
    assert cv["overall"]["n"] == 200 and 0 <= cv["overall"]["log_loss"] < 5
    probs = predict_run(tmp_path / "runs" / "gpu", data_copy / "test.csv", tta="hflip", device="cuda", partial=True)
    assert len(probs) == 100 and probs.prob_dog.between(0, 1).all()


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_ddp_with_sync_batchnorm_on_two_gpus(data_copy, tmp_path):
    import subprocess
    import sys

    from tests.test_distributed import ROOT

    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "train", "--arch", "tf_efficientnet_lite0", "--img-size",
                           "64", "--epochs", "1", "--folds", "0", "--nproc", "2", "--parallel", "ddp", "--batch-size",
                           "32", "--no-progress", "--data-dir", str(data_copy), "--runs-dir", str(runs),
                           "--run-name", "ddp"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (runs / "ddp" / "cv.json").exists()

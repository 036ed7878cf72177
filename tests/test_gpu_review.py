"""The GPU path's second review (issue 26), decided on the CPU: SyncBatchNorm with EMA and weight averaging (on a
gloo group), and the device decisions with the device queries stubbed."""

from __future__ import annotations

import copy
import os

import pandas as pd
import pytest
import timm
import torch
import torch.distributed as dist
from torch import nn

import pipeline.compute.runtime as runtime
import pipeline.train.fold as fold_module
from pipeline.compute.placement import evaluation_copy, place_model, sync_batchnorm
from pipeline.compute.runtime import (
    Runtime,
    check_compile,
    choose_channels_last,
    gpu_names,
    processes_line,
    resolve_nproc,
    setup_device,
    visible_gpus,
)
from pipeline.data.images import make_loader
from pipeline.errors import ConfigError
from pipeline.fileio import human_size
from pipeline.models import build_model, memory_estimate
from pipeline.rundir import RunDir
from pipeline.train.request import prepare_run
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


# ---- stubbed GPUs --------------------------------------------------------------------------------------------
@pytest.fixture
def stub_gpus(monkeypatch):
    """``stub_gpus(name, capability, count)``: torch.cuda answers as that many such GPUs would; cuDNN's flags and
    the deterministic mode are put back afterwards."""
    def stub(name: str = "Tesla P100-PCIE-16GB", capability: tuple[int, int] = (6, 0), count: int = 1) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: name)

    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32, torch.are_deterministic_algorithms_enabled())
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield stub
    (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = flags[:4]
    torch.use_deterministic_algorithms(flags[4])


# ---- 4. --compile below compute capability 7.0 --------------------------------------------------------------
def test_compile_is_refused_below_capability_7_naming_the_gpu():
    with pytest.raises(ConfigError, match=r"^--compile needs a GPU of compute capability 7.0 or newer .*; Tesla "
                                          r"P100-PCIE-16GB has 6.0: drop --compile\.$"):
        check_compile("cuda", (6, 0), "Tesla P100-PCIE-16GB")
    for capability in ((7, 0), (7, 5), (9, 0)):
        check_compile("cuda", capability, "a newer GPU")
    check_compile("cpu")


def test_compile_on_a_p100_is_one_line_before_any_work(stub_gpus, data_copy, tmp_path):
    """Before, the run started, built its cache and died inside Triton at the first step with a traceback."""
    stub_gpus()
    rt = Runtime(torch.device("cuda", 0), torch.float16)
    request = tiny_config(data_copy, tmp_path / "runs", run_name="p100", compile=True)
    files = sorted(data_copy.rglob("*"))
    with pytest.raises(ConfigError, match="Tesla P100-PCIE-16GB has 6.0: drop --compile"):
        prepare_run(request, rt)
    assert not (tmp_path / "runs").exists() and sorted(data_copy.rglob("*")) == files


# ---- 5. --nproc auto --------------------------------------------------------------------------------------
def test_nproc_auto_is_every_visible_gpu_and_one_process_on_the_cpu(stub_gpus, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    stub_gpus("Tesla T4", (7, 5), count=2)
    assert visible_gpus() == 2 and gpu_names() == ["Tesla T4", "Tesla T4"]
    assert resolve_nproc("auto", "auto", visible_gpus()) == 2  # Kaggle's T4 x2: both train
    assert resolve_nproc("auto", "cuda", 2) == 2 and resolve_nproc("auto", "cpu", 2) == 1
    assert resolve_nproc("auto", "auto", 0) == 1 and resolve_nproc("3", "auto", 0) == 3
    with pytest.raises(ConfigError, match="--nproc takes a number of processes or auto, got 'two'"):
        resolve_nproc("two", "auto", 2)
    monkeypatch.setenv("WORLD_SIZE", "2")  # under torchrun the processes are started already
    assert resolve_nproc("auto", "auto", 2) == 1


def test_the_first_line_says_how_many_processes_and_which_gpus():
    assert processes_line(2, ["Tesla T4", "Tesla T4"]) == \
        "training in 2 processes, one per GPU: GPU 0 (Tesla T4), 1 (Tesla T4)"
    assert processes_line(1, ["Tesla T4", "Tesla T4"]) == ("training in 1 process, one per GPU: GPU 0 (Tesla T4); "
                                                           "1 more visible GPU(s) idle (--nproc 2 uses every one)")
    assert processes_line(4, ["A100", "A100"], local=2) == \
        "training in 4 processes, one per GPU: GPU 0 (A100), 1 (A100) on this machine"
    assert processes_line(1, []) == "training in 1 process on the CPU"


def test_a_run_on_the_cpu_starts_with_its_processes_line(data_copy, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    r = CliRunner().invoke(app, ["train", "--arch", "lenet", "--img-size", "32", "--epochs", "1", "--folds", "0",
                                 "--workers", "0", "--tracker", "none", "--data-dir", str(data_copy),
                                 "--runs-dir", str(tmp_path / "runs"), "--run-name", "one"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == "training in 1 process on the CPU"


# ---- 6. loader workers: cores - 1 on a GPU, OpenCV single-threaded, evaluation workers not kept ----------------
class _OpenCvThreads(torch.utils.data.Dataset):
    """Each item: the OpenCV threads of the process that loads it."""

    labels = None

    def __len__(self):
        return 4

    def __getitem__(self, item):
        import cv2

        return cv2.getNumThreads()


def test_loader_workers_run_opencv_single_threaded_and_only_training_workers_persist():
    """Before, every worker kept OpenCV's own thread pool (one thread a core) and the validation loader's workers
    stayed alive beside the training ones for the whole run."""
    import cv2

    rt = Runtime(torch.device("cpu"), torch.float32)
    train_loader = make_loader(_OpenCvThreads(), 2, shuffle=True, seed=0, workers=1, runtime=rt)
    val_loader = make_loader(_OpenCvThreads(), 2, shuffle=False, seed=0, workers=1, runtime=rt)
    before = cv2.getNumThreads()  # OpenCV's default: a thread a core (2 here); setNumThreads(0) leaves 1
    assert torch.cat(list(train_loader)).tolist() == [1] * 4 and torch.cat(list(val_loader)).tolist() == [1] * 4
    assert cv2.getNumThreads() == before  # the training process's own is left alone
    assert train_loader.persistent_workers and not val_loader.persistent_workers
    predict_loader = make_loader(_OpenCvThreads(), 2, shuffle=False, seed=0, workers=1, runtime=rt, keep_workers=True)
    assert predict_loader.persistent_workers  # predict: pass after pass (folds x TTA views), nothing beside


@pytest.mark.parametrize("cores,processes,gpu,cpu", [(2, 1, 1, 1), (4, 1, 3, 2), (4, 2, 1, 1), (16, 1, 8, 2),
                                                     (1, 1, 1, 0), (32, 4, 7, 2)])
def test_default_workers_leave_a_core_to_each_training_process(cores, processes, gpu, cpu, monkeypatch):
    """Colab (2 vCPUs, one T4): 1 worker; Kaggle (4 vCPUs, T4 x2 with --nproc auto): 1 per process. Before, a GPU
    took min(8, cores) workers, leaving no core for the training process itself."""
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    assert runtime.default_workers(torch.device("cuda", 0), processes) == gpu
    assert runtime.default_workers(torch.device("cpu"), processes) == cpu


# ---- 7. channels_last by compute capability -----------------------------------------------------------------
@pytest.mark.parametrize("capability,expected", [((6, 0), False), ((6, 1), False), ((7, 0), True), ((7, 5), True),
                                                 ((8, 0), True), ((9, 0), True)])
def test_channels_last_only_on_gpus_with_tensor_cores(capability, expected):
    assert choose_channels_last(True, "cuda", capability) is expected
    assert choose_channels_last(False, "cuda", capability) is False
    assert choose_channels_last(True, "cpu") is True and choose_channels_last(False, "cpu") is False


def test_a_p100_runtime_keeps_the_plain_layout_and_a_t4_takes_channels_last(stub_gpus, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    stub_gpus("Tesla P100-PCIE-16GB", (6, 0))
    p100 = Runtime.from_env("cuda", "auto")
    assert p100.dtype == torch.float16 and p100.channels_last is False
    assert p100.as_single_process().channels_last is False
    stub_gpus("Tesla T4", (7, 5))
    assert Runtime.from_env("cuda", "auto").channels_last is True
    assert Runtime.from_env("cuda", "auto", channels_last=False).channels_last is False


# ---- 9. predict: the test cache only when it fits, the device set up as training does -------------------------
def test_predict_decodes_on_the_fly_when_the_test_cache_does_not_fit(data_copy, tmp_path, monkeypatch, caplog):
    """Before, predict built the test cache with no look at the disk (CIFAR-10's 300,000 test photos at 224 px need
    about 59 GB). It also set the device up with a copy of training's steps, without cuDNN's and TF32's."""
    import shutil

    import pipeline.predict.inference as inference
    from pipeline.data.cache import DecodedCache
    from pipeline.data.catalog import read_test
    from pipeline.data.images import base_size_for

    shutil.rmtree(data_copy / "cache", ignore_errors=True)  # the copied data may hold a cache that other tests built
    train(tiny_config(data_copy, tmp_path / "runs", run_name="det", epochs=1, folds=[0], deterministic=True))
    run = RunDir(tmp_path / "runs" / "det")
    assert run.config()["settings"]["deterministic"] is True  # recorded in config.json
    setups = []

    def recorded(*args, **kwargs):
        setups.append((args, kwargs))
        return setup_device(*args, **kwargs)

    monkeypatch.setattr(inference, "setup_device", recorded)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))  # less than 4 photos
    test = read_test(data_copy / "test.csv")
    cache = DecodedCache(data_copy / "cache", base_size_for(32))
    with caplog.at_level("WARNING"):
        probs = inference.predict_run(run.path, data_copy / "test.csv", device="cpu", partial=True)
    assert len(probs) == len(test) and probs.prob_dog.between(0, 1).all()
    assert cache.uncached(test.path) == len(test)  # nothing written to the cache
    assert [r.getMessage() for r in caplog.records if "on the fly" in r.getMessage()] == [
        f"the image cache needs {human_size(DecodedCache.bytes_for(base_size_for(32), len(test)))} more for "
        f"{len(test)} test photos at {base_size_for(32)} px but {data_copy / 'cache'} has {human_size(10_000)} free: "
        "decoding them on the fly instead (slower; free some space to cache them)"]
    assert setups == [((torch.device("cpu"), "auto"), {"channels_last": True, "deterministic": True})]
    monkeypatch.setattr(shutil, "disk_usage", real)
    again = inference.predict_run(run.path, data_copy / "test.csv", device="cpu", partial=True, reuse=False)
    assert DecodedCache(data_copy / "cache", base_size_for(32)).uncached(test.path) == 0
    assert again.prob_dog.tolist() == probs.prob_dog.tolist()


# ---- 10. --deterministic ---------------------------------------------------------------------------------------
def test_deterministic_turns_off_autotuning_and_turns_on_deterministic_algorithms(stub_gpus):
    stub_gpus("Tesla T4", (7, 5))
    gpu = torch.device("cuda", 0)
    assert setup_device(gpu, "auto") == (torch.float16, True)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    setup_device(gpu, "auto", deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert torch.backends.cuda.matmul.allow_tf32  # TF32 is deterministic too: it stays on


# ---- 8. the memory estimate counts what autograd keeps ------------------------------------------------------
def _saved_bytes(arch: str, size: int, batch: int) -> int:
    """What a real training forward pass on the CPU keeps for the backward pass: every tensor autograd saves,
    each storage once, the weights left out."""
    torch.manual_seed(0)
    model = build_model(arch, size).train()
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        loss = model(torch.randn(batch, 3, size, size)).sum()
        total = sum(saved.values())
    del loss
    return total


@pytest.mark.parametrize("arch", ["efficientnet_b0", "tf_efficientnet_lite0", "resnet18"])
def test_memory_estimate_matches_a_measured_forward_pass_within_5_percent(arch):
    """Before, only leaf modules' outputs were counted: timm's BatchNormAct2d pre-activations and the SE blocks'
    products were missed while Identity layers and in-place activations were counted as new tensors (estimates
    from 0.6 to 1.6 times the measured bytes, depending on the network)."""
    measured = _saved_bytes(arch, 64, 4)
    estimate = memory_estimate(arch, 64, 4)
    assert abs(estimate.activations - measured) <= 0.05 * measured, (estimate.activations, measured)
    assert estimate.step == 16 * estimate.params + estimate.activations
    assert memory_estimate(arch, 64, 4, half=True).activations < estimate.activations

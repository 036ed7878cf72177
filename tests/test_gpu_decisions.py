"""The CUDA decisions, tested on the CPU (issue 18): each reproduces what was wrong on a GPU where the CPU can
show it, with the device queries stubbed where it cannot.

``pytest -k "precision or capability or sync_batchnorm or scaler"`` selects the GPU-decision tests.
"""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

import pipeline.train.engine as engine
import pipeline.train.preflight as preflight
from pipeline.compute.evaluation import Amp
from pipeline.compute.placement import sync_batchnorm
from pipeline.compute.runtime import Runtime, backends_for, batch_per_process, choose_precision, parallel_mode
from pipeline.data.images import ImageDataset, drop_last_batch, make_loader
from pipeline.errors import ConfigError
from pipeline.models import build_model, load_weights, memory_estimate, strip_wrappers
from pipeline.recipe import Recipe
from pipeline.rundir import RunDir
from pipeline.train.optim import build_optimizer, fused_adamw
from pipeline.train.request import prepare_run
from pipeline.train.session import train, wait_for_folds
from tests.conftest import tiny_config


# ---- 1. SyncBatchNorm keeps timm's fused activations ------------------------------------------------------
def _activations_applied(model: nn.Module, x: torch.Tensor) -> int:
    """How many activation layers a forward pass of ``model`` actually runs."""
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules()
             if isinstance(m, (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return len(calls)


def test_sync_batchnorm_conversion_keeps_every_activation_and_the_logits():
    """torch's convert_sync_batchnorm turned timm's BatchNormAct2d into a plain SyncBatchNorm: the 49 ReLU6 of
    EfficientNet-Lite0 were gone, so DDP on nccl trained another network than the one saved."""
    torch.manual_seed(0)
    plain = timm.create_model("tf_efficientnet_lite0", num_classes=1).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = plain(x)
    ours = sync_batchnorm(copy.deepcopy(plain)).eval()
    torchs = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain)).eval()
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in ours.modules()) == 49
    assert _activations_applied(ours, x) == _activations_applied(plain, x) == 33  # ReLU6 in BatchNormAct2d
    with torch.no_grad():
        assert torch.allclose(ours(x), expected, atol=1e-5)
        assert not torch.allclose(torchs(x), expected, atol=1e-2)  # what the fix replaced: other logits ...
    assert _activations_applied(torchs, x) == 0  # ... because no activation runs any more


# ---- 2. precision from the compute capability ----------------------------------------------------------
@pytest.mark.parametrize("capability,auto", [((6, 0), torch.float16), ((7, 0), torch.float16),
                                             ((7, 5), torch.float16), ((8, 0), torch.bfloat16),
                                             ((8, 6), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_precision_for_each_compute_capability(capability, auto):
    """P100 6.0, V100 7.0 and T4 7.5 get fp16 with loss scaling; A100 8.0, RTX 30xx 8.6 and H100 9.0 bf16."""
    assert choose_precision("auto", "cuda", capability) == auto
    assert choose_precision("fp16", "cuda", capability) == torch.float16
    assert choose_precision("fp32", "cuda", capability) == torch.float32
    if auto == torch.float16:
        with pytest.raises(ConfigError, match=rf"capability 8.0 or newer .* Tesla T4 has {capability[0]}\."
                                              rf"{capability[1]}.*--precision fp16"):
            choose_precision("bf16", "cuda", capability, "Tesla T4")
    else:
        assert choose_precision("bf16", "cuda", capability) == torch.bfloat16


def test_precision_on_the_cpu():
    assert choose_precision("auto", "cpu") == torch.float32
    assert choose_precision("bf16", "cpu") == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        choose_precision("fp16", "cpu")


@pytest.fixture
def fake_gpus(monkeypatch):
    """Two T4s as torch.cuda reports them; records the order of the calls."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", str(d))))
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda d=None: calls.append(("capability", str(d))) or (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")

    def emulation_probe(*a, **k):
        raise AssertionError("is_bf16_supported() counts emulation and allocates on the current GPU")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulation_probe)
    flags = torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    yield calls
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_the_capability_is_probed_after_set_device_on_each_processs_own_gpu(fake_gpus, monkeypatch):
    """Before, --precision auto asked is_bf16_supported() (True on a T4: it counts emulation) before set_device,
    so every process opened a context on GPU 0 and picked bf16 where cuDNN has no bf16 convolutions."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    rt = Runtime.from_env("auto", "auto")
    assert rt.device == torch.device("cuda", 1) and rt.dtype == torch.float16
    assert fake_gpus == [("set_device", "cuda:1"), ("capability", "cuda:1")]
    assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32  # fixed sizes, TF32 matmuls
    with pytest.raises(ConfigError, match="Tesla T4 has 7.5"):
        Runtime.from_env("cuda", "bf16")


def test_doctor_says_what_auto_picks_per_gpu():
    from pipeline.doctor import gpu_line

    assert gpu_line("Tesla T4", 15 * 2**30, (7, 5)).endswith("compute capability 7.5; --precision auto: fp16 with "
                                                               "loss scaling")
    assert gpu_line("NVIDIA A100", 40 * 2**30, (8, 0)).endswith("--precision auto: bf16")


# ---- 3. a scaler that survives a resume with another precision ---------------------------------------------
def test_scaler_saved_disabled_loads_into_an_enabled_one():
    """A run started on the CPU, in fp32 or bf16 saved the scaler as {}; fp16 on resume raised at fit start."""
    saved = Amp(torch.device("cpu"), torch.float32).scaler.state_dict()
    assert saved == {}
    fp16 = Amp(torch.device("cpu"), torch.float16)  # an enabled scaler (the CPU has one too)
    with pytest.raises(RuntimeError, match="state dict is empty"):
        copy.deepcopy(fp16).scaler.load_state_dict(saved)  # what the checkpointer did before
    fp16.load_scaler(saved)
    assert fp16.scaler.is_enabled() and fp16.scaler.get_scale() == 2.0**16  # a fresh scale
    state = fp16.scaler.state_dict() | {"scale": 1024.0}  # a scale an fp16 run reached
    back = Amp(torch.device("cpu"), torch.float16)
    back.load_scaler(state)
    assert back.scaler.get_scale() == 1024.0  # a real state still loads
    Amp(torch.device("cpu"), torch.bfloat16).load_scaler(state)  # and is ignored when off


# ---- 4. the memory check per parallel mode, with a margin -------------------------------------------------
def test_batch_per_process_in_each_parallel_mode():
    assert batch_per_process(128, 4, "folds") == 128  # each process trains its own fold with the whole batch
    assert batch_per_process(128, 4, "ddp") == 32
    assert parallel_mode("auto", 5, 4) == "folds" and parallel_mode("auto", 1, 4) == "ddp"
    assert parallel_mode("auto", 5, 1) == "folds" and parallel_mode("ddp", 5, 4) == "ddp"


def test_memory_estimate_counts_the_ema_the_evaluation_and_the_gpu_reserve():
    recipe = Recipe(arch="resnet50", img_size=224, batch_size=64).resolved()
    plain = memory_estimate("resnet50", 224, 64, half=True)
    with_ema = memory_estimate("resnet50", 224, 64, half=True, ema=True)
    assert with_ema.peak - plain.peak == 4 * plain.params
    assert plain.evaluation > 0 and plain.peak >= plain.step
    cpu = preflight.memory_needed(recipe, 64, torch.device("cpu"), torch.float16)
    gpu = preflight.memory_needed(recipe, 64, torch.device("cuda", 0), torch.float16)
    assert gpu == int(cpu * preflight.GPU_SLACK) + preflight.GPU_RESERVED


@pytest.mark.parametrize("parallel,refused", [("folds", True), ("ddp", False)])
def test_memory_estimate_per_parallel_mode(parallel, refused, data_copy, tmp_path, monkeypatch):
    """Before, the batch was divided by the processes whatever the mode: in folds mode (each process trains the
    whole batch) the estimate was N times too low; the launcher checked DDP's whole batch on one GPU."""
    recipe = Recipe(arch="resnet50", img_size=224, batch_size=64).resolved()
    between = (preflight.memory_needed(recipe, 16, torch.device("cpu"), torch.float32)
               + preflight.memory_needed(recipe, 64, torch.device("cpu"), torch.float32)) // 2
    monkeypatch.setattr(preflight, "available_memory", lambda device: (between, "this machine"))
    request = tiny_config(data_copy, tmp_path / "runs", run_name="big", arch="resnet50", img_size=224,
                          batch_size=64, parallel=parallel, cache=False)
    rt = Runtime(torch.device("cpu"), torch.float32)  # the launcher's own process, for --nproc 4
    if refused:
        with pytest.raises(ConfigError, match=r"--batch-size 64 needs about .* for one training step of resnet50"):
            prepare_run(request, rt, processes=4)
        assert not (tmp_path / "runs" / "big").exists()
    else:
        run, lock = prepare_run(request, rt, processes=4)
        lock.release()
        assert run.config()["launch"]["processes"] == 4


def test_out_of_memory_at_step_one_is_one_line(data_copy, tmp_path, monkeypatch):
    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(engine, "train_step", oom)
    with pytest.raises(ConfigError, match=r"Out of memory on this machine in fold 0, epoch 1: 32 images of "
                                          r"32 px per step of lenet do not fit.*smaller --batch-size \(e\.g\. 16\)"):
        train(tiny_config(data_copy, tmp_path / "runs", run_name="oom", folds=[0]))


# ---- 5. folds mode holds no nccl group --------------------------------------------------------------------
def test_folds_mode_coordinates_over_gloo_and_only_ddp_on_gpus_uses_nccl():
    assert backends_for("cuda", "folds") == ("gloo", None)
    assert backends_for("cuda", "ddp") == ("gloo", "nccl")
    assert backends_for("cpu", "ddp") == ("gloo", None)


def test_a_process_that_waits_for_the_others_folds_stops_when_one_of_them_failed(tmp_path):
    run = RunDir(tmp_path / "run")
    (run.fold_dir(0)).mkdir(parents=True)
    run.fold_oof(0).write_text("path,label,fold,prob_dog\n")
    run.failed_path.write_text("process 1: Out of memory on GPU 1 in fold 1, epoch 3\n")
    with pytest.raises(Exception, match=r"another training process failed \(process 1: Out of memory") as err:
        wait_for_folds(run, [0, 1], poll=0.01)
    assert err.value.secondary  # the failing process says it; this one does not repeat it


# ---- 6. smaller: prefixes, fused AdamW, the last batch ----------------------------------------------------
def test_prefix_stripping_of_compiled_ddp_state_dicts(tmp_path):
    """torch.compile(DDP(model)) saves `_orig_mod.module.x`; stripping `module.` first left `_orig_mod.`."""
    assert strip_wrappers("_orig_mod.module.features.0.weight") == "features.0.weight"
    assert strip_wrappers("module._orig_mod.features.0.weight") == "features.0.weight"
    assert strip_wrappers("module.features.0.weight") == "features.0.weight"
    model = build_model("lenet", 32)
    torch.save({f"_orig_mod.module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "compiled.pt")
    fresh = build_model("lenet", 32)
    load_weights(fresh, tmp_path / "compiled.pt")
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values(),
                                                 strict=True))


def test_fused_adamw_on_a_gpu_only():
    model = build_model("lenet", 32)
    recipe = Recipe(arch="lenet", img_size=32).resolved()
    assert fused_adamw(torch.device("cuda", 0)) is True and fused_adamw(torch.device("cpu")) is None
    opt, _ = build_optimizer(recipe, model, 10, torch.device("cpu"))
    assert not opt.defaults.get("fused")  # the CPU keeps torch's default, so its figures do not move


def test_the_last_training_batch_is_dropped_when_incomplete(sample_data):
    """A last batch of one image made BatchNorm raise in train mode (timm drops the last batch)."""
    assert drop_last_batch(33, 32, training=True)
    assert not drop_last_batch(64, 32, training=True)  # nothing to drop
    assert not drop_last_batch(20, 32, training=True)  # it would leave no batch at all
    assert not drop_last_batch(33, 32, training=False)  # evaluation predicts every image
    import pandas as pd

    rows = pd.read_csv(sample_data / "folds.csv").head(33)
    rt = Runtime(torch.device("cpu"), torch.float32)
    ds = ImageDataset(rows.path, rows.label, 40, lambda size: None, None)
    train_loader = make_loader(ds, 32, shuffle=True, seed=0, workers=0, runtime=rt)
    eval_loader = make_loader(ds, 32, shuffle=False, seed=0, workers=0, runtime=rt)
    assert len(train_loader) == 1 and len(eval_loader) == 2


def test_a_training_step_on_a_batch_of_one_no_longer_happens(data_copy, tmp_path):
    """33 training images in batches of 32 (fold 1 of a 2-fold split of 66 photos): before, the second batch held
    one image and BatchNorm raised 'Expected more than 1 value per channel when training'."""
    import pandas as pd

    folds = pd.read_csv(data_copy / "folds.csv")
    picked = pd.concat([folds[folds.label == c].head(33) for c in (0, 1)])
    picked = picked.assign(fold=[i % 2 for i in range(66)])
    picked.to_csv(data_copy / "folds.csv", index=False)
    cv = train(tiny_config(data_copy, tmp_path / "runs", run_name="bn", arch="resnet18", img_size=32, epochs=1,
                           folds=[0]))
    assert cv["overall"]["n"] == 33

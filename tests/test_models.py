import pytest
import torch
import torch.nn.functional as F

from pipeline.compute.evaluation import Amp
from pipeline.compute.runtime import resolve_device
from pipeline.errors import ConfigError
from pipeline.models import build_model, check_arch, load_weights
from pipeline.train.engine import train_step


@pytest.mark.parametrize("arch,size", [("lenet", 32), ("lenet", 64), ("resnet34", 64), ("resnet50", 64)])
def test_each_architecture_takes_a_training_step_on_cpu(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, size).to(memory_format=torch.channels_last)
    amp = Amp(torch.device("cpu"), torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    x = torch.randn(4, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    torch.manual_seed(1)
    with torch.no_grad():  # the same forward pass the step makes: same dropout masks, batch statistics
        expected = amp.logits(model, x)
    torch.manual_seed(1)
    loss, logits = train_step(model, x, y, opt, sched, amp)
    # the step reports the loss and the logits (logit > 0 means dog) of the batch it learned from
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(expected, y).item(), rel=1e-5)
    assert int(((logits > 0) == (y == 1)).sum()) == int(((expected > 0) == (y == 1)).sum())
    assert amp.logits(model, x).shape == (4,)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bf16_autocast_on_cpu_really_runs_in_bf16():
    model = build_model("lenet", 32)
    seen = []
    model.features[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = Amp(torch.device("cpu"), torch.bfloat16).logits(model, torch.randn(2, 3, 32, 32))
    assert seen == [torch.bfloat16]
    assert out.dtype == torch.float32  # the loss is computed in fp32


def test_unknown_arch_suggests_close_names():
    with pytest.raises(ConfigError, match="resnet34"):
        check_arch("resnet343")


def test_weights_round_trip_through_every_file_shape(tmp_path):
    torch.manual_seed(1)
    src = build_model("lenet", 32)
    x = torch.randn(3, 3, 32, 32)
    src.eval()
    expected = src(x)
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    torch.save({"model": src.state_dict(), "epoch": 3}, tmp_path / "ckpt.pt")
    for name in ("plain.pt", "ckpt.pt"):
        torch.manual_seed(2)
        dst = build_model("lenet", 32, weights=tmp_path / name).eval()
        assert torch.allclose(dst(x), expected)


def test_imagenet_style_file_loads_all_but_the_head(tmp_path):
    import timm

    imagenet = timm.create_model("resnet34", pretrained=False, num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "resnet34_in1k.pth")
    model = build_model("resnet34", 64, weights=tmp_path / "resnet34_in1k.pth")
    assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
    assert model.fc.weight.shape == (1, 512)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(build_model("lenet", 32).state_dict(), tmp_path / "lenet.pt")
    with pytest.raises(ConfigError, match="does not fit"):
        build_model("resnet34", 64, weights=tmp_path / "lenet.pt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_weights(build_model("lenet", 32), tmp_path / "missing.pt")


def test_pretrained_without_network_names_the_offline_route(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr("pipeline.models.hub_reachable", lambda host="", timeout=0: False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # an empty hub cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ConfigError, match="--weights FILE"):
        build_model("resnet18", 64, pretrained=True)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False  # switched on for the call only, then put back


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")

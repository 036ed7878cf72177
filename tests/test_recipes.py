"""Recipes: the named files, overrides, and the training features they switch on (issue 11)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.images import SeededSampler
from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.recipe import Recipe, build_recipe, load_recipe_file, named_recipes
from pipeline.targets.mixing import BinaryMix
from pipeline.train.callbacks import FreezeBatchNorm
from pipeline.train.optim import build_optimizer
from pipeline.train.session import train
from tests.conftest import WEIGHTS, tiny_config
from tests.images import sample_image

FAMILIES = [("resnet18", 64), ("tf_efficientnet_lite0", 64), ("mobilenetv3_small_050", 64), ("regnetx_002", 64),
            ("convnext_atto", 64), ("vit_tiny_patch16_224", 224)]


IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def photos(size: int, n: int = 8) -> torch.Tensor:
    """Real photos of the bundled sample, normalised as ImageNet models expect."""
    imgs = [np.asarray(sample_image(i, label).resize((size, size))) for i in range(n // 2) for label in ("cat", "dog")]
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    return (x - IMAGENET_MEAN) / IMAGENET_STD


@pytest.mark.parametrize("arch,size", FAMILIES)
def test_every_family_starts_with_a_small_head_on_imagenet_weights(arch, size, tmp_path):
    """Before, EfficientNet's fresh one-logit head gave logits of about +-20 on ImageNet features."""
    import timm

    torch.manual_seed(0)
    imagenet = timm.create_model(arch, num_classes=1000)  # an ImageNet-shaped file, as --weights takes it
    torch.save(imagenet.state_dict(), tmp_path / "in1k.pth")
    model = build_model(arch, size, weights=tmp_path / "in1k.pth").eval()
    with torch.no_grad():
        logits = model(photos(size)).view(-1)
    assert logits.abs().max() < 3  # first-batch logits within a few units of 0
    assert torch.equal(model.get_classifier().weight, torch.zeros_like(model.get_classifier().weight))
    body = next(iter(imagenet.state_dict()))
    assert torch.equal(model.state_dict()[body], imagenet.state_dict()[body])  # the rest is the file's


@pytest.mark.slow  # one of the longest end-to-end runs (issue 28: the default suite under 10 min)
@pytest.mark.shared
def test_the_finetune_recipe_on_the_real_imagenet_weights(sample_data, tmp_path, shared_path):
    weights = shared_path(WEIGHTS)
    model = build_model("tf_efficientnet_lite0", 96, weights=weights).eval()
    mean = std = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)  # this model's own normalisation
    x = photos(96) * IMAGENET_STD + IMAGENET_MEAN
    with torch.no_grad():
        assert model((x - mean) / std).abs().max() == 0  # P(dog) = 0.5 for every photo at the start

    cv = train(tiny_config(sample_data, tmp_path / "runs", run_name="ft", arch="tf_efficientnet_lite0",
                           weights=str(weights), img_size=96, epochs=2, folds=[0], lr=1e-3, layer_decay=0.7,
                           freeze_bn=True, ema=True, batch_size=32))
    metrics = pd.read_csv(tmp_path / "runs" / "ft" / "metrics.csv")
    assert metrics.train_loss.iloc[0] < 0.75  # no 2.7 first-epoch loss from a huge head
    assert cv["overall"]["accuracy"] > 0.85 and cv["overall"]["log_loss"] < 0.35  # ImageNet features at work


def test_named_recipes_parse_and_the_command_line_overrides_them():
    names = named_recipes()
    assert {"lenet", "scratch", "finetune"} <= set(names)
    for name in names:
        build_recipe(name)  # every shipped recipe is valid as it stands
    assert build_recipe("lenet") == build_recipe(None)  # the lenet recipe is the defaults, spelled out
    r = build_recipe("finetune", {"epochs": 2, "img_size": 96, "weights": "w.pth"})
    assert (r.epochs, r.img_size, r.weights, r.pretrained) == (2, 96, "w.pth", False)  # --weights: the offline route
    assert r.arch == load_recipe_file("finetune")["arch"]


def test_recipe_files_refuse_unknown_fields_and_wrong_types(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('arch = "resnet18"\nepoch = 3\n')
    with pytest.raises(ConfigError, match=r"unknown recipe field 'epoch' \(did you mean 'epochs'\?\)"):
        build_recipe(bad)
    bad.write_text('epochs = "three"\n')
    with pytest.raises(ConfigError, match="epochs must be int, got 'three'"):
        build_recipe(bad)
    bad.write_text('sizes = [96, "x"]\n')
    with pytest.raises(ConfigError, match="sizes must be a list of integers"):
        build_recipe(bad)
    bad.write_text("arch = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        build_recipe(bad)
    with pytest.raises(ConfigError, match="No recipe 'finetun' .did you mean 'finetune'"):
        build_recipe("finetun")


def test_a_recipe_file_is_saved_with_the_run_and_kept_on_resume(data_copy, tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text("# my recipe\narch = \"lenet\"\nimg_size = 32\nepochs = 2\nbatch_size = 32\npatience = 0\n")
    runs = tmp_path / "runs"
    request = tiny_config(data_copy, runs, run_name="mine", folds=[0])
    request.recipe, request.overrides = str(mine), {"epochs": 1}
    train(request)
    saved = json.loads((runs / "mine" / "config.json").read_text())
    assert saved["recipe_source"] == str(mine) and saved["recipe"]["epochs"] == 1 and saved["recipe"]["img_size"] == 32
    mine.write_text("arch = \"lenet\"\nimg_size = 48\n")  # the file changes afterwards: the run keeps its recipe
    again = tiny_config(data_copy, runs, run_name="mine", folds=[0])
    again.overrides = {}
    train(again, resume=True)
    again.recipe = str(mine)
    with pytest.raises(ConfigError, match="img-size 32 -> 48"):
        train(again, resume=True)


def test_mixup_for_one_logit_gives_soft_targets_and_counts_accuracy_on_the_labels():
    torch.manual_seed(0)
    np.random.seed(0)
    x = photos(32, 8)
    y = torch.tensor([0., 1., 0., 1., 1., 1., 0., 0.])
    mixed, target = BinaryMix(mixup=1.0, cutmix=1.0, prob=1.0, smoothing=0.1)(x.clone(), y)
    assert mixed.shape == x.shape and not torch.equal(mixed, x)
    assert target.shape == y.shape and ((target >= 0) & (target <= 1)).all()
    assert not set(target.tolist()) <= {0.05, 0.95}  # really mixed, not only smoothed
    odd_x, odd_t = BinaryMix(mixup=1.0, cutmix=0, prob=1.0, smoothing=0.1)(x[:7].clone(), y[:7])
    assert torch.equal(odd_x, x[:7]) and torch.allclose(odd_t, y[:7] * 0.9 + 0.05)  # odd batch: smoothing only


@pytest.mark.slow  # one of the longest end-to-end runs (issue 28: the default suite under 10 min)
def test_a_run_with_every_feature_on_trains_and_stays_consistent(data_copy, tmp_path):
    runs = tmp_path / "runs"
    cv = train(tiny_config(data_copy, runs, run_name="all", arch="resnet10t", img_size=48, sizes=[32], epochs=4,
                         folds=[0], mixup=0.4, cutmix=1.0, mix_prob=0.8, label_smoothing=0.1, ema=True, ema_decay=0.9,
                         layer_decay=0.8, augment="strong", lr=3e-3, freeze_bn=False))
    run_dir = runs / "all"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert np.isfinite(metrics[["train_loss", "val_loss", "ema_val_loss"]].to_numpy()).all()
    assert metrics.train_acc.between(0, 1).all()
    last = torch.load(run_dir / "fold0" / "last.pt", weights_only=False)
    ema, raw = last["extra"]["ema"]["module"], last["model"]
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if raw[k].is_floating_point())  # EMA differs
    best = torch.load(run_dir / "fold0" / "best.pt", weights_only=False)
    row = metrics.set_index("epoch").loc[best["epoch"]]
    chosen = "ema" if row.ema_val_loss < row.val_loss else "model"
    assert best["weights"] == chosen
    # OOF (and predict, which loads the same best.pt) scores what validation measured for the chosen weights
    assert cv["folds"]["0"]["log_loss"] == pytest.approx(min(row.val_loss, row.ema_val_loss), abs=1e-4)


def test_the_ema_is_what_best_pt_holds_when_it_validates_better(data_copy, tmp_path):
    runs = tmp_path / "runs"
    # a too-high learning rate makes the raw weights jump around; their average validates better
    train(tiny_config(data_copy, runs, run_name="ema", epochs=4, folds=[0], lr=0.02, ema=True, ema_decay=0.95))
    metrics = pd.read_csv(runs / "ema" / "metrics.csv").set_index("epoch")
    best = torch.load(runs / "ema" / "fold0" / "best.pt", weights_only=False)
    row = metrics.loc[best["epoch"]]
    assert best["weights"] == "ema" and row.ema_val_loss < row.val_loss
    assert best["metrics"]["ema_val_loss"] == pytest.approx(row.ema_val_loss)


def test_progressive_resizing_changes_the_training_size_by_epoch():
    r = Recipe(arch="resnet10t", img_size=128, epochs=6, sizes=[64, 96]).resolved()
    assert [r.size_for_epoch(e) for e in range(6)] == [64, 64, 96, 96, 128, 128]
    sampler = SeededSampler(10, seed=0, shuffle=True, sizes=r.size_for_epoch)
    sampler.set_epoch(3)
    assert {item[2] for item in sampler} == {96}
    with pytest.raises(ConfigError, match="lenet sizes its classifier"):
        Recipe(arch="lenet", sizes=[32]).resolved()
    with pytest.raises(ConfigError, match="--sizes must list"):
        Recipe(arch="resnet10t", img_size=64, sizes=[96]).resolved()


def test_frozen_batchnorm_keeps_its_statistics_and_layer_decay_slows_the_early_blocks():
    torch.manual_seed(0)
    model = build_model("resnet10t", 32)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model.train()

    class State:  # what FreezeBatchNorm reads
        pass

    state = State()
    state.model = model
    FreezeBatchNorm().on_epoch_start(state)
    model(photos(32))
    assert torch.equal(bn.running_mean, before) and not bn.training

    opt, _ = build_optimizer(Recipe(arch="resnet10t", img_size=32, lr=1e-3, layer_decay=0.5).resolved(), model, 10)
    lrs = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}  # before the warm-up
    assert lrs[id(model.get_classifier().weight)] == pytest.approx(1e-3)  # the head at the full rate
    assert lrs[id(model.conv1[0].weight)] < 1e-3 * 0.5 ** 3  # the stem far slower

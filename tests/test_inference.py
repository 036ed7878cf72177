import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

from pipeline.errors import ConfigError
from pipeline.engine import Amp, evaluate
from pipeline.images import BatchNormalizer, ImageDataset, base_size_for, build_eval_transform, make_loader
from pipeline.inference import aligned_oof, blend_predictions, blend_runs, fit_weights, predict_run
from pipeline.models import build_model
from pipeline.runtime import Runtime


def test_fold_mean_and_saved_probabilities(tiny_run, sample_data, tmp_path):
    run_dir = shutil.copytree(tiny_run, tmp_path / "tiny")
    probs = predict_run(run_dir, sample_data / "test.csv", tta="none")
    test = pd.read_csv(sample_data / "test.csv")
    assert probs.id.tolist() == test.id.tolist()
    assert list(probs.columns) == ["id", "prob_dog", "fold0", "fold1", "fold2"]
    np.testing.assert_allclose(probs.prob_dog, probs[["fold0", "fold1", "fold2"]].mean(axis=1))
    assert probs.fold0.std() > 0  # real predictions, not a constant
    saved = pd.read_csv(run_dir / "test_probs.csv")
    np.testing.assert_allclose(saved.prob_dog, probs.prob_dog, rtol=1e-6)
    note = json.loads((run_dir / "test_probs.json").read_text())
    assert note["tta"] == "none" and note["folds"] == [0, 1, 2]


def test_hflip_tta_is_the_mean_of_photo_and_mirror(sample_data):
    test = pd.read_csv(sample_data / "test.csv").head(12)
    torch.manual_seed(0)
    model = build_model("lenet", 32).eval()
    amp = Amp(torch.device("cpu"), torch.float32)
    norm = BatchNormalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"), False)
    ds = ImageDataset(test.path, None, base_size_for(32), build_eval_transform(32))
    loader = make_loader(ds, 5, shuffle=False, seed=0, workers=0, runtime=Runtime(torch.device("cpu"), torch.float32))
    first, second = evaluate(model, loader, norm, amp), evaluate(model, loader, norm, amp, hflip=True)
    plain, rows, both, rows2 = first.probs, first.rows, second.probs, second.rows
    x = norm(torch.stack([ds[i][0] for i in range(len(ds))]))
    with torch.no_grad():
        mirrored = torch.sigmoid(model(torch.flip(x, dims=[3])).view(-1)).numpy()
    np.testing.assert_allclose(both, (plain + mirrored) / 2, rtol=1e-5)
    assert not np.allclose(both, plain)
    assert rows.tolist() == rows2.tolist() == list(range(12))


def test_fitted_weights_beat_or_equal_every_single_run():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    good = np.clip(labels * 0.7 + 0.15 + rng.normal(0, 0.15, 400), 0.01, 0.99)
    noisy = np.clip(labels * 0.4 + 0.3 + rng.normal(0, 0.3, 400), 0.01, 0.99)
    useless = np.full(400, 0.5)
    probs = np.column_stack([noisy, good, useless])
    w = fit_weights(labels, probs)
    assert w.min() >= 0 and w.sum() == pytest.approx(1)
    blend = log_loss(labels, probs @ w)
    assert all(blend <= log_loss(labels, probs[:, i]) + 1e-12 for i in range(3))
    assert w[2] < 0.05  # the useless run gets (almost) nothing


def test_blend_predictions_is_the_weighted_mean():
    a = pd.DataFrame({"id": [3, 1, 2], "prob_dog": [0.9, 0.1, 0.5]})
    b = pd.DataFrame({"id": [1, 2, 3], "prob_dog": [0.3, 0.5, 0.5]})
    out = blend_predictions([a, b], [0.25, 0.75])
    assert out.id.tolist() == [1, 2, 3]
    np.testing.assert_allclose(out.prob_dog, [0.25 * 0.1 + 0.75 * 0.3, 0.5, 0.25 * 0.9 + 0.75 * 0.5])


def test_runs_on_different_folds_are_refused(tiny_run, tmp_path):
    other = shutil.copytree(tiny_run, tmp_path / "other")
    oof = pd.read_csv(other / "oof.csv")
    oof["fold"] = (oof["fold"] + 1) % 3
    oof.to_csv(other / "oof.csv", index=False)
    with pytest.raises(ConfigError, match="not trained on the same folds"):
        aligned_oof([tiny_run, other])
    same = shutil.copytree(tiny_run, tmp_path / "same")
    blend = blend_runs([tiny_run, same], "mean")
    assert blend.weights == [0.5, 0.5]
    assert blend.blend_score["log_loss"] == pytest.approx(blend.run_scores["tiny"]["log_loss"])

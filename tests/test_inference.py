import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss

from pipeline.compute.evaluation import Amp, evaluate
from pipeline.compute.runtime import Runtime
from pipeline.data.images import BatchNormalizer, ImageDataset, base_size_for, build_eval_transform, make_loader
from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.predict.calibration import averaging_temperature
from pipeline.predict.ensemble import aligned_oof, blend_predictions, blend_runs, fit_weights
from pipeline.predict.inference import predict_run


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


def test_temperature_softens_an_over_confident_oof_set_and_never_hurts():
    from pipeline.predict.calibration import fit_temperature

    rng = np.random.default_rng(1)
    logit = rng.normal(0, 2, 4000)  # a calibrated model: each label drawn with its predicted probability
    labels = (rng.random(4000) < 1 / (1 + np.exp(-logit))).astype(int)
    sharp = 1 / (1 + np.exp(-4 * logit))  # the same ranking, four times too sure
    cal = fit_temperature(labels, sharp)
    assert cal.temperature == pytest.approx(4, rel=0.15)
    assert cal.oof_log_loss_after < cal.oof_log_loss_before - 0.1
    np.testing.assert_allclose(cal.apply(sharp), 1 / (1 + np.exp(-logit)), atol=0.05)
    assert ((cal.apply(sharp) >= 0.5) == (sharp >= 0.5)).all()  # labels at 0.5 never change
    timid = 1 / (1 + np.exp(-logit / 3))
    assert fit_temperature(labels, timid).temperature < 1  # under-confident: sharpened
    useless = np.full(4000, 0.5)  # nothing to gain: T stays 1 and the loss is unchanged
    flat = fit_temperature(labels, useless)
    assert flat.temperature == 1.0 and flat.oof_log_loss_after == flat.oof_log_loss_before


def test_redux_predictions_are_calibrated_on_the_oof_and_the_note_says_so(tiny_run, sample_data, tmp_path):
    from pipeline.predict.predict import predict

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    out = predict(runs=[runs / "tiny"], test_csv=sample_data / "test.csv", fmt="redux", tta="none",
                  runs_dir=runs, submissions_dir=tmp_path / "subs")
    cal, note = out["calibration"], json.loads(out["note"].read_text())
    assert cal is not None and note["calibration"]["method"] == "temperature of the fold mean"
    assert note["calibration"]["temperature"] == pytest.approx(cal.oof_temperature / cal.averaging)
    assert note["calibration"]["oof_log_loss_after"] <= note["calibration"]["oof_log_loss_before"]
    assert note["submitted_oof"]["log_loss"] == pytest.approx(note["calibration"]["oof_log_loss_after"])
    raw = pd.read_csv(runs / "tiny" / "test_probs.csv").set_index("id")
    assert cal.averaging == pytest.approx(averaging_temperature([raw[f"fold{k}"].to_numpy() for k in range(3)]))
    sub = pd.read_csv(out["path"]).set_index("id").label
    np.testing.assert_allclose(sub, np.clip(cal.apply(raw.loc[sub.index, "prob_dog"]), 0.005, 0.995), atol=1e-6)
    pooled = predict(runs=[runs / "tiny"], test_csv=sample_data / "test.csv", fmt="redux", tta="none",
                     calibrate="pooled", runs_dir=runs, out=tmp_path / "subs" / "pooled.csv")
    p = pooled["calibration"]
    assert json.loads(pooled["note"].read_text())["calibration"]["method"] == "pooled temperature"
    np.testing.assert_allclose(pd.read_csv(pooled["path"]).set_index("id").label,
                               np.clip(p.apply(raw.loc[sub.index, "prob_dog"]), 0.005, 0.995), atol=1e-6)
    plain = predict(runs=[runs / "tiny"], test_csv=sample_data / "test.csv", fmt="course", tta="none",
                    runs_dir=runs, out=tmp_path / "subs" / "labels.csv")
    assert plain["calibration"] is None  # 0/1 labels: auto leaves them alone

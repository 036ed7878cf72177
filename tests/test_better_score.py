"""A better score from the same budget (issue 22): calibration of what is submitted, weight averaging, TTA chosen
on the folds, pseudo-labels."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss
from torch import nn

from pipeline.competitions.spec import load_competition
from pipeline.compute.evaluation import Amp
from pipeline.compute.runtime import Runtime
from pipeline.predict.calibration import averaging_temperature, fit_ensemble_temperature, fit_temperature, tempered
from pipeline.predict.tta import choose_tta
from pipeline.rundir import RunDir
from pipeline.train.callbacks import Checkpointer, WeightAverage
from pipeline.train.engine import FitState

COURSE = load_competition("course")


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# ---- calibration of the submitted blend -------------------------------------------------------------------------

def _over_confident_folds(rng, n_folds: int = 5, n: int = 3000, scale: float = 2.0, noise: float = 1.5):
    """Labels drawn from a true logit z; fold model k says sigmoid(scale * z + its own noise), over-confident.
    Returns the out-of-fold rows (each predicted by its fold's model), and a test set every model predicts."""
    z = rng.normal(0, 2, n * n_folds)
    labels = (rng.random(len(z)) < _sigmoid(z)).astype(int)
    folds = np.repeat(np.arange(n_folds), n)
    oof = _sigmoid(scale * z + rng.normal(0, noise, len(z)))
    z_test = rng.normal(0, 2, 20000)
    y_test = (rng.random(len(z_test)) < _sigmoid(z_test)).astype(int)
    members = [_sigmoid(scale * z_test + rng.normal(0, noise, len(z_test))) for _ in range(n_folds)]
    return labels, oof, folds, members, y_test


def _ll(y, p):
    return log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])


def test_the_fold_mean_of_over_confident_models_is_not_over_softened():
    # each model is over-confident (the out-of-fold temperature is well above 1), but the models disagree, so
    # their mean is already much softer: the pooled temperature, fitted on single models, over-softens the mean
    labels, oof, _, members, y_test = _over_confident_folds(np.random.default_rng(1))
    mean = np.mean(members, axis=0)
    cal = fit_ensemble_temperature(labels, oof, members)
    pooled = fit_temperature(labels, oof)
    assert pooled.temperature > 1.5 and cal.averaging > 1.2
    assert cal.temperature == pytest.approx(pooled.temperature / cal.averaging)
    best_for_the_mean = fit_temperature(y_test, mean).temperature  # what the test labels say the mean needs
    assert abs(cal.temperature - best_for_the_mean) < abs(pooled.temperature - best_for_the_mean) / 2
    assert _ll(y_test, cal.apply(mean)) < _ll(y_test, pooled.apply(mean))


def test_alike_fold_models_are_calibrated_as_one():
    # five copies of one over-confident model: the mean is that model, and gets the model's own temperature
    rng = np.random.default_rng(2)
    labels, oof, _, members, _ = _over_confident_folds(rng, noise=0.0)
    cal = fit_ensemble_temperature(labels, oof, members)
    assert cal.averaging == pytest.approx(1.0)
    assert cal.temperature == pytest.approx(fit_temperature(labels, oof).temperature)


def test_the_calibration_never_raises_the_out_of_fold_log_loss_of_the_submitted_path():
    rng = np.random.default_rng(3)
    for scale, noise in [(2.0, 1.5), (1.0, 0.0), (1.0, 2.0), (0.6, 0.5)]:  # over- and under-confident, alike
        labels, oof, _, members, _ = _over_confident_folds(rng, n=400, scale=scale, noise=noise)
        cal = fit_ensemble_temperature(labels, oof, members)
        assert cal.oof_log_loss_after <= cal.oof_log_loss_before
        averaged = tempered(oof, cal.averaging)  # the out-of-fold rows averaged as the test predictions are
        assert cal.oof_log_loss_before == pytest.approx(_ll(labels, averaged))
        assert cal.oof_log_loss_after == pytest.approx(_ll(labels, cal.oof))
        if not cal.applied:
            assert cal.temperature == 1.0


def test_the_averaging_temperature_of_k_classes_and_unreadable_photos():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (500, 10))
    members = [tempered(np.exp(logits) / np.exp(logits).sum(1, keepdims=True), 1.0)
               for _ in range(3)]
    assert averaging_temperature(members) == pytest.approx(1.0)  # alike members: no softening
    noisy = [np.exp(logits + rng.normal(0, 2, logits.shape)) for _ in range(5)]
    noisy = [m / m.sum(1, keepdims=True) for m in noisy]
    noisy[0][7] = np.nan  # a photo that could not be read: left out
    assert averaging_temperature(noisy) > 1.1
    assert averaging_temperature(noisy[:1]) == 1.0


# ---- TTA chosen on the folds ----------------------------------------------------------------------------------

@pytest.fixture
def run_with_views(tiny_run, tmp_path):
    """A copy of the tiny run whose out-of-fold views are rewritten: the mirror's predictions are the labels
    (a view that helps), the zoom's are noise (a view that hurts)."""
    run = shutil.copytree(tiny_run, tmp_path / "views")
    oof = pd.read_csv(run / "oof.csv")
    assert {"prob_dog@hflip", "prob_dog@zoom", "prob_dog@zoom-hflip"} <= set(oof.columns)
    oof["prob_dog@hflip"] = np.where(oof.label == 1, 0.99, 0.01)
    oof["prob_dog@zoom"] = np.random.default_rng(0).random(len(oof))
    oof["prob_dog@zoom-hflip"] = 1 - oof["prob_dog"]  # the opposite of the plain prediction
    oof.to_csv(run / "oof.csv", index=False)
    return run


@pytest.mark.parametrize("metric", ["accuracy", "log_loss"])
def test_tta_auto_picks_the_view_that_helps_and_none_that_raises_the_metric(run_with_views, metric):
    choice = choose_tta([run_with_views], COURSE, metric)
    assert choice.candidates == ["hflip", "zoom", "zoom-hflip"]
    assert choice.steps[0]["views"] == "none"
    assert choice.policy.split("+")[0] == "hflip"
    assert "zoom" not in choice.policy.split("+")
    lower = metric == "log_loss"
    for before, after in zip(choice.steps, choice.steps[1:], strict=False):
        assert (after["metric"] <= before["metric"]) if lower else (after["metric"] >= before["metric"])
        assert after["metric"] != before["metric"] or after["log_loss"] < before["log_loss"]


def test_tta_auto_keeps_the_image_alone_when_every_view_hurts(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / "hurts")
    oof = pd.read_csv(run / "oof.csv")
    for view in ("hflip", "zoom", "zoom-hflip"):
        oof[f"prob_dog@{view}"] = 1 - oof["prob_dog"]
    oof.to_csv(run / "oof.csv", index=False)
    choice = choose_tta([run], COURSE, "log_loss")
    assert choice.policy == "none" and len(choice.steps) == 1


def test_predict_records_the_tta_it_chose_in_the_note(run_with_views, sample_data, tmp_path):
    from pipeline.predict.predict import predict

    runs = run_with_views.parent
    result = predict(runs=[run_with_views], test_csv=sample_data / "test.csv", fmt="redux", runs_dir=runs,
                     out=tmp_path / "sub.csv")
    note = json.loads(result["note"].read_text())
    assert note["tta"] == result["tta"] and note["tta"].startswith("hflip")
    assert note["tta_choice"]["steps"][-1]["views"] == note["tta"]
    assert note["calibration"]["method"] == "temperature of the fold mean"
    assert note["submitted_oof"]["log_loss"] == pytest.approx(note["calibration"]["oof_log_loss_after"])


# ---- weight averaging -------------------------------------------------------------------------------------------

def _fit_by_hand(tmp_path, kind: str, weights_per_epoch: list[float], target: float, n: int = 3):
    """Drive WeightAverage and the Checkpointer through epochs whose model is ``nn.Linear(1, 1)`` with weight w and
    validation loss (w - target)^2, as :func:`pipeline.train.engine.fit` calls them."""
    model = nn.Linear(1, 1, bias=False)

    def validate(m):
        return {"val_loss": float((m.weight.item() - target) ** 2)}

    rt = Runtime(torch.device("cpu"), torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = FitState(fold=0, epochs=len(weights_per_epoch), model=model, net=model, optimizer=opt,
                     scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), amp=Amp(rt.device, rt.dtype),
                     runtime=rt)
    average = WeightAverage(kind, n, validate)
    run = RunDir(tmp_path / "run")
    ckpt = Checkpointer(run, 0, meta={}, extra={"average": average})
    for epoch, w in enumerate(weights_per_epoch):
        state.epoch = epoch
        with torch.no_grad():
            model.weight.fill_(w)
        state.row = {"fold": 0, "epoch": epoch, **validate(model)}
        state.val_loss, state.candidate = state.row["val_loss"], model
        state.improved = state.val_loss < state.best_loss - 1e-4
        if state.improved:
            state.best_loss = state.val_loss
        average.on_epoch_end(state)
        ckpt.on_epoch_end(state)
    average.on_fit_end(state)
    ckpt.on_fit_end(state)
    return state, torch.load(run.best(0), weights_only=False)


def test_swa_replaces_best_pt_when_the_average_validates_better(tmp_path):
    # epochs at 0, 2, 3 and 5.5 around a target of 4: the mean of the last three (3.5, loss 0.25) beats every
    # epoch (the best: 3, loss 1)
    state, best = _fit_by_hand(tmp_path, "swa", [0.0, 2.0, 3.0, 5.5], target=4.0)
    assert state.averaged == {"kind": "swa", "epochs": [1, 2, 3], "val_loss": pytest.approx(0.25)}
    assert best["weights"] == "swa" and best["average"]["epochs"] == [1, 2, 3]
    assert best["model"]["weight"].item() == pytest.approx(3.5)


def test_an_average_that_validates_worse_leaves_best_pt_alone(tmp_path):
    state, best = _fit_by_hand(tmp_path, "swa", [0.0, 9.0, 4.0, 8.0], target=4.0)  # mean 7: worse than epoch 2
    assert state.averaged is None
    assert best["weights"] == "model" and best["epoch"] == 2
    assert best["model"]["weight"].item() == pytest.approx(4.0)


def test_a_greedy_soup_adds_an_epoch_only_while_it_validates_better(tmp_path):
    # best epochs: 3.5 (loss 0.25), 4.6 (0.36), 2.0 (4): the soup of the first two (4.05) wins; adding 2.0 hurts
    state, best = _fit_by_hand(tmp_path, "soup", [2.0, 3.5, 9.0, 4.6], target=4.0)
    assert state.averaged["kind"] == "soup" and sorted(state.averaged["epochs"]) == [1, 3]
    assert best["model"]["weight"].item() == pytest.approx(4.05)
    assert best["weights"] == "soup"


def test_a_trained_run_with_averaging_records_what_best_pt_holds(data_copy, tmp_path):
    from pipeline.train.session import train
    from tests.conftest import tiny_config

    runs = tmp_path / "runs"
    cv = train(tiny_config(data_copy, runs, run_name="avg", epochs=3, average="soup", average_epochs=3, folds=[0]))
    best = torch.load(runs / "avg" / "fold0" / "best.pt", weights_only=False)
    metrics = pd.read_csv(runs / "avg" / "metrics.csv")
    if best["weights"] == "soup":  # the soup validated better than every epoch: its loss is below theirs
        assert best["metrics"]["val_loss"] < metrics.val_loss.min()
        assert cv["folds"]["0"]["weights"] == "soup"
    else:
        assert best["weights"] == "model" and "weights" not in cv["folds"]["0"]
        assert metrics.val_loss[best["epoch"]] == metrics.val_loss.min()


# ---- pseudo-labels ------------------------------------------------------------------------------------------------

@pytest.fixture
def blended(tiny_run, data_copy, tmp_path) -> dict:
    """A copy of the tiny run that has predicted ``data_copy``'s test set, and the note of that submission."""
    from pipeline.predict.predict import predict

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    result = predict(runs=[runs / "tiny"], test_csv=data_copy / "test.csv", fmt="redux", runs_dir=runs,
                     out=tmp_path / "subs" / "tiny.csv")
    p = pd.read_csv(runs / "tiny" / "test_probs.csv").prob_dog  # the tiny run is unsure: take its surer half
    threshold = float(np.median(np.maximum(p, 1 - p)))
    assert threshold > 0.5
    return {"runs": runs, "note": result["note"], "csv": result["path"], "data": data_copy, "threshold": threshold}


def test_pseudo_labelled_photos_join_every_training_fold_and_never_a_validation_fold(blended):
    from pipeline.compute.settings import RunSettings
    from pipeline.recipe import Recipe
    from pipeline.train.fold import fold_data
    from pipeline.train.session import train
    from tests.conftest import tiny_config

    runs, data = blended["runs"], blended["data"]
    request = tiny_config(data, runs, run_name="second", epochs=1)
    t = blended["threshold"]
    request.pseudo, request.pseudo_threshold = str(blended["csv"]), t  # the CSV: its note is beside it
    cv = train(request)
    run = RunDir(runs / "second")
    pseudo, folds = run.read_pseudo(), run.read_folds()
    config = run.config()
    assert config["pseudo"]["photos"] == len(pseudo) >= 50 and config["pseudo"]["threshold"] == t
    assert config["pseudo"]["runs"] == ["tiny"] and config["pseudo"]["of"] == 100
    assert set(pseudo.path) <= set(pd.read_csv(data / "test.csv").path)
    assert not set(pseudo.path) & set(folds.path)
    assert ((pseudo.prob_dog >= t) | (pseudo.prob_dog <= 1 - t)).all()  # confident, and soft
    assert pseudo.prob_dog.between(0, 1).all() and not pseudo.prob_dog.isin([0, 1]).all()

    oof = run.read_oof()  # every training photo exactly once, no test photo
    assert sorted(oof.path) == sorted(folds.path) and cv["overall"]["n"] == len(folds)

    comp = load_competition("course")
    rt = Runtime(torch.device("cpu"), torch.float32)
    assert set(pseudo.fold) == {0, 1, 2}  # the tiny run shares the folds: each fold labelled by its own models
    for k in range(3):
        d = fold_data(k, rt, Recipe.of_run(run), RunSettings.of_run(run), folds, None, comp, pseudo)
        mine = pseudo[pseudo.fold == k]
        assert len(d.train_ds) == (folds.fold != k).sum() + len(mine)
        assert set(mine.path) <= set(d.train_ds.paths) and not set(pseudo.path) & set(d.val_ds.paths)
        np.testing.assert_allclose(d.train_ds.labels[-len(mine):], mine.prob_dog, rtol=1e-6)


def test_a_resume_keeps_the_pseudo_set_it_started_with(blended, caplog):
    from pipeline.train.session import train
    from tests.conftest import tiny_config

    runs, data = blended["runs"], blended["data"]
    request = tiny_config(data, runs, run_name="again", epochs=1, folds=[0])
    request.pseudo, request.pseudo_threshold = str(blended["note"]), blended["threshold"]
    train(request)
    run = RunDir(runs / "again")
    before, info = run.pseudo_path.read_bytes(), run.config()["pseudo"]
    later = tiny_config(data, runs, run_name="again", epochs=1, folds=[0, 1])
    later.pseudo, later.pseudo_threshold = "tiny", 0.9  # another source: ignored, with a warning
    train(later, resume=True)
    assert run.pseudo_path.read_bytes() == before and run.config()["pseudo"] == info
    assert "keeps the pseudo-labels it started with" in caplog.text
    assert run.finished_folds() == [0, 1]


@pytest.mark.parametrize(("source", "why"), [("nowhere.json", "no such submission note"),
                                             ("tiny", "has no test predictions")])
def test_a_pseudo_source_that_cannot_serve_is_one_line_and_leaves_no_run(source, why, tiny_run, data_copy, tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.train.session import train
    from tests.conftest import tiny_config

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    for saved in ("test_probs.csv", "test_probs.json"):
        (runs / "tiny" / saved).unlink(missing_ok=True)
    request = tiny_config(data_copy, runs, run_name="refused", epochs=1)
    request.pseudo = source
    with pytest.raises(ConfigError, match=why):
        train(request)
    assert not (runs / "refused").exists()


def test_k_class_pseudo_labels_train_as_soft_rows_beside_one_hot_real_ones():
    from pipeline.targets.mixing import make_mix
    from pipeline.targets.task import Task
    from pipeline.train.pseudo import soft_labels

    comp = load_competition("cifar-10")
    columns = comp.prob_columns()
    pseudo = pd.DataFrame({"path": ["a.png", "b.png"], **{c: [0.0] * 2 for c in columns}})
    pseudo.loc[0, "prob_cat"], pseudo.loc[0, "prob_dog"] = 0.9, 0.1
    pseudo.loc[1, "prob_ship"] = 1.0
    targets = soft_labels(pd.Series([0, 9]), pseudo, comp)
    assert targets.shape == (4, 10)
    np.testing.assert_allclose(targets[:2], np.eye(10)[[0, 9]])
    assert targets[2, 3] == pytest.approx(0.9) and targets[2, 5] == pytest.approx(0.1) and targets[3, 8] == 1

    task, y = Task(10), torch.from_numpy(targets)
    logits = torch.full((4, 10), -5.0)
    logits[[0, 1, 2, 3], [0, 9, 3, 1]] = 5.0  # the last one wrong
    assert task.correct(logits, y).item() == 3
    _, smoothed = make_mix(10, 0, 0, 1, 0.1)(torch.zeros(4, 3, 8, 8), y)
    np.testing.assert_allclose(smoothed.sum(dim=1), 1, rtol=1e-6)
    assert smoothed[2, 3].item() == pytest.approx(0.9 * 0.9 + 0.01)
    assert task.loss(logits, smoothed).item() > 0


@pytest.mark.parametrize("threshold", [0.5, 1.0, 1.5, -0.2, float("nan")])
def test_a_pseudo_threshold_outside_half_to_one_is_one_line(threshold, tmp_path):
    from pipeline.errors import ConfigError
    from pipeline.train.pseudo import pseudo_labels

    with pytest.raises(ConfigError, match="--pseudo-threshold must be above 0.5 and below 1"):
        pseudo_labels(tmp_path / "none.json", tmp_path, tmp_path / "test.csv", load_competition("course"), threshold)


@pytest.mark.parametrize(("field", "value"), [("average", "ema"), ("average_epochs", 1), ("average_epochs", -3)])
def test_an_average_the_recipe_cannot_take_is_one_line(field, value):
    from pipeline.errors import ConfigError
    from pipeline.recipe import Recipe

    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        Recipe(**{field: value}).resolved()

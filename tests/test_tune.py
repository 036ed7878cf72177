"""``pipeline tune``: real studies of tiny LeNet trials on the bundled sample, in real SQLite and PostgreSQL
storages, with real worker processes; the pruner, the best recipe, the marks in ``pipeline runs``, bad input."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import optuna
import pytest

from pipeline.competitions.spec import load_competition, record_competition
from pipeline.errors import ConfigError
from pipeline.recipe import load_recipe_file
from pipeline.report import list_runs
from pipeline.rundir import RunDir
from pipeline.tomlfiles import NamedFiles
from pipeline.train.engine import FitState
from pipeline.train.request import TrainRequest
from pipeline.train.session import train
from pipeline.tune.show import load_study, show_study
from pipeline.tune.space import SPACES, default_space_file, load_space
from pipeline.tune.study import TuneJob, check_job, make_pruning, run_worker, run_workers
from tests.postgres import free_port, postgres_server
from tests.test_cli import invoke

TINY_SPACE = """
arch = "lenet"
img_size = 32
epochs = 2
batch_size = 32
patience = 0
lr = {low = 1e-4, high = 3e-3, log = true}
label_smoothing = {low = 0.0, high = 0.2}
augment = {choices = ["none", "light"]}
"""
SETTINGS = {"workers": 0, "threads": 1, "tracker": "none"}


def tiny_job(data: Path, runs: Path, tmp: Path, space: str = TINY_SPACE, **kw) -> TuneJob:
    path = tmp / "space.toml"
    path.write_text(space)
    return TuneJob(**{"recipe": "lenet", "trials": 4, "space": str(path), "study": "t",
                      "settings": SETTINGS | {"data_dir": str(data), "runs_dir": str(runs)}} | kw)


def check_study(study, runs: Path, n: int) -> None:
    """``n`` finished trials, each run once: its own run folder, trained with the fields the study gave it."""
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), [t.state for t in trials]
    names = [t.user_attrs["run"] for t in trials]
    assert len(set(names)) == n
    for t in trials:
        run = RunDir(runs / t.user_attrs["run"])
        assert json.loads(run.trial_path.read_text())["trial"] == t.number
        recipe = run.config()["recipe"]
        assert all(recipe[k] == v for k, v in t.params.items())
        if t.state.name == "COMPLETE":
            assert math.isclose(run.read_cv()["overall"]["accuracy"], t.value)


@pytest.fixture(scope="module")
def sqlite_study(sample_data, tmp_path_factory):
    """Four trials by two worker processes on the default SQLite file."""
    tmp = tmp_path_factory.mktemp("tune")
    job = tiny_job(sample_data, tmp / "runs", tmp, jobs=2)
    check_job(job)
    assert run_workers(job, time.time()) == [0, 0]
    return job


def test_two_worker_processes_on_one_sqlite_file_run_each_trial_once(sqlite_study):
    runs = sqlite_study.runs_dir
    study = load_study("t", sqlite_study.storage)
    check_study(study, runs, 4)
    assert sqlite_study.storage == f"sqlite:///{(runs / 'tune.db').resolve().as_posix()}"
    baseline = [t for t in study.get_trials() if t.user_attrs.get("baseline")]
    assert len(baseline) == 1 and baseline[0].params["lr"] == 1e-3  # lenet's own lr opens the study


def test_a_rerun_of_the_study_continues_it_up_to_trials(sqlite_study, tmp_path):
    job = TuneJob(**sqlite_study.to_dict() | {"trials": 5, "jobs": 1})
    assert run_worker(job) == 1
    check_study(load_study("t", job.storage), job.runs_dir, 5)
    assert run_worker(job) == 0  # the study has its trials


def test_the_best_trials_recipe_file_trains(sqlite_study, tmp_path):
    runs = sqlite_study.runs_dir
    shown = show_study("t", sqlite_study.storage, runs)
    study = load_study("t", sqlite_study.storage)
    assert shown.best["trial"] == study.best_trial.number and shown.best["value"] == study.best_value
    fields = load_recipe_file(shown.recipe_file)
    assert fields == {k: v for k, v in RunDir(runs / shown.best["run"]).config()["recipe"].items() if v is not None}
    page = shown.page.read_text()
    assert 'alt="history"' in page and 'alt="importances"' in page  # fANOVA, offline (scikit-learn's forest)
    assert set(shown.frame.columns) >= {"trial", "state", "value", "seconds", "lr", "label_smoothing", "augment"}
    cv = train(TrainRequest(recipe=str(shown.recipe_file),
                            settings=SETTINGS | {"data_dir": str(sqlite_study.settings["data_dir"]),
                                                 "runs_dir": str(tmp_path), "run_name": "best", "folds": [0],
                                                 "progress": False, "report": False}))
    assert math.isclose(cv["overall"]["accuracy"], study.best_value)  # the same recipe, the same fold, the CPU


def test_show_on_the_command_line(sqlite_study):
    r = invoke("tune", "--study", "t", "--show", "--runs-dir", sqlite_study.runs_dir)
    assert r.exit_code == 0, r.output
    assert "best: trial" in r.output and "tune-t-best.toml" in r.output and "tune-t.html" in r.output


# ---- the pruner ------------------------------------------------------------------------------------------------
def test_a_trial_whose_learning_rate_diverges_is_pruned_and_marked_in_runs(sample_data, tmp_path):
    space = TINY_SPACE.replace("lr = {low = 1e-4, high = 3e-3, log = true}", 'lr = 1e30\noptimizer = "sgd"')
    job = tiny_job(sample_data, tmp_path / "runs", tmp_path, space, trials=1)
    assert run_worker(job) == 1
    trial = load_study("t", job.storage).trials[0]
    assert trial.state.name == "PRUNED" and "diverged" in trial.user_attrs["why"]
    listed = list_runs(tmp_path / "runs")
    assert listed.set_index("run").status["tune-t-0"] == "pruned"


def test_the_pruner_stops_a_trial_behind_the_others_after_an_epoch():
    study = optuna.create_study(direction="maximize",
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    for _ in range(3):  # three trials that scored 0.8 after each epoch
        t = study.ask()
        for step in range(3):
            t.report(0.8, step)
        study.tell(t, 0.8)
    state = FitState(fold=0, epochs=3, model=None, net=None, optimizer=None, scheduler=None, amp=None,
                     runtime=None)
    pruning = make_pruning(study.ask(), "accuracy")  # accuracy's direction: a log-loss counts negated
    state.epoch, state.row = 0, {"val_logloss": 0.69}
    pruning.on_epoch_end(state)  # the warm-up epoch is never pruned
    state.epoch, state.row = 1, {"val_logloss": 0.68}
    with pytest.raises(optuna.TrialPruned, match="fold 0, epoch 2"):
        pruning.on_epoch_end(state)
    pruning = make_pruning(study.ask(), "accuracy")
    for epoch in range(2):  # the competition's metric, once the rows carry it, is what counts
        state.epoch, state.row = epoch, {"val_metric": 0.9, "val_logloss": 5.0}
        pruning.on_epoch_end(state)


# ---- PostgreSQL ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_worker_processes_share_a_postgresql_study(sample_data, tmp_path):
    with postgres_server() as url:
        job = tiny_job(sample_data, tmp_path / "runs", tmp_path, jobs=2, storage=url, trials=3)
        check_job(job)
        assert run_workers(job, time.time()) == [0, 0]
        check_study(load_study("t", url), job.runs_dir, 3)


# ---- bad input -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,expected", [
    ("lr = {low = 1e-2, high = 1e-4}", "lr cannot be sampled: low 0.01 is above high 0.0001"),
    ("lr = {low = 0.0, high = 1e-2, log = true}", "cannot be sampled on a log scale from 0.0"),
    ("batch_size = {choices = []}", "batch_size's choices must be a non-empty list"),
    ("label_smoothing = {low = 0.0, high = 0.7}", "label_smoothing = 0.7 cannot be sampled: --label-smoothing must"),
    ("augment = {low = 1, high = 2}", "augment is not a number: sample it with choices"),
    ("lrr = {low = 1e-4, high = 1e-2}", "unknown recipe field 'lrr' (did you mean 'lr'?)"),
    ("lr = {low = 1e-4, hihg = 1e-2}", "lr has an unknown key 'hihg'"),
    ("epochs = {low = 1.5, high = 4}", "epochs must be int, got 1.5"),
])
def test_a_space_that_cannot_be_sampled_is_one_line(tmp_path, line, expected):
    path = tmp_path / "space.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as err:
        load_space(path, "lenet")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_command_refuses_a_bad_space_in_one_line_and_starts_no_trial(data_copy, tmp_path):
    (tmp_path / "bad.toml").write_text("lr = {low = 1e-2, high = 1e-4}\n")
    r = invoke("tune", "--recipe", "lenet", "--space", tmp_path / "bad.toml", "--trials", "2",
               "--data-dir", data_copy, "--runs-dir", tmp_path / "runs")
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1 and "low 0.01 is above high" in r.output
    assert not list((tmp_path / "runs").glob("tune-*"))


def test_a_storage_that_does_not_answer_is_one_line_within_seconds(data_copy, tmp_path):
    url = f"postgresql://u:secret@127.0.0.1:{free_port()}/db"
    r = invoke("tune", "--recipe", "lenet", "--storage", url, "--data-dir", data_copy, "--runs-dir", tmp_path)
    assert r.exit_code == 1 and len(r.output.strip().splitlines()) == 1, r.output
    assert "cannot be used" in r.output and "secret" not in r.output and "Connection refused" in r.output


def test_a_study_made_for_another_competition_or_recipe_is_refused(data_copy, tmp_path):
    job = tiny_job(data_copy, tmp_path / "runs", tmp_path, trials=1)
    check_job(job)
    with pytest.raises(ConfigError, match="was made for recipe 'lenet', not 'scratch'"):
        check_job(TuneJob(**job.to_dict() | {"recipe": "scratch", "space": None}))
    record_competition(data_copy, load_competition("dogs-vs-cats-redux-kernels-edition"))
    with pytest.raises(ConfigError, match="made for competition 'course', not 'dogs-vs-cats-redux-kernels-edition'"):
        check_job(job)


def test_every_builtin_recipe_has_a_default_space_that_loads():
    for name in ("lenet", "scratch", "finetune"):
        assert default_space_file(name) == SPACES.path(name)
        assert load_space(default_space_file(name), name).params
    with pytest.raises(ConfigError, match="no search space beside it"):
        default_space_file(Path(__file__))


# ---- the named-file loader -------------------------------------------------------------------------------------
def test_named_files_find_a_builtin_name_or_a_path_and_say_the_closest_name(tmp_path):
    files = NamedFiles(SPACES.folder, "search space", "Search space", "a space file", "pipeline x")
    assert files.path("scratch").name == "scratch.toml"
    with pytest.raises(ConfigError, match=r"No search space 'scrach' \(did you mean 'scratch'\?\): give a space "
                                          r"file or one of .*scratch \(`pipeline x` lists them\)\."):
        files.path("scrach")
    bad = tmp_path / "bad.toml"
    bad.write_text("lr = [\n")
    with pytest.raises(ConfigError, match=r"Search space .*bad.toml is not valid TOML \("):
        files.load(bad)

"""Training on several processes: two real gloo processes on this CPU, through `pipeline train --nproc 2`
(torch's elastic launcher) and through torchrun itself (issue 10)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from pipeline.metrics import score
from pipeline.predict.inference import predict_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--arch", "lenet", "--img-size", "32", "--batch-size", "32", "--workers", "0", "--patience", "0",
        "--no-progress"]
TIMING = ["images_per_s", "seconds"]


def pipeline(*args, cwd: Path, wait: bool = True, module: str = "pipeline"):
    """``python -m pipeline ARGS`` (or torchrun) as a real process running this checkout."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture
def project(data_copy, tmp_path) -> Path:
    """A user's folder: data/ (the bundled sample, 3 folds), runs/ empty."""
    shutil.move(str(data_copy), tmp_path / "project" / "data")
    return tmp_path / "project"


def metrics(run_dir: Path) -> pd.DataFrame:
    m = pd.read_csv(run_dir / "metrics.csv").drop(columns=TIMING)
    return m.sort_values(["fold", "epoch"]).reset_index(drop=True)


def check_run(run_dir: Path, n_images: int) -> pd.DataFrame:
    """oof.csv holds each image of the trained folds once and cv.json is what it scores to."""
    oof = pd.read_csv(run_dir / "oof.csv")
    assert len(oof) == n_images and oof.path.is_unique
    cv = json.loads((run_dir / "cv.json").read_text())
    again = score(oof.label, oof.prob_dog)
    assert cv["overall"]["n"] == n_images
    for key in ("accuracy", "log_loss", "roc_auc"):
        assert cv["overall"][key] == pytest.approx(again[key])
    return oof


@pytest.mark.slow  # one of the longest end-to-end runs (issue 28: the default suite under 10 min)
def test_two_processes_share_the_folds_and_match_one_process(project):
    pipeline("train", *TINY, "--epochs", "2", "--nproc", "2", "--parallel", "folds", "--run-name", "two", cwd=project)
    pipeline("train", *TINY, "--epochs", "2", "--threads", "1", "--run-name", "one", cwd=project)
    runs = project / "runs"
    if importlib.util.find_spec("tensorboard"):  # --tracker auto: each fold's events, written by its process
        assert sorted(p.name for p in (runs / "two" / "tensorboard").glob("fold*")) == ["fold0", "fold1", "fold2"]
    config = json.loads((runs / "two" / "config.json").read_text())
    assert config["environment"]["processes"] == 2  # the launcher made the run for its 2 workers (issue 20: was 1)
    check_run(runs / "two", 600)
    # every fold trained once, each exactly as one process with the same seed and thread count trains it
    pd.testing.assert_frame_equal(metrics(runs / "two"), metrics(runs / "one"))
    a, b = (pd.read_csv(runs / r / "oof.csv").sort_values("path").reset_index(drop=True) for r in ("two", "one"))
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow  # several launches of 2-3 processes each (issue 28: the default suite under 10 min)
def test_ddp_trains_one_fold_together_and_predict_loads_it_alone(project):
    pipeline("train", *TINY, "--epochs", "2", "--nproc", "2", "--parallel", "ddp", "--folds", "0",
             "--run-name", "ddp", cwd=project)
    run_dir = project / "runs" / "ddp"
    folds = pd.read_csv(project / "data" / "folds.csv")
    oof = check_run(run_dir, int((folds.fold == 0).sum()))  # 200 validation images: no padding repeats
    assert set(oof.path) == set(folds.path[folds.fold == 0])
    m = metrics(run_dir)
    assert list(zip(m.fold, m.epoch, strict=True)) == [(0, 0), (0, 1)]  # one row per epoch, written by one process
    probs = predict_run(run_dir, project / "data" / "test.csv", tta="none")  # one process, no process group
    assert len(probs) == 100 and probs.prob_dog.between(0, 1).all() and probs.prob_dog.std() > 0
    assert not torch.distributed.is_initialized()

    # torchrun itself gives the same run
    pipeline("--standalone", "--nproc-per-node", "2", "-m", "pipeline", "train", *TINY, "--epochs", "2",
             "--parallel", "ddp", "--folds", "0", "--run-name", "torchrun", cwd=project, module="torch.distributed.run")
    pd.testing.assert_frame_equal(metrics(project / "runs" / "torchrun"), m)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # several launches of 2-3 processes each (issue 28: the default suite under 10 min)
def test_two_torchrun_agents_on_one_rendezvous_make_the_run_nproc_2_makes(project):
    """The multi-node form (issue 18): two agents, as on two machines, meet at a c10d rendezvous on this
    machine and train one run, fold for fold what `--nproc 2` trains."""
    port = _free_port()
    agent = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
             f"127.0.0.1:{port}", "--rdzv-id", "two-nodes", "-m", "pipeline", "train", *TINY, "--epochs", "2",
             "--threads", "1", "--run-name", "nodes"]
    agents = [pipeline(*agent, cwd=project, wait=False, module="torch.distributed.run") for _ in range(2)]
    outs = [a.communicate(timeout=600) for a in agents]
    assert [a.returncode for a in agents] == [0, 0], [err[-3000:] for _, err in outs]
    pipeline("train", *TINY, "--epochs", "2", "--nproc", "2", "--run-name", "two", cwd=project)
    runs = project / "runs"
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["nodes", "two"]  # one run, not two
    check_run(runs / "nodes", 600)
    pd.testing.assert_frame_equal(metrics(runs / "nodes"), metrics(runs / "two"))
    a, b = (pd.read_csv(runs / r / "oof.csv").sort_values("path").reset_index(drop=True) for r in ("nodes", "two"))
    pd.testing.assert_frame_equal(a, b)


def _children(pid: int) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(p.name))
            except (OSError, ValueError, IndexError):
                pass
    return found


def _workers(launcher: int) -> list[int]:
    """The training processes the launcher spawned (multiprocessing's spawn_main, not its resource tracker)."""
    out = []
    for pid in _children(launcher):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(pid)
    return out


@pytest.mark.slow  # several launches of 2-3 processes each (issue 28: the default suite under 10 min)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_worker_is_restarted_and_continues_from_its_last_epoch(project):
    run_dir = project / "runs" / "killed"
    proc = pipeline("train", *TINY, "--epochs", "8", "--nproc", "2", "--max-restarts", "1", "--run-name", "killed",
                    cwd=project, wait=False)
    killed = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and killed is None and time.monotonic() < deadline:
        if (run_dir / "metrics.csv").exists() and len(pd.read_csv(run_dir / "metrics.csv")) >= 3:
            workers = _workers(proc.pid)
            if workers:
                os.kill(workers[0], signal.SIGKILL)  # mid-fold: a fold has 8 epochs, 3 rows are written
                killed = workers[0]
        time.sleep(0.02)
    _out, err = proc.communicate(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 0, err[-4000:]
    assert "restarted after a failure; continuing after epoch" in err  # finished epochs were not trained again
    check_run(run_dir, 600)
    config = json.loads((run_dir / "config.json").read_text())
    assert [r["restart"] for r in config["resumes"]] == [True]  # issue 20: the restart is in the run's record
    cv = json.loads((run_dir / "cv.json").read_text())
    assert cv["seconds"] >= pd.read_csv(run_dir / "metrics.csv").groupby("fold").seconds.sum().max()  # before it too
    # the restarted run is the uninterrupted one, to the last digit
    pipeline("train", *TINY, "--epochs", "8", "--nproc", "2", "--run-name", "straight", cwd=project)
    pd.testing.assert_frame_equal(metrics(run_dir), metrics(project / "runs" / "straight"))


@pytest.mark.slow  # several launches of 2-3 processes each (issue 28: the default suite under 10 min)
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_torchrun_restarts_continue_the_run_it_made(project):
    """Plain torchrun, no --run-name: the restarted workers find their run by torchrun's run id."""
    proc = pipeline("--standalone", "--nproc-per-node", "2", "--max-restarts", "1", "-m", "pipeline", "train",
                    *TINY, "--epochs", "8", cwd=project, wait=False, module="torch.distributed.run")
    killed, deadline = None, time.monotonic() + 300
    while proc.poll() is None and killed is None and time.monotonic() < deadline:
        found = list((project / "runs").glob("*/metrics.csv"))
        if found and len(pd.read_csv(found[0])) >= 3:
            workers = [p for p in _children(proc.pid) if b"pipeline" in Path(f"/proc/{p}/cmdline").read_bytes()]
            if workers:
                os.kill(workers[-1], signal.SIGKILL)
                killed = workers[-1]
        time.sleep(0.02)
    _out, err = proc.communicate(timeout=600)
    assert killed is not None and proc.returncode == 0, err[-4000:]
    runs = list((project / "runs").iterdir())
    assert len(runs) == 1  # the restart continued the run; it did not start a second one
    assert "restarted after a failure; continuing after epoch" in err
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["resumes"] and config["resumes"][-1]["restart"] is True
    check_run(runs[0], 600)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker processes through /proc")
def test_a_killed_worker_without_restarts_is_one_line(project):
    """Before (issue 20), torch elastic printed its own multi-line report above the pipeline's one line."""
    run_dir = project / "runs" / "dies"
    proc = pipeline("train", *TINY, "--epochs", "200", "--nproc", "2", "--run-name", "dies", cwd=project, wait=False)
    killed, deadline = None, time.monotonic() + 300
    while proc.poll() is None and killed is None and time.monotonic() < deadline:
        if (run_dir / "metrics.csv").exists():
            workers = _workers(proc.pid)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
        time.sleep(0.02)
    _out, err = proc.communicate(timeout=600)
    assert killed is not None and proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: Training process") and "--resume --nproc 2" in lines[0], err

"""``pipeline export --push``: send the bundle and the notebook with the official Kaggle CLI.

``kaggle datasets create -p DATASET --dir-mode zip`` (``datasets version ... -m MESSAGE`` when ``kaggle datasets
status`` finds the dataset already), wait until ``datasets status`` says ``ready``, ``kaggle kernels push -p KERNEL``,
then ``kaggle kernels status`` for the kernel's state. The folders inside the bundle (``runs/``, ``wheels/``) go up
zipped (``--dir-mode zip``), which Kaggle unpacks back into folders.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass

from pipeline import kaggle
from pipeline.export import ExportError
from pipeline.export.bundle import OWNER_PLACEHOLDER, Exported

_logger = logging.getLogger(__name__)


@dataclass
class Pushed:
    """What the Kaggle CLI said: whether the dataset was new (``create``) or a new version, and the kernel's status."""

    dataset_action: str
    dataset_answer: str
    kernel_answer: str
    status: str


def kaggle_ready(runs: list, runs_dir, owner: str | None) -> None:
    """Before anything is written: the kaggle CLI and credentials are there, and a Kaggle user names the ids.

    Raises:
        ExportError: one line saying what to set up.
    """
    from pipeline.competitions.spec import run_competition
    from pipeline.export.bundle import kaggle_username
    from pipeline.rundir import find_run

    comp = run_competition(find_run(runs_dir, str(runs[0])).config()) if runs else None
    kaggle.command(comp.kaggle or comp.name if comp else "the competition", ExportError)
    if not (owner or kaggle_username()):
        raise ExportError("No Kaggle user for the dataset and kernel ids: pass --owner USER (or put your username in "
                          "~/.kaggle/kaggle.json).")


def push(done: Exported, *, message: str = "pipeline export", wait_s: float = 600, poll_s: float = 10) -> Pushed:
    """Create (or version) the dataset, wait until Kaggle has it ready, push the kernel, read its status.

    Args:
        done: what :func:`pipeline.export.bundle.export` wrote.
        message: the dataset version's note.
        wait_s: how long to wait for the dataset to be ready before pushing the kernel anyway.
        poll_s: seconds between two looks at the dataset's status.

    Raises:
        ExportError: no kaggle CLI or credentials, no Kaggle user for the ids, or a command the site refused.
    """
    exe = kaggle.command(done.competition, ExportError)
    if done.dataset_id.startswith(f"{OWNER_PLACEHOLDER}/"):
        raise ExportError("No Kaggle user for the dataset and kernel ids: pass --owner USER (or put your username in "
                          "~/.kaggle/kaggle.json) and export again.")
    exists = _run(exe, "datasets", "status", done.dataset_id).returncode == 0
    action = "version" if exists else "create"
    args = ["datasets", "version", "-p", str(done.dataset_dir), "-m", message] if exists else \
        ["datasets", "create", "-p", str(done.dataset_dir)]
    dataset = _checked(exe, *args, "--dir-mode", "zip")
    deadline = time.monotonic() + wait_s
    while "ready" not in kaggle.output(_run(exe, "datasets", "status", done.dataset_id)).lower():
        if time.monotonic() >= deadline:
            _logger.warning("dataset %s is not ready after %.0f s; pushing the kernel anyway", done.dataset_id, wait_s)
            break
        time.sleep(poll_s)
    kernel = _checked(exe, "kernels", "push", "-p", str(done.kernel_dir))
    status = _run(exe, "kernels", "status", done.kernel_id)
    return Pushed(dataset_action=action, dataset_answer=kaggle.output(dataset), kernel_answer=kaggle.output(kernel),
                  status=kaggle.output(status))


def _run(exe: str, *args: str) -> subprocess.CompletedProcess:
    _logger.info("running kaggle %s", " ".join(args))
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False)


def _checked(exe: str, *args: str) -> subprocess.CompletedProcess:
    done = _run(exe, *args)
    said = kaggle.output(done)
    if done.returncode != 0 or any(w in said.lower() for w in ("error", "403", "401", "404")):
        last = said.splitlines()[-1] if said else f"exit status {done.returncode}"
        raise ExportError(f"`kaggle {' '.join(args[:2])}` failed: {last}")
    return done

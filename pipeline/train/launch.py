"""``pipeline train --nproc N``: the same training on N processes of this machine, through torch's own
elastic launcher (what torchrun runs), with a standalone rendezvous on a free port.

The launcher creates (or reopens) the run folder and holds its lock first, so every error a user
can cause is one line before any process starts, and every worker, and every restart of the
workers, joins that one run; a restart continues from the last finished epochs (``--max-restarts``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from pipeline.compute.runtime import (
    Runtime,
    available_cores,
    gpu_names,
    launched_world,
    processes_line,
    resolve_device,
    resolve_precision,
)
from pipeline.errors import ConfigError, Interrupted, PipelineError
from pipeline.train.request import TrainRequest, end_session, prepare_run, requested_settings
from pipeline.train.session import announce, train

_logger = logging.getLogger(__name__)


def _worker(request: TrainRequest, log_level: int, report: Callable[[Path], Path] | None):
    """One training process. A user error comes back as a value, so the launcher shows it as one
    line and does not restart workers that would only fail the same way."""
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(level=log_level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])
    try:
        return {"cv": train(request, report=report)}
    except PipelineError as exc:
        return {"error": exc}


def _quiet_elastic() -> Callable[[], None]:
    """Keep torch elastic's own reports (a worker's failure table, each signal sent) out of the output unless
    --verbose: the pipeline says what happened in one line. Returns what puts the levels back."""
    verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.distributed.launcher",
                                              "torch.multiprocessing")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)

    def restore() -> None:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    return restore


def launch(request: TrainRequest, nproc: int, max_restarts: int = 0, *,
           report: Callable[[Path], Path] | None = None) -> dict:
    """Train on ``nproc`` local processes; returns the cv.json content.

    Args:
        request: as for :func:`pipeline.train.session.train`.
        nproc: processes to start (one per GPU on a GPU machine; up to the cores on a CPU).
        max_restarts: how often the workers are started again after one of them fails; each
            restart continues the run from its last finished epochs.
        report: as for :func:`pipeline.train.session.train` (a module-level function: it is pickled).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1 or max_restarts < 0:
        raise ConfigError(f"--nproc must be at least 1 and --max-restarts zero or more, got {nproc} and "
                          f"{max_restarts}.")
    if launched_world() > 1:
        raise ConfigError("This process was itself started by torchrun; drop --nproc (torchrun already starts the "
                          "processes).")
    settings = requested_settings(request)
    # this process only checks and starts the workers: it asks the GPU nothing that would open a context
    device = resolve_device(settings.device)
    rt = Runtime(device, resolve_precision(settings.precision, device))
    if device.type == "cuda":
        import torch

        if nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs but {torch.cuda.device_count()} are visible; "
                              "start at most one process per GPU.")
    job = str(uuid.uuid4())
    run_dir, lock = prepare_run(dataclasses.replace(request, job=job), rt, processes=nproc)
    announce(processes_line(nproc, gpu_names() if device.type == "cuda" else []), settings.progress)
    threads = settings.threads or max(1, available_cores() // nproc)
    worker_request = TrainRequest(settings={"run_name": run_dir.name, "runs_dir": str(run_dir.path.parent),
                                            "threads": threads}, attach=True, started=request.started)
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=job,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=max_restarts,
                          monitor_interval=0.5, start_method="spawn")
    old_omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    quiet = _quiet_elastic()
    try:
        results = elastic_launch(config, _worker)(worker_request, logging.getLogger().getEffectiveLevel(),
                                                  report)
    except (KeyboardInterrupt, SignalException):
        raise Interrupted(f"Interrupted; finished epochs are saved. Continue with `pipeline train --run-name "
                          f"{run_dir.name} --resume --nproc {nproc}`.") from None
    except ChildFailedError as exc:
        rank, failure = next(iter(exc.failures.items()))
        raise PipelineError(f"Training process {rank} failed (exit code {failure.exitcode}) and no restart was "
                            f"left (--max-restarts {max_restarts}): {failure.message or 'see its log above'}; "
                            f"finished epochs are saved, continue with `pipeline train --run-name {run_dir.name} "
                            f"--resume --nproc {nproc}`.") from None
    finally:
        if old_omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_omp
        quiet()
        if run_dir.exists():
            end_session(run_dir)
        if lock is not None:
            lock.release()
    errors = sorted((r["error"] for _, r in sorted(results.items()) if "error" in r),
                    key=lambda e: e.secondary)  # the process that failed first, then those that stopped for it
    if errors:
        if not request.resume:
            run_dir.discard_if_untrained()  # the workers refused a run this launch made: leave no folder
        raise errors[0]
    return results[0]["cv"]


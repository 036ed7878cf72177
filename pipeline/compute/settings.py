"""Where and how a run trains: the run settings, saved in the run's config.json beside its recipe.

A recipe (:mod:`pipeline.recipe`) says what is learned; these settings say where and how it runs
(device, precision, loader processes, folders, how processes share the work). The process that runs them
is :class:`pipeline.compute.runtime.Runtime`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.choices import DEVICES, PARALLEL, PRECISIONS
from pipeline.errors import ConfigError


@dataclass
class RunSettings:
    """How and where a run trains; saved in the run's config.json. None fields are chosen per machine.

    Changing these never changes the recipe, so ``--resume`` accepts new values for them. On the CPU, given the
    same thread count, they change no figure either. On a GPU the figures move in the last digits: the
    precision (bf16 or fp16 autocast, chosen from the GPU), TF32 matmuls and convolutions, channels_last and
    cuDNN's autotuning (which picks kernels by timing them) all round differently; ``deterministic`` makes a GPU
    run repeat bit for bit on the same GPU and software, not across GPUs.
    """

    device: str = "auto"  # one of DEVICES
    precision: str = "auto"  # one of PRECISIONS
    workers: int | None = None  # loader processes per training process
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    cache: bool = True
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False  # on a GPU: deterministic kernels, no cuDNN autotuning (runtime.configure_cuda)
    progress: bool = True
    tracker: str = "auto"  # one of TRACKERS; auto: TensorBoard when installed
    report: bool = True  # write the HTML report when the run finishes
    parallel: str = "auto"  # one of PARALLEL (only matters with several processes)
    folds: list[int] | None = None  # None: every fold in folds.csv
    time_limit: float | None = None  # seconds for the whole run: fewer epochs when they would not fit (budget.py)
    data_dir: str = "data"
    runs_dir: str = "runs"
    run_name: str | None = None

    def checked(self) -> RunSettings:
        """Self, after checking every choice (a ConfigError names the bad value)."""
        for name, value, allowed in [("device", self.device, DEVICES), ("precision", self.precision, PRECISIONS),
                                     ("parallel", self.parallel, PARALLEL)]:
            if value not in allowed:
                raise ConfigError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}.")
        for name in ("workers", "threads"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (name == "threads" and value == 0)):
                raise ConfigError(f"--{name} must be {'zero or more' if name == 'workers' else 'at least 1'}, "
                                  f"got {value}.")
        if self.time_limit is not None and not 0 < self.time_limit < 30 * 24 * 3600:
            raise ConfigError(f"--time-limit must be more than 0 s and less than 30 days, got {self.time_limit}.")
        if self.folds is not None and any(k < 0 for k in self.folds):
            raise ConfigError(f"--folds takes fold numbers from 0, got {self.folds}.")
        return self

    @classmethod
    def from_dict(cls, d: dict) -> RunSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def of_run(cls, run) -> RunSettings:
        """The settings saved in a run's config.json (``run``: a :class:`pipeline.rundir.RunDir`)."""
        return cls.from_dict(run.config()["settings"])

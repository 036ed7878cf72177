"""The process a run trains in: device, precision, rank, and the collectives it needs.

:class:`Runtime` is made by each process from its environment. Under torchrun it reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``, takes ``cuda:LOCAL_RANK`` and opens the process group (nccl on CUDA, gloo on
the CPU); a single process is world size 1 and opens nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from pipeline.errors import ConfigError, PipelineError

T = TypeVar("T")
_logger = logging.getLogger(__name__)
# a barrier must outlast the slowest thing one rank does alone (building the image cache of a
# large data set, a fold that runs longer than another's)
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without CUDA is a ConfigError, not a traceback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu "
                          "(or auto), or install a CUDA build of PyTorch with a working driver.")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"Process {local_rank} of this machine needs GPU {local_rank}, but only "
                              f"{torch.cuda.device_count()} are visible; start at most that many processes per "
                              "machine.")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on a GPU that supports it, else fp16 on CUDA; fp32 on the CPU.

    fp16 on the CPU is refused: it is slower than fp32 there and gives other results.
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA GPU (on the CPU it is slower than fp32 and changes the "
                          "results); use --precision fp32 (or bf16, which the CPU supports).")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("This GPU does not support bf16; use --precision fp16 (or auto).")
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity; the machine's count where that is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(device: torch.device, processes: int = 1) -> int:
    """Loader processes per training process: up to 8 on CUDA; on a CPU leave the cores to the model."""
    cores = max(1, available_cores() // max(1, processes))
    return min(8, cores) if device.type == "cuda" else min(2, max(0, cores - 1))


def launched_world() -> int:
    """The number of processes torchrun started for this job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_processes() -> int:
    """Training processes on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def restarting() -> bool:
    """True in workers that torchrun started again after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


class Runtime:
    """One process's place in the job: device, precision, rank and the collectives it needs.

    Args:
        device: this process's device.
        dtype: the autocast dtype (float32: no autocast).
        rank, world, local_rank: this process's rank, the number of processes, its rank on its machine.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, rank: int = 0, world: int = 1,
                 local_rank: int = 0):
        self.device, self.dtype = device, dtype
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self._owns_group = False

    @classmethod
    def from_env(cls, device: str = "auto", precision: str = "auto") -> Runtime:
        """The runtime of this process; opens the process group when torchrun started several."""
        world = launched_world()
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local_rank)
        rt = cls(dev, resolve_precision(precision, dev), rank, world, local_rank)
        if world > 1 and not dist.is_initialized():
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            # the store torchrun hands over may still hold the previous attempt's addresses after a restart
            # (a new worker then dials a dead one: "connectFullMesh failed ... Connection refused"), so each
            # attempt keeps its keys under a prefix of its own
            store, _, _ = next(dist.rendezvous("env://", timeout=PROCESS_GROUP_TIMEOUT))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=PROCESS_GROUP_TIMEOUT,
                                    store=dist.PrefixStore(f"pipeline/attempt_{attempt}", store), rank=rank,
                                    world_size=world, device_id=dev if dev.type == "cuda" else None)
            rt._owns_group = True
        return rt

    def as_single_process(self) -> Runtime:
        """This process as if it were the only one (same device): for work that needs no collective, such as
        training a fold alone in ``--parallel folds``."""
        return Runtime(self.device, self.dtype)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.distributed else None

    def barrier(self) -> None:
        """Wait until every process gets here (every process must call it, never inside ``if is_main``)."""
        if self.distributed:
            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """The main process's ``obj`` on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def decided_by_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the main process only and give its result, or raise its error, on every process."""
        if not self.distributed:
            return fn()
        result: Any = None
        error: Exception | None = None
        if self.is_main:
            try:
                result = fn()
            except PipelineError as exc:
                error = exc
            except Exception as exc:  # not every exception pickles; its text does
                _logger.exception("the main process failed")
                error = RuntimeError(f"the main process failed: {exc!r}")
        result, error = self.broadcast((result, error))
        if error is not None:
            error.from_main = not self.is_main  # the main process tells the user; the others need not repeat it
            raise error
        return result

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor summed over every process (in place where distributed)."""
        if self.distributed:
            for v in values:
                dist.all_reduce(v)
        return list(values)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every process the main process's buffers (BatchNorm statistics): DDP broadcasts them before
        each forward pass, so after an epoch each process holds those of its last batch."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def gather_rows(self, rows: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every process's ``(row index, values...)`` on every process, each row once, in row order.

        A sharded sampler repeats a few rows so that every process gets as many; the repeats are
        dropped here, so what is scored holds each image exactly once.
        """
        if self.distributed:
            parts = [None] * self.world
            dist.all_gather_object(parts, (rows, *columns))
            rows = np.concatenate([p[0] for p in parts])
            columns = tuple(np.concatenate([p[i + 1] for p in parts]) for i in range(len(columns)))
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = rows[1:] != rows[:-1]
        return (rows[first], *(c[order][first] for c in columns))

    def close(self) -> None:
        """Close the process group this runtime opened."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


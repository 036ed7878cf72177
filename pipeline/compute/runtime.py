"""The process a run trains in: device, precision, rank, and the collectives it needs.

:class:`Runtime` is made by each process from its environment. Under torchrun it reads ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``, takes ``cuda:LOCAL_RANK`` and opens the process group (nccl on CUDA, gloo on
the CPU); a single process is world size 1 and opens nothing.
"""

from __future__ import annotations

import gc
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


BF16_CAPABILITY = (8, 0)  # Ampere and newer: cuDNN has bf16 convolutions from here (A100, RTX 30xx, L4, H100)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def choose_precision(requested: str, device_type: str, capability: tuple[int, int] | None = None,
                     gpu: str = "this GPU") -> torch.dtype:
    """The autocast dtype for ``requested`` on a device: a pure function of the device and its compute capability.

    ``auto``: bf16 on a GPU of compute capability 8.0 or newer, fp16 (with loss scaling) below it (Kaggle's
    T4 and P100, Colab's T4, V100), fp32 on the CPU. An explicit bf16 on a GPU below 8.0 and fp16 on the CPU
    are refused with one line: there ``torch.cuda.is_bf16_supported()`` counts emulation, and cuDNN has no
    bf16 convolutions, so it would be slow or fail; fp16 on a CPU is slower than fp32 and changes results.

    Args:
        requested: one of ``PRECISIONS``.
        device_type: ``cuda`` or ``cpu``.
        capability: the GPU's ``(major, minor)`` compute capability (CUDA only).
        gpu: the GPU's name, for the message.
    """
    if device_type != "cuda":
        if requested == "fp16":
            raise ConfigError("--precision fp16 needs a CUDA GPU (on the CPU it is slower than fp32 and changes the "
                              "results); use --precision fp32 (or bf16, which the CPU supports).")
        return torch.bfloat16 if requested == "bf16" else torch.float32
    bf16_ok = tuple(capability or (0, 0)) >= BF16_CAPABILITY
    if requested == "auto":
        return torch.bfloat16 if bf16_ok else torch.float16
    if requested == "bf16" and not bf16_ok:
        major, minor = capability or (0, 0)
        raise ConfigError(f"--precision bf16 needs a GPU of compute capability 8.0 or newer (A100, RTX 30xx, L4, "
                          f"H100); {gpu} has {major}.{minor}, where cuDNN has no bf16 convolutions: use --precision "
                          "fp16 (or auto, which picks fp16 with loss scaling here).")
    return DTYPES[requested]


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """:func:`choose_precision` for ``device``, reading its compute capability (after ``set_device``, so that no
    process opens a context on another GPU)."""
    if device.type != "cuda":
        return choose_precision(name, device.type)
    return choose_precision(name, "cuda", torch.cuda.get_device_capability(device), torch.cuda.get_device_name(device))


TENSOR_CORE_CAPABILITY = (7, 0)  # Volta and newer: tensor cores (cuDNN's fast NHWC kernels) and Triton's minimum
CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs to be deterministic (CUDA 10.2 and newer)


def gpu_capability(device: torch.device) -> tuple[int, int] | None:
    """The GPU's ``(major, minor)`` compute capability; None on the CPU."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


def choose_channels_last(requested: bool, device_type: str, capability: tuple[int, int] | None = None) -> bool:
    """Whether conv nets take channels_last memory: a pure function of the setting and the device, as the precision.

    On the CPU as asked. On a GPU only from compute capability 7.0 (V100, T4, A100, H100): their tensor cores have
    cuDNN's fast NHWC kernels; without them (P100, 6.0) NHWC is usually slower than the plain layout.
    """
    if not requested or device_type != "cuda":
        return requested
    return tuple(capability or (0, 0)) >= TENSOR_CORE_CAPABILITY


def check_compile(device_type: str, capability: tuple[int, int] | None = None, gpu: str = "this GPU") -> None:
    """Refuse ``--compile`` in one line on a GPU below compute capability 7.0 (P100), where torch.compile's Triton
    kernels fail with a traceback deep in the first step."""
    if device_type == "cuda" and tuple(capability or (0, 0)) < TENSOR_CORE_CAPABILITY:
        major, minor = capability or (0, 0)
        raise ConfigError(f"--compile needs a GPU of compute capability 7.0 or newer (torch.compile's Triton "
                          f"kernels); {gpu} has {major}.{minor}: drop --compile.")


def configure_cuda(device: torch.device, deterministic: bool = False) -> None:
    """On a GPU: cuDNN picks its fastest kernels for the (fixed) input sizes, and fp32 matmuls and convolutions use
    TF32 (torchvision's references, timm and nanoGPT set both). Nothing changes on the CPU.

    ``deterministic``: cuDNN's deterministic kernels without autotuning, torch's deterministic algorithms where it
    has them (a warning where it has none) and cuBLAS's fixed workspace, so that a GPU run repeats bit for bit on
    the same GPU, software and settings (slower; TF32 stays on: it is deterministic too).
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS starts
        torch.use_deterministic_algorithms(True, warn_only=True)


def setup_device(device: torch.device, precision: str = "auto", *, channels_last: bool = True,
                 deterministic: bool = False) -> tuple[torch.dtype, bool]:
    """The one device setup of training and prediction: the GPU made current (before anything asks it a
    question, so that no process opens a context on another's GPU), cuDNN and TF32 (:func:`configure_cuda`),
    then the autocast dtype and the channels_last decision from its compute capability. Returns both."""
    if device.type != "cuda":
        return choose_precision(precision, device.type), choose_channels_last(channels_last, device.type)
    torch.cuda.set_device(device)
    configure_cuda(device, deterministic)
    capability = gpu_capability(device)  # asked once, of this process's own GPU
    return (choose_precision(precision, "cuda", capability, torch.cuda.get_device_name(device)),
            choose_channels_last(channels_last, "cuda", capability))


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity; the machine's count where that is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers(device: torch.device, processes: int = 1) -> int:
    """Loader processes per training process: on CUDA every core of its share but one (the training process's),
    at least 1 and at most 8; on a CPU at most 2, leaving the cores to the model."""
    cores = max(1, available_cores() // max(1, processes))
    return max(1, min(8, cores - 1)) if device.type == "cuda" else min(2, max(0, cores - 1))


def visible_gpus() -> int:
    """CUDA GPUs PyTorch sees (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_nproc(setting: str | int, device: str, gpus: int) -> int:
    """Training processes on this machine for ``--nproc``: ``auto`` is one per visible GPU (when the run may use
    CUDA), one on the CPU, and one under torchrun (which started the processes itself).

    Args:
        setting: ``auto`` or a count.
        device: the ``--device`` setting (auto, cuda, cpu).
        gpus: the GPUs PyTorch sees (:func:`visible_gpus`).
    """
    if str(setting) != "auto":
        try:
            return int(setting)
        except ValueError:
            raise ConfigError(f"--nproc takes a number of processes or auto, got {setting!r}.") from None
    if launched_world() > 1 or device == "cpu":
        return 1
    return max(1, gpus)


def gpu_names() -> list[str]:
    """The names of the GPUs PyTorch sees, in index order (none without CUDA)."""
    return [torch.cuda.get_device_name(i) for i in range(visible_gpus())]


def processes_line(processes: int, gpus: list[str], local: int | None = None) -> str:
    """The first line of a run: how many processes train and on which GPUs.

    Args:
        processes: the job's training processes.
        gpus: the names of this machine's visible GPUs (none: the run trains on the CPU); process ``i`` of the
            machine uses GPU ``i``.
        local: the processes on this machine (default: all of them).
    """
    local = processes if local is None else local
    who = f"{processes} process{'es' if processes > 1 else ''}"
    if not gpus:
        return f"training in {who} on the CPU"
    used = ", ".join(f"{i} ({name})" for i, name in enumerate(gpus[:local]))
    here = " on this machine" if local < processes else ""
    idle = len(gpus) - local
    more = f"; {idle} more visible GPU(s) idle (--nproc {len(gpus)} uses every one)" if idle > 0 else ""
    return f"training in {who}, one per GPU: GPU {used}{here}{more}"


def launched_world() -> int:
    """The number of processes torchrun started for this job (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_processes() -> int:
    """Training processes on this machine (torchrun sets LOCAL_WORLD_SIZE)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def restarting() -> bool:
    """True in workers that torchrun started again after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def backends_for(device_type: str, mode: str) -> tuple[str, str | None]:
    """The process groups a job of several processes uses: ``(coordination, tensors)``.

    Coordination (barriers, the run folder's decisions, gathering predictions and random states) is
    always gloo: it carries small CPU objects, has no watchdog, and an idle process may wait in it for
    a long fold. Only ``--parallel ddp`` on GPUs moves tensors between processes every step, over a
    second, nccl group (None: the coordination group carries the few tensors there are).

    Args:
        device_type: ``cuda`` or ``cpu``.
        mode: ``folds`` or ``ddp`` (see :func:`parallel_mode`).
    """
    return "gloo", ("nccl" if device_type == "cuda" and mode == "ddp" else None)


def parallel_mode(setting: str, n_folds: int, world: int) -> str:
    """``folds`` or ``ddp`` for the ``--parallel`` setting: ``auto`` is ddp only with more processes than folds."""
    if setting != "auto":
        return setting
    return "ddp" if world > 1 and n_folds < world else "folds"


def batch_per_process(batch_size: int, world: int, mode: str) -> int:
    """Images one process puts through one step: the whole batch in folds mode (each process trains its own
    fold), its share under DDP (``--batch-size`` is the batch of one step over every process)."""
    return batch_size // world if mode == "ddp" else batch_size


class Runtime:
    """One process's place in the job: device, precision, rank and the collectives it needs.

    Args:
        device: this process's device.
        dtype: the autocast dtype (float32: no autocast).
        rank, world, local_rank: this process's rank, the number of processes, its rank on its machine.
        channels_last: conv nets take channels_last memory here (:func:`choose_channels_last`).
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, rank: int = 0, world: int = 1,
                 local_rank: int = 0, channels_last: bool = True):
        self.device, self.dtype, self.channels_last = device, dtype, channels_last
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self._owns_group = False
        self.tensor_group = None  # the nccl group of --parallel ddp on GPUs; None: the coordination group

    @classmethod
    def from_env(cls, device: str = "auto", precision: str = "auto", *, channels_last: bool = True,
                 deterministic: bool = False) -> Runtime:
        """The runtime of this process (set up by :func:`setup_device`); opens the (gloo) coordination group when
        torchrun started several."""
        world = launched_world()
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local_rank)
        dtype, conv_layout = setup_device(dev, precision, channels_last=channels_last, deterministic=deterministic)
        rt = cls(dev, dtype, rank, world, local_rank, conv_layout)
        if world > 1 and not dist.is_initialized():
            # the store torchrun hands over may still hold the previous attempt's addresses after a restart
            # (a new worker then dials a dead one: "connectFullMesh failed ... Connection refused"), so each
            # attempt keeps its keys under a prefix of its own
            store, _, _ = next(dist.rendezvous("env://", timeout=PROCESS_GROUP_TIMEOUT))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(backends_for(dev.type, "folds")[0], timeout=PROCESS_GROUP_TIMEOUT,
                                    store=dist.PrefixStore(f"pipeline/attempt_{attempt}", store), rank=rank,
                                    world_size=world)
            rt._owns_group = True
        return rt

    def open_tensor_group(self, mode: str) -> None:
        """Open the nccl group ``--parallel ddp`` needs on GPUs (see :func:`backends_for`); every process calls it."""
        backend = backends_for(self.device.type, mode)[1]
        if self.distributed and backend is not None and self.tensor_group is None:
            self.tensor_group = dist.new_group(backend=backend, timeout=PROCESS_GROUP_TIMEOUT)

    def as_single_process(self) -> Runtime:
        """This process as if it were the only one (same device): for work that needs no collective, such as
        training a fold alone in ``--parallel folds``."""
        return Runtime(self.device, self.dtype, channels_last=self.channels_last)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def backend(self) -> str | None:
        """The backend tensors travel over (nccl under DDP on GPUs, else gloo); None for a single process."""
        return dist.get_backend(self.tensor_group) if self.distributed else None

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
            error.secondary = not self.is_main  # the main process tells the user; the others need not repeat it
            raise error
        return result

    def sum(self, *values: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor summed over every process (in place where distributed)."""
        if self.distributed:
            for v in values:
                dist.all_reduce(v, group=self.tensor_group)
        return list(values)

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every process the main process's buffers (BatchNorm statistics): DDP broadcasts them before
        each forward pass, so after an epoch each process holds those of its last batch."""
        if self.distributed:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0, group=self.tensor_group)

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

    def close(self, ok: bool = True) -> None:
        """Close the process groups this runtime opened (every process, on every way out: call it in a ``finally``).

        A group must be gone before the interpreter shuts down: gloo's worker threads (and nccl's) still alive at
        exit, or freed while the interpreter is being torn down, abort the process (``terminate called without
        an active exception``, SIGABRT) at random. So the wrappers that hold the group in reference cycles
        (DistributedDataParallel) are collected first, the groups destroyed, and what they left collected again,
        all while the interpreter is whole. After a job that ended well (``ok``) the processes first wait for each
        other, so that none tears its connections down while another still uses them; after an error they do not
        (the others may be gone, or stopped elsewhere).
        """
        if not (self._owns_group and dist.is_initialized()):
            return
        try:
            if ok and self.distributed:
                dist.barrier()
        except RuntimeError as exc:  # another process failed and left: there is nobody to wait for
            _logger.debug("closing the process group without the others: %s", exc)
        finally:
            gc.collect()
            dist.destroy_process_group()
            self._owns_group, self.tensor_group = False, None
            gc.collect()


"""``pipeline doctor``: the facts a bug report needs (versions, the CPU, RAM, GPUs, trackers, disk, data and runs)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
from pathlib import Path

import torch

from pipeline import __version__
from pipeline.compute.runtime import available_cores, choose_precision

LIBRARIES = ("torch", "torchvision", "timm", "albumentations", "numpy", "pandas", "scikit-learn", "scipy", "pillow",
             "typer", "rich")
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow-skinny or mlflow"}


def gpu_line(name: str, total_memory: int, capability: tuple[int, int]) -> str:
    """``Tesla T4, 14.6 GiB, compute capability 7.5; --precision auto: fp16 with loss scaling``."""
    dtype = choose_precision("auto", "cuda", capability)
    picks = "bf16" if dtype == torch.bfloat16 else "fp16 with loss scaling"
    return (f"{name}, {total_memory / 2**30:.1f} GiB, compute capability {capability[0]}.{capability[1]}; "
            f"--precision auto: {picks}")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}; {available_cores()} cores for this process, torch uses {torch.get_num_threads()} threads"


def _ram() -> str:
    try:
        with open("/proc/meminfo") as f:
            info = {k: int(v.split()[0]) * 1024 for k, v in (line.split(":", 1) for line in f)}
        return f"{info['MemTotal'] / 2**30:.1f} GiB, {info['MemAvailable'] / 2**30:.1f} GiB available"
    except (OSError, KeyError, ValueError):
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"


def doctor(data_dir: Path, runs_dir: Path) -> dict:
    """Facts for a bug report: versions, the CPU and RAM, CUDA and each GPU (with the precision ``auto`` picks),
    the trackers installed, free disk, data and runs."""
    info = {"pipeline": __version__, "python": platform.python_version(), "platform": platform.platform()}
    info |= {name: _version(name) for name in LIBRARIES} | {"torch": torch.__version__}  # with its CUDA tag
    info |= {"cpu": _cpu(), "ram": _ram(), "cuda build": torch.version.cuda or "none (CPU build)",
             "cuda available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info[f"gpu {i}"] = gpu_line(p.name, p.total_memory, (p.major, p.minor))
    else:
        info["precision"] = "fp32 on the CPU (--precision bf16 runs CPU autocast)"
    info["trackers"] = ", ".join(f"{name} {'installed' if importlib.util.find_spec(name) else 'missing'}"
                                 for name in TRACKER_PACKAGES)
    for label, folder in (("data", Path(data_dir)), ("runs", Path(runs_dir))):
        probe = folder if folder.exists() else Path.cwd()
        free = shutil.disk_usage(probe).free / 2**30
        info[label] = f"{folder.resolve()} ({'exists' if folder.exists() else 'missing'}; {free:.1f} GiB free)"
    data_dir = Path(data_dir)
    for name in ("train.csv", "test.csv", "folds.csv"):
        f = data_dir / name
        info[name] = f"{sum(1 for _ in f.open()) - 1} rows" if f.exists() else "missing"
    info["runs found"] = len(list(Path(runs_dir).glob("*/config.json"))) if Path(runs_dir).exists() else 0
    return info

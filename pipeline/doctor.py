"""``pipeline doctor``: the facts a bug report needs (versions, devices, disk, data and runs)."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

import albumentations
import pandas as pd
import timm
import torch
import torchvision

from pipeline import __version__


def doctor(data_dir: Path, runs_dir: Path) -> dict:
    """Facts for a bug report: versions, CUDA, bf16, free disk, data and runs."""
    info = {"pipeline": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "albumentations": albumentations.__version__, "pandas": pd.__version__,
            "cpu threads": torch.get_num_threads(), "cuda available": torch.cuda.is_available(),
            "cuda build": torch.version.cuda or "none (CPU build)"}
    if torch.cuda.is_available():
        info["cudnn"] = torch.backends.cudnn.version()
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info[f"gpu {i}"] = f"{p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}"
        info["bf16 supported"] = torch.cuda.is_bf16_supported()
    else:
        info["bf16 supported"] = "CPU autocast only (--precision bf16)"
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

"""A Kaggle-like Python for the export tests: a virtual environment that sees the packages of this one (torch,
torchvision, timm, albumentations, pandas, scikit-learn, numpy, pillow, matplotlib, papermill, ipykernel, ...) but not
this project, as a Kaggle notebook sees its image's packages before the bundle is installed.

The environment's ``.pth`` names a folder of links to every entry of this interpreter's site-packages folders except
the project's own (its package, its ``.dist-info``, its editable-install hooks), so that pip, run inside it, finds no
catdog-pipeline installed and installs the bundle's wheel into the new environment alone. It works alike in a
worktree whose ``.venv`` reaches a shared environment through a ``.pth`` and in a fresh clone whose ``.venv`` holds
everything.

Not a test module: nothing here is collected by pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

PROJECT = ("pipeline", "catdog_pipeline", "__editable__", "_main_venv")


def _site_dirs() -> list[Path]:
    """This interpreter's site-packages folders, in sys.path order (a shared one reached through a .pth too)."""
    seen, out = set(), []
    for entry in sys.path:
        p = Path(entry)
        if p.name in ("site-packages", "dist-packages") and p.is_dir() and p.resolve() not in seen:
            seen.add(p.resolve())
            out.append(p)
    return out


def kaggle_python(root: Path) -> Path:
    """Make the environment in ``root`` (once) and return its python."""
    python = root / "venv" / "bin" / "python"
    if python.exists():
        return python
    shadow = root / "image-packages"
    shadow.mkdir(parents=True, exist_ok=True)
    for site in _site_dirs():
        for entry in site.iterdir():
            link = shadow / entry.name
            if entry.name.startswith(PROJECT) or entry.suffix == ".pth" or link.exists() or link.is_symlink():
                continue
            link.symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(root / "venv"), "platbase": str(root / "venv")})
    Path(purelib).mkdir(parents=True, exist_ok=True)
    (Path(purelib) / "kaggle_image.pth").write_text(f"{shadow}\n")
    return python


def offline_env(**extra: str) -> dict[str, str]:
    """The environment a notebook runs in here: pip's index off, no project on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"} | extra

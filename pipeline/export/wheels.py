"""The wheels an offline Kaggle notebook installs: the project's own, and those of what inference imports that the
Kaggle image does not ship.

What the Kaggle image ships is read from Kaggle's own build files (github.com/Kaggle/docker-python): the image is
Google Colab's base image (``Dockerfile.tmpl``: ``FROM ${BASE_IMAGE}``, which holds torch, torchvision, timm,
albumentations with opencv, pandas, numpy, scipy, scikit-learn, pillow, matplotlib, rich, typer, filelock, pyyaml,
psutil, pydantic, huggingface-hub and safetensors) plus ``kaggle_requirements.txt`` (ImageHash, optuna, papermill,
kaggle, ...). ``KAGGLE_IMAGE`` lists the distributions inference needs that it ships; ``PREDICT_NEEDS`` those that
``pipeline predict`` imports (tests/test_export.py runs a prediction with the training-only ones blocked, and checks
that every distribution it imports is listed here). A distribution needed and not shipped is fetched for Kaggle's
platform (``pip download --only-binary :all: --platform manylinux2014_x86_64``).

The project's wheel is installed with ``--no-deps``: its training-only dependencies (optuna, py7zr,
iterative-stratification, the trackers) are never installed, and never block the offline install.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from pipeline.export import ExportError

# the distributions the modules of `pipeline predict` import themselves (tests/test_export.py checks it on a real
# prediction); what they import in turn comes with them wherever they are installed
PREDICT_NEEDS = frozenset({"torch", "timm", "albumentations", "opencv-python-headless", "numpy", "pandas", "scipy",
                           "scikit-learn", "pillow", "imagehash", "filelock", "huggingface-hub", "safetensors", "rich",
                           "typer"})
# what of it the Kaggle image ships: Colab's base image (torch, timm, albumentations with opencv-python-headless,
# numpy, pandas, scipy, scikit-learn, pillow, filelock, huggingface-hub, safetensors, rich, typer) and
# kaggle_requirements.txt (ImageHash); see the module's note
KAGGLE_IMAGE = frozenset({"torch", "torchvision", "timm", "albumentations", "opencv-python-headless", "numpy",
                          "pandas", "scipy", "scikit-learn", "pillow", "matplotlib", "imagehash", "filelock",
                          "huggingface-hub", "safetensors", "rich", "typer", "optuna", "papermill"})
PLATFORM = ("--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp")


def missing_on_kaggle(needs=PREDICT_NEEDS, image=KAGGLE_IMAGE) -> list[str]:
    """The distributions inference needs that the Kaggle image lacks, as ``name==version`` installed here."""
    out = []
    for name in sorted(set(needs) - set(image)):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return out


def project_source() -> Path:
    """The project's source tree (``pyproject.toml`` beside the ``pipeline`` package)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise ExportError(f"No pyproject.toml beside the pipeline package ({root}): export builds the project's wheel "
                          "from its source checkout; run it from one (`pip install -e .`).")
    return root


def build_wheels(dest: Path, missing: list[str]) -> list[Path]:
    """Build the project's wheel (``pip wheel --no-deps``, from a clean copy of its source) and fetch the wheels of
    ``missing`` for Kaggle's platform into ``dest``; return them."""
    dest.mkdir(parents=True, exist_ok=True)
    root = project_source()
    with tempfile.TemporaryDirectory(prefix="pipeline-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        shutil.copytree(root / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest), str(src)], "build the project's wheel")
    if missing:
        _pip(["download", "--no-deps", "--only-binary", ":all:", *PLATFORM, "--dest", str(dest), *missing],
             f"fetch the wheels of {', '.join(missing)} for Kaggle's platform (it needs the package index)")
    return sorted(dest.glob("*.whl"))


def _pip(args: list[str], what: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        why = next((line.strip() for line in lines if "error" in line.lower()), lines[-1].strip() if lines else "")
        raise ExportError(f"Could not {what}: {why or f'pip exited with {done.returncode}'}.")

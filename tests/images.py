"""Real image files for tests: taken from the bundled sample and converted or damaged on purpose."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from tests.conftest import SAMPLE


def sample_jpeg(index: int = 0, label: str = "cat") -> bytes:
    """The bytes of the ``index``-th ``label`` photo of the bundled sample."""
    with zipfile.ZipFile(SAMPLE / "train.zip") as z:
        names = sorted(n for n in z.namelist() if f"/{label}." in n)
        return z.read(names[index])


def sample_image(index: int = 0, label: str = "cat") -> Image.Image:
    return Image.open(io.BytesIO(sample_jpeg(index, label))).convert("RGB")


def save(img: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path

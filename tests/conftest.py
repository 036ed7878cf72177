"""Shared fixtures: the bundled real sample, catalogued once, and one tiny trained run.

Tests shrink the configuration (32 px LeNet, 2 folds' worth of epochs), never the code.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from pipeline.data.catalog import scan, write_catalog
from pipeline.data.folds import write_folds
from pipeline.train.recipe import FIELDS
from pipeline.train.request import TrainRequest
from pipeline.train.session import train

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "sample"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "dogs-vs-cats-mini"


def tiny_config(data_dir: Path, runs_dir: Path, **overrides) -> TrainRequest:
    """A run that takes seconds on a 2-core CPU (recipe fields and run settings in one list)."""
    options = {"arch": "lenet", "img_size": 32, "epochs": 2, "batch_size": 32, "workers": 0, "progress": False,
               "patience": 0, "report": False, "tracker": "none", "data_dir": str(data_dir), "runs_dir": str(runs_dir),
               "seed": 0} | overrides
    return TrainRequest(overrides={k: v for k, v in options.items() if k in FIELDS},
                        settings={k: v for k, v in options.items() if k not in FIELDS})


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip where PyTorch sees no GPU (this machine, CI) and run where it does."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> Path:
    """The bundled sample unpacked: ``train/`` (600 labelled photos) and ``test/`` (100)."""
    root = tmp_path_factory.mktemp("sample")
    for name in ("train.zip", "test.zip"):
        with zipfile.ZipFile(SAMPLE / name) as z:
            z.extractall(root)
    return root


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory, sample_images) -> Path:
    """A data folder with train.csv, test.csv and 3 folds.csv built from the sample (read-only for tests)."""
    data = tmp_path_factory.mktemp("data")
    write_catalog(scan([sample_images], workers=1), data)
    write_folds(data, n_folds=3, seed=0)
    return data


@pytest.fixture
def data_copy(sample_data, tmp_path) -> Path:
    """A private, writable copy of ``sample_data``."""
    return Path(shutil.copytree(sample_data, tmp_path / "data"))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, sample_data) -> Path:
    """One finished 3-fold LeNet run on the sample (read-only for tests)."""
    runs = tmp_path_factory.mktemp("runs")
    train(tiny_config(sample_data, runs, run_name="tiny"))
    return runs / "tiny"

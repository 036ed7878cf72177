"""Shared fixtures: the bundled real sample, catalogued once, and one tiny trained run; the one way to ``../shared``.

Tests shrink the configuration (32 px LeNet, 2 folds' worth of epochs), never the code.

``../shared`` (the real mini set and ImageNet weights beside the checkout) exists on this project's machines and
CI, not on a user's: a test reaches it only through the ``shared_path`` fixture, which honours
``PIPELINE_SHARED`` (unset: ``../shared`` beside the checkout; a path that does not exist: absent), skips when
what it asks for is absent, and fails a test that is not marked ``shared``. Tests marked ``slow`` (the longest
end-to-end runs) are deselected unless ``--run-slow`` is given or ``-m`` names ``slow``.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from pipeline.data.catalog import scan, write_catalog
from pipeline.data.folds import write_folds
from pipeline.recipe import FIELDS
from pipeline.train.request import TrainRequest
from pipeline.train.session import train

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "sample"
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared"
MINI = "data/dogs-vs-cats-mini"  # the real mini set: train.zip (1,600 photos), test.zip (400), solution.csv
WEIGHTS = "weights/tf_efficientnet_lite0_in1k.pth"  # ImageNet weights of the finetune recipe's model


def shared_root() -> Path:
    """Where ``../shared`` is for this run: ``$PIPELINE_SHARED`` when set, else the folder beside the checkout."""
    env = os.environ.get("PIPELINE_SHARED")
    return Path(env).resolve() if env else DEFAULT_SHARED


def tiny_config(data_dir: Path, runs_dir: Path, **overrides) -> TrainRequest:
    """A run that takes seconds on a 2-core CPU (recipe fields and run settings in one list)."""
    options = {"arch": "lenet", "img_size": 32, "epochs": 2, "batch_size": 32, "workers": 0, "progress": False,
               "patience": 0, "report": False, "tracker": "none", "data_dir": str(data_dir), "runs_dir": str(runs_dir),
               "seed": 0} | overrides
    return TrainRequest(overrides={k: v for k, v in options.items() if k in FIELDS},
                        settings={k: v for k, v in options.items() if k not in FIELDS})


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", default=False,
                     help="also run the tests marked slow (deselected by default; `-m slow` selects them too)")


def _run_slow(config) -> bool:
    return config.getoption("--run-slow") or "slow" in (config.getoption("markexpr") or "")


def pytest_report_header(config):
    if not _run_slow(config):
        return "tests marked slow are deselected: add --run-slow to run them too"
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` are deselected unless asked for; tests marked ``cuda`` skip where PyTorch sees no GPU
    (this machine, CI) and run where it does."""
    if not _run_slow(config):
        slow = [item for item in items if "slow" in item.keywords]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if "slow" not in item.keywords]
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_path(request):
    """``shared_path("data/dogs-vs-cats-mini")``: that path inside ``../shared`` (see :func:`shared_root`); the
    test skips when it is absent. The only way a test reaches ``../shared``, and only a test marked ``shared``
    may ask: any other fails here, so that no test quietly needs what a user's machine lacks."""
    if request.node.get_closest_marker("shared") is None:
        pytest.fail(f"{request.node.nodeid} uses ../shared (the shared_path fixture) but is not marked "
                    "@pytest.mark.shared: mark it, so that it skips where ../shared is absent", pytrace=False)
    root = shared_root()

    def path(relative: str) -> Path:
        found = root / relative
        if not found.exists():
            pytest.skip(f"{found} is absent (PIPELINE_SHARED={os.environ.get('PIPELINE_SHARED', '')!r})")
        return found
    return path


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

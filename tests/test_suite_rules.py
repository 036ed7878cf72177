"""The suite's own rules (tests/conftest.py): ``../shared`` only through the ``shared_path`` fixture, only for tests
marked ``shared``, as ``PIPELINE_SHARED`` says; tests marked ``slow`` only when asked for."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

INNER = '''
import pytest


def test_unmarked_asks_for_shared(shared_path):
    shared_path("data")


@pytest.mark.shared
def test_marked_reads_shared(shared_path):
    assert (shared_path("data") / "x.txt").read_text() == "here"


@pytest.mark.slow
def test_slow():
    pass
'''


def _inner_pytest(tmp_path: Path, shared: str, *args: str) -> tuple[dict[str, str], str]:
    """Run a small suite under this project's conftest; returns each test's outcome and the output."""
    suite = tmp_path / f"suite{len(list(tmp_path.glob('suite*')))}"
    suite.mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", suite / "conftest.py")
    (suite / "test_inner.py").write_text(INNER)
    env = os.environ | {"PIPELINE_SHARED": shared, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-rA", "-p", "no:cacheprovider", "--rootdir",
                           str(suite), *args, str(suite)],
                          cwd=suite, env=env, capture_output=True, text=True, timeout=300)
    outcomes = {m[0]: m[1] for m in re.findall(r"::(test_\w+) (PASSED|FAILED|SKIPPED|ERROR)", proc.stdout)}
    return outcomes, proc.stdout + proc.stderr


def test_shared_path_fails_an_unmarked_test_and_honours_pipeline_shared(tmp_path):
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "x.txt").write_text("here")
    outcomes, out = _inner_pytest(tmp_path, str(tmp_path / "shared"))
    # the slow test is deselected by default; a test that reaches ../shared unmarked errors, even where it exists
    assert outcomes == {"test_unmarked_asks_for_shared": "ERROR", "test_marked_reads_shared": "PASSED"}, out
    assert "is not marked @pytest.mark.shared" in out and "1 deselected" in out

    outcomes, out = _inner_pytest(tmp_path, str(tmp_path / "nowhere"), "--run-slow")
    # PIPELINE_SHARED pointed nowhere: the marked test skips cleanly; --run-slow runs the slow one
    assert outcomes == {"test_unmarked_asks_for_shared": "ERROR", "test_marked_reads_shared": "SKIPPED",
                        "test_slow": "PASSED"}, out


def test_no_test_builds_its_own_path_to_shared():
    """A test that found ../shared by itself would pass here and fail on a user's machine."""
    here = Path(__file__).name
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name in ("conftest.py", here):
            continue
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'parents\[2\]|\.parent\s*/\s*"shared"|"\.\./shared', text), \
            f"{path.name} reaches ../shared without the shared_path fixture"


@pytest.mark.parametrize("value", ["", None])
def test_unset_pipeline_shared_means_the_folder_beside_the_checkout(monkeypatch, value):
    from tests.conftest import shared_root

    if value is None:
        monkeypatch.delenv("PIPELINE_SHARED", raising=False)
    else:
        monkeypatch.setenv("PIPELINE_SHARED", value)
    assert shared_root() == ROOT.parent / "shared"

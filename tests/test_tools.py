"""tools/: the sample builder runs from any folder and reproduces the bundled sample."""

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import SAMPLE, SHARED

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_sample.py"


def _members(path: Path) -> dict[str, tuple[int, int]]:
    with zipfile.ZipFile(path) as z:
        return {n: Image.open(io.BytesIO(z.read(n))).size for n in z.namelist()}


@pytest.mark.shared
def test_make_sample_runs_from_another_folder_and_reproduces_the_sample(tmp_path):
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    # no --src: the default must be found from the tool's own place, not from the working folder
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path / "out")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "train 600 test 100 dogs in test 53"
    for name in ("solution.csv", "test_provenance.csv"):
        assert (tmp_path / "out" / name).read_text() == (SAMPLE / name).read_text()
    for name in ("train.zip", "test.zip"):
        assert _members(tmp_path / "out" / name) == _members(SAMPLE / name)

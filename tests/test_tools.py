"""tools/ and benchmarks/gpu_check.py: the sample builder reproduces the bundled sample; the GPU check runs."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import MINI, SAMPLE, WEIGHTS, shared_root

TOOL = Path(__file__).resolve().parents[1] / "tools" / "make_sample.py"


def _members(path: Path) -> dict[str, tuple[int, int]]:
    with zipfile.ZipFile(path) as z:
        return {n: Image.open(io.BytesIO(z.read(n))).size for n in z.namelist()}


@pytest.mark.shared
def test_make_sample_runs_from_another_folder_and_reproduces_the_sample(tmp_path, shared_path):
    shared_path(MINI)
    # no --src: the default must be found from the tool's own place (or PIPELINE_SHARED), not the working folder
    proc = subprocess.run([sys.executable, str(TOOL), "--out", str(tmp_path / "out")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PIPELINE_SHARED": str(shared_root())})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "train 600 test 100 dogs in test 53"
    for name in ("solution.csv", "test_provenance.csv"):
        assert (tmp_path / "out" / name).read_text() == (SAMPLE / name).read_text()
    for name in ("train.zip", "test.zip"):
        assert _members(tmp_path / "out" / name) == _members(SAMPLE / name)


GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_says_in_one_line_that_there_is_no_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the script runs its checks instead")
    proc = subprocess.run([sys.executable, str(GPU_CHECK)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines() == [
        "gpu_check: PyTorch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing to "
        "check here."]


@pytest.mark.slow
@pytest.mark.shared
def test_gpu_check_runs_every_row_on_the_cpu(tmp_path, shared_path):
    """The script's own code, on the CPU with tiny sizes, so that it does not rot between lent GPUs; the weights
    come from --weights, as on a lent GPU that receives only the checkout."""
    weights = shared_path(WEIGHTS)
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(GPU_CHECK), "--device", "cpu", "--quick", "--no-tests", "--data",
                           str(GPU_CHECK.parents[1] / "pipeline" / "sample"), "--weights", str(weights),
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["check"]: r for r in json.loads(out.read_text())}
    assert [r["status"] for r in rows.values()][:7] == ["ok"] * 7
    assert rows["finetune fold"]["photos"] == 120 and rows["finetune fold"]["weights"] == weights.name
    speed = rows["resnet50 img/s"]
    assert speed["loader_img_s"] > 0 and speed["model_img_s"] > 0 and speed["together_img_s"] > 0
    assert speed["drained_batches"] == 1 + 4 * speed["loader_workers"]


def test_gpu_check_refuses_weights_that_are_not_there(tmp_path):
    proc = subprocess.run([sys.executable, str(GPU_CHECK), "--weights", str(tmp_path / "absent.pth")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "only the checkout is there: copy the file inside it" in proc.stderr
    assert '"shared"' not in GPU_CHECK.read_text()  # no path into ../shared is left in the script

"""The kernel folder: the offline inference notebook and ``kernel-metadata.json``.

The notebook's first code cell is papermill's ``parameters`` cell (``input_dir``, ``bundle_dir``, ``working_dir``,
defaulting to the Kaggle paths), so papermill (or Kaggle) runs it as it is and a test runs it elsewhere. Then it
installs the bundle's wheels with pip's index off, and runs ``pipeline predict --test-dir`` on the GPU when there is
one and on the CPU otherwise: the competition's test images catalogued into the working folder, the time it will
take said before the long part, and ``submission.csv`` written in the competition's format and checked.
"""

from __future__ import annotations

from pathlib import Path

KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"
SUBMISSION = "submission.csv"

INSTALL = '''\
import glob, subprocess, sys

# offline: pip's index off, every wheel from the bundle; --no-deps, so that what only training needs is never asked for
wheels = sorted(glob.glob(f"{bundle_dir}/wheels/*.whl"))
subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", f"{bundle_dir}/wheels",
                "--no-deps", "--force-reinstall", "--quiet", *wheels], check=True)
print("installed:", ", ".join(w.rsplit("/", 1)[-1] for w in wheels))'''

PREDICT = '''\
import os, subprocess, sys
import torch

device = "cuda" if torch.cuda.is_available() else "cpu"
runs = {runs!r}
run_options = [a for r in runs for a in ("--run", f"{{bundle_dir}}/runs/{{r}}")]
command = [sys.executable, "-m", "pipeline", "predict", *run_options, "--test-dir", input_dir,
           "--work-dir", f"{{working_dir}}/pipeline", "--out", f"{{working_dir}}/{submission}", "--force",
           "--device", device, "--no-progress", {options}]
print("predicting on the", device.upper(), "with", ", ".join(runs))
plain = {{k: v for k, v in os.environ.items() if "COLOR" not in k}} | {{"COLUMNS": "200", "TERM": "dumb"}}  # no styles
# the command says how long it will take once the test images are catalogued, before the long part
with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                      env=plain) as job:
    for line in job.stdout:
        print(line, end="", flush=True)
if job.returncode:
    raise SystemExit(f"pipeline predict failed (exit status {{job.returncode}})")'''

SHOW = '''\
import pandas as pd

submission = pd.read_csv(f"{{working_dir}}/{submission}")
print(len(submission), "rows")
submission.head()'''


def notebook(*, competition: str, dataset: str, runs: list[str], options: list[str], title: str):
    """The inference notebook (an nbformat v4 object).

    Args:
        competition: the competition's Kaggle slug (its folder under /kaggle/input).
        dataset: the bundle's dataset slug (its folder under /kaggle/input).
        runs: the run folders' names in the bundle.
        options: ``pipeline predict`` options that make the local prediction (``--tta auto``, ...).
        title: the notebook's heading.
    """
    import nbformat.v4 as nbf

    parameters = (f'input_dir = "{KAGGLE_INPUT}/{competition}"  # the competition (read-only)\n'
                  f'bundle_dir = "{KAGGLE_INPUT}/{dataset}"  # the exported runs and wheels\n'
                  f'working_dir = "{KAGGLE_WORKING}"  # where the submission and the caches go')
    cells = [
        nbf.new_markdown_cell(f"# {title}\n\nThe runs {', '.join(runs)} predict the test images of `{competition}` "
                              f"offline and write `{SUBMISSION}` (made by `pipeline export`)."),
        nbf.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbf.new_code_cell(INSTALL),
        nbf.new_code_cell(PREDICT.format(runs=runs, submission=SUBMISSION,
                                         options=", ".join(repr(o) for o in options))),
        nbf.new_code_cell(SHOW.format(submission=SUBMISSION)),
    ]
    return nbf.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})


def kernel_metadata(*, kernel_id: str, title: str, code_file: str, dataset_id: str, competition: str,
                    gpu: bool) -> dict:
    """``kernel-metadata.json`` for ``kaggle kernels push``: the notebook, private, internet off, the GPU as asked,
    the competition and the bundle's dataset as its inputs."""
    return {"id": kernel_id, "title": title, "code_file": code_file, "language": "python", "kernel_type": "notebook",
            "is_private": True, "enable_gpu": gpu, "enable_tpu": False, "enable_internet": False,
            "dataset_sources": [dataset_id], "competition_sources": [competition], "kernel_sources": [],
            "model_sources": []}


def write_kernel(folder: Path, nb, metadata: dict) -> Path:
    """Write the notebook and its metadata into ``folder``; return the notebook's path."""
    import json

    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / metadata["code_file"]
    nbformat.validate(nb)
    nbformat.write(nb, str(path))
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return path

"""`pipeline export`: the bundle (runs, wheels, metadata), the offline notebook, its refusals, --push through a
stand-in `kaggle` that records its arguments, and the notebook executed with papermill in a Kaggle-like environment
with pip's index off: its submission.csv is the file `pipeline predict` writes."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from pipeline.export import ExportError
from pipeline.export.bundle import export
from pipeline.export.wheels import KAGGLE_IMAGE, PREDICT_NEEDS, missing_on_kaggle
from tests import competition_data
from tests.conftest import SAMPLE, tiny_config
from tests.kaggle_env import kaggle_python, offline_env
from tests.test_cli import invoke
from tests.test_portable import REDUX, downloaded, read_only_copy, snapshot

TRAINING_ONLY = ("optuna", "mlflow", "tensorboard", "py7zr")
BLOCKED_RUN = """\
import ast, importlib.abc, json, sys
from importlib import metadata

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is a training-only dependency")
sys.meta_path.insert(0, Blocked())
from pipeline.cli import app
code = 0
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
tops = set()
for name, module in list(sys.modules.items()):
    if name.startswith("pipeline") and getattr(module, "__file__", None):
        for node in ast.walk(ast.parse(open(module.__file__, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                tops |= {{a.name.split(".")[0] for a in node.names}}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops.add(node.module.split(".")[0])
names = metadata.packages_distributions()
print("DISTRIBUTIONS", json.dumps(sorted({{d for t in tops for d in names.get(t, [])}})))
sys.exit(code)
"""


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@pytest.fixture(scope="module")
def redux(tmp_path_factory) -> tuple[Path, Path]:
    return downloaded(tmp_path_factory.mktemp("redux"))


@pytest.fixture(scope="module")
def exported(redux, tmp_path_factory):
    _, run = redux
    return export(runs=[run], out=tmp_path_factory.mktemp("export") / "out", owner="someone", gpu=True)


@pytest.fixture(scope="module")
def kaggle_env(tmp_path_factory) -> Path:
    return kaggle_python(tmp_path_factory.mktemp("kaggle-image"))


# ---- the predict path and the wheels ----------------------------------------------------------------------------
def test_predict_imports_no_training_only_package_and_needs_only_what_is_listed(redux, tmp_path):
    _, run = redux
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_RUN.format(blocked=TRAINING_ONLY))
    competition = read_only_copy(SAMPLE, tmp_path / "input")
    done = subprocess.run([sys.executable, str(script), "predict", "--run", str(run), "--test-dir", str(competition),
                           "--work-dir", str(tmp_path / "work"), "--no-progress", "--tta", "none"],
                          capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("DISTRIBUTIONS "))
    imported = {_normal(d) for d in json.loads(line.split(" ", 1)[1])} - {"catdog-pipeline"}
    assert imported <= PREDICT_NEEDS, imported - PREDICT_NEEDS
    assert not imported & set(TRAINING_ONLY)


def test_what_the_kaggle_image_lacks_is_fetched_as_pinned_wheels():
    assert missing_on_kaggle() == []  # every package predict imports ships with the Kaggle image today
    lacking = missing_on_kaggle(image=KAGGLE_IMAGE - {"imagehash", "filelock"})
    from importlib.metadata import version

    assert lacking == [f"filelock=={version('filelock')}", f"imagehash=={version('imagehash')}"]


# ---- the bundle and the kernel ----------------------------------------------------------------------------------
def test_the_bundle_holds_the_runs_predict_files_the_wheel_and_its_metadata(exported, redux):
    _, run = redux
    dataset = exported.dataset_dir
    carried = {str(p.relative_to(dataset / "runs" / "tiny")) for p in (dataset / "runs" / "tiny").rglob("*")
               if p.is_file()}
    assert {"config.json", "folds.csv", "oof.csv", "cv.json"} | {f"fold{k}/best.pt" for k in range(3)} <= carried
    assert not any(p.endswith("last.pt") or p.startswith(("report", "tensorboard", "test_probs")) for p in carried)
    assert (run / "fold0" / "last.pt").exists()  # left out, not missing
    assert exported.wheels == ["catdog_pipeline-0.1.0-py3-none-any.whl"]
    assert json.loads((dataset / "dataset-metadata.json").read_text()) == {
        "title": "pipeline-tiny", "id": "someone/pipeline-tiny", "licenses": [{"name": "CC0-1.0"}]}
    bundle = json.loads((dataset / "bundle.json").read_text())
    assert bundle["competition"] == REDUX and bundle["runs"] == ["tiny"]
    assert exported.size == sum(p.stat().st_size for p in dataset.rglob("*") if p.is_file())


def test_the_kernel_is_an_offline_notebook_with_papermills_parameters_cell(exported):
    meta = json.loads((exported.kernel_dir / "kernel-metadata.json").read_text())
    assert meta["enable_internet"] is False and meta["enable_gpu"] is True
    assert meta["competition_sources"] == [REDUX] and meta["dataset_sources"] == ["someone/pipeline-tiny"]
    assert meta["id"] == "someone/pipeline-tiny-infer" and meta["code_file"] == "pipeline-tiny-infer.ipynb"
    nb = nbformat.read(exported.notebook, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata["tags"] == ["parameters"]
    assert {n.targets[0].id: n.value.value for n in ast.parse(code[0].source).body} == {
        "input_dir": f"/kaggle/input/{REDUX}", "bundle_dir": "/kaggle/input/pipeline-tiny",
        "working_dir": "/kaggle/working"}
    assert '"--no-index", "--find-links"' in code[1].source
    assert 'torch.cuda.is_available() else "cpu"' in code[2].source


def test_the_bundle_installs_with_pips_index_off_in_a_kaggle_like_environment(exported, kaggle_env, tmp_path):
    """Before the specs were package data, the installed wheel had no competitions and predict could not start."""
    assert subprocess.run([str(kaggle_env), "-c", "import pipeline"], capture_output=True, check=False,
                          env=offline_env(), cwd=tmp_path).returncode == 1  # no project until the bundle is in
    wheels = sorted(str(p) for p in (exported.dataset_dir / "wheels").glob("*.whl"))
    subprocess.run([str(kaggle_env), "-m", "pip", "install", "--no-index", "--find-links",
                    str(exported.dataset_dir / "wheels"), "--no-deps", "--quiet", *wheels],
                   check=True, env=offline_env(), cwd=tmp_path)
    said = subprocess.run([str(kaggle_env), "-c", "import pipeline, pathlib; from pipeline.competitions.spec import "
                           "builtin_competitions; print(pathlib.Path(pipeline.__file__).parent); "
                           "print(len(builtin_competitions()))"],
                          capture_output=True, text=True, check=True, env=offline_env(), cwd=tmp_path).stdout.split()
    assert Path(said[0]).is_relative_to(kaggle_env.parents[1]) and int(said[1]) >= 8


# ---- refusals -----------------------------------------------------------------------------------------------------
def _refused(tmp_path: Path, *args) -> str:
    r = invoke("export", *args, "--out", tmp_path / "out")
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing half-written
    (line,) = r.output.strip().splitlines()
    return line


def test_export_refuses_weights_that_are_not_in_the_run(redux, tmp_path):
    run = Path(shutil.copytree(redux[1], tmp_path / "runs" / "tiny"))
    (run / "fold1" / "best.pt").unlink()
    assert "lacks the weights of fold(s) 1" in _refused(tmp_path, "--run", run)


def test_export_refuses_a_run_without_a_kaggle_competition(redux, tmp_path):
    run = Path(shutil.copytree(redux[1], tmp_path / "runs" / "tiny"))
    config = json.loads((run / "config.json").read_text())
    config["competition"]["kaggle"] = None
    (run / "config.json").write_text(json.dumps(config))
    assert "names no Kaggle competition in its spec" in _refused(tmp_path, "--run", run)
    del config["competition"]
    (run / "config.json").write_text(json.dumps(config))
    assert "records no competition" in _refused(tmp_path, "--run", run)


@pytest.mark.parametrize("room", ["none", "for the runs alone"])
def test_export_refuses_a_bundle_over_kaggles_limit_and_leaves_nothing(redux, exported, tmp_path, room):
    """Runs over the limit are refused at once; runs that fit but not with the wheels, once the wheels are built."""
    limit = 1000 if room == "none" else exported.size - 1
    with pytest.raises(ExportError, match=r"over Kaggle's dataset limit of (1000 bytes|\d+\.\d MiB)"):
        export(runs=[redux[1]], out=tmp_path / "out", owner="someone", limit=limit)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_refuses_to_overwrite_an_earlier_export_without_force(exported, redux):
    out = exported.dataset_dir.parent
    r = invoke("export", "--run", redux[1], "--out", out, "--owner", "someone")
    assert r.exit_code == 1 and "holds an earlier export; pass --force" in r.output


# ---- --push with a stand-in kaggle ------------------------------------------------------------------------------
KAGGLE = """\
import json, sys
args = sys.argv[1:]
with open({record!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if args[:2] == ["datasets", "status"]:
    calls = [json.loads(line) for line in open({record!r})]
    created = any(c[:2] in (["datasets", "create"], ["datasets", "version"]) for c in calls) or {exists!r}
    if not created:
        print("404 - Not Found", file=sys.stderr)
        sys.exit(1)
    print("ready")
elif args[:2] in (["datasets", "create"], ["datasets", "version"]):
    print("Dataset creation successful! Check your dataset at https://www.kaggle.com/datasets/someone/pipeline-tiny")
elif args[:2] == ["kernels", "push"]:
    print("Kernel version 1 successfully pushed.  Please check progress at https://www.kaggle.com/code/x")
elif args[:2] == ["kernels", "status"]:
    print('someone/pipeline-tiny-infer has status "queued"')
else:
    sys.exit(2)
"""


def _stand_in(tmp_path: Path, monkeypatch, *, exists: bool = False, credentials: bool = True) -> Path:
    bin_dir, record = tmp_path / "bin", tmp_path / "kaggle-calls.jsonl"
    bin_dir.mkdir()
    script = bin_dir / "kaggle"
    script.write_text(f"#!{sys.executable}\n" + KAGGLE.format(record=str(record), exists=exists))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    config = tmp_path / "kaggle-config"
    config.mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    if credentials:
        (config / "kaggle.json").write_text('{"username": "someone", "key": "0123456789abcdef"}')
    return record


@pytest.mark.parametrize("exists", [False, True])
def test_push_creates_or_versions_the_dataset_then_pushes_the_kernel(redux, tmp_path, monkeypatch, exists):
    record = _stand_in(tmp_path, monkeypatch, exists=exists)
    out = tmp_path / "out"
    r = invoke("export", "--run", redux[1], "--out", out, "--push")
    assert r.exit_code == 0, r.output
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    dataset, kernel = str(out / "dataset"), str(out / "kernel")
    sent = ["datasets", "version", "-p", dataset, "-m", "pipeline export", "--dir-mode", "zip"] if exists else \
        ["datasets", "create", "-p", dataset, "--dir-mode", "zip"]
    assert calls == [["datasets", "status", "someone/pipeline-tiny"], sent,
                     ["datasets", "status", "someone/pipeline-tiny"], ["kernels", "push", "-p", kernel],
                     ["kernels", "status", "someone/pipeline-tiny-infer"]]
    assert 'kernel status: someone/pipeline-tiny-infer has status "queued"' in r.output
    assert f"dataset {'versioned' if exists else 'created'}" in r.output


def test_push_without_credentials_is_one_line_and_sends_nothing(redux, tmp_path, monkeypatch):
    record = _stand_in(tmp_path, monkeypatch, credentials=False)
    r = invoke("export", "--run", redux[1], "--out", tmp_path / "out", "--owner", "someone", "--push")
    assert r.exit_code == 1 and "No Kaggle API credentials found" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()  # checked before writing
    assert not record.exists()


# ---- the notebook, offline, against a read-only competition folder ---------------------------------------------
def _digits(root: Path) -> tuple[Path, Path, Path]:
    """A Digit Recognizer download (10 classes) from sklearn's digits, a tiny run on it: (input, data, run)."""
    from pipeline.data.download import download
    from pipeline.train.session import train

    layout = competition_data.digit_recognizer(root / "input", limit=300)
    data = root / "data"
    download(competition="digit-recognizer", from_paths=layout.files, data_dir=data, n_folds=3, progress=False,
             workers=1)
    train(tiny_config(data, root / "runs", run_name="digits", epochs=1))
    return layout.root, data, root / "runs" / "digits"


@pytest.mark.slow
@pytest.mark.parametrize("competition", ["redux", "digits"])
def test_the_notebook_offline_writes_the_file_pipeline_predict_writes(competition, redux, kaggle_env, tmp_path):
    if competition == "redux":
        (data, run), source = redux, SAMPLE
    else:
        source, data, run = _digits(tmp_path / "digits")
    local = invoke("predict", "--run", run, "--test", data / "test.csv", "--out", tmp_path / "local.csv",
                   "--no-progress")
    assert local.exit_code == 0, local.output
    done = export(runs=[run], out=tmp_path / "export", owner="someone")
    bundle = read_only_copy(done.dataset_dir, tmp_path / "kaggle" / "input" / "bundle")
    competition_dir = read_only_copy(source, tmp_path / "kaggle" / "input" / "competition")
    before = snapshot(competition_dir) | snapshot(bundle)
    working = tmp_path / "kaggle" / "working"
    executed = tmp_path / "executed.ipynb"
    ran = subprocess.run([str(kaggle_env), "-m", "papermill", str(done.notebook), str(executed),
                          "-p", "input_dir", str(competition_dir), "-p", "bundle_dir", str(bundle),
                          "-p", "working_dir", str(working), "--no-progress-bar"],
                         capture_output=True, text=True, check=False, env=offline_env(), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-4000:]
    said = "".join("".join(o.get("text", "")) for c in nbformat.read(executed, as_version=4).cells
                   for o in c.get("outputs", []))
    assert "will take about" in said and said.index("will take about") < said.index("wrote ")
    assert (working / "submission.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert snapshot(competition_dir) | snapshot(bundle) == before
    check = invoke("validate", working / "submission.csv", "--test", data / "test.csv")
    assert check.exit_code == 0 and "valid:" in check.output

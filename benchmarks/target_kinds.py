"""The target kinds on real handwritten digits (tests/test_target_kinds.py's layouts), in one process:

- each kind's CV metric (out-of-fold, fold 0) and held-out metric (the 360 test digits, computed independently);
- the loss of one number (``pipeline.targets.scalar.LOSS``): binary cross-entropy on the target scaled to [0, 1]
  against the squared error of the sigmoid, for regression (RMSE) and ordinal (kappa); and ordinal as 5-class
  classification (kappa of the most likely grade, and of the expected grade rounded);
- the training speed of a multi-label head (4 sigmoids, BCE) against the single-label one (10-way softmax) on the
  same images: training steps interleaved in one process.

    python benchmarks/target_kinds.py                 # about 20 minutes on 2 loaded cores
    python benchmarks/target_kinds.py --epochs 3 --only speed
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.data.download import download  # noqa: E402
from pipeline.predict.predict import predict  # noqa: E402
from pipeline.targets import scalar  # noqa: E402
from pipeline.train.session import train  # noqa: E402
from tests.conftest import tiny_config  # noqa: E402
from tests.test_target_kinds import COMMON, KINDS, check_file, write_layout  # noqa: E402

# ordinal as classification: the same grades as five classes, written as probabilities
CLASSES_SPEC = """name = "digits-grade-classes"
metric = "accuracy"
classes_from = "labels"
[submission]
columns = ["image_id"]
label = "probabilities"
sort = "text"
""" + COMMON.format(column="diagnosis")
def run(root: Path, kind: str, epochs: int, spec_text: str | None = None, make=None) -> dict:
    """Download, train (fold 0), predict; the CV metric, the held-out file and the training speed."""
    spec, files, truth = write_layout(root, kind)
    if spec_text is not None:
        spec.write_text(spec_text)
        train_csv = pd.read_csv(files / "train.csv")
        digits = pd.Series(train_csv.image_id).map(dict(zip(*_train_digits(), strict=True)))
        pd.DataFrame({"image_id": train_csv.image_id, **make(digits)}).to_csv(files / "train.csv", index=False)
    data, runs = root / "data", root / "runs"
    download(competition=spec, from_paths=[files], data_dir=data, progress=False, workers=1)
    t0 = time.perf_counter()
    cv = train(tiny_config(data, runs, run_name="r", epochs=epochs, folds=[0]))
    seconds = time.perf_counter() - t0
    epochs_log = pd.read_csv(runs / "r" / "metrics.csv")
    out = root / "sub.csv"
    predict(runs=[], test_csv=data / "test.csv", out=out, runs_dir=runs)
    sub = pd.read_csv(out, dtype=str, keep_default_na=False)
    note = json.loads(out.with_suffix(".json").read_text())
    return {"cv": cv["overall"][cv["metric"]], "metric": cv["metric"], "sub": sub, "truth": truth,
            "seconds": seconds, "images_per_s": float(epochs_log.images_per_s.iloc[1:].median()),
            "fitted": note["fitted"]}


def _train_digits():
    from tests import competition_data as layouts

    _, tr_y, _, _ = layouts.split()
    return [f"tr{i:04d}" for i in range(len(tr_y))], list(tr_y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--only", choices=["kinds", "loss", "speed"], default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "kinds"):
            print(f"kind                 metric        CV (fold 0)  held-out  seconds  ({args.epochs} epochs, LeNet "
                  "32 px)")
            for kind in KINDS:
                r = run(tmp / kind, kind, args.epochs)
                held = check_file(kind, r["sub"], r["truth"])
                fitted = r["fitted"]
                said = f"  fitted {fitted['method']}: OOF {fitted['oof_metric_before']:.4f} -> " \
                    f"{fitted['oof_metric_after']:.4f}" if fitted else ""
                print(f"{kind:20s} {r['metric']:12s} {r['cv']:11.4f} {held:9.4f} {r['seconds']:8.1f}{said}",
                      flush=True)
        if args.only in (None, "loss"):
            print("loss of one number, and the ordinal head (CV on fold 0 / held-out):")
            for kind, head in (("regression", None), ("ordinal", "regression")):
                for loss in ("bce", "mse"):
                    scalar.LOSS[kind] = loss
                    scalar.ORDINAL_HEAD = head or scalar.ORDINAL_HEAD
                    r = run(tmp / f"{kind}-{loss}", kind, args.epochs)
                    held = check_file(kind, r["sub"], r["truth"])
                    print(f"  {kind:10s} {'one sigmoid, ' if head else ''}{loss}: {r['metric']} {r['cv']:.4f} / "
                          f"{held:.4f}", flush=True)
                scalar.LOSS[kind] = "bce"
            scalar.ORDINAL_HEAD = "classes"
            r = run(tmp / "ordinal-classes", "ordinal", args.epochs)
            print(f"  ordinal    softmax, expected grade cut: qwk {r['cv']:.4f} / "
                  f"{check_file('ordinal', r['sub'], r['truth']):.4f}", flush=True)
            from sklearn.metrics import cohen_kappa_score

            r = run(tmp / "grade-classes", "ordinal", args.epochs, CLASSES_SPEC,
                    lambda digits: {"diagnosis": (digits // 2).to_numpy()})
            sub = r["sub"].set_index("image_id").loc[r["truth"].image_id]
            p = sub[[str(g) for g in range(5)]].to_numpy(float)
            grades = r["truth"].digit.to_numpy() // 2
            argmax = cohen_kappa_score(grades, p.argmax(axis=1), weights="quadratic")
            expected = cohen_kappa_score(grades, np.clip(np.rint(p @ np.arange(5)), 0, 4).astype(int),
                                         weights="quadratic")
            print(f"  ordinal as 5 classes: held-out kappa of the likeliest grade {argmax:.4f}, of the expected "
                  f"grade rounded {expected:.4f}", flush=True)
        if args.only in (None, "speed"):
            speed()


def speed(rounds: int = 30, steps: int = 10) -> None:
    """Training steps of a LeNet (32 px, batch 32, the digits themselves) with the single-label head (10 classes,
    cross-entropy) and the multi-label head (4 labels, BCE), interleaved round by round in one process; the fastest
    round of each (the least disturbed by other processes) and the median, in images/s. (End-to-end epoch speeds
    were tried first: dominated by decoding the images and by the other processes of a shared machine, they moved
    3x between two runs of the same head.)"""
    import torch

    from pipeline.models import build_model
    from pipeline.targets.multilabel import MultiLabelTask
    from pipeline.targets.task import Task
    from tests import competition_data as layouts

    tr_x, tr_y, _, _ = layouts.split()
    grey = torch.from_numpy(tr_x[:32].astype(np.float32) / 255)[:, None].repeat(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(grey, size=(32, 32), mode="bilinear")
    digits = torch.from_numpy(tr_y[:32].astype(np.int64))
    heads = {"single-label (10 classes)": (Task(10), digits),
             "multi-label (4 labels)": (MultiLabelTask(4), torch.stack([digits % 2 == 0, digits >= 5,
                                                                         (digits == 0) | (digits >= 8) | (digits == 6),
                                                                         (digits == 2) | (digits == 3) | (digits == 5)
                                                                         | (digits == 7)], dim=1).float())}
    models = {}
    for name, (task, _) in heads.items():
        torch.manual_seed(0)
        model = build_model("lenet", 32, num_classes=task.outputs)
        models[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01))
    seconds = {name: [] for name in heads}
    for _ in range(rounds):
        for name, (task, y) in heads.items():
            model, opt = models[name]
            t0 = time.perf_counter()
            for _ in range(steps):
                opt.zero_grad(set_to_none=True)
                task.loss(model(x), y.float() if y.ndim == 2 else y).backward()
                opt.step()
            seconds[name].append(time.perf_counter() - t0)
    print(f"training steps, LeNet 32 px, batch 32, {rounds} interleaved rounds of {steps} steps (images/s, fastest "
          "round / median):")
    for name, times in seconds.items():
        print(f"  {name:26s} {32 * steps / min(times):8.0f} / {32 * steps / float(np.median(times)):8.0f}")


if __name__ == "__main__":
    main()

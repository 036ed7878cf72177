"""Every built-in competition on real handwritten digits: download, train, predict, score, with the user's commands.

scikit-learn's 1,797 real 8x8 digit scans are laid out as each Kaggle competition lays out its files
(``tests/competition_data.py``: upsampled to the competition's size, PNG or JPEG, zip, 7z or a pixel CSV) and split
once into 1,437 training and 360 held-out test digits. For each competition this runs, in a temporary folder::

    pipeline download --competition NAME --from FILE ...
    pipeline train --recipe lenet [--epochs N]
    pipeline predict --out sub.csv

then scores ``sub.csv`` against the held-out labels with the independent scorer of ``tests/submission_checks.py``,
and prints the 5-fold CV (accuracy, log-loss, the competition's metric), the held-out score, the TTA that predict's
``--tta auto`` chose on the folds and the seconds, beside chance (what a constant prediction scores).

    python benchmarks/competitions.py                     # every competition, the lenet recipe (about 15 min, 2 cores)
    python benchmarks/competitions.py --epochs 3 --only digit-recognizer

``--mlebench`` runs MLE-bench's built-in image competitions instead, on the digits laid out as MLE-bench's ``public/``
folder (``tests/mlebench_layouts.py``), downloaded with ``--from public/``, scored by ``tests/mlebench_scores.py``
(scikit-learn, independent of the pipeline) and checked against the sample submission's header and row order;
``--train-folds 0`` trains fold 0 only (its CV is that fold's)::

    python benchmarks/competitions.py --mlebench --epochs 3 --train-folds 0
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import competition_data as layouts  # noqa: E402
from tests import mlebench_layouts as mle  # noqa: E402
from tests import submission_checks as checks  # noqa: E402
from tests.mlebench_scores import score  # noqa: E402

CHANCE = {"accuracy": "0.100", "f1_micro": "0.100", "log_loss": "2.303", "roc_auc": "0.500"}
# what a constant (or one fixed ranking) scores on the MLE-bench digits layouts
MLEBENCH_CHANCE = {"qwk": "0.000", "mean_roc_auc": "0.500", "roc_auc": "0.500", "accuracy": "0.200",
                   "log_loss": "2.303", "f1_micro": "0.250", "rmse": "25.8", "map_at_k": "0.228"}
TEN = ["aptos2019-blindness-detection", "histopathologic-cancer-detection", "plant-pathology-2020-fgvc7",
       "ranzcr-clip-catheter-line-classification", "siim-isic-melanoma-classification",
       "cassava-leaf-disease-classification", "plant-pathology-2021-fgvc8", "petfinder-pawpularity-score",
       "leaf-classification", "whale-categorization-playground"]


def pipeline(*args, cwd: Path, check: bool = True) -> str:
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, check=False)
    if proc.returncode and not check:
        return ""
    if proc.returncode:
        raise SystemExit(f"pipeline {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--recipe", default="lenet")
    parser.add_argument("--only", action="append", help="a layout name (repeatable); default: all")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--mlebench", action="store_true",
                        help="MLE-bench's built-ins on their public/ layouts (default: the ten named in issue 29)")
    parser.add_argument("--train-folds", default="all", help="train's --folds (e.g. 0), with --mlebench")
    args = parser.parse_args()
    if args.mlebench:
        return run_mlebench(args)
    names = args.only or [n for n in layouts.LAYOUTS if n != "cifar-10-zip"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            data = layouts.LAYOUTS[name](work / "files")
            froms = [a for f in data.files for a in ("--from", f)]
            started = time.perf_counter()
            pipeline("download", "--competition", data.competition, *froms, "--no-progress", cwd=work)
            extra = ["--epochs", args.epochs] if args.epochs else []
            pipeline("train", "--recipe", args.recipe, *extra, "--no-progress", "--tracker", "none",
                     cwd=work)
            pipeline("predict", "--out", "sub.csv", "--no-progress", cwd=work)
            seconds = time.perf_counter() - started
            problems = checks.check_submission(data.competition, work / "sub.csv", data.test_ids, data.classes)
            held_out = checks.score(data.competition, work / "sub.csv", data.truth, positive=data.positive)
            tta = json.loads((work / "sub.json").read_text())["tta"]  # what --tta auto chose on the folds
            cv = json.loads(next((work / "runs").glob("*/cv.json")).read_text())
            overall = cv["overall"]
            metric = cv["metric"]
            rows.append({"competition": data.competition, "classes": len(data.classes), "metric": metric,
                         "cv_accuracy": overall["accuracy"], "cv_log_loss": overall["log_loss"],
                         "cv_metric": overall.get({"f1_micro": "accuracy"}.get(metric, metric)),
                         "held_out": held_out, "tta": tta, "valid": not problems, "seconds": seconds})
            print(f"{name}: done in {seconds:.0f} s", file=sys.stderr, flush=True)
    epochs = f"--epochs {args.epochs}" if args.epochs else "its own epochs"
    print(f"recipe {args.recipe} ({epochs}), 5 folds of 1,437 training digits; held-out: 360 digits")
    print(f"{'competition':<34}{'K':>3}  {'metric':<9}{'CV acc':>8}{'CV logloss':>11}{'CV metric':>10}"
          f"{'held-out':>10}{'chance':>8}{'TTA':>11}{'valid':>7}{'seconds':>9}")
    for r in rows:
        print(f"{r['competition']:<34}{r['classes']:>3}  {r['metric']:<9}{r['cv_accuracy']:>8.3f}"
              f"{r['cv_log_loss']:>11.3f}{r['cv_metric']:>10.3f}{r['held_out']:>10.3f}{CHANCE[r['metric']]:>8}"
              f"{r['tta']:>11}"
              f"{'yes' if r['valid'] else 'NO':>7}{r['seconds']:>9.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


def run_mlebench(args) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for slug in args.only or TEN:
            work = Path(tmp) / slug
            work.mkdir()
            data = mle.MLEBENCH[slug](work / "public")
            started = time.perf_counter()
            pipeline("download", "--competition", slug, "--from", data.root, "--no-progress", cwd=work)
            extra = ["--epochs", args.epochs] if args.epochs else []
            pipeline("train", "--recipe", args.recipe, *extra, "--folds", args.train_folds, "--no-progress",
                     "--tracker", "none", cwd=work)
            pipeline("predict", "--out", "sub.csv", "--no-progress", cwd=work)
            valid = bool(pipeline("validate", "sub.csv", cwd=work, check=False))  # "" when validate refuses it
            seconds = time.perf_counter() - started
            sample = pd.read_csv(data.sample_submission, dtype=str, keep_default_na=False)
            written = pd.read_csv(work / "sub.csv", dtype=str, keep_default_na=False)
            id_column = sample.columns[0]
            valid = valid and list(written.columns) == list(sample.columns) and \
                written[id_column].tolist() == sample[id_column].tolist()
            held_out = score(data, written.set_index(id_column), sample)
            cv = json.loads(next((work / "runs").glob("*/cv.json")).read_text())
            rows.append({"competition": slug, "kind": data.kind, "metric": cv["metric"],
                         "cv_metric": cv["overall"][cv["metric"]], "held_out": held_out, "valid": valid,
                         "seconds": seconds})
            print(f"{slug}: done in {seconds:.0f} s", file=sys.stderr, flush=True)
    epochs = f"--epochs {args.epochs}" if args.epochs else "its own epochs"
    print(f"recipe {args.recipe} ({epochs}), train --folds {args.train_folds} of 5 over the training digits; "
          "held-out: 20 % of the 1,797 digits")
    print(f"{'competition':<42}{'kind':<12}{'metric':<14}{'CV':>8}{'held-out':>10}{'chance':>8}{'valid':>7}"
          f"{'seconds':>9}")
    for r in rows:
        print(f"{r['competition']:<42}{r['kind']:<12}{r['metric']:<14}{r['cv_metric']:>8.3f}{r['held_out']:>10.3f}"
              f"{MLEBENCH_CHANCE[r['metric']]:>8}{'yes' if r['valid'] else 'NO':>7}{r['seconds']:>9.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

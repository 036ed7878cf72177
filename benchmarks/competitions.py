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
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import competition_data as layouts  # noqa: E402
from tests import submission_checks as checks  # noqa: E402

CHANCE = {"accuracy": "0.100", "f1_micro": "0.100", "log_loss": "2.303", "roc_auc": "0.500"}


def pipeline(*args, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"pipeline {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--recipe", default="lenet")
    parser.add_argument("--only", action="append", help="a layout name (repeatable); default: all")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()

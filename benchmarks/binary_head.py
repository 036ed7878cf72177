"""Two classes: one logit (sigmoid, binary cross-entropy; what the pipeline trains) against two logits (softmax,
cross-entropy), the same recipe, folds and seed, on the same data.

    python benchmarks/binary_head.py --data-dir D                    # the lenet recipe, every fold of D
    python benchmarks/binary_head.py --data-dir D --recipe scratch --folds 0

D is a data folder made by ``pipeline download`` (two classes). The two-logit run swaps the head and the loss
for the length of that run (``Task(two_logits=True)``, a 2-way head); everything else is the pipeline's own
training. Prints the 5-fold CV (accuracy, log-loss, ROC-AUC) and seconds of each, one run after the other.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.competitions.spec import Competition  # noqa: E402
from pipeline.targets.task import Task  # noqa: E402
from pipeline.train import fold as fold_module  # noqa: E402
from pipeline.train.request import TrainRequest  # noqa: E402
from pipeline.train.session import train  # noqa: E402


def run(data_dir: Path, runs_dir: Path, name: str, recipe: str, folds: list[int] | None, two: bool) -> tuple:
    settings = {"data_dir": str(data_dir), "runs_dir": str(runs_dir), "run_name": name, "progress": False,
                "tracker": "none", "report": False}
    if folds is not None:
        settings["folds"] = folds
    request = TrainRequest(recipe=recipe, overrides={}, settings=settings)
    started = time.perf_counter()
    if two:
        two_logits = property(lambda self: 2 if self.binary else self.n_classes)
        with mock.patch.object(Competition, "outputs", two_logits), \
                mock.patch.object(fold_module, "Task", lambda n: Task(n, two_logits=True)):
            cv = train(request)
    else:
        cv = train(request)
    return cv["overall"], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--recipe", default="lenet")
    parser.add_argument("--folds", default=None, help="e.g. 0,1 (default: every fold)")
    args = parser.parse_args()
    folds = [int(k) for k in args.folds.split(",")] if args.folds else None
    with tempfile.TemporaryDirectory() as tmp:
        rows = [("one logit (sigmoid)", *run(args.data_dir, Path(tmp), "one", args.recipe, folds, False)),
                ("two logits (softmax)", *run(args.data_dir, Path(tmp), "two", args.recipe, folds, True))]
    print(f"recipe {args.recipe}, data {args.data_dir}, folds {args.folds or 'all'}")
    print(f"{'head':<22}{'CV accuracy':>12}{'log-loss':>10}{'ROC-AUC':>9}{'seconds':>9}")
    for head, o, seconds in rows:
        print(f"{head:<22}{o['accuracy']:>12.4f}{o['log_loss']:>10.4f}{o['roc_auc']:>9.4f}{seconds:>9.0f}")


if __name__ == "__main__":
    main()

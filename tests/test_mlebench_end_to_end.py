"""MLE-bench's image competitions of a kind other than one label per image, end to end (issue 29): scikit-learn's real
digits laid out as MLE-bench's ``public/`` folder lays out each one (tests/mlebench_layouts.py), then the user's
commands ``pipeline download --competition SLUG --from public/``, a short LeNet training, ``pipeline predict`` and
``pipeline validate``, and the written file read back independently of the pipeline: its header is the sample
submission's, its rows are the sample's ids in the sample's order, and its metric, computed here with scikit-learn
(MAP@5 by hand) against the held-out digits, is well above chance.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.train.session import train
from tests import mlebench_layouts as mle
from tests.conftest import tiny_config
from tests.mlebench_scores import score
from tests.test_cli import invoke

# (floor, lower is better). A LeNet at 32 px on fold 0 of the 1,437 training digits (3 epochs for RANZCR, 6 for the
# slow ones), scored on the 360 held-out digits (seed 0, 2 loaded cores; /work/notes/e2e.md). Measured held-out:
# APTOS kappa 0.710, PP2020 0.710, RANZCR 0.643, PP2021 0.535, PetFinder <= 17, whale >= 0.6 (at 3 epochs), iMet 0.447.
# Chance: kappa 0 for a constant grade; mean column
# ROC-AUC 0.5; micro F1 of always the commonest single label 0.25 (PP2021 and iMet: it is in 3 digits of 10, which hold
# 14 labels: 2 x 0.3 / (2 x 0.3 + 0.7 + 1.1)); RMSE of the mean Pawpularity ~26 (8 + 9 d, d uniform: 9 x 2.87); MAP@5
# of one fixed ranking of the ten identities (1 + 1/2 + 1/3 + 1/4 + 1/5) / 10 = 0.23. RANZCR's columns are the digit
# modulo 3 and 4, the hardest to learn in 3 epochs: 0.643 held-out (0.650 CV), 0.80 CV after 6 epochs (2.5 min on
# the loaded machine, too long for the default suite), hence its lower floor.
FLOORS = {"aptos2019-blindness-detection": (0.6, False), "plant-pathology-2020-fgvc7": (0.65, False),
          "ranzcr-clip-catheter-line-classification": (0.6, False), "plant-pathology-2021-fgvc8": (0.45, False),
          "petfinder-pawpularity-score": (17.0, True), "whale-categorization-playground": (0.6, False),
          "imet-2020-fgvc7": (0.38, False)}
# RANZCR by default (groups, ids with dots, the sample's 9 of the 11 training columns); the others with --run-slow
BY_DEFAULT = "ranzcr-clip-catheter-line-classification"


@pytest.mark.parametrize("slug", [s if s == BY_DEFAULT else pytest.param(s, marks=pytest.mark.slow) for s in FLOORS])
def test_an_mlebench_competition_downloads_trains_predicts_and_writes_the_samples_file_well_scored(slug, tmp_path):
    data = mle.MLEBENCH[slug](tmp_path / "public")
    data_dir, runs, out = tmp_path / "data", tmp_path / "runs", tmp_path / "submission.csv"
    r = invoke("download", "--competition", slug, "--from", data.root, "--data-dir", data_dir, "--no-progress")
    assert r.exit_code == 0, r.output
    train(tiny_config(data_dir, runs, run_name="short", epochs=3 if slug == BY_DEFAULT else 6, folds=[0]))
    r = invoke("predict", "--test", data_dir / "test.csv", "--runs-dir", runs, "--out", out, "--no-progress")
    assert r.exit_code == 0, r.output
    r = invoke("validate", out, "--test", data_dir / "test.csv")
    assert r.exit_code == 0, r.output

    sample = pd.read_csv(data.sample_submission, dtype=str, keep_default_na=False)
    written = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(written.columns) == list(sample.columns)  # the sample's header, exactly
    id_column = sample.columns[0]
    assert written[id_column].tolist() == sample[id_column].tolist()  # its ids, in its order
    got = score(data, written.set_index(id_column), sample)
    floor, lower_is_better = FLOORS[slug]
    assert got <= floor if lower_is_better else got >= floor, got
    if slug == "ranzcr-clip-catheter-line-classification":
        assert Path(out).read_text().count("1.2.826.0.1.3680043.8.498.") == len(sample)  # dotted ids kept whole

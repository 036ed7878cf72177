"""The up-front estimate of a run's time as arithmetic on timings (no clock read here, no timed assertion).

It once counted the first batches as the steady state and left out what a fold costs beyond its epochs (its
loaders and model, the loader's start-up, the out-of-fold predictions under each TTA view, the soup's
validations), so a short run of several folds came out at a fifth of its time."""

import pytest

from pipeline.train.budget import FirstEpoch, estimate_run, fewest_epochs_left, oof_passes


def test_a_fold_costs_its_epochs_and_what_comes_before_and_after_them():
    # 10 batches: the first 5 s (4 s of it starting the loader's workers), then 1 s each; validation 3 s
    first = FirstEpoch(setup=2.0, first_batch=5.0, batch_seconds=[1.0] * 9, validation=3.0, epoch=20.0)
    est = estimate_run(first, elapsed=30.0, epochs_left=9, folds_left=2, passes=4)
    assert est.epoch == pytest.approx(16.0)  # the first epoch without its first batch's 4 s of start-up
    assert est.fold_extra == pytest.approx(2.0 + 4.0 + 4 * 3.0)  # setup, start-up, 4 passes over the validation
    # 9 epochs, this fold's out-of-fold passes, the second fold's setup + start-up + passes; from the run's start
    assert est.seconds == pytest.approx(30.0 + 9 * 16.0 + 12.0 + 18.0)
    assert est.spread == 0.0


def test_the_last_fold_pays_only_its_out_of_fold_passes():
    first = FirstEpoch(setup=2.0, first_batch=1.0, batch_seconds=[1.0, 1.0], validation=0.5, epoch=4.0)
    assert estimate_run(first, 10.0, epochs_left=0, folds_left=1, passes=1).seconds == pytest.approx(10.5)


def test_the_spread_of_the_batches_is_the_uncertainty():
    calm = FirstEpoch(setup=0.0, first_batch=1.0, batch_seconds=[1.0, 1.0, 1.0, 1.0], validation=0.0, epoch=5.0)
    busy = FirstEpoch(setup=0.0, first_batch=1.0, batch_seconds=[1.0, 3.0, 1.0, 3.0], validation=0.0, epoch=9.0)
    assert estimate_run(calm, 0.0, 1, 1, 1).spread == 0.0
    assert estimate_run(busy, 0.0, 1, 1, 1).spread == pytest.approx(0.5)  # std 1 s of a 2 s mean
    one = FirstEpoch(setup=0.0, first_batch=2.0, batch_seconds=[], validation=0.0, epoch=2.0)  # a one-batch epoch
    assert estimate_run(one, 0.0, 3, 1, 1).seconds == pytest.approx(6.0)


@pytest.mark.parametrize(("views", "average", "epochs", "passes"),
                         [(0, "none", 3, 1), (3, "none", 3, 4), (3, "swa", 3, 5), (3, "soup", 4, 7)])
def test_a_fold_ends_with_a_pass_per_view_and_per_averaged_candidate(views, average, epochs, passes):
    assert oof_passes(views, average, epochs) == passes


def test_early_stopping_bounds_the_run_from_below():
    # 5 folds of 20 epochs, patience 5: a fold may stop after 6; one epoch of the first fold is done
    assert fewest_epochs_left(20, 5, folds_left=5, done=1) == 5 + 4 * 6
    assert fewest_epochs_left(20, 0, folds_left=5, done=1) == 19 + 4 * 20  # no early stopping: every epoch
    assert fewest_epochs_left(4, 5, folds_left=2, done=1) == 3 + 4  # patience longer than the epochs

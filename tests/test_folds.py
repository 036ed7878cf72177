import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.data.catalog import scan
from pipeline.data.folds import assign_folds, duplicate_groups, label_sets
from pipeline.errors import DataError


def test_duplicate_groups_by_hamming_distance():
    hashes = ["0000000000000000", "0000000000000007", "00000000000000ff", "ffffffffffffffff", "fffffffffffffffe"]
    groups = duplicate_groups(hashes, threshold=4)
    assert groups[0] == groups[1]  # 3 bits apart
    assert groups[2] != groups[0]  # 8 bits from the first, 5 from the second
    assert groups[3] == groups[4] and groups[3] != groups[0]
    assert len(set(duplicate_groups(hashes, threshold=0))) == 5


def test_folds_are_stratified_complete_and_deterministic(sample_data):
    train = pd.read_csv(sample_data / "train.csv", dtype={"phash": str})
    a = assign_folds(train, 5, seed=1)
    assert sorted(a.path) == sorted(train.path)  # every image exactly once
    assert a.path.is_unique and set(a.fold) == {0, 1, 2, 3, 4}
    for _, part in a.groupby("fold"):
        assert abs(len(part) - len(a) / 5) <= 2
        assert abs(part.label.mean() - 0.5) < 0.05
    assert a.equals(assign_folds(train, 5, seed=1))
    assert not a.fold.equals(assign_folds(train, 5, seed=2).fold)


def test_near_duplicates_share_a_fold(sample_images, tmp_path):
    root = tmp_path / "train"
    root.mkdir()
    train = sample_images / "train"
    originals = sorted(train.glob("*.jpg"))[:40] + sorted(train.glob("dog*.jpg"))[:40]
    for p in originals:
        (root / p.name).write_bytes(p.read_bytes())
    # the same photos again under other names: one byte-identical, one re-encoded smaller
    for i, p in enumerate(originals[:10]):
        label = p.name.split(".")[0]
        (root / f"{label}.9000{i}.jpg").write_bytes(p.read_bytes())
        Image.open(p).resize((100, 80)).save(root / f"{label}.9100{i}.jpg", quality=70)
    train = scan([root], workers=1).train
    folds = assign_folds(train, 5, seed=0).set_index("path")
    for i, p in enumerate(originals[:10]):
        label = p.name.split(".")[0]
        trio = [str((root / n).resolve()) for n in (p.name, f"{label}.9000{i}.jpg", f"{label}.9100{i}.jpg")]
        assert folds.loc[trio, "group"].nunique() == 1
        assert folds.loc[trio, "fold"].nunique() == 1
    assert folds.group.nunique() == len(originals)  # nothing else was merged


def test_too_few_images_for_k_folds():
    train = pd.DataFrame({"path": list("abcd"), "label": [0, 0, 1, 1], "phash": ["0" * 16] * 4})
    with pytest.raises(DataError, match="need at least 5 cats and 5 dogs"):
        assign_folds(train, 5)
    with pytest.raises(DataError, match="at least 2"):
        assign_folds(train, 1)


def _distinct_hashes(n: int, seed: int = 0) -> list[str]:
    """Perceptual hashes far apart (random 64-bit): no two are near-duplicates."""
    return [f"{int(h):016x}" for h in np.random.default_rng(seed).integers(0, 2 ** 63, size=n)]


def test_a_group_and_a_near_duplicate_join_two_patients_into_one_fold_group():
    hashes = _distinct_hashes(60)
    hashes[10] = hashes[40]  # patient 3's image 10 and patient 13's image 40 are the same photo
    train = pd.DataFrame({"path": [f"{i}.png" for i in range(60)], "label": [i % 2 for i in range(60)],
                          "phash": hashes, "group": [f"P{i // 3}" for i in range(60)]})
    folds = assign_folds(train, 5, seed=0, classes=("a", "b"))
    assert folds.groupby(train.group).fold.nunique().eq(1).all()  # every patient in one fold
    assert folds.group[9] == folds.group[10] == folds.group[39] == folds.group[40]  # P3 and P13 joined
    assert folds.group.nunique() == 19 and folds.duplicate.nunique() == 59
    assert folds.fold[9] == folds.fold[41]


def test_an_empty_group_is_a_group_of_its_own():
    train = pd.DataFrame({"path": [f"{i}.png" for i in range(20)], "label": [i % 2 for i in range(20)],
                          "phash": _distinct_hashes(20), "group": [""] * 10 + ["P1"] * 5 + ["P2"] * 5})
    folds = assign_folds(train, 5, classes=("a", "b"))
    assert folds.group.nunique() == 12


def test_regression_folds_are_stratified_by_binned_value():
    values = np.arange(200, dtype=float) ** 2  # skewed
    train = pd.DataFrame({"path": [f"{i}.png" for i in range(200)], "label": values, "phash": _distinct_hashes(200)})
    folds = assign_folds(train, 5, seed=3, classes=("value",), kind="regression")
    assert folds.fold.value_counts().eq(40).all()
    for k in range(5):  # each fold holds 4 of the 20 values of each tenth of the range
        assert np.histogram(folds.label[folds.fold == k], bins=np.quantile(values, np.linspace(0, 1, 11)))[0].tolist() \
            == [4] * 10


def test_topk_identities_seen_once_share_a_stratum_and_are_not_refused():
    labels = [0] * 50 + list(range(1, 51))  # new_whale 50 times, fifty whales seen once
    train = pd.DataFrame({"path": [f"{i}.png" for i in range(100)], "label": labels, "phash": _distinct_hashes(100)})
    folds = assign_folds(train, 5, classes=tuple(f"w{i}" for i in range(51)), kind="topk")
    assert folds.fold.value_counts().eq(20).all() and folds[folds.label == 0].fold.value_counts().eq(10).all()


def test_multilabel_labels_read_back_however_the_csv_typed_them():
    assert label_sets(pd.Series(["0 2", "", float("nan"), 3, 3.0, "10"])) == [[0, 2], [], [], [3], [3], [10]]

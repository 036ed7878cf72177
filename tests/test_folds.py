import pandas as pd
import pytest
from PIL import Image

from pipeline.data.catalog import scan
from pipeline.data.folds import assign_folds, duplicate_groups
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

import math
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from pipeline.errors import SubmissionError
from pipeline.predict.formats import (
    FORMATS,
    default_submission_name,
    get_format,
    make_submission,
    parse_image_id,
    read_test_ids,
)
from pipeline.predict.validation import (
    Validation,
    check_submission,
    score_submission,
    validate_submission,
    write_submission,
)
from tests.conftest import MINI

SAMPLE_SOLUTION = Path(__file__).resolve().parents[1] / "pipeline/sample/solution.csv"
TEST_IDS = [0, 1, 2, 3]


def csv_file(tmp_path: Path, text: str, name: str = "sub.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def probs(ids, p) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "prob_dog": p})


def test_formats_and_unknown_format():
    assert set(FORMATS) == {"course", "kaggle", "redux"}
    assert [n for n, f in FORMATS.items() if f.probability] == ["redux"]
    with pytest.raises(SubmissionError, match="choose one of course, kaggle, redux"):
        get_format("kagle")


@pytest.mark.parametrize("name", ["12.jpg", "test/12.jpg", "0012.png"])
def test_parse_image_id(name):
    assert parse_image_id(name) == 12


@pytest.mark.parametrize("name", ["cat.12.jpg", "test/abc.jpg", "12a.jpg", "-3.jpg"])
def test_parse_image_id_rejects_non_numeric_names(name):
    with pytest.raises(SubmissionError, match=f"file name '{name}'"):
        parse_image_id(name)


def test_read_test_ids_sorts_numerically(tmp_path):
    path = csv_file(tmp_path, "id,path\n10,test/10.jpg\n2,test/2.jpg\n1,test/1.jpg\n", "test.csv")
    assert read_test_ids(path) == [1, 2, 10]


def test_read_test_ids_of_the_real_catalogue(sample_data):
    assert read_test_ids(sample_data / "test.csv") == pd.read_csv(SAMPLE_SOLUTION).id.tolist()


@pytest.mark.parametrize("text, message", [
    ("path\ntest/1.jpg\n", "no 'id' column"),
    ("id,path\n1,a.jpg\n3.0,b.jpg\n", "non-integer ids \\('3.0'\\)"),
    ("id,path\n1,a.jpg\n1,b.jpg\n", "more than once \\(1\\)"),
    ("id,path\n", "no test images"),
])
def test_read_test_ids_rejects_malformed_catalogues(tmp_path, text, message):
    with pytest.raises(SubmissionError, match=message):
        read_test_ids(csv_file(tmp_path, text, "test.csv"))


def test_read_test_ids_missing_file(tmp_path):
    with pytest.raises(SubmissionError, match="run `pipeline download`"):
        read_test_ids(tmp_path / "test.csv")


def test_make_submission_sorts_ids_numerically():
    sub = make_submission(probs(["10", "2", "1"], [0.9, 0.2, 0.6]), "course")
    assert sub.id.tolist() == [1, 2, 10]
    assert sub.label.tolist() == [1, 0, 1]
    assert list(sub.columns) == ["id", "label"]
    assert sub.id.dtype.kind == "i" and sub.label.dtype.kind == "i"


def test_threshold_is_settable_for_01_formats():
    p = probs([0, 1, 2], [0.3, 0.5, 0.7])
    assert make_submission(p, "kaggle").label.tolist() == [0, 1, 1]
    assert make_submission(p, "kaggle", threshold=0.6).label.tolist() == [0, 0, 1]
    assert make_submission(p, "kaggle", threshold=0.3).label.tolist() == [1, 1, 1]


def test_redux_clips_at_eps():
    p = probs([0, 1, 2, 3], [0.0, 0.001, 0.5, 1.0])
    assert make_submission(p, "redux").label.tolist() == pytest.approx([0.005, 0.005, 0.5, 0.995])
    assert make_submission(p, "redux", eps=0.01).label.tolist() == pytest.approx([0.01, 0.01, 0.5, 0.99])
    assert make_submission(p, "redux", eps=0).label.tolist() == pytest.approx([0.0, 0.001, 0.5, 1.0])


@pytest.mark.parametrize("p, kwargs, message", [
    (probs([0], [0.5]), {"threshold": 0}, "threshold"),
    (probs([0], [0.5]), {"threshold": 1}, "threshold"),
    (probs([0], [0.5]), {"eps": 0.5}, "eps"),
    (probs([0], [0.5]), {"eps": -0.1}, "eps"),
    (probs([0, 1], [0.5, 1.2]), {}, "outside \\[0, 1\\]"),
    (probs([0, 1], [0.5, float("nan")]), {}, "missing or outside"),
    (probs([0, 1.5], [0.5, 0.5]), {}, "must be an integer"),
    (pd.DataFrame({"id": [0], "p": [0.5]}), {}, "lack column\\(s\\) prob_dog"),
])
def test_make_submission_rejects_bad_input(p, kwargs, message):
    with pytest.raises(SubmissionError, match=message):
        make_submission(p, "course", **kwargs)


def test_kaggle_ids_from_one_with_gaps(tmp_path):
    test_ids = [1, 2, 3, 5, 8, 13]
    sub = make_submission(probs([13, 1, 8, 3, 2, 5], [0.9, 0.1, 0.8, 0.2, 0.7, 0.4]), "kaggle")
    path = write_submission(sub, tmp_path / "sub.csv", test_ids, "kaggle")
    assert path.read_text() == "id,label\n1,0\n2,1\n3,0\n5,0\n8,1\n13,1\n"
    assert validate_submission(path, test_ids, "kaggle") == []
    assert validate_submission(path, range(6), "kaggle") == [
        "2 test id(s) are missing: 0, 4.",
        "2 id(s) are not in the test set: 8, 13.",
    ]


def test_redux_written_with_six_decimals(tmp_path):
    sub = make_submission(probs([1, 0], [0.123456789, 0.0]), "redux")
    path = write_submission(sub, tmp_path / "sub.csv", [0, 1], "redux")
    assert path.read_text() == "id,label\n0,0.005000\n1,0.123457\n"


VALID = "id,label\n0,1\n1,0\n2,1\n3,0\n"


@pytest.mark.parametrize("fmt, text, expected", [
    ("course", VALID, []),
    ("redux", "id,label\n0,0.005\n1,0.995\n2,0.5\n3,1\n", []),
    ("course", "id,label\n0,1\n1,0\n2,1\n",
     ["1 test id(s) are missing: 3.", "The file has 3 data rows; the test set has 4 images."]),
    ("course", VALID + "2,1\n",
     ["1 id(s) appear more than once: 2.", "The file has 5 data rows; the test set has 4 images."]),
    ("course", VALID + "7,1\n",
     ["1 id(s) are not in the test set: 7.", "The file has 5 data rows; the test set has 4 images."]),
    ("kaggle", "id,label\n0,1\n1,2\n2,0.7\n3,0\n", ["2 label(s) are not 0 or 1: '2', '0.7'."]),
    ("course", "0,1\n1,0\n2,1\n3,0\n", ["The header line 'id,label' is missing: the first line is data."]),
    ("course", "ID,prob\n0,1\n1,0\n2,1\n3,0\n", ["The header is 'ID,prob'; it must be exactly 'id,label'."]),
    ("redux", "id,label\n0,0.2\n1,1.3\n2,-0.1\n3,abc\n",
     ["3 label(s) are not probabilities in [0, 1]: '1.3', '-0.1', 'abc'."]),
    ("course", "id,label\n0,1\n1.0,0\n2,1\nabc,0\n",
     ["2 id(s) are not integers: '1.0', 'abc'.", "2 test id(s) are missing: 1, 3."]),
    ("course", "id,label\n0,1\n1,\n2,1\n3,0\n", ["1 row(s) have an empty id or label."]),
    ("course", "id,label,x\n0,1,0\n", ["The file has 3 columns; it needs exactly two, 'id,label'."]),
    ("course", "id,label\n",
     ["4 test id(s) are missing: 0, 1, 2, 3.", "The file has 0 data rows; the test set has 4 images."]),
])
def test_validate_reports_each_defect(tmp_path, fmt, text, expected):
    assert validate_submission(csv_file(tmp_path, text), TEST_IDS, fmt) == expected


def test_validate_empty_file(tmp_path):
    assert validate_submission(csv_file(tmp_path, ""), TEST_IDS, "course") == [
        "The file is empty; it needs the header line 'id,label' and one row per test image."]


def test_validate_caps_long_id_lists(tmp_path):
    assert validate_submission(csv_file(tmp_path, "id,label\n"), range(12), "course")[0] == \
        "12 test id(s) are missing: 0, 1, 2, 3, 4 and 7 more."


def test_validate_a_frame_as_it_would_be_written():
    assert validate_submission(pd.DataFrame({"id": [0, 1, 2, 3], "label": [1, 0, 1, 0]}), TEST_IDS, "course") == []
    floats = pd.DataFrame({"id": [0.0, 1, 2, 3], "label": [1.0, 0, 1, None]})
    assert validate_submission(floats, TEST_IDS, "course") == [
        "1 row(s) have an empty id or label.",
        "4 id(s) are not integers: '0.000000', '1.000000', '2.000000', '3.000000'.",
        "3 label(s) are not 0 or 1: '1.000000', '0.000000', '1.000000'.",
        "4 test id(s) are missing: 0, 1, 2, 3.",
    ]


def test_write_refuses_an_invalid_frame_and_leaves_no_file(tmp_path):
    sub = pd.DataFrame({"id": [0, 1, 2], "label": [1, 0, 1]})
    with pytest.raises(SubmissionError, match="Refusing to write .*1 test id\\(s\\) are missing: 3"):
        write_submission(sub, tmp_path / "out" / "sub.csv", TEST_IDS, "course")
    assert list(tmp_path.rglob("*.csv*")) == []


def test_write_refuses_to_overwrite_without_force(tmp_path):
    path = tmp_path / "sub.csv"
    write_submission(pd.DataFrame({"id": TEST_IDS, "label": [1, 1, 1, 1]}), path, TEST_IDS, "course")
    zeros = pd.DataFrame({"id": TEST_IDS, "label": [0, 0, 0, 0]})
    with pytest.raises(SubmissionError, match="already exists.*--force"):
        write_submission(zeros, path, TEST_IDS, "course")
    assert path.read_text() == "id,label\n0,1\n1,1\n2,1\n3,1\n"
    write_submission(zeros, path, TEST_IDS, "course", force=True)
    assert path.read_text() == "id,label\n0,0\n1,0\n2,0\n3,0\n"


def test_score_probabilities_by_hand(tmp_path):
    solution = csv_file(tmp_path, "id,label\n0,1\n1,0\n", "solution.csv")
    s = score_submission(csv_file(tmp_path, "id,label\n1,0.4\n0,0.8\n"), solution)
    assert s == {"n": 2, "accuracy": 1.0, "log_loss": pytest.approx(-(math.log(0.8) + math.log(1 - 0.4)) / 2)}
    s = score_submission(csv_file(tmp_path, "id,label\n0,0.3\n1,0.4\n"), solution)
    assert s == {"n": 2, "accuracy": 0.5, "log_loss": pytest.approx(-(math.log(0.3) + math.log(0.6)) / 2)}


def test_score_01_labels_has_no_log_loss_unless_redux(tmp_path):
    solution = csv_file(tmp_path, "id,label\n0,1\n1,0\n", "solution.csv")
    sub = csv_file(tmp_path, "id,label\n0,1\n1,1\n")
    assert score_submission(sub, solution) == {"n": 2, "accuracy": 0.5, "log_loss": None}
    assert score_submission(sub, solution, fmt="redux")["log_loss"] > 10  # a confident miss costs dearly


def test_score_rejects_mismatched_ids(tmp_path):
    solution = csv_file(tmp_path, "id,label\n0,1\n1,0\n", "solution.csv")
    with pytest.raises(SubmissionError, match="missing: 1\\. .*not in the test set: 2\\."):
        score_submission(csv_file(tmp_path, "id,label\n0,1\n2,0\n"), solution)


@pytest.mark.shared
def test_score_a_perfect_submission_on_the_shared_mini_set(tmp_path, shared_path):
    solution_csv = shared_path(f"{MINI}/solution.csv")
    solution = pd.read_csv(solution_csv)
    path = write_submission(solution, tmp_path / "perfect.csv", solution.id.tolist(), "course")
    assert score_submission(path, solution_csv) == {"n": 400, "accuracy": 1.0, "log_loss": None}


def test_default_submission_name():
    now = datetime(2026, 11, 23, 1, 30, 5)
    assert default_submission_name(["lenet-a", "resnet-b"], now) == "lenet-a+resnet-b-20261123-013005.csv"


BOM = b"\xef\xbb\xbf"
ZEROS = "ids must be written without leading zeros, since '007' reads as 7 on some checkers and as '007' on others."


@pytest.mark.parametrize("fmt, data, expected", [
    ("course", BOM + VALID.encode(), ["The file starts with a UTF-8 byte-order mark (Excel's 'CSV UTF-8' writes "
                                      "one), which the course site's checker may not strip: save it as UTF-8 "
                                      "without the mark."]),
    *[(fmt, b"id,label\n000,1\n1,0\n2,1\n003,0\n",
       [f"2 id(s) are written with leading zeros: '000', '003'; {ZEROS}"]) for fmt in ("course", "kaggle", "redux")],
    ("course", b"id,label\n0,1\n01,0\n1,0\n2,1\n3,0\n",
     [f"1 id(s) are written with leading zeros: '01'; {ZEROS}", "1 id(s) appear more than once: 1.",
      "The file has 5 data rows; the test set has 4 images."]),
    ("course", b"id,label\n-1,1\n0,1\n1,0\n2,1\n3,0\n",
     ["1 id(s) are negative, so not in the test set: '-1'.", "The file has 5 data rows; the test set has 4 images."]),
    ("kaggle", b" id , label\n0,1\n1,0\n2,1\n3,0\n",
     ["The header ' id , label' has spaces around its names; it must be exactly 'id,label'."]),
    ("course", "id,label\n0,1\n1,0\n2,1\n3,0\n".encode("utf-16"),
     ["The file is not UTF-8 text (invalid start byte at byte 0): save it as UTF-8."]),
])
def test_validate_reports_text_level_defects(tmp_path, fmt, data, expected):
    (tmp_path / "sub.csv").write_bytes(data)
    assert validate_submission(tmp_path / "sub.csv", TEST_IDS, fmt) == expected


KAGGLE_BOM = ("The file starts with a UTF-8 byte-order mark (Excel's 'CSV UTF-8' writes one); Kaggle's checker "
              "strips it, but UTF-8 without the mark is safer.")
CRLF = "The lines end in CRLF (Windows line ends); checkers accept them, but plain LF ends are the safe choice."


@pytest.mark.parametrize("fmt, data, expected", [
    ("kaggle", BOM + VALID.encode(), Validation([], [KAGGLE_BOM])),
    ("redux", BOM + b"id,label\n0,0.1\n1,0.2\n2,0.3\n3,0.4\n", Validation([], [KAGGLE_BOM])),
    *[(fmt, VALID.replace("\n", "\r\n").encode(), Validation([], [CRLF])) for fmt in ("course", "kaggle")],
    ("kaggle", BOM + VALID.replace("\n", "\r\n").encode(), Validation([], [KAGGLE_BOM, CRLF])),
    ("course", VALID.replace("\n", "\r\n").encode() + b"007,1\r\n",
     Validation([f"1 id(s) are written with leading zeros: '007'; {ZEROS}",
                 "1 id(s) are not in the test set: 7.", "The file has 5 data rows; the test set has 4 images."],
                [CRLF])),
    ("course", VALID.encode(), Validation([], [])),
])
def test_defects_the_checker_tolerates_are_warnings(tmp_path, fmt, data, expected):
    (tmp_path / "sub.csv").write_bytes(data)
    assert check_submission(tmp_path / "sub.csv", TEST_IDS, fmt) == expected
    assert validate_submission(tmp_path / "sub.csv", TEST_IDS, fmt) == expected.problems


def test_a_frame_never_has_warnings():
    frame = pd.DataFrame({"id": TEST_IDS, "label": [1, 0, 1, 0]})
    assert check_submission(frame, TEST_IDS, "course") == Validation([], [])

import base64
import io
import json
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.errors import ConfigError, DataError
from pipeline.metrics import most_confident_wrong
from pipeline.report import RUN_COLUMNS, THUMBNAIL, build_comparison, build_report, comparison_path, list_runs
from pipeline.rundir import RunDir

PNGS = ["curves.png", "confusion.png", "roc.png", "calibration.png"]
PAGE_BOUND = 400_000  # bytes: the report of the tiny run (16 wrong photos) stays under it


class Page(HTMLParser):
    """The src/href values, <img> sources and tables (lists of rows of cell texts) of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.links, self.images, self.tables, self._cell = [], [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def table(self, header: list[str]) -> list[list[str]]:
        """The body rows of the one table whose header row is ``header``."""
        (rows,) = [t[1:] for t in self.tables if t[0] == header]
        return rows


def _copy_run(tiny_run: Path, run_dir: Path, files=("config.json", "metrics.csv", "cv.json")) -> Path:
    run_dir.mkdir(parents=True)
    for name in files:
        shutil.copy(tiny_run / name, run_dir / name)
    for marker in tiny_run.glob("fold*/oof.csv"):  # the folds count as trained
        (run_dir / marker.parent.name).mkdir()
        shutil.copy(marker, run_dir / marker.parent.name / marker.name)
    return run_dir


def _images(page: "Page") -> tuple[list[bytes], list[bytes]]:
    """The page's embedded PNG and JPEG images, decoded."""
    pngs, jpegs = [], []
    for src in page.images:
        header, data = src.split(",", 1)
        assert header in ("data:image/png;base64", "data:image/jpeg;base64"), header
        (pngs if "png" in header else jpegs).append(base64.b64decode(data))
    return pngs, jpegs


def _same_shape(thumb, photo) -> bool:
    """Whether the thumbnail keeps the photo's aspect ratio (to a pixel's rounding), i.e. is not stretched."""
    return abs(thumb.width / thumb.height / (photo.width / photo.height) - 1) < 2 / min(thumb.size)


def test_report_renders_self_contained(tiny_run, tmp_path):
    out = tmp_path / "out"
    page_path = build_report(tiny_run, out)
    assert page_path == out / "report.html"
    assert not (tiny_run / "report").exists()  # out_dir was honoured
    for name in PNGS:
        with Image.open(out / name) as img:
            assert img.format == "PNG" and 300 <= img.width <= 2500 and 200 <= img.height <= 2500, (name, img.size)
    assert not (out / "wrong.png").exists()  # the gallery lives in the page, as JPEG thumbnails

    page = Page(page_path.read_text())
    for link in page.links:
        assert link.startswith("data:") or (page_path.parent / link).exists(), link[:80]
    pngs, jpegs = _images(page)
    assert pngs == [(out / name).read_bytes() for name in PNGS]  # the four figures, in order
    wrong = most_confident_wrong(pd.read_csv(tiny_run / "oof.csv"), 16)
    assert len(wrong) == 16 and len(jpegs) == len(wrong)  # every photo of the sample is readable
    for data, row in zip(jpegs, wrong.itertuples(), strict=True):
        with Image.open(io.BytesIO(data)) as thumb, Image.open(row.path) as photo:
            assert thumb.format == "JPEG" and max(thumb.size) == min(THUMBNAIL, max(photo.size))
            assert _same_shape(thumb, photo)
    assert _captions(page_path.read_text()) == [
        (Path(r.path).name, r.fold, ("cat", "dog")[r.label], round(r.prob_dog, 3)) for r in wrong.itertuples()]
    assert page_path.stat().st_size < PAGE_BOUND

    cv = json.loads((tiny_run / "cv.json").read_text())
    cv_rows = page.table(["fold", "n", "accuracy", "log-loss", "ROC-AUC", "best epoch"])
    assert [r[0] for r in cv_rows] == ["0", "1", "2", "all"]
    assert cv_rows[-1][1:3] == [str(cv["overall"]["n"]), f"{cv['overall']['accuracy']:.4f}"]
    assert not [t for t in page.tables if t[0][0] == "photo"]  # the gallery says it all: no table repeats it
    assert str(tiny_run.parent.parent) not in page_path.read_text()  # file names only: no local folders


def _captions(page: str) -> list[tuple[str, int, str, float]]:
    """The gallery's captions: file name, fold, true class, P(dog)."""
    found = re.findall(r"<figcaption>(.*?)<br>fold (\d+), true (cat|dog), P\(dog\) ([0-9.]+)</figcaption>", page)
    return [(c[0], int(c[1]), c[2], float(c[3])) for c in found]


def _oof_with(tiny_run: Path, prob_dog) -> pd.DataFrame:
    oof = pd.read_csv(tiny_run / "oof.csv")
    return oof.assign(prob_dog=prob_dog(oof))


@pytest.mark.parametrize("kind, prob_dog, words", [
    # right 70% of the time but always 99% sure: over-confident, a temperature above 1 softens it
    ("over", lambda o: np.where(np.arange(len(o)) % 10 < 7, o.label, 1 - o.label) * 0.98 + 0.01, "over-confident"),
    # always right but never more than 60% sure: timid, a temperature below 1 sharpens it
    ("timid", lambda o: o.label * 0.2 + 0.4, "timid (under-confident)"),
])
def test_reliability_diagram_and_what_a_temperature_would_do(tiny_run, tmp_path, kind, prob_dog, words):
    from sklearn.calibration import calibration_curve

    from pipeline.predict.calibration import fit_temperature

    run_dir = _copy_run(tiny_run, tmp_path / "run")
    oof = _oof_with(tiny_run, prob_dog)
    oof.to_csv(run_dir / "oof.csv", index=False)
    text = build_report(run_dir).read_text()
    with Image.open(run_dir / "report" / "calibration.png") as img:
        assert img.format == "PNG" and img.height > img.width  # the diagram above its histogram
    cal = fit_temperature(oof.label.to_numpy(), oof.prob_dog.to_numpy())
    assert (cal.temperature > 1) == (kind == "over") and cal.temperature != 1
    assert f"The predictions are {words}: temperature scaling with T = {cal.temperature:.3f}" in text
    assert f"from {cal.oof_log_loss_before:.4f} to {cal.oof_log_loss_after:.4f}" in text
    observed, predicted = calibration_curve(oof.label, oof.prob_dog, n_bins=10)
    if kind == "over":  # the top bin says 99% dog, 70% are: far below the diagonal
        assert predicted[-1] > 0.98 and abs(observed[-1] - 0.7) < 0.05


def test_most_confident_wrong_order_and_in_the_report(tiny_run, tmp_path):
    real = RunDir(tiny_run).read_oof().path.tolist()  # the photos (oof.csv keys them in the data folder)
    gone = str(tmp_path / "gone.jpg")  # a file deleted since training: listed, left out of the gallery
    rows = [  # path, label, prob_dog
        (real[0], 1, 0.10),  # wrong by 0.90
        (real[1], 0, 0.97),  # wrong by 0.97
        (real[2], 1, 0.95),  # right
        (real[3], 0, 0.50),  # wrong: 0.5 counts as dog
        (real[4], 0, 0.02),  # right
        (real[5], 1, 0.49),  # wrong by 0.51
        (real[6], 1, 0.10),  # wrong by 0.90, after real[0]
        (gone, 0, 0.99),  # wrong by 0.99
    ]
    oof = pd.DataFrame(rows, columns=["path", "label", "prob_dog"]).assign(fold=[0, 1, 2, 0, 1, 2, 0, 1])
    chosen = most_confident_wrong(oof, 10)
    assert list(chosen.path) == [gone, real[1], real[0], real[6], real[5], real[3]]
    assert list(chosen.prob_dog) == [0.99, 0.97, 0.10, 0.10, 0.49, 0.50]
    assert list(most_confident_wrong(oof, 3).path) == [gone, real[1], real[0]]

    run_dir = _copy_run(tiny_run, tmp_path / "run")
    oof.to_csv(run_dir / "oof.csv", index=False)
    text = build_report(run_dir, n_wrong=3).read_text()
    assert _captions(text) == [(Path(gone).name, 1, "cat", 0.99), (Path(real[1]).name, 1, "cat", 0.97),
                               (Path(real[0]).name, 0, "dog", 0.1)]
    page = Page(text)
    _, jpegs = _images(page)
    assert len(jpegs) == 2 and text.count("(cannot be read)") == 1  # the deleted photo: listed, no thumbnail
    with Image.open(real[1]) as photo, Image.open(io.BytesIO(jpegs[0])) as thumb:
        assert _same_shape(thumb, photo)


def test_report_when_nothing_is_wrong(tiny_run, tmp_path):
    run_dir = _copy_run(tiny_run, tmp_path / "run")
    oof = pd.read_csv(tiny_run / "oof.csv")
    oof.assign(prob_dog=oof.label * 0.8 + 0.1).to_csv(run_dir / "oof.csv", index=False)
    page = build_report(run_dir).read_text()
    assert "Every training photo is on the right side of 0.5." in page
    pngs, jpegs = _images(Page(page))
    assert len(pngs) == 4 and jpegs == []


def test_missing_cv_json_is_a_data_error(tiny_run, tmp_path):
    run_dir = _copy_run(tiny_run, tmp_path / "run", files=("config.json", "metrics.csv", "oof.csv"))
    with pytest.raises(DataError, match=r"no cv\.json; train the run first"):
        build_report(run_dir)


def _write_cv(run_dir: Path, accuracy: float, log_loss: float, roc_auc: float = 0.9, seconds: float | None = None):
    overall = {"n": 300, "accuracy": accuracy, "log_loss": log_loss, "roc_auc": roc_auc}
    cv = {"run": run_dir.name, "folds": {}, "overall": overall} | ({"seconds": seconds} if seconds else {})
    (run_dir / "cv.json").write_text(json.dumps(cv))


def _edit_config(run_dir: Path, **changes) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    (run_dir / "config.json").write_text(json.dumps(config | changes))


def test_list_runs_best_first_unfinished_last(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    for name, accuracy, log_loss in [("good", 0.90, 0.30), ("best", 0.85, 0.20), ("good-tie", 0.95, 0.30)]:
        _write_cv(_copy_run(tiny_run, runs / name, files=("config.json",)), accuracy, log_loss)
    _copy_run(tiny_run, runs / "aaa-unfinished", files=("config.json",))
    (runs / "notes").mkdir()  # not a run

    df = list_runs(runs)
    assert list(df.columns) == RUN_COLUMNS
    assert list(df.run) == ["best", "good-tie", "good", "aaa-unfinished"]
    assert list(df.status) == ["done", "done", "done", "unfinished"]
    assert list(df.log_loss[:3]) == [0.20, 0.30, 0.30] and math.isnan(df.log_loss[3])
    config = json.loads((tiny_run / "config.json").read_text())
    assert (df.arch == config["recipe"]["arch"]).all() and (df.folds == "3/3").all()


def test_list_runs_sorts_and_shows_recipe_folds_time_and_test_predictions(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    figures = {  # accuracy, log-loss, ROC-AUC, seconds, created
        "a": (0.80, 0.40, 0.95, 300.0, "2026-01-03T10:00:00"),
        "b": (0.90, 0.25, 0.91, 900.0, "2026-01-01T10:00:00"),
        "c": (0.85, 0.30, 0.97, 60.0, "2026-01-02T10:00:00"),
    }
    for name, (accuracy, log_loss, auc, seconds, created) in figures.items():
        run_dir = _copy_run(tiny_run, runs / name, files=("config.json",))
        _write_cv(run_dir, accuracy, log_loss, auc, seconds)
        _edit_config(run_dir, created=created, recipe_source={"a": "scratch", "b": "/home/u/my-recipe.toml",
                                                               "c": None}[name])
    (runs / "b" / "test_probs.csv").write_text("id,prob_dog\n0,0.5\n")
    half = _copy_run(tiny_run, runs / "half", files=("config.json",))  # 2 of its 3 folds trained
    shutil.rmtree(half / "fold2")
    _edit_config(half, created="2026-01-04T10:00:00")
    some = _copy_run(tiny_run, runs / "some", files=("config.json",))  # trains folds 0 and 1 of 3, both done
    _edit_config(some, folds=[0, 1], created="2026-01-05T10:00:00")
    _write_cv(some, 0.70, 0.50, 0.80, 120.0)

    sorts = ("logloss", "accuracy", "auc", "time", "created", "name")
    order = {sort: list(list_runs(runs, sort).run) for sort in sorts}
    assert order == {"logloss": ["b", "c", "a", "some", "half"], "accuracy": ["b", "c", "a", "some", "half"],
                     "auc": ["c", "a", "b", "some", "half"], "time": ["c", "some", "a", "b", "half"],
                     "created": ["some", "half", "a", "c", "b"], "name": ["a", "b", "c", "half", "some"]}
    df = list_runs(runs, "name").set_index("run")
    # no --recipe: the defaults, which are the lenet recipe (issue 28: shown as "-")
    assert df.recipe.to_dict() == {"a": "scratch", "b": "my-recipe", "c": "lenet", "half": "lenet", "some": "lenet"}
    assert df.folds.to_dict() == {"a": "3/3", "b": "3/3", "c": "3/3", "half": "2/3", "some": "2/2 of 3"}
    assert df.test_probs.to_dict() == {"a": False, "b": True, "c": False, "half": False, "some": False}
    assert df.seconds["b"] == 900.0 and math.isnan(df.seconds["half"]) and math.isnan(df.roc_auc["half"])
    with pytest.raises(ConfigError, match="--sort must be one of logloss, accuracy, auc, time, created, name"):
        list_runs(runs, "speed")


def test_list_runs_of_nothing(tmp_path):
    for folder in (tmp_path, tmp_path / "missing"):
        df = list_runs(folder)
        assert df.empty and list(df.columns) == RUN_COLUMNS


# ---- comparing runs ---------------------------------------------------------------------------
def _two_runs(tiny_run: Path, runs: Path) -> tuple[Path, Path]:
    """``a``: the tiny run; ``b``: the same with its out-of-fold predictions perturbed (and its CV rescored)."""
    from pipeline.metrics import score

    a = _copy_run(tiny_run, runs / "a", files=("config.json", "metrics.csv", "cv.json", "oof.csv"))
    b = _copy_run(tiny_run, runs / "b", files=("config.json", "metrics.csv", "cv.json", "oof.csv"))
    oof = pd.read_csv(b / "oof.csv")
    noise = np.random.default_rng(0).normal(0, oof.prob_dog.std(), len(oof))  # as large as the runs' own spread
    oof["prob_dog"] = np.clip(oof.prob_dog + noise, 0.01, 0.99)
    oof.to_csv(b / "oof.csv", index=False)
    cv = json.loads((b / "cv.json").read_text())
    cv["folds"] = {str(k): score(part.label, part.prob_dog) for k, part in oof.groupby("fold")}
    cv["overall"], cv["run"] = score(oof.label, oof.prob_dog), "b"
    (b / "cv.json").write_text(json.dumps(cv))
    return a, b


def test_compare_two_runs_side_by_side_with_correlation_and_blend(tiny_run, tmp_path):
    from pipeline.predict.ensemble import aligned_oof, blend_runs

    a, b = _two_runs(tiny_run, tmp_path / "runs")
    out = build_comparison([a, b], comparison_path(tmp_path / "runs", ["a", "b"]))
    assert out == tmp_path / "runs" / "compare-a+b.html"
    text = out.read_text()
    page = Page(text)
    assert "<h1>Compare a vs b</h1>" in text
    assert all(link.startswith("data:image/png;base64,") for link in page.links) and len(page.images) == 1

    summary = {r[0]: r[1:] for r in page.table(["", "a", "b"])}
    cv_a, cv_b = (json.loads((r / "cv.json").read_text())["overall"] for r in (a, b))
    assert summary["log-loss"] == [f"{cv_a['log_loss']:.4f}", f"{cv_b['log_loss']:.4f}"]
    assert summary["accuracy"] == [f"{cv_a['accuracy']:.4f}", f"{cv_b['accuracy']:.4f}"]
    assert summary["arch"] == ["lenet", "lenet"] and summary["folds"] == ["3 of 3", "3 of 3"]
    folds = page.table(["fold", "a log-loss", "a accuracy", "b log-loss", "b accuracy"])
    assert [r[0] for r in folds] == ["0", "1", "2"]

    corr = page.table(["correlation", "a", "b"])
    _, probs = aligned_oof([a, b])
    expected = np.corrcoef(probs[:, 0], probs[:, 1])[0, 1]
    assert corr == [["a", "1.0000", f"{expected:.4f}"], ["b", f"{expected:.4f}", "1.0000"]]
    assert 0 < expected < 0.999  # they differ, so a blend can help

    blend = {r[0]: r[1:] for r in page.table(["run", "weight", "accuracy", "log-loss", "ROC-AUC"])}
    weights = [float(blend[n][0]) for n in ("a", "b")]
    assert abs(sum(weights) - 1) < 2e-3 and blend["blend"][0] == "1.000"
    fitted = blend_runs([a, b], "fit")
    assert [blend[n][0] for n in ("a", "b")] == [f"{w:.3f}" for w in fitted.weights]
    assert float(blend["blend"][2]) <= min(float(blend["a"][2]), float(blend["b"][2])) + 1e-4


def test_compare_through_the_cli(tiny_run, tmp_path):
    from tests.test_cli import invoke

    runs = tmp_path / "runs"
    _two_runs(tiny_run, runs)
    r = invoke("report", "--compare", "a", "b", "--runs-dir", runs)
    assert r.exit_code == 0, r.output
    assert r.output.strip() == f"comparison: {runs / 'compare-a+b.html'}"
    r = invoke("report", "--compare", "a", "b", "--runs-dir", runs, "--out", tmp_path / "mine.html")
    assert r.exit_code == 0 and "Compare a vs b" in (tmp_path / "mine.html").read_text()
    assert invoke("report", "--compare", "a", "--runs-dir", runs).exit_code == 2
    assert invoke("report", "a", "b", "--runs-dir", runs).exit_code == 2  # two runs need --compare


def test_compare_runs_on_other_folds_shows_them_without_a_blend(tiny_run, tmp_path):
    a, b = _two_runs(tiny_run, tmp_path / "runs")
    oof = pd.read_csv(b / "oof.csv")
    oof["fold"] = (oof["fold"] + 1) % 3
    oof.to_csv(b / "oof.csv", index=False)
    text = build_comparison([a, b], tmp_path / "page.html").read_text()
    page = Page(text)
    assert [r[0] for r in page.table(["", "a", "b"])][:2] == ["arch", "recipe"]  # both runs are shown
    assert "Cannot be computed: Runs a and b were not trained on the same folds" in text
    assert not any(t[0][0] in ("run", "correlation") for t in page.tables)


def test_compare_refuses_one_run_a_repeated_run_and_an_unfinished_run(tiny_run, tmp_path):
    a, b = _two_runs(tiny_run, tmp_path / "runs")
    with pytest.raises(ConfigError, match="at least two runs"):
        build_comparison([a], tmp_path / "x.html")
    with pytest.raises(ConfigError, match="given twice"):
        build_comparison([a, tmp_path / "runs" / "." / "a"], tmp_path / "x.html")
    (b / "cv.json").unlink()
    with pytest.raises(DataError, match=r"Run b has no cv\.json, so it cannot be compared"):
        build_comparison([a, b], tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_the_curves_legend_covers_no_plot_and_the_ring_sits_on_the_best_epoch_counted_from_1(tiny_run):
    import matplotlib.pyplot as plt

    from pipeline.report.figures import curves_figure
    from pipeline.rundir import RunDir

    cv = RunDir(tiny_run).read_cv()
    best = {int(k): v["best_epoch"] for k, v in cv["folds"].items()}
    metrics = pd.read_csv(tiny_run / "metrics.csv")
    assert set(best.values()) <= set(metrics.epoch + 1)  # cv.json counts from 1, as the epoch log
    fig = curves_figure(metrics, best)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert ax.get_legend() is None and not box.overlaps(ax.get_window_extent(renderer))
        rings = [line for line in fig.axes[0].lines if line.get_linestyle() == "None"]
        assert sorted(float(line.get_xdata()[0]) for line in rings) == sorted(best.values())
    finally:
        plt.close(fig)


def test_a_run_from_before_best_epoch_counted_from_1_reads_as_the_log_numbers_it(tiny_run, tmp_path):
    from pipeline.rundir import RunDir

    run_dir = _copy_run(tiny_run, tmp_path / "old", files=("config.json", "metrics.csv", "cv.json", "oof.csv"))
    cv = json.loads((run_dir / "cv.json").read_text())
    old = cv | {"folds": {k: v | {"best_epoch": v["best_epoch"] - 1} for k, v in cv["folds"].items()}}
    del old["epochs_from"]
    (run_dir / "cv.json").write_text(json.dumps(old))
    assert RunDir(run_dir).read_cv()["folds"] == cv["folds"]
    rows = Page(build_report(run_dir).read_text()).table(["fold", "n", "accuracy", "log-loss", "ROC-AUC", "best epoch"])
    assert [r[-1] for r in rows[:-1]] == [str(v["best_epoch"]) for v in cv["folds"].values()]

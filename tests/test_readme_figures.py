"""The README's quick figures against a fresh run: a figure changed in the README without the code agreeing (or
code that no longer gives the README's figures) fails here.

The demo's figures differ between machines (the CPUs' kernels sum in another order), so the README gives ranges
over the machines measured, and a fresh run must land inside them, give or take TOLERANCE."""

import re
from pathlib import Path

from pipeline.demo import demo

README = Path(__file__).resolve().parents[1] / "README.md"
# accuracy: 0.01 beyond the range measured (the sample's 600 out-of-fold photos); test: two of its 100 photos
TOLERANCE = {"cv": 0.01, "test": 0.02}


def demo_row() -> dict[str, tuple[float, float]]:
    """The ranges of the demo's row in the README's "Figures measured so far": ``{"cv": (lo, hi), "test": ...}``."""
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("| `pipeline demo`")]
    assert len(rows) == 1, "the README's figures table has one row for `pipeline demo`"
    found = {}
    for key, words in (("cv", "CV accuracy"), ("test", "sample test accuracy")):
        m = re.search(rf"{words} (\d\.\d+)(?:[–-](\d\.\d+))?", rows[0])
        assert m, f"the demo's row gives no {words!r} figure: {rows[0]}"
        found[key] = (float(m.group(1)), float(m.group(2) or m.group(1)))
        assert found[key][0] <= found[key][1]
    return found


def test_the_readme_gives_the_demo_figures_as_ranges():
    assert set(demo_row()) == {"cv", "test"}


def test_a_fresh_demo_lands_in_the_readme_ranges(tmp_path):
    """`pipeline demo` as the README runs it (3 folds, 20 epochs): about a minute on an idle 2-core machine."""
    result = demo(tmp_path / "demo")
    fresh = {"cv": result["cv"]["overall"]["accuracy"], "test": result["test_accuracy"]}
    for key, (lo, hi) in demo_row().items():
        assert lo - TOLERANCE[key] <= fresh[key] <= hi + TOLERANCE[key], \
            f"demo {key} accuracy {fresh[key]:.3f}; the README says {lo:.3f}-{hi:.3f} (+-{TOLERANCE[key]})"


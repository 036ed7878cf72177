"""The package's import structure (tools/import_graph.py reads it): prediction runs a model through the shared layer,
never through training, and no two parts import each other."""

import importlib.util
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "import_graph.py"


def _graph():
    spec = importlib.util.spec_from_file_location("import_graph", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_two_parts_import_each_other_and_prediction_does_not_import_training():
    files, edges = _graph().part_edges("pipeline", 2)
    assert "pipeline.compute.evaluation" in files and "pipeline.train.engine" in files  # it read the package
    two_way = sorted({tuple(sorted(pair)) for pair in edges if pair[::-1] in edges})
    assert two_way == []
    for below in ("pipeline.predict", "pipeline.compute", "pipeline.targets", "pipeline.recipe"):
        assert (below, "pipeline.train") not in edges, f"{below} imports pipeline.train"
    assert ("pipeline.train", "pipeline.compute") in edges and ("pipeline.predict", "pipeline.compute") in edges


def test_the_tool_prints_the_parts_the_two_way_imports_and_the_biggest_modules():
    out = subprocess.run([sys.executable, str(TOOL), "--top", "3"], capture_output=True, text=True, check=True).stdout
    assert "pipeline.predict" in out and "two-way imports between parts: none" in out
    assert out.count(",", out.index("biggest modules:")) == 2  # three modules

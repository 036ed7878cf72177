"""Several processes on one data folder: the image cache and the run folder stay right (issue 9, cases 1-2)."""

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.data.cache import DecodedCache
from pipeline.data.images import decode_resized
from pipeline.errors import ConfigError
from pipeline.rundir import RunBusy, RunDir
from pipeline.train.session import train
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path) -> subprocess.Popen:
    """A real second Python process running ``code`` with this checkout's package."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def photos(sample_images) -> list[str]:
    return sorted(str(p) for p in (sample_images / "train").glob("*.jpg"))[:240]


def test_two_processes_building_one_cache_size_at_once(photos, tmp_path):
    """Before the lock, rows of two concurrent builds interleaved and the index named the wrong photos."""
    listing = tmp_path / "photos.txt"
    listing.write_text("\n".join(photos))
    code = f"""
        from pipeline.data.cache import DecodedCache
        paths = open({str(listing)!r}).read().split()
        report = DecodedCache({str(tmp_path / 'cache')!r}, 96).build(paths, workers=1, flush_every=8)
        print(report.decoded, report.reused)
    """
    procs = [_python(code, tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    counts = sorted(tuple(map(int, o[0].split())) for o in outs)
    assert counts == [(0, 240), (240, 0)]  # the second waited, then found every row built
    cache = DecodedCache(tmp_path / "cache", 96)
    assert cache.pixels_path.stat().st_size == 240 * cache.row_bytes
    for p in photos:
        assert np.array_equal(cache.get(p), decode_resized(p, 96)), p


def rebuild_counts(root, photos) -> tuple[int, int, int]:
    """Build the 64-px cache again; check every photo then reads back as itself; (repaired, decoded, reused)."""
    report = DecodedCache(root, 64).build(photos, workers=1)
    fresh = DecodedCache(root, 64)
    for p in photos:
        assert np.array_equal(fresh.get(p), decode_resized(p, 64))
    return report.repaired, report.decoded, report.reused


def test_shuffled_index_and_overwritten_pixels_are_caught_and_repaired(photos, tmp_path, caplog):
    photos = photos[:12]
    DecodedCache(tmp_path / "cache", 64).build(photos, workers=1)
    index = pd.read_csv(tmp_path / "cache" / "64" / "index.csv")
    index.loc[[0, 1], "row"] = index.loc[[1, 0], "row"].to_numpy()  # two photos swap rows
    index.to_csv(tmp_path / "cache" / "64" / "index.csv", index=False)
    cache = DecodedCache(tmp_path / "cache", 64)
    with open(cache.pixels_path, "r+b") as f:  # another row's pixels overwritten
        f.seek(int(index.row[5]) * cache.row_bytes + 100)
        f.write(b"\xff" * 300)

    reader = DecodedCache(tmp_path / "cache", 64)
    for i in (0, 1, 5):
        assert reader.get(index.path[i]) is None  # never the wrong pixels
    assert "fails its checksum" in caplog.text
    assert np.array_equal(reader.get(index.path[2]), decode_resized(index.path[2], 64))

    assert rebuild_counts(tmp_path / "cache", photos) == (3, 3, 9)


def test_truncated_pixels_file_loses_only_its_tail(photos, tmp_path):
    photos = photos[:10]
    cache = DecodedCache(tmp_path / "cache", 64)
    cache.build(photos, workers=1)
    os.truncate(cache.pixels_path, 6 * cache.row_bytes + 17)  # rows 6-9 gone, row 6 torn
    reader = DecodedCache(tmp_path / "cache", 64)
    rows = pd.read_csv(cache.index_path).set_index("path").row
    for p in photos:
        got = reader.get(p)
        assert (got is None) if rows[p] >= 6 else np.array_equal(got, decode_resized(p, 64))
    assert rebuild_counts(tmp_path / "cache", photos) == (4, 4, 6)


def test_same_run_name_started_twice_at_once(data_copy, tmp_path):
    """Before the run lock, both processes could write into one run folder."""
    go = tmp_path / "go"
    code = f"""
        import os, sys, time
        from pipeline.errors import PipelineError
        from pipeline.train.session import train
        from tests.conftest import tiny_config
        from pipeline.models import check_arch
        check_arch("lenet")  # timm imported: both reach the run folder at the same moment
        open({str(tmp_path)!r} + f"/ready{{os.getpid()}}", "w").close()
        while not os.path.exists({str(go)!r}):  # start together, after both imported torch
            time.sleep(0.001)
        try:
            train(tiny_config({str(data_copy)!r}, {str(tmp_path / 'runs')!r}, run_name="same", folds=[0], epochs=3))
        except PipelineError as exc:
            print(exc)
            sys.exit(1)
    """
    procs = [_python(code, ROOT) for _ in range(2)]
    while len(list(tmp_path.glob("ready*"))) < 2 and all(p.poll() is None for p in procs):
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], [o[1][-2000:] for o in outs]
    refusal = next(o[0] for p, o in zip(procs, outs, strict=True) if p.returncode == 1)
    assert "being trained by another process" in refusal or "exists already" in refusal
    metrics = pd.read_csv(tmp_path / "runs" / "same" / "metrics.csv")
    assert sorted(zip(metrics.fold, metrics.epoch, strict=True)) == [(0, 0), (0, 1), (0, 2)]  # one writer


def test_resume_of_a_busy_run_is_refused(tiny_run, data_copy, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "tiny")
    lock = RunDir(runs / "tiny").lock()  # as a training process holds it
    try:
        with pytest.raises(RunBusy, match="being trained by another process"):
            train(tiny_config(data_copy, runs, run_name="tiny"), resume=True)
        with pytest.raises(ConfigError, match="being trained by another process"):
            train(tiny_config(data_copy, runs, run_name="tiny"))
    finally:
        lock.release()

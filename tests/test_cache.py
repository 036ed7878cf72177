import os
from pathlib import Path

import numpy as np
import pytest

import pipeline.data.cache as cache_mod
from pipeline.data.cache import DecodedCache
from pipeline.data.images import decode_resized


@pytest.fixture
def photos(sample_images, tmp_path) -> list[Path]:
    out = []
    for p in sorted((sample_images / "train").glob("*.jpg"))[:24]:
        q = tmp_path / "photos" / p.name
        q.parent.mkdir(exist_ok=True)
        q.write_bytes(p.read_bytes())
        out.append(q)
    return out


def test_cache_returns_exactly_the_decoded_pixels(photos, tmp_path):
    cache = DecodedCache(tmp_path / "cache", 72)
    report = cache.build(photos, workers=1)
    assert (report.decoded, report.reused, report.failed) == (24, 0, {})
    fresh = DecodedCache(tmp_path / "cache", 72)  # as another process would open it
    for p in photos:
        assert np.array_equal(fresh.get(str(p)), decode_resized(p, 72))
    assert fresh.build(photos, workers=1).reused == 24
    other = DecodedCache(tmp_path / "cache", 40)  # another size is another cache
    assert other.get(str(photos[0])) is None


def test_modified_photo_is_decoded_again(photos, tmp_path):
    cache = DecodedCache(tmp_path / "cache", 64)
    cache.build(photos, workers=1)
    target, donor = photos[0], photos[1]
    target.write_bytes(donor.read_bytes())
    st = os.stat(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    reopened = DecodedCache(tmp_path / "cache", 64)
    assert reopened.get(str(target)) is None  # stale
    report = reopened.build(photos, workers=1)
    assert (report.decoded, report.reused) == (1, 23)
    assert np.array_equal(reopened.get(str(target)), decode_resized(donor, 64))


def test_corrupt_photo_is_reported_not_cached(photos, tmp_path):
    photos[3].write_bytes(photos[3].read_bytes()[:200])
    cache = DecodedCache(tmp_path / "cache", 64)
    report = cache.build(photos, workers=1)
    assert list(report.failed) == [str(photos[3])]
    assert "Cannot decode" in report.failed[str(photos[3])]
    assert report.decoded == 23 and cache.get(str(photos[3])) is None


def test_interrupted_build_resumes(photos, tmp_path, monkeypatch):
    real = cache_mod._decode_or_error

    def dies_at_tenth(path, size):
        if path == str(photos[10]):
            raise KeyboardInterrupt
        return real(path, size)

    monkeypatch.setattr(cache_mod, "_decode_or_error", dies_at_tenth)
    with pytest.raises(KeyboardInterrupt):
        DecodedCache(tmp_path / "cache", 64).build(photos, workers=1, flush_every=4)
    monkeypatch.setattr(cache_mod, "_decode_or_error", real)
    cache = DecodedCache(tmp_path / "cache", 64)
    report = cache.build(photos, workers=1)
    assert (report.reused, report.decoded) == (10, 14)
    for p in photos:
        assert np.array_equal(cache.get(str(p)), decode_resized(p, 64))


def test_torn_row_from_a_crash_is_overwritten(photos, tmp_path):
    cache = DecodedCache(tmp_path / "cache", 64)
    cache.build(photos[:5], workers=1)
    with open(cache.pixels_path, "ab") as f:  # half a row written, never indexed
        f.write(b"\x01" * (cache.row_bytes // 2))
    cache = DecodedCache(tmp_path / "cache", 64)
    cache.build(photos, workers=1)
    assert cache.pixels_path.stat().st_size == 24 * cache.row_bytes
    for p in photos:
        assert np.array_equal(cache.get(str(p)), decode_resized(p, 64))

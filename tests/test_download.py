"""Download and extraction, offline: real HTTP over 127.0.0.1 and real archives built in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import stat
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from pipeline.data.archives import extract_archive
from pipeline.data.download import acquire
from pipeline.data.fetch import fetch, sha256_file
from pipeline.data.sources import SOURCES, get_source
from pipeline.errors import ConfigError, DownloadError, ExtractError
from pipeline.kaggle import download as fetch_kaggle
from tests.conftest import MINI
from tests.httpserver import closed_port, serve_dir

FAST = {"backoff": 0.001, "progress": False}


def image_bytes(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), color).save(buf, fmt)
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)  # ZipInfo keeps the name exactly as given
    return path


def photos_zip(path: Path, folder: str) -> Path:
    return make_zip(path, {f"{folder}/cat.1.jpg": image_bytes((200, 90, 40)),
                           f"{folder}/dog.1.png": image_bytes((40, 90, 200), "PNG")})


def all_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.fixture
def blob(tmp_path) -> Path:
    """A 300 kB file of random bytes in its own served folder."""
    path = tmp_path / "www" / "blob.bin"
    path.parent.mkdir()
    path.write_bytes(random.Random(0).randbytes(300_000))
    return path


# ---- fetch -----------------------------------------------------------------------------------------------

def test_fetch_downloads_the_file_with_its_digest(blob, tmp_path):
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    with serve_dir(blob.parent) as server:
        got = fetch(server.url("blob.bin"), tmp_path / "raw", sha256=digest, progress=True)  # not a tty here
    assert got == tmp_path / "raw" / "blob.bin"
    assert got.read_bytes() == blob.read_bytes()
    assert sha256_file(got) == digest
    assert sorted(p.name for p in got.parent.iterdir()) == ["blob.bin"]


def test_interrupted_download_resumes_with_a_range_request(blob, tmp_path):
    with serve_dir(blob.parent, cut_after=100_000) as server:
        got = fetch(server.url("blob.bin"), tmp_path, retries=2, **FAST)
    assert [r.headers.get("range") for r in server.requests] == [None, "bytes=100000-"]
    assert got.read_bytes() == blob.read_bytes()


def test_a_part_left_by_an_earlier_run_is_resumed(blob, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(blob.read_bytes()[:123_456])
    with serve_dir(blob.parent) as server:
        got = fetch(server.url("blob.bin"), tmp_path, **FAST)
    assert [r.headers.get("range") for r in server.requests] == ["bytes=123456-"]
    assert got.read_bytes() == blob.read_bytes()
    assert not (tmp_path / "blob.bin.part").exists()


def test_a_server_that_ignores_range_restarts_from_zero(blob, tmp_path):
    (tmp_path / "blob.bin.part").write_bytes(b"not the start of the file")
    with serve_dir(blob.parent, ignore_range=True) as server:
        got = fetch(server.url("blob.bin"), tmp_path, **FAST)
    assert server.requests[0].headers.get("range") == "bytes=25-"
    assert got.read_bytes() == blob.read_bytes()


@pytest.mark.parametrize("extra, requests", [(0, 1), (10, 2)], ids=["complete-part", "oversized-part"])
def test_range_not_satisfiable_finishes_or_restarts(blob, tmp_path, extra, requests):
    (tmp_path / "blob.bin.part").write_bytes(blob.read_bytes() + b"x" * extra)
    with serve_dir(blob.parent) as server:
        got = fetch(server.url("blob.bin"), tmp_path, **FAST)
    assert len(server.requests) == requests
    assert got.read_bytes() == blob.read_bytes()


def test_checksum_mismatch_keeps_the_file_aside(blob, tmp_path):
    with serve_dir(blob.parent) as server, pytest.raises(DownloadError, match="expected") as err:
        fetch(server.url("blob.bin"), tmp_path, sha256="0" * 64, **FAST)
    assert "0" * 64 in str(err.value) and sha256_file(blob) in str(err.value)
    assert (tmp_path / "blob.bin.bad").read_bytes() == blob.read_bytes()
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()


def test_server_errors_are_retried(blob, tmp_path):
    with serve_dir(blob.parent, fail_first=2, fail_status=503) as server:
        got = fetch(server.url("blob.bin"), tmp_path, **FAST)
    assert len(server.requests) == 3
    assert got.read_bytes() == blob.read_bytes()


def test_a_server_that_always_fails_is_given_up_after_the_retries(blob, tmp_path):
    with serve_dir(blob.parent, fail_first=100, fail_status=500) as server, \
            pytest.raises(DownloadError, match="HTTP 500 to all 4 requests"):
        fetch(server.url("blob.bin"), tmp_path, retries=3, **FAST)
    assert len(server.requests) == 4
    assert not (tmp_path / "blob.bin").exists()


def test_not_found_fails_at_once(blob, tmp_path):
    with serve_dir(blob.parent) as server, pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url("missing.zip"), tmp_path, **FAST)
    assert len(server.requests) == 1


def test_second_fetch_sends_no_request(blob, tmp_path):
    digest = sha256_file(blob)
    with serve_dir(blob.parent) as server:
        first = fetch(server.url("blob.bin"), tmp_path, sha256=digest, **FAST)
        second = fetch(server.url("blob.bin"), tmp_path, sha256=digest, **FAST)
    assert first == second
    assert len(server.requests) == 1


def test_a_stale_file_failing_its_digest_is_set_aside_and_fetched_again(blob, tmp_path):
    (tmp_path / "blob.bin").write_bytes(b"an older, different file")
    with serve_dir(blob.parent) as server:
        got = fetch(server.url("blob.bin"), tmp_path, sha256=sha256_file(blob), **FAST)
    assert got.read_bytes() == blob.read_bytes()
    assert (tmp_path / "blob.bin.bad").read_bytes() == b"an older, different file"
    assert len(server.requests) == 1


def test_connection_refused_says_to_use_from(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/train.zip"
    with pytest.raises(DownloadError) as err:
        fetch(url, tmp_path, retries=1, **FAST)
    message = str(err.value)
    assert message.startswith("Could not reach 127.0.0.1 to download train.zip (")
    assert message.endswith("download it by hand and pass it with --from PATH.")
    assert "\n" not in message


def test_a_dns_failure_is_retried_once_only(tmp_path, monkeypatch):
    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(DownloadError, match="Could not reach data.example.invalid to download train.zip"):
        fetch("http://data.example.invalid/train.zip", tmp_path, retries=4, **FAST)
    assert lookups == ["data.example.invalid"] * 2


# ---- extract_archive -------------------------------------------------------------------------------------

def symlink_zip(path: Path) -> Path:
    info = zipfile.ZipInfo("train/link.jpg")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train/cat.1.jpg", image_bytes((1, 2, 3)))
        zf.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize("member", ["../evil.txt", "train/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt",
                                    "..\\evil.txt", "link"])
def test_unsafe_zip_members_are_refused_before_anything_is_written(tmp_path, member):
    archive = tmp_path / "raw" / "bad.zip"
    if member == "link":
        archive.parent.mkdir()
        symlink_zip(archive)
        member, why = "train/link.jpg", "is a link"
    else:
        make_zip(archive, {"train/cat.1.jpg": image_bytes((1, 2, 3)), member: b"gotcha"})
        why = "refusing"
    before = all_files(tmp_path)
    with pytest.raises(ExtractError, match=why) as err:
        extract_archive(archive, tmp_path / "extracted" / "bad")
    assert repr(member) in str(err.value)
    assert all_files(tmp_path) == before


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "parent"])
def test_unsafe_tar_members_are_refused(tmp_path, kind):
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        data = image_bytes((1, 2, 3))
        info = tarfile.TarInfo("train/cat.1.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        bad = tarfile.TarInfo("../evil.txt" if kind == "parent" else "train/evil.jpg")
        if kind != "parent":
            bad.type, bad.linkname = (tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE), "/etc/passwd"
        tf.addfile(bad, io.BytesIO(b""))
    before = all_files(tmp_path)
    with pytest.raises(ExtractError, match="refusing"):
        extract_archive(archive, tmp_path / "out")
    assert all_files(tmp_path) == before


def test_tar_gz_is_extracted(tmp_path):
    (tmp_path / "src" / "train").mkdir(parents=True)
    (tmp_path / "src" / "train" / "dog.3.jpg").write_bytes(image_bytes((9, 9, 9)))
    with tarfile.open(tmp_path / "photos.tgz", "w:gz") as tf:
        tf.add(tmp_path / "src" / "train", arcname="train")
    out = extract_archive(tmp_path / "photos.tgz", tmp_path / "out")
    assert (out / "train" / "dog.3.jpg").read_bytes() == (tmp_path / "src" / "train" / "dog.3.jpg").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "bad-crc"])
def test_corrupt_zip_says_to_download_again(tmp_path, damage):
    archive = make_zip(tmp_path / "train.zip", {"train/cat.1.jpg": b"A" * 5000})
    data = archive.read_bytes()
    if damage == "truncated":
        archive.write_bytes(data[: len(data) // 2])
    else:  # stored member: flip one byte of its data, the CRC no longer matches
        i = data.index(b"A" * 100)
        archive.write_bytes(data[:i] + b"B" + data[i + 1:])
    with pytest.raises(ExtractError, match="delete it and download it again"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_nested_zips_are_extracted_once(tmp_path):
    inner_train = photos_zip(tmp_path / "build" / "train.zip", "train")
    inner_test = make_zip(tmp_path / "build" / "test1.zip", {"test1/1.jpg": image_bytes((5, 5, 5))})
    outer = make_zip(tmp_path / "raw" / "dogs-vs-cats.zip", {
        "train.zip": inner_train.read_bytes(), "test1.zip": inner_test.read_bytes(),
        "sampleSubmission.csv": b"id,label\n1,0\n", "__MACOSX/._train.zip": b"junk"})
    target = tmp_path / "extracted" / "dogs-vs-cats"

    assert extract_archive(outer, target) == target
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert files == [".extracted.json", "sampleSubmission.csv", "test1/test1/1.jpg", "train/train/cat.1.jpg",
                     "train/train/dog.1.png"]
    assert json.loads((target / ".extracted.json").read_text())["archive"] == "dogs-vs-cats.zip"
    assert outer.exists()  # the download itself stays in raw/

    (target / "sentinel").write_text("kept unless re-extracted")
    extract_archive(outer, target)
    assert (target / "sentinel").exists()

    os.utime(outer, ns=(outer.stat().st_atime_ns, outer.stat().st_mtime_ns + 10**9))  # a new download
    extract_archive(outer, target)
    assert not (target / "sentinel").exists()
    assert (target / "train" / "train" / "cat.1.jpg").exists()


def test_an_unrelated_folder_is_not_replaced(tmp_path):
    archive = photos_zip(tmp_path / "train.zip", "train")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ExtractError, match="not made by unpacking"):
        extract_archive(archive, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def zeros_archive(path: Path, mib: int) -> Path:
    """An archive whose one member, train/cat.1.jpg, is ``mib`` MiB of zeros (deflated: a few hundred kB)."""
    chunk = bytes(1 << 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        info = zipfile.ZipInfo("train/cat.1.jpg")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zipfile.ZipFile(path, "w") as zf, zf.open(info, "w", force_zip64=True) as f:
            for _ in range(mib):
                f.write(chunk)
    else:
        class Zeros(io.RawIOBase):
            def __init__(self):
                self.left = mib << 20

            def readable(self):
                return True

            def readinto(self, b):
                n = min(len(b), self.left)
                b[:n] = bytes(n)
                self.left -= n
                return n

        info = tarfile.TarInfo("train/cat.1.jpg")
        info.size = mib << 20
        with tarfile.open(path, "w:gz", compresslevel=6) as tf:
            tf.addfile(info, io.BufferedReader(Zeros(), 1 << 20))
    return path


@pytest.mark.parametrize("name", ["bomb.zip", "bomb.tgz"])
def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path, name):
    archive = zeros_archive(tmp_path / "raw" / name, 200)
    assert archive.stat().st_size < 1 << 20  # 200 MiB declared in well under 1 MiB
    before = all_files(tmp_path)
    with pytest.raises(ExtractError) as err:
        extract_archive(archive, tmp_path / "extracted" / "bomb")
    message = str(err.value)
    assert "200.0 MiB" in message and "compression ratio" in message and "\n" not in message
    assert all_files(tmp_path) == before  # no target, no staging folder


def test_a_member_never_writes_more_than_its_header_declares(tmp_path):
    """A zip whose headers declare 1,000 bytes for a 1 MiB member: at most 1,000 bytes may land on disk."""
    data = bytes(1 << 20)
    archive = make_zip(tmp_path / "liar.zip", {"train/cat.1.jpg": data})
    raw = bytearray(archive.read_bytes())
    honest_crc = zlib.crc32(data[:1000]).to_bytes(4, "little")
    for signature, crc_at, size_at in ((b"PK\x03\x04", 14, 22), (b"PK\x01\x02", 16, 24)):
        i = raw.index(signature)
        raw[i + crc_at:i + crc_at + 4] = honest_crc  # the CRC of what the header claims, so no CRC error
        raw[i + size_at:i + size_at + 4] = (1000).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    out = extract_archive(archive, tmp_path / "out")
    assert (out / "train" / "cat.1.jpg").stat().st_size == 1000


# ---- acquire ---------------------------------------------------------------------------------------------

def test_acquire_fetches_and_extracts_every_url(tmp_path):
    www = tmp_path / "www"
    photos_zip(www / "first.zip", "train")
    make_zip(www / "second.zip", {"test/0.jpg": image_bytes((0, 0, 0)), "test/1.jpg": image_bytes((9, 0, 0))})
    with serve_dir(www) as server:
        roots = acquire(urls=[server.url("first.zip"), server.url("second.zip")], raw_dir=tmp_path / "raw",
                        extract_dir=tmp_path / "extracted", progress=False)
    # only the two URLs were requested: the default source was not fetched as well
    assert sorted(r.path for r in server.requests) == ["/first.zip", "/second.zip"]
    assert roots == [tmp_path / "extracted" / "first", tmp_path / "extracted" / "second"]
    assert (roots[0] / "train" / "dog.1.png").is_file()
    assert sorted(p.name for p in (roots[1] / "test").iterdir()) == ["0.jpg", "1.jpg"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["first.zip", "second.zip"]


def test_acquire_uses_local_archives_and_folders_in_place(tmp_path):
    archive = photos_zip(tmp_path / "mine" / "train.zip", "train")
    folder = tmp_path / "photos"
    folder.mkdir()
    roots = acquire(from_paths=[folder, archive], raw_dir=tmp_path / "raw", extract_dir=tmp_path / "ex",
                    progress=False)
    assert roots == [tmp_path / "ex" / "train", folder]
    assert (roots[0] / "train" / "cat.1.jpg").is_file()
    assert not (tmp_path / "raw").exists()


def test_acquire_refuses_a_url_that_is_not_an_archive(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "cat.jpg").write_bytes(image_bytes((1, 1, 1)))
    with serve_dir(tmp_path / "www") as server, pytest.raises(DownloadError, match="does not end in .zip"):
        acquire(urls=[server.url("cat.jpg")], raw_dir=tmp_path / "raw", extract_dir=tmp_path / "ex",
                progress=False)
    assert server.requests == []


def test_acquire_refuses_two_archives_with_the_same_stem(tmp_path):
    a = photos_zip(tmp_path / "a" / "train.zip", "train")
    b = photos_zip(tmp_path / "b" / "train.zip", "train")
    with pytest.raises(ConfigError, match="Two archives"):
        acquire(from_paths=[a, b], raw_dir=tmp_path / "raw", extract_dir=tmp_path / "ex", progress=False)


# ---- sources and kaggle ----------------------------------------------------------------------------------

def test_unknown_source_names_the_known_ones():
    with pytest.raises(ConfigError) as err:
        get_source("kagle")
    assert "did you mean 'kaggle'?" in str(err.value)
    assert all(name in str(err.value) for name in SOURCES)
    assert get_source("course").urls[0].endswith("/train.zip")


@pytest.fixture
def fake_kaggle(tmp_path, monkeypatch) -> Path:
    """A ``kaggle`` executable on PATH that logs its arguments and writes COMPETITION.zip into -p."""
    bin_dir, log = tmp_path / "bin", tmp_path / "kaggle-calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "kaggle"
    script.write_text(f"#!{sys.executable}\n"
                      "import sys, zipfile\n"
                      f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                      "args = sys.argv[1:]\n"
                      "dest, name = args[args.index('-p') + 1], args[args.index('-c') + 1]\n"
                      "with zipfile.ZipFile(f'{dest}/{name}.zip', 'w') as z:\n"
                      "    z.writestr('sampleSubmission.csv', 'id,label\\n')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("KAGGLE_CONFIG_DIR", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return log


def test_kaggle_without_the_cli_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DownloadError, match="pip install kaggle"):
        fetch_kaggle("dogs-vs-cats", tmp_path / "raw")


def test_kaggle_without_credentials_stops_before_running_the_cli(tmp_path, fake_kaggle):
    with pytest.raises(DownloadError, match="No Kaggle API credentials"):
        fetch_kaggle("dogs-vs-cats", tmp_path / "raw")
    assert not fake_kaggle.exists()


def test_kaggle_download_runs_the_cli_once(tmp_path, fake_kaggle, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "token")
    first = fetch_kaggle("dogs-vs-cats", tmp_path / "raw", progress=False)
    second = fetch_kaggle("dogs-vs-cats", tmp_path / "raw", progress=False)
    assert first == second == tmp_path / "raw" / "dogs-vs-cats.zip"
    assert fake_kaggle.read_text().splitlines() == [f"competitions download -c dogs-vs-cats -p {tmp_path / 'raw'}"]


# ---- the shared mini data set ----------------------------------------------------------------------------

@pytest.mark.shared
def test_shared_mini_set_downloads_verifies_and_extracts(tmp_path, shared_path):
    pinned = {"train.zip": "172b46f5fb491e1b4b4d0f3f0ca9798d3b1464a45b745cf12a75fa5a72fc9d3b",
              "test.zip": "61ea0d8550ea142ff21bf06a157acc8e87dccae44e39bb3f8da2e0b939486236"}
    counts = {}
    with serve_dir(shared_path(MINI)) as server:
        for name, digest in pinned.items():
            archive = fetch(server.url(name), tmp_path / "raw", sha256=digest, progress=False)
            out = extract_archive(archive, tmp_path / "extracted" / name.removesuffix(".zip"))
            counts[name] = sum(1 for p in out.rglob("*") if p.is_file() and p.name != ".extracted.json")
    assert counts == {"train.zip": 1600, "test.zip": 400}

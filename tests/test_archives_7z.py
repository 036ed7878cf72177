""".7z archives (Kaggle's CIFAR-10 ships train.7z and test.7z) and archives inside archives: real files built
with py7zr, zipfile and tarfile in tmp_path, unpacked with the same safety as .zip and .tar."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import py7zr
import pytest
from PIL import Image

import pipeline.data.archives as archives
from pipeline.data.archives import extract_archive
from pipeline.data.download import acquire
from pipeline.errors import ExtractError

LABELS = b"id,label\n1,frog\n2,truck\n3,cat\n"


def image_bytes(color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, fmt)
    return buf.getvalue()


def all_files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def make_7z(path: Path, members: dict[str, bytes], **kw) -> Path:
    """A .7z holding ``members`` under exactly the names given (py7zr's checked writer refuses ``../`` and ``/``
    names, as a careful archiver does; its unchecked one writes what a hostile archive holds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with py7zr.SevenZipFile(path, "w", **kw) as z:
        for name, data in members.items():
            z._writestr(data, name)
    return path


def cifar_7z(path: Path, folder: str, n: int) -> tuple[Path, dict[str, bytes]]:
    """A .7z laid out like Kaggle's CIFAR-10 train.7z / test.7z: ``<folder>/<i>.png``, written from a real folder."""
    src = path.parent / f"src-{folder}"
    members = {f"{folder}/{i}.png": image_bytes((i * 40 % 256, 90, 200 - i)) for i in range(1, n + 1)}
    for name, data in members.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    with py7zr.SevenZipFile(path, "w") as z:
        z.writeall(src / folder, folder)
    return path, members


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return path


def test_a_7z_unpacks_to_the_same_bytes_and_a_second_call_returns_at_once(tmp_path):
    members = {"train/cat.1.jpg": image_bytes((200, 90, 40), "JPEG"), "train/dog.1.png": image_bytes((40, 90, 200)),
               "train/deep/er/frog.2.png": image_bytes((1, 2, 3)), "trainLabels.csv": LABELS, "empty.txt": b""}
    archive = make_7z(tmp_path / "raw" / "cifar.7z", members)
    target = tmp_path / "extracted" / "cifar"

    assert extract_archive(archive, target) == target
    assert files_under(target) == members | {".extracted.json": (target / ".extracted.json").read_bytes()}
    assert json.loads((target / ".extracted.json").read_text())["archive"] == "cifar.7z"
    assert not (tmp_path / "extracted" / ".cifar.partial").exists()

    (target / "sentinel").write_text("kept unless re-extracted")
    before = all_files(tmp_path)
    assert extract_archive(archive, target) == target  # the marker matches: nothing is unpacked again
    assert all_files(tmp_path) == before


@pytest.mark.parametrize("member, why", [("../evil.png", "points outside the target folder"),
                                         ("train/../../evil.png", "points outside the target folder"),
                                         ("/abs.png", "has an absolute path"),
                                         ("train/../evil.png", "has '..' in its path"),
                                         ("C:/evil.png", "has an absolute path")])
def test_escaping_7z_members_are_refused_before_anything_is_written(tmp_path, member, why):
    archive = make_7z(tmp_path / "raw" / "bad.7z", {"train/1.png": image_bytes((1, 2, 3)), member: b"gotcha"})
    before = all_files(tmp_path)
    with pytest.raises(ExtractError, match=f"{why}; refusing to unpack it") as err:
        extract_archive(archive, tmp_path / "extracted" / "bad")
    assert repr(member) in str(err.value) and "\n" not in str(err.value)
    assert all_files(tmp_path) == before  # no target, no staging folder, nothing beside them
    assert not Path("/abs.png").exists()


def test_a_7z_symlink_member_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_text("outside the archive's folder")
    os.symlink(tmp_path / "src" / "secret.txt", src / "link.png")
    archive = tmp_path / "raw" / "links.7z"
    archive.parent.mkdir()
    with py7zr.SevenZipFile(archive, "w") as z:
        z.write(src / "link.png", "train/link.png")  # stored as a link (py7zr does not follow it by default)
        z.writestr(image_bytes((1, 2, 3)), "train/1.png")
    with py7zr.SevenZipFile(archive) as z:
        assert [f.is_symlink for f in z.files] == [True, False]
    before = all_files(tmp_path)
    with pytest.raises(ExtractError, match="'train/link.png' is a link; refusing to unpack it"):
        extract_archive(archive, tmp_path / "extracted" / "links")
    assert all_files(tmp_path) == before


def test_a_7z_bomb_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "RATIO_CHECK_ABOVE", 1 << 20)  # the 64 MiB floor, scaled down to keep this quick
    archive = make_7z(tmp_path / "raw" / "bomb.7z", {"train/cat.1.png": bytes(4 << 20)})
    assert archive.stat().st_size < (4 << 20) // archives.MAX_COMPRESSION_RATIO  # 4 MiB declared in a few kB
    before = all_files(tmp_path)
    with pytest.raises(ExtractError, match=r"declares 4\.0 MiB of files .* compression ratio .* zip bomb") as err:
        extract_archive(archive, tmp_path / "extracted" / "bomb")
    assert "\n" not in str(err.value)
    assert all_files(tmp_path) == before


@pytest.mark.parametrize("damage", ["truncated", "bad-crc"])
def test_a_corrupt_7z_is_one_line_saying_to_download_it_again(tmp_path, damage):
    archive = make_7z(tmp_path / "train.7z", {"train/1.png": b"A" * 5000, "train/2.png": b"B" * 5000},
                      filters=[{"id": py7zr.FILTER_COPY}])  # stored, so one flipped byte of data is a CRC error
    data = archive.read_bytes()
    if damage == "truncated":
        archive.write_bytes(data[: len(data) // 2])
    else:
        i = data.index(b"A" * 100)
        archive.write_bytes(data[:i] + b"Z" + data[i + 1:])
    with pytest.raises(ExtractError, match=r"train\.7z is corrupt or truncated \(.+\): delete it and download it "
                                           r"again\.$") as err:
        extract_archive(archive, tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.parametrize("header_encryption", [False, True])
def test_a_password_protected_7z_is_one_line(tmp_path, header_encryption):
    archive = make_7z(tmp_path / "train.7z", {"train/1.png": image_bytes((1, 2, 3))}, password="secret",
                      header_encryption=header_encryption)
    with pytest.raises(ExtractError, match="train.7z is password-protected, .* pass the folder with --from"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_a_7z_with_two_members_of_one_name_is_refused(tmp_path):
    archive = tmp_path / "twice.7z"
    with py7zr.SevenZipFile(archive, "w") as z:
        z.writestr(b"first", "train/1.png")
        z.writestr(b"second", "./train/1.png")
    with pytest.raises(ExtractError, match="holds two members named 'train/1.png'; refusing to unpack it"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_kaggle_cifar10_zip_unpacks_its_inner_7z_archives(tmp_path):
    """cifar-10.zip holds train.7z, test.7z and trainLabels.csv; each .7z becomes its stem folder, then goes."""
    train_7z, train = cifar_7z(tmp_path / "build" / "train.7z", "train", 5)
    test_7z, test = cifar_7z(tmp_path / "build" / "test.7z", "test", 3)
    outer = make_zip(tmp_path / "raw" / "cifar-10.zip", {
        "train.7z": train_7z.read_bytes(), "test.7z": test_7z.read_bytes(), "trainLabels.csv": LABELS,
        "sampleSubmission.csv": b"id,label\n1,cat\n"})
    target = tmp_path / "extracted" / "cifar-10"

    assert extract_archive(outer, target) == target
    files = files_under(target)
    assert sorted(files) == sorted([".extracted.json", "trainLabels.csv", "sampleSubmission.csv"]
                                   + [f"train/{n}" for n in train] + [f"test/{n}" for n in test])
    assert all(files[f"train/{n}"] == data for n, data in train.items())
    assert all(files[f"test/{n}"] == data for n, data in test.items())
    assert files["trainLabels.csv"] == LABELS
    assert not list(target.rglob("*.7z")) and outer.exists()


def test_inner_tar_gz_and_tgz_are_unpacked_one_level(tmp_path):
    photo = image_bytes((9, 9, 9), "JPEG")
    innermost = make_zip(tmp_path / "build" / "deeper.zip", {"x.jpg": photo})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in {"train/dog.3.jpg": photo, "deeper.zip": innermost.read_bytes()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    outer = make_zip(tmp_path / "raw" / "photos.zip", {"data/photos.tar.gz": buf.getvalue(),
                                                       "more.tgz": buf.getvalue()})

    target = extract_archive(outer, tmp_path / "out")
    assert sorted(files_under(target)) == [".extracted.json", "data/photos/deeper.zip", "data/photos/train/dog.3.jpg",
                                           "more/deeper.zip", "more/train/dog.3.jpg"]  # deeper.zip stays packed
    assert (target / "data" / "photos" / "train" / "dog.3.jpg").read_bytes() == photo


def test_an_inner_archive_beside_its_non_empty_stem_folder_is_refused(tmp_path):
    train_7z, _ = cifar_7z(tmp_path / "build" / "train.7z", "train", 2)
    outer = make_zip(tmp_path / "raw" / "cifar-10.zip", {"train.7z": train_7z.read_bytes(),
                                                         "train/README.txt": b"already here"})
    with pytest.raises(ExtractError, match=r"cifar-10\.zip holds train\.7z beside train, which is not an empty "
                                           "folder, .* unpack cifar-10.zip by hand") as err:
        extract_archive(outer, tmp_path / "extracted" / "cifar-10")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "extracted").iterdir()) == []  # no target, and the staging folder was removed


def test_an_inner_archive_beside_its_empty_stem_folder_is_unpacked_into_it(tmp_path):
    train_7z, train = cifar_7z(tmp_path / "build" / "train.7z", "train", 2)
    outer = make_zip(tmp_path / "raw" / "cifar-10.zip", {"train/": b"", "train.7z": train_7z.read_bytes()})
    target = extract_archive(outer, tmp_path / "extracted" / "cifar-10")
    assert files_under(target / "train") == train


def test_acquire_takes_a_7z_with_from_and_names_7z_when_refusing_others(tmp_path):
    archive, train = cifar_7z(tmp_path / "downloads" / "train.7z", "train", 2)
    roots = acquire(from_paths=[archive], raw_dir=tmp_path / "raw", extract_dir=tmp_path / "extracted",
                    progress=False)
    assert roots == [tmp_path / "extracted" / "train"]
    assert files_under(roots[0] / "train") == {n.removeprefix("train/"): d for n, d in train.items()}

    rar = tmp_path / "downloads" / "train.rar"
    rar.write_bytes(b"Rar!")
    with pytest.raises(ExtractError, match=r"is neither a folder nor a \.zip/\.tar/\.tar\.gz/\.tgz/\.7z archive"):
        acquire(from_paths=[rar], raw_dir=tmp_path / "raw", extract_dir=tmp_path / "extracted", progress=False)

"""Safe unpacking of a .7z archive (:func:`pipeline.data.archives.extract_archive` calls it for one): every member
checked as :mod:`pipeline.data.archives` checks a zip's or tar's before anything is written. Apart so that py7zr is
imported only when a .7z is unpacked (the Kaggle image that runs an exported notebook lacks it)."""

from __future__ import annotations

import io
import posixpath
import stat
from pathlib import Path, PurePosixPath

import py7zr
import py7zr.exceptions
import py7zr.io

from pipeline.data.archives import _check_size, _check_tree, _oversized, _safe_relpath
from pipeline.errors import ExtractError


def unpack_7z(archive: Path, dest: Path) -> None:
    """Check every member of the .7z ``archive``, then stream its regular files into files under ``dest``.

    py7zr decompresses each checked member into a file opened here (``extract(factory=...)``), which refuses
    any byte past the member's declared size; it never creates a link, a folder or a file by itself.
    """
    try:
        with open(archive, "rb") as fp, py7zr.SevenZipFile(fp) as szf:
            if szf.needs_password():
                raise _encrypted(archive)
            files: dict[PurePosixPath, int] = {}
            targets, folders = [], []
            for member in szf.files:
                name = member.filename
                kind = _7z_kind(member)
                rel = _safe_relpath(archive, name, kind)
                if ".." in name.replace("\\", "/").split("/"):  # py7zr itself refuses these, whatever they reduce to
                    raise ExtractError(f"{archive} member {name!r} has '..' in its path; refusing to unpack it: "
                                       "check where the archive came from.")
                if rel is None:
                    continue
                if kind == "dir":
                    folders.append(rel)
                    continue
                if rel in files:
                    raise ExtractError(f"{archive} holds two members named {str(rel)!r}; refusing to unpack it: "
                                       "check where the archive came from.")
                files[rel] = member.uncompressed or 0
                targets.append(name)
            _check_tree(archive, [(rel, "file") for rel in files] + [(rel, "dir") for rel in folders])
            _check_size(archive, dest, sum(files.values()))
            dest.mkdir(parents=True, exist_ok=True)
            for rel in folders:
                dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
            if not targets:
                return
            writers = _MemberWriters(archive, dest.absolute(), files)
            try:
                szf.extract(path=dest.absolute(), targets=targets, factory=writers)
            finally:
                writers.close()
            missing = next((rel for rel in files if rel not in writers.made), None)
            if missing is not None:
                raise _corrupt(archive, f"member {str(missing)!r} could not be read")
    except ExtractError:
        raise
    except py7zr.exceptions.PasswordRequired:
        raise _encrypted(archive) from None
    except py7zr.exceptions.CrcError as exc:
        raise _corrupt(archive, f"checksum mismatch in {exc.filename or 'a member'}") from None
    except OSError as exc:
        if exc.errno is not None:  # the disk or the folder, not the data: extract_archive says which
            raise
        raise _corrupt(archive, str(exc)) from None  # bz2 says "Invalid data stream" with an OSError
    except Exception as exc:  # noqa: BLE001 - py7zr's decoders (lzma, zstd, ppmd, ...) each raise their own kind
        raise _corrupt(archive, str(exc) or type(exc).__name__) from None


def _corrupt(archive: Path, why: str) -> ExtractError:
    return ExtractError(f"{archive} is corrupt or truncated ({why}): delete it and download it again.")


def _encrypted(archive: Path) -> ExtractError:
    return ExtractError(f"{archive} is password-protected, which the pipeline cannot unpack: unpack it by hand "
                        "and pass the folder with --from.")


def _7z_kind(member: py7zr.py7zr.ArchiveFile) -> str:
    """'file', 'dir', 'link' or 'special', from the member's Windows attributes and its unix mode if it has one."""
    attributes = member.file_properties().get("attributes") or 0
    fmt = member.st_fmt
    if member.is_symlink or member.is_junction or fmt == stat.S_IFLNK or attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT:
        return "link"
    if member.is_socket or fmt not in (None, 0, stat.S_IFREG, stat.S_IFDIR):
        return "special"
    return "dir" if member.is_directory or fmt == stat.S_IFDIR else "file"


class _MemberWriters(py7zr.io.WriterFactory):
    """Opens the file of each checked member when py7zr starts decompressing it (py7zr's writer factory).

    Args:
        archive: the archive being unpacked (for the messages).
        dest: the absolute folder passed to py7zr's ``extract``; it names each member ``dest/<member name>``.
        files: the declared size of each checked regular member, by its safe relative path.
    """

    def __init__(self, archive: Path, dest: Path, files: dict[PurePosixPath, int]):
        self.archive, self.dest, self.files = archive, dest, files
        self.made: dict[PurePosixPath, _MemberWriter] = {}

    def create(self, filename: str) -> py7zr.io.Py7zIO:
        try:
            rel = PurePosixPath(posixpath.normpath(
                PurePosixPath(filename).relative_to(self.dest.as_posix()).as_posix().replace("\\", "/")))
        except ValueError:
            rel = None
        if rel not in self.files or rel in self.made:
            raise ExtractError(f"{self.archive} member {filename!r} was not among the members checked before "
                               "unpacking; refusing to unpack it: check where the archive came from.")
        out = self.dest.joinpath(*rel.parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = self.made[rel] = _MemberWriter(out, self.files[rel], self.archive, str(rel))
        return writer

    def close(self) -> None:
        """Close every file opened (py7zr closes only those it finished)."""
        for writer in self.made.values():
            writer.close()


class _MemberWriter(py7zr.io.Py7zIO):
    """A file that refuses to grow past the member's declared size."""

    def __init__(self, path: Path, declared: int, archive: Path, name: str):
        self.declared, self.archive, self.name = declared, archive, name
        self.file = open(path, "wb")  # noqa: SIM115 - py7zr writes and closes it; _MemberWriters.close if it fails

    def write(self, s: bytes | bytearray) -> int:
        if self.file.tell() + len(s) > self.declared:
            raise _oversized(self.archive, self.name, self.declared)
        return self.file.write(s)

    def read(self, size: int | None = None) -> bytes:
        raise io.UnsupportedOperation("write-only")

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)  # py7zr rewinds a finished member; a write past the size is refused

    def flush(self) -> None:
        self.file.flush()

    def size(self) -> int:
        here = self.file.tell()
        end = self.file.seek(0, io.SEEK_END)
        self.file.seek(here)
        return end

    def close(self) -> None:
        self.file.close()

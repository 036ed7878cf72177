"""Run a command where one folder is a private, size-limited (optionally read-only) tmpfs.

A real full disk (ENOSPC) or a real read-only file system (EROFS) for tests, with no root
needed and the machine's own mounts untouched:

    with serve_dir(www) as server:
        result = run_on_tmpfs(pipeline_cmd("download", "--url", server.url("train.zip"), "--data-dir", data),
                              folder=data, size="1m", cwd=tmp_path)
    assert result.returncode == 1 and (result.snapshot / "raw" / "train.zip.part").exists()

The command runs under ``unshare --user --map-root-user --mount``: a user namespace (so mounting is
allowed) with a mount table of its own. The tmpfs goes away with it, so what it held is copied to
``snapshot`` before the namespace ends. The network namespace is the caller's, so a server the test
runs on 127.0.0.1 is reachable from inside. Where unshare or the mount is not permitted (some CI
containers), the test is skipped.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_MOUNT_FAILED = 97  # exit status of the wrapper script when the tmpfs could not be mounted

# $1 folder, $2 mount options, $3 "ro" or "rw", $4 snapshot folder; the rest is the command
_SCRIPT = """
mount -t tmpfs -o "$2" tmpfs "$1" || exit 97
if [ "$3" = ro ]; then mount -o remount,ro "$1" || exit 97; fi
folder=$1 snapshot=$4
shift 4
"$@"
rc=$?
cp -a "$folder/." "$snapshot/"
exit $rc
"""


@dataclass
class TmpfsRun:
    """What the command left: exit status, output, and a copy of the tmpfs as it was when it ended."""

    returncode: int
    stdout: str
    stderr: str
    snapshot: Path


@functools.lru_cache(maxsize=1)
def _why_not() -> str | None:
    """None when a user+mount namespace with a tmpfs can be made here, else the reason it cannot."""
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    with tempfile.TemporaryDirectory() as folder:
        try:
            probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                                    'mount -t tmpfs -o size=1m tmpfs "$1"', "sh", folder],
                                   capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed to run ({exc})"
    if probe.returncode != 0:
        return f"user+mount namespaces are not permitted here ({probe.stderr.strip() or probe.returncode})"
    return None


def pipeline_cmd(*args) -> list[str]:
    """``python -m pipeline ARGS`` with this interpreter."""
    return [sys.executable, "-m", "pipeline", *(str(a) for a in args)]


def run_on_tmpfs(command: list[str], *, folder: Path, size: str, cwd: Path, read_only: bool = False,
                 nr_inodes: int | None = None, timeout: float = 300) -> TmpfsRun:
    """Run ``command`` with a fresh tmpfs of ``size`` mounted on ``folder``; skip the test where that is impossible.

    Args:
        command: the argv to run; ``PYTHONPATH`` points at this checkout so its ``pipeline`` is the one run.
        folder: the mount point (created if missing); whatever it holds outside is hidden meanwhile.
        size: the tmpfs size, e.g. ``"1m"``.
        cwd: the command's working folder.
        read_only: remount the (empty) tmpfs read-only before running the command.
        nr_inodes: cap the number of files and folders (running out is ENOSPC too).
        timeout: seconds before the command is killed.
    """
    why = _why_not()
    if why is not None:
        pytest.skip(why)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = Path(tempfile.mkdtemp(prefix="tmpfs-snapshot-", dir=folder.parent))
    options = f"size={size}" + (f",nr_inodes={nr_inodes}" if nr_inodes else "")
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                        "COLUMNS": "250"}
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _SCRIPT, "sh",
                           str(folder), options, "ro" if read_only else "rw", str(snapshot), *command],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    if proc.returncode == _MOUNT_FAILED:
        raise RuntimeError(f"mounting a tmpfs on {folder} failed: {proc.stderr.strip()}")
    return TmpfsRun(proc.returncode, proc.stdout, proc.stderr, snapshot)

"""A throw-away PostgreSQL cluster for the tests: ``initdb`` and ``pg_ctl`` on a free loopback port in a temporary
folder, removed afterwards.

The binaries are looked up on PATH, in /usr/local/bin and in Debian's /usr/lib/postgresql/<version>/bin. Where
they are absent the tests that need a server skip on a user's machine and fail in CI (``CI`` set), which installs
Debian's ``postgresql`` package (.ci/run). PostgreSQL refuses to run as root: as root the cluster runs as the
``postgres`` user (Debian's package makes it), else ``nobody``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def postgres_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += [Path("/usr/local/bin"), *map(Path, sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True))]
    return next((c for c in candidates if (c / "initdb").is_file() and (c / "pg_ctl").is_file()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user() -> tuple[list[str], str | None]:
    """The command prefix that runs PostgreSQL's programs as a user it accepts, and that user (None: this one)."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return ["runuser", "-u", name, "--"], name
    pytest.fail("running as root, with no postgres or nobody user to run PostgreSQL as")


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A running cluster; yields its URL (user ``postgres``, trust authentication, database ``postgres``)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("CI: PostgreSQL's initdb and pg_ctl are absent (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed here")
    prefix, user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
    if user is not None:
        shutil.chown(root, user)
    data, port = root / "data", free_port()
    run = [*prefix]
    try:
        subprocess.run([*run, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "-l", str(root / "log"),
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*run, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

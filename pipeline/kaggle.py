"""The official Kaggle CLI (``kaggle``): finding it and the API credentials, downloading a competition's
files, sending a submission and reading the list of submissions.

Downloading (``pipeline download --source kaggle``) and submitting (``pipeline submit``) share it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from pipeline.errors import DownloadError, PipelineError

_logger = logging.getLogger(__name__)


def credentials_found() -> bool:
    if os.environ.get("KAGGLE_API_TOKEN") or (os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY")):
        return True
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    return any((config / f).is_file() for f in ("kaggle.json", "access_token"))


def rules_page(competition: str) -> str:
    """The page on which a competition's rules are accepted (Kaggle refuses downloads and submissions before)."""
    return f"https://www.kaggle.com/competitions/{competition}/rules"


def command(competition: str, error: type[PipelineError] = DownloadError) -> str:
    """The path of the official ``kaggle`` CLI, once it and the API credentials are known to be there.

    Args:
        competition: the competition's slug (named in the messages, with its rules page).
        error: the error class to raise (``pipeline submit`` raises its own).

    Raises:
        error: no ``kaggle`` on PATH, or no credentials (file or environment variables).
    """
    rules = rules_page(competition)
    exe = shutil.which("kaggle")
    if exe is None:
        raise error("The kaggle command was not found: install it with `pip install kaggle` and put your API "
                    f"token in ~/.kaggle/kaggle.json (and accept the competition rules on {rules}).")
    if not credentials_found():
        raise error("No Kaggle API credentials found (no ~/.kaggle/kaggle.json or ~/.kaggle/access_token, no "
                    "KAGGLE_USERNAME/KAGGLE_KEY or KAGGLE_API_TOKEN): create a token at "
                    "https://www.kaggle.com/settings/api, save it as ~/.kaggle/kaggle.json, and accept the "
                    f"competition rules on {rules}.")
    return exe


def download(competition: str, dest_dir: str | os.PathLike, *, progress: bool = True) -> Path:
    """Download a competition's files with the official ``kaggle`` CLI; return ``dest_dir/COMPETITION.zip``.

    Args:
        competition: the competition's slug, e.g. ``dogs-vs-cats``.
        dest_dir: folder for the zip; an existing zip is returned without running the CLI.
        progress: let the CLI print its own progress bar.
    """
    dest_dir = Path(dest_dir)
    zip_path = dest_dir / f"{competition}.zip"
    if zip_path.exists():
        _logger.info("%s is already downloaded", zip_path)
        return zip_path
    rules = rules_page(competition)
    exe = command(competition)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [exe, "competitions", "download", "-c", competition, "-p", str(dest_dir)]
    _logger.info("running %s", " ".join(cmd))
    result = subprocess.run(cmd, stdout=None if progress else subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, check=False)
    if result.returncode != 0 or not zip_path.exists():
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        if result.returncode == 0:
            why = f"it did not write {zip_path}"
        raise DownloadError(f"`kaggle competitions download -c {competition}` failed ({why}): check your API token "
                            f"and that you accepted the rules on {rules}.")
    return zip_path


# what the kaggle CLI prints when the site refuses a file: "400 - Bad Request - ...", "403 Client Error: ...",
# "Could not submit to competition", "error: ..."
_ERROR_LINE = re.compile(r"\berror\b|^\s*[45]\d\d\b|could not submit", re.IGNORECASE)


def output(result: subprocess.CompletedProcess) -> str:
    """What a CLI call printed, standard output then standard error, stripped."""
    return "\n".join(x.strip() for x in (result.stdout, result.stderr) if x and x.strip())


def submit(exe: str, competition: str, file: Path, message: str) -> tuple[subprocess.CompletedProcess, bool]:
    """Run ``kaggle competitions submit``; return the finished process and whether the site refused the file."""
    cmd = [exe, "competitions", "submit", "-c", competition, "-f", str(file), "-m", message]
    _logger.info("running %s", " ".join(cmd))
    sent = subprocess.run(cmd, capture_output=True, text=True, check=False)
    refused = sent.returncode != 0 or any(_ERROR_LINE.search(line) for line in output(sent).splitlines())
    return sent, refused


def submissions(exe: str, competition: str) -> subprocess.CompletedProcess:
    """Run ``kaggle competitions submissions`` (the competition's list of this user's submissions)."""
    return subprocess.run([exe, "competitions", "submissions", "-c", competition], capture_output=True, text=True,
                          check=False)


def latest_submission(listing: str) -> dict | None:
    """The newest row of ``kaggle competitions submissions`` (a table ruled with dashes), by column name.

    Args:
        listing: the CLI's standard output; None when no table is found in it.
    """
    lines = listing.splitlines()
    for i, line in enumerate(lines[1:-1], start=1):
        if "-" in line and re.fullmatch(r"[-\s]+", line):
            starts = [m.start() for m in re.finditer(r"-+", line)]
            ends = [*starts[1:], None]
            header, row = lines[i - 1], lines[i + 1]
            return {header[a:b].strip(): row[a:b].strip() for a, b in zip(starts, ends, strict=True)}
    return None

"""One worker process of ``pipeline tune --jobs K``: ``python -m pipeline.tune.worker JOB.json``.

It runs trials of the study until it has its trials (or the time is up) and prints a line per trial; a user error
is one line and exit code 1."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.tune.show import trial_line
from pipeline.tune.study import TuneJob, run_worker


def main(path: str) -> int:
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        run_worker(TuneJob(**spec["job"]), lambda s: print(trial_line(s), flush=True), started=spec["started"])
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

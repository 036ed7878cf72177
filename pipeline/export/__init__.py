"""``pipeline export``: runs as a Kaggle code-competition submission that works offline.

- :mod:`pipeline.export.bundle` writes the dataset folder: the runs (every file ``predict`` reads), the project's
  wheel and the wheels of what inference needs that the Kaggle image lacks, ``dataset-metadata.json``.
- :mod:`pipeline.export.notebook` writes the kernel folder: the inference notebook and ``kernel-metadata.json``.
- :mod:`pipeline.export.push` sends both with the official Kaggle CLI.
"""

from pipeline.errors import PipelineError


class ExportError(PipelineError):
    """What cannot work offline on Kaggle (weights outside the run, no Kaggle competition, too big a bundle), or a
    wheel that cannot be built or fetched."""

"""Errors a user can cause. The CLI prints their message as one line and exits non-zero."""


class PipelineError(Exception):
    """Base class: the message is a complete sentence saying what went wrong and what to do."""


class DownloadError(PipelineError):
    """A file could not be fetched, or failed its checksum."""


class ExtractError(PipelineError):
    """An archive is unsafe or unreadable."""


class DataError(PipelineError):
    """The catalogue, folds or an image is missing or malformed."""


class SubmissionError(PipelineError):
    """A submission file is malformed or does not match the test set."""


class ConfigError(PipelineError):
    """An option or a combination of options cannot work (unknown arch, no CUDA, ...)."""

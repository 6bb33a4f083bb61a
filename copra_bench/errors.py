"""User-facing error types.

Every error a user can cause by configuration or data (missing files, malformed annotations, wrong checkpoint paths,
unreachable tracking servers) derives from :class:`CopraError`. The CLI prints these as one clear message and exits
with status 2 instead of a stack trace from deep inside a library; set ``COPRA_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations


class CopraError(Exception):
    """Base class of the errors a user can fix (configuration, data, environment)."""


class DataError(CopraError, ValueError):
    """A dataset on disk is missing, incomplete or malformed. The message names the file and what to do."""


class VideoDecodeError(DataError):
    """A video file cannot be opened or decoded, or holds fewer frames than its container claims."""


class TrackingError(CopraError, RuntimeError):
    """The experiment tracking store (MLflow) cannot be reached or written."""


class EvaluationError(CopraError, ValueError):
    """Scores and ground truth do not fit together (lengths, missing windows, non-finite values)."""


class OutputWriteError(CopraError, OSError):
    """A result file (scores, metrics, plots, checkpoint) cannot be written: disk full, quota, permissions. The
    message names the path and what to do; the files written before it are intact."""

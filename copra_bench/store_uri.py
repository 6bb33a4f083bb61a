"""Tracking-store URIs as one process must hold them (light: no torch, no Lightning, so ``report`` can use it).

MLflow caches a store per URI string, so a relative ``sqlite:///mlflow.db`` keeps pointing at the database of the
first working directory it was opened in for the rest of the process (a sweep, a test session, a notebook that
``chdir``s). Every client of the project opens a store through :func:`absolute_tracking_uri`."""

from __future__ import annotations

from pathlib import Path

__all__ = ["absolute_tracking_uri", "tracking_client"]


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/path/mlflow.db``: the store the user meant (the working
    directory's), recorded unambiguously; other URIs are returned unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


def tracking_client(uri: str | None):  # -> mlflow.MlflowClient (imported here: mlflow is slow to import)
    """An ``MlflowClient`` on ``uri`` made absolute (None: MLflow's own default)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=absolute_tracking_uri(uri) if uri else None)

"""Tracking-store URIs as one process must hold them (light: no torch, no Lightning, so ``report`` can use it).

MLflow caches a store per URI string, so a relative ``sqlite:///mlflow.db`` keeps pointing at the database of the
first working directory it was opened in for the rest of the process (a sweep, a test session, a notebook that
``chdir``s). Every client of the project opens a store through :func:`absolute_tracking_uri`.

MLflow creates a new sqlite store's tables (its schema migrations) when a client first opens it, with no lock: two
processes opening one new store at once (two sweeps, jobs of an array, a sweep and a run) can both migrate, and one
fails with ``table _alembic_tmp_... already exists``, leaving the file half-migrated. Every process that may create a
store first calls :func:`prepare_sqlite_store`, which opens it under an exclusive file lock."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from copra_bench.errors import TrackingError

__all__ = ["absolute_tracking_uri", "check_tracking_uri", "prepare_sqlite_store", "tracking_client"]


def absolute_tracking_uri(uri: str) -> str:
    """``sqlite:///mlflow.db`` -> ``sqlite:////abs/path/mlflow.db``: the store the user meant (the working
    directory's), recorded unambiguously; other URIs are returned unchanged."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
        return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
    return uri


def check_tracking_uri(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast with a clear message if ``uri`` cannot be used as an MLflow tracking store."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status >= 400:
                    raise TrackingError(f"MLflow tracking server {uri} answered HTTP {response.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({err}). Start it (`mlflow server --host 127.0.0.1 "
                "--port 5000`), fix trainer.logger.init_args.tracking_uri, or use the local default "
                "sqlite:///mlflow.db") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).expanduser().resolve().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"MLflow store {uri}: folder {folder} does not exist or is not writable; "
                                "create it or point trainer.logger.init_args.tracking_uri elsewhere")
    elif uri.startswith("file:") and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        raise TrackingError(f"MLflow 3 keeps the file store {uri} read-only ('maintenance mode'); use "
                            "sqlite:///mlflow.db, or set MLFLOW_ALLOW_FILE_STORE=true")


def tracking_client(uri: str | None):  # -> mlflow.MlflowClient (imported here: mlflow is slow to import)
    """An ``MlflowClient`` on ``uri`` made absolute (None: MLflow's own default)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=absolute_tracking_uri(uri) if uri else None)


def prepare_sqlite_store(uri: str) -> None:
    """Open (and so create or migrate) a sqlite store under an exclusive lock, so that only one process at a time
    runs MLflow's migrations on it (see the module docstring); other stores need nothing. Opening an existing store
    costs one query. A failure here is left to the caller's own first store call, which reports it."""
    prefix = "sqlite:///"
    uri = absolute_tracking_uri(uri)
    if not uri.startswith(prefix) or ":memory:" in uri:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: MLflow's own behaviour
        return
    # Beside MLflow's own db_init_lock-<hash> files; keyed on the file's absolute path.
    digest = hashlib.md5(uri.encode(), usedforsecurity=False).hexdigest()
    lock = Path(tempfile.gettempdir()) / f"copra_store_init-{digest}"
    try:
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                tracking_client(uri).search_experiments(max_results=1)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    except Exception:  # noqa: BLE001 - reported by the caller's first real store call
        return

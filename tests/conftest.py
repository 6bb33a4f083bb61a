"""Shared fixtures: the real annotation files (the copies shipped in the package), an isolated cache and MLflow
store, the gpu marker. No test reads anything outside the repository."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from copra_bench.datamodules.annotations import ANNOTATIONS_DIR

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): the
    tiny model's ops are so small that a second thread only adds synchronisation (5-10x slower on a busy 2-core
    machine); restored afterwards for the other modules."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The shipped real annotation files: ``ucf_crime/``, ``xd_violence/``, ``shanghaitech/`` (SOURCES.md)."""
    return ANNOTATIONS_DIR


SMALL_WORLD = dict(num_train_normal=3, num_train_abnormal=3, num_test_normal=2, num_test_abnormal=2, video_fps=8,
                   min_seconds=4.0, max_seconds=6.0, video_size=48)


def small_cross_domain(cache_dir, **overrides) -> dict:
    """The data config of a small cross-domain run (synthetic domain A -> B, SMALL_WORLD sizes), as a ``--data`` file
    holds it; ``overrides`` set the CrossDomainDataModule's own arguments."""
    member = {**SMALL_WORLD, "cache_dir": str(cache_dir)}
    synthetic = "copra_bench.datamodules.SyntheticUCFCrimeDataModule"
    return {"class_path": "copra_bench.datamodules.CrossDomainDataModule",
            "init_args": {"source": {"class_path": synthetic, "init_args": {"domain": "A", **member}},
                          "target": {"class_path": synthetic, "init_args": {"domain": "B", **member}},
                          "window_seconds": 2.0, "batch_size": 8, "val_fraction": 0.34, **overrides}}


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    """One cache of small synthetic worlds for the whole session (domains A and B generated on first use)."""
    path = tmp_path_factory.mktemp("copra_cache")
    os.environ["COPRA_CACHE_DIR"] = str(path)
    return path


@pytest.fixture()
def small_world(synth_cache) -> dict:
    """Constructor arguments of a small SyntheticUCFCrimeDataModule (pass domain=...)."""
    return dict(SMALL_WORLD, cache_dir=str(synth_cache), window_seconds=2.0, frames_per_window=4, batch_size=4,
                val_fraction=0.34)


def copy_synthetic_ucf(small_world: dict, dest: Path) -> Path:
    """A writable copy at ``dest`` of the small synthetic UCF-Crime release (domain A), for tests that break it."""
    from copra_bench.datamodules import SyntheticUCFCrimeDataModule

    source = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    source.prepare_data()
    shutil.copytree(source.root, dest)
    return dest


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store (every schema migration applied), made once per session. A test whose subject is
    not a store's creation copies it (:func:`copy_empty_store`) where its first process opens the store: each fresh
    store otherwise costs that process 2-4 s of migrations. Tests of concurrent creation keep a fresh one."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("empty_store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the schema and the Default experiment
    return path


def copy_empty_store(empty_store: Path, dest: Path) -> Path:
    """``dest`` (a ``mlflow.db`` path) made a copy of the :func:`empty_store`, through sqlite's backup API (a
    consistent copy whatever connections the session still holds on the original)."""
    import sqlite3

    with sqlite3.connect(empty_store) as source, sqlite3.connect(dest) as target:
        source.backup(target)
    source.close()
    target.close()
    return dest

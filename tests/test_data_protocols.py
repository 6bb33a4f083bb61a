"""The protocol config family (configs/experiment/): every config loads, the family is complete, and the synthetic
stand-ins run end to end (tiny worlds), including ``on_bad_video: skip`` recorded with the MLflow run."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import yaml

from copra_bench.cli import main
from copra_bench.datamodules import SyntheticShanghaiTechDataModule
from copra_bench.evaluation.assembly import load_scores
from copra_bench.tracking import MLFlowLogger, RunArtifacts

from .conftest import REPO, SMALL_WORLD

EXPERIMENTS = REPO / "configs" / "experiment"
DATASETS = ("ucf_crime", "xd_violence", "shanghaitech")


def _print_config(capsys, path: Path) -> dict:
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(path), "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("family", ["", "synthetic"])
def test_the_family_is_the_full_matrix_plus_multi_source(family):
    root = EXPERIMENTS / family
    matrix = sorted(p.stem for p in (root / "matrix").glob("*.yaml"))
    assert matrix == sorted(f"{a}_to_{b}" for a in DATASETS for b in DATASETS)
    multi = sorted(p.stem for p in (root / "multi_source").glob("*.yaml"))
    assert len(multi) == 3 and {m.rsplit("_to_", 1)[1] for m in multi} == set(DATASETS)
    for stem in multi:
        sources, target = stem.split("_to_")
        assert target not in sources.split("+") and len(sources.split("+")) == 2


@pytest.mark.parametrize("config", ["matrix/ucf_crime_to_ucf_crime.yaml", "matrix/xd_violence_to_shanghaitech.yaml",
                                    "multi_source/ucf_crime+xd_violence_to_shanghaitech.yaml",
                                    "synthetic/matrix/shanghaitech_to_ucf_crime.yaml",
                                    "synthetic/multi_source/xd_violence+shanghaitech_to_ucf_crime.yaml"])
def test_protocol_configs_load(config, capsys):
    loaded = _print_config(capsys, EXPERIMENTS / config)
    data = loaded["data"]
    stem = Path(config).stem
    if "multi_source" in config:
        assert data["class_path"] == "copra_bench.datamodules.MultiSourceDataModule"
        assert len(data["init_args"]["sources"]) == 2
    elif stem.split("_to_")[0] != stem.split("_to_")[1]:
        assert data["class_path"] == "copra_bench.datamodules.CrossDomainDataModule"
    assert loaded["model"]["class_path"] == "copra_bench.baselines.FrozenVLM"


@pytest.mark.slow
def test_every_protocol_config_loads(capsys):
    for path in sorted(EXPERIMENTS.rglob("*.yaml")):
        loaded = _print_config(capsys, path)
        assert loaded["data"]["class_path"].startswith("copra_bench.datamodules."), path


def _tiny(member: str, base: Path, cache: Path, **extra) -> dict:
    """A member data config of the synthetic family, shrunk to the small world of the tests."""
    config = yaml.safe_load((base / member).read_text())
    config["init_args"].update({**SMALL_WORLD, "cache_dir": str(cache), "val_fraction": 0.34, **extra})
    return config


@pytest.mark.slow
def test_multi_source_protocol_runs_and_records_skipped_and_evaluated_videos(tmp_path, monkeypatch, synth_cache,
                                                                             capsys):
    # The held-out target with one test video deleted: skipped (on_bad_video: skip), never silently dropped.
    target = SyntheticShanghaiTechDataModule(domain="C", **SMALL_WORLD, cache_dir=str(synth_cache))
    target.prepare_data()
    copy = tmp_path / "sh"
    shutil.copytree(target.root, copy)
    lost = next(copy / "testing" / "frames" / n for n in (copy / "SH_Test.txt").read_text().split()
                if (copy / "testing" / "frames" / n).is_dir())
    shutil.rmtree(lost)

    path = EXPERIMENTS / "synthetic" / "multi_source" / "ucf_crime+xd_violence_to_shanghaitech.yaml"
    experiment = yaml.safe_load(path.read_text())
    data = experiment["data"]["init_args"]
    data["sources"] = [_tiny(p, path.parent, synth_cache) for p in data["sources"]]
    data["target"] = _tiny(data["target"], path.parent, synth_cache, root=str(copy))
    data.update(window_seconds=2.0, frames_per_window=4, val_fraction=0.34, on_bad_video="skip")
    for key in ("trainer", "model"):
        experiment[key] = str((path.parent / experiment[key]).resolve())
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(experiment))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="skipping 1 of 4 videos"):
        assert main(["fit", "--config", str(config)]) == 0
    assert "synth_sh_C" in capsys.readouterr().out

    db = sqlite3.connect(tmp_path / "mlflow.db")
    (run_id, name), = db.execute("select run_uuid, name from runs").fetchall()
    assert name == "frozen-synth_ucf_A+synth_xd_B_to_synth_sh_C"
    metrics = dict(db.execute("select key, value from latest_metrics where run_uuid=?", (run_id,)).fetchall())
    assert metrics["data/skipped_videos"] == 1
    artifacts = Path(db.execute("select artifact_uri from runs").fetchone()[0].replace("file://", ""))
    assert lost.name in (artifacts / "skipped_videos.txt").read_text()
    evaluated = (artifacts / "evaluated_videos" / "synth_sh_C.txt").read_text().split()
    expected = [n for n in (copy / "SH_Test.txt").read_text().split() if n != lost.name]
    assert evaluated == expected
    scores = load_scores(next((tmp_path / "outputs").rglob("scores/synth_sh_C.npz")))
    assert [v.name for v in scores] == evaluated
    masks = copy / "testing" / "test_frame_mask"
    for video in scores:  # GT of the evaluated videos: the frame masks (test part) or all normal (training part)
        mask = masks / f"{video.name}.npy"
        expected_gt = np.load(mask) if mask.is_file() else np.zeros(video.gt.size, np.uint8)
        np.testing.assert_array_equal(video.gt, expected_gt)


class _RecordingLogger(MLFlowLogger):
    """An MLFlowLogger that records what it is given instead of writing an MLflow store (the slow end-to-end test
    above checks the real store)."""

    def __init__(self, run_dir: Path) -> None:  # noqa: D107 - no MLflow client on purpose
        self._dir = run_dir
        self.metrics: dict[str, float] = {}
        self.artifacts: list[tuple[Path, str | None]] = []

    @property
    def run_dir(self) -> Path:
        self._dir.mkdir(parents=True, exist_ok=True)
        return self._dir

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None) -> None:
        self.artifacts.append((Path(path), artifact_path))


def test_skip_logs_count_and_lists_to_mlflow(tmp_path, small_world):
    from types import SimpleNamespace

    from copra_bench.datamodules import SyntheticUCFCrimeDataModule, UCFCrimeDataModule

    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.prepare_data()
    copy = tmp_path / "ucf"
    shutil.copytree(dm.root, copy)
    victims = sorted((copy / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))
    victims[0].unlink()
    victims[1].write_bytes(b"garbage")
    reader = UCFCrimeDataModule(root=str(copy), annotations="release", on_bad_video="skip", window_seconds=2.0,
                                frames_per_window=4)
    logger = _RecordingLogger(tmp_path / "run")
    with pytest.warns(UserWarning, match="ucf_crime test: skipping 2 of 4 videos"):
        reader.setup("test")
    assert logger.metrics == {} and logger.artifacts == []  # the DataModule itself writes no tracking artifacts
    # RunArtifacts records what the DataModule returns when Lightning has set it up for a stage
    trainer = SimpleNamespace(loggers=[logger], is_global_zero=True, datamodule=reader)
    RunArtifacts().setup(trainer, None, "test")
    evaluated = [r.name for r in reader.test_sets[0].records]
    release = UCFCrimeDataModule(root=str(dm.root), annotations="release")
    assert evaluated == [r.name for r in release.load_split("test")
                         if r.name not in {v.stem for v in victims[:2]}]
    assert logger.metrics == {"data/skipped_videos": 2.0}
    artifacts = {(path.name, folder) for path, folder in logger.artifacts}
    assert artifacts == {("skipped_videos.txt", None), ("ucf_crime.txt", "evaluated_videos")}
    assert (logger.run_dir / "evaluated_videos" / "ucf_crime.txt").read_text().split() == evaluated
    skipped = (logger.run_dir / "skipped_videos.txt").read_text()
    assert "missing: " in skipped and victims[0].name in skipped and f"undecodable: {victims[1]}" in skipped
    assert reader.protocol_settings()["on_bad_video"] == "skip"


def test_default_error_lists_every_bad_file_with_a_count(tmp_path, small_world):
    from copra_bench.datamodules import SyntheticXDViolenceDataModule, XDViolenceDataModule
    from copra_bench.errors import DataError

    dm = SyntheticXDViolenceDataModule(domain="B", **small_world)
    dm.prepare_data()
    copy = tmp_path / "xd"
    shutil.copytree(dm.root, copy)
    bad = sorted((copy / "test").glob("*.mp4"))[:2]
    bad[0].unlink()
    bad[1].write_bytes(b"garbage")
    with pytest.raises(DataError, match="2 of 4 videos cannot be read") as err:
        XDViolenceDataModule(root=str(copy), annotations="release").load_split("test")
    assert f"missing: {bad[0]}" in str(err.value) and f"undecodable: {bad[1]}" in str(err.value)

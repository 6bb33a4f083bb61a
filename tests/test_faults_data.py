"""Faults a long run meets, through the CLI as a user meets them (issue 14, part B): learning rates that break
training, a truncated test video under ``on_bad_video: skip``, a full disk while results are written, ``sync`` of a
run's local copy to a store, ``evaluate`` with an empty local scores folder."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml

from copra_bench.cli import main
from copra_bench.evaluation.assembly import load_scores

from .conftest import REPO, copy_synthetic_ucf, small_cross_domain

CONFIGS = REPO / "configs"
MAIN = str(CONFIGS / "cross_domain.yaml")
FROZEN = str(CONFIGS / "model" / "frozen_tiny.yaml")
#: What every run here can do without: a sanity validation pass, the full bootstrap.
QUICK = ("--trainer.num_sanity_val_steps", "0", "--model.init_args.bootstrap_samples", "20")


def _yaml(path: Path, document: dict) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


def _data(tmp_path: Path, cache: Path, **overrides) -> str:
    """The small cross-domain data (COPRA batch 1, as the tiny default)."""
    return _yaml(tmp_path / "data.yaml", small_cross_domain(cache, **{"frames_per_window": 4, "batch_size": 1,
                                                                       **overrides}))


def _trainer_checkpointing_every_step(tmp_path: Path) -> str:
    trainer = yaml.safe_load((CONFIGS / "trainer" / "default.yaml").read_text())
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = 1
    return _yaml(tmp_path / "trainer.yaml", trainer)


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main([*argv, *QUICK] if argv[0] in ("fit", "test") else list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def _run_dirs(tmp_path: Path) -> list[Path]:
    return sorted(p.parent for p in (tmp_path / "outputs").rglob("config.yaml"))


# ---------------------------------------------------------------------------------------------- learning rates
def test_an_infinite_learning_rate_is_refused_before_anything_loads(tmp_path, monkeypatch, synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    code, text = _run(capsys, "fit", "--config", MAIN, "--data", _data(tmp_path, synth_cache),
                      "--model.init_args.lr", "1e999")
    assert code == 2 and "model.lr must be a finite number > 0, got inf" in text
    assert "Traceback" not in text and not (tmp_path / "outputs").exists()


def _all_finite(checkpoint: Path) -> tuple[int, int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    tensors = [t for t in state["state_dict"].values() if t.is_floating_point()]
    tensors += [t for group in state["optimizer_states"] for s in group["state"].values() for t in s.values()
                if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return sum(bool(torch.isfinite(t).all()) for t in tensors), len(tensors)


@pytest.mark.slow
def test_an_optimiser_overflow_is_the_guards_error_and_no_checkpoint_is_non_finite(tmp_path, monkeypatch,
                                                                                    synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["fit", "--config", MAIN, "--data", _data(tmp_path, synth_cache), "--trainer",
            _trainer_checkpointing_every_step(tmp_path), "--model.init_args.epochs", "1",
            "--trainer.limit_train_batches", "3", "--model.init_args.lr", "1e38"]
    code, text = _run(capsys, *base)  # Adam's first step size, lr / (1 - 0.9), does not fit a float32
    assert code == 2 and "the optimiser step overflowed at global step 0" in text and "lower model.lr" in text
    assert "Traceback" not in text and not list(tmp_path.rglob("*.ckpt"))

    # With a warm-up the first steps fit: checkpoints are written after them, and the step that breaks is stopped
    code, text = _run(capsys, *base, "--model.init_args.warmup_steps", "3")
    assert code == 2 and "at global step 1" in text and "model.lr" in text and "Traceback" not in text
    (last,) = tmp_path.rglob("last.ckpt")
    finite, total = _all_finite(last)
    assert total > 0 and finite == total


@pytest.mark.slow
def test_a_collapse_is_a_warning_naming_the_step(tmp_path, monkeypatch, synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"collapse at global step 2: all 2 validation scores are") as caught:
        code, _ = _run(capsys, "fit", "--config", MAIN, "--data", _data(tmp_path, synth_cache),
                       "--model.init_args.epochs", "1", "--trainer.limit_train_batches", "2",
                       "--model.init_args.lr", "1e9", "--test_after_fit", "false")
    assert code == 0
    assert "lower model.lr (now 1e+09)" in next(str(w.message) for w in caught if "collapse at" in str(w.message))


# ------------------------------------------------------------------------------------------- a truncated video
def truncate_keeping_header(video: Path) -> None:
    """Cut ``video`` in half with its header (``moov``) moved to the front: probing still reads the frame count,
    decoding fails half-way, as with a copy that stopped mid-download."""
    fast = video.with_name("faststart.mp4")
    with av.open(str(video)) as source, av.open(str(fast), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = fast.read_bytes()
    fast.unlink()
    assert data.find(b"moov") < data.find(b"mdat")
    video.write_bytes(data[: len(data) // 2])


def _with_truncated_target(tmp_path: Path, small_world: dict, synth_cache: Path, on_bad_video: str) -> tuple[str, Path]:
    copy = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    victim = min((copy / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))
    truncate_keeping_header(victim)
    data = small_cross_domain(synth_cache, frames_per_window=4, on_bad_video=on_bad_video)
    data["init_args"]["target"] = {"class_path": "copra_bench.datamodules.UCFCrimeDataModule",
                                   "init_args": {"root": str(copy), "annotations": "release"}}
    return _yaml(tmp_path / f"data_{on_bad_video}.yaml", data), victim


@pytest.mark.slow
def test_a_truncated_video_is_skipped_listed_and_the_rest_goes_on(tmp_path, monkeypatch, small_world, synth_cache,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    data, victim = _with_truncated_target(tmp_path, small_world, synth_cache, "skip")
    code, text = _run(capsys, "data", "inspect", "--config", data, "--split", "test")
    assert code == 0 and "--deep decodes every frame" in text  # headers only: it passes, and the doctor says so
    code, text = _run(capsys, "data", "inspect", "--config", data, "--split", "test", "--deep")
    assert code == 1 and f"{victim} (found by --deep" in text

    with pytest.warns(UserWarning, match="skipped while decoding"):
        code, text = _run(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data", data)
    assert code == 0 and "1 videos skipped while decoding" in text, text
    (run_dir,) = _run_dirs(tmp_path)
    skipped = (run_dir / "skipped_videos.txt").read_text().splitlines()
    assert len(skipped) == 1 and skipped[0].startswith(f"ucf_crime/test\tundecodable while decoding its windows: "
                                                       f"{victim}")
    metrics = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert metrics["ucf_crime"]["skipped_videos"] == 1 and metrics["ucf_crime"]["step1"]["num_videos"] == 3
    assert metrics["synth_ucf_A"]["step1"]["num_videos"] == 4  # the other test set went on
    assert victim.stem not in (run_dir / "evaluated_videos" / "ucf_crime.txt").read_text()
    assert [v.name for v in load_scores(run_dir / "scores" / "ucf_crime.npz")].count(victim.stem) == 0
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == ["synth_ucf_A", "ucf_crime"]  # no staging left
    assert sorted(p.name for p in (run_dir / "plots" / "ucf_crime").iterdir()) == ["curves.png", "timelines.png"]
    db = sqlite3.connect(tmp_path / "mlflow.db")
    counts = db.execute("select value from metrics where key='data/skipped_videos' order by timestamp").fetchall()
    assert counts[-1][0] == 1.0


@pytest.mark.slow
def test_a_truncated_video_under_the_default_names_the_file_and_the_option(tmp_path, monkeypatch, small_world,
                                                                           synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    data, victim = _with_truncated_target(tmp_path, small_world, synth_cache, "error")
    code, text = _run(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data", data)
    assert code == 2 and str(victim) in text and "on_bad_video: skip" in text and "--deep" in text
    assert "Traceback" not in text


# ------------------------------------------------------------------------------------------------- disk full
@pytest.mark.slow
def test_a_full_disk_names_the_path_and_keeps_what_was_written(tmp_path, monkeypatch, synth_cache, capsys):
    from copra_bench.tracking import results

    monkeypatch.chdir(tmp_path)
    written = []
    original = results.save_scores

    def fill_up(path, videos, **kwargs):
        if written:  # the second test set: half a file, then the disk is full
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return original(path, videos, **kwargs)

    monkeypatch.setattr(results, "save_scores", fill_up)
    code, text = _run(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data",
                      _data(tmp_path, synth_cache, batch_size=8))
    (run_dir,) = _run_dirs(tmp_path)
    assert code == 2 and "Traceback" not in text
    assert f"cannot write {(run_dir / 'scores' / 'synth_ucf_A.npz').absolute()}: No space left on device" in text
    assert "disk is full" in text and "local_dir" in text
    assert [p.name for p in (run_dir / "scores").iterdir()] == ["synth_ucf_B.npz"]  # no half file, no temporary
    assert len(load_scores(run_dir / "scores" / "synth_ucf_B.npz")) == 4 and (run_dir / "config.yaml").is_file()


def test_a_failed_rewrite_leaves_the_previous_file(tmp_path, monkeypatch):
    from copra_bench.errors import OutputWriteError
    from copra_bench.tracking.results import write_text_atomic

    target = write_text_atomic(tmp_path / "metrics.json", '{"good": 1}')

    def half_then_full(tmp):
        tmp.write_text('{"hal')
        raise OSError(errno.ENOSPC, "No space left on device")

    from copra_bench.tracking.results import write_atomic

    with pytest.raises(OutputWriteError, match=f"cannot write {target}: No space left"):
        write_atomic(target, half_then_full)
    assert json.loads(target.read_text()) == {"good": 1} and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# ------------------------------------------------------------------------------------- sync and evaluate later
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synth_cache):
    """One short COPRA fit + test whose store is then deleted (the store went away): ``(folder, run dir)``."""
    folder = tmp_path_factory.mktemp("trained_run")
    data = _yaml(folder / "data.yaml", small_cross_domain(synth_cache, frames_per_window=4, batch_size=1,
                                                            test_batch_size=8))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["fit", "--config", MAIN, "--data", data, "--model.init_args.epochs", "1",
                     "--trainer.limit_train_batches", "2", "--trainer.log_every_n_steps", "1", *QUICK]) == 0
    (run_dir,) = _run_dirs(folder)
    (folder / "mlflow.db").unlink()
    return folder, run_dir


def _store(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db)


@pytest.mark.slow
def test_sync_uploads_a_run_whose_store_went_away_once(trained_run, synth_cache, tmp_path, capsys):
    _, run_dir = trained_run
    uri = f"sqlite:///{tmp_path / 'new.db'}"
    code, text = _run(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
    assert code == 0 and "synced" in text
    db = _store(tmp_path / "new.db")
    (run_id, name, status, artifact_uri), = db.execute(
        "select run_uuid, name, status, artifact_uri from runs").fetchall()
    # the run's name is in its run.json (the logger writes it); a copy without one is named after its folder
    record = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    assert status == "FINISHED" and name == record.get("run_name", run_dir.name)
    params = dict(db.execute("select key, value from params where run_uuid=?", (run_id,)).fetchall())
    assert params["model.class_path"] == "copra_bench.copra.COPRA" and params["model.init_args.epochs"] == "1"
    history = db.execute("select step from metrics where key='train/lr' order by step").fetchall()
    local = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [s for (s,) in history] == [r["step"] for r in local if r.get("train/lr") is not None]
    assert len(history) > 1
    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    auc = db.execute("select value from metrics where key='test/synth_ucf_B/step1/auc'").fetchall()
    assert auc == [(pytest.approx(results["synth_ucf_B"]["step1"]["auc"]),)]
    artifacts = Path(artifact_uri.replace("file://", ""))
    assert sorted(p.name for p in (artifacts / "scores").iterdir()) == ["synth_ucf_A.npz", "synth_ucf_B.npz"]
    assert (artifacts / "metrics.json").read_bytes() == (run_dir / "metrics.json").read_bytes()
    assert (artifacts / "config.yaml").is_file() and not (artifacts / "checkpoints").exists()

    before = {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in ("runs", "metrics",
                                                                                             "params", "tags")}
    code, text = _run(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
    assert code == 0 and "0 params, 0 metric values, 0 artifacts uploaded" in text
    assert before == {table: db.execute(f"select count(*) from {table}").fetchone()[0] for table in before}

    # What the local copy gained since (logged while the store was unreachable) is all a third sync sends
    metrics_log = (run_dir / "metrics.jsonl").read_text()
    try:
        (run_dir / "metrics.jsonl").write_text(metrics_log + json.dumps({"time": 1.0, "step": 99, "x/late": 0.5})
                                               + "\n")
        (run_dir / "late.txt").write_text("written later\n")
        code, text = _run(capsys, "sync", "--run-dir", str(run_dir), "--tracking-uri", uri)
        assert code == 0 and "0 params, 1 metric values, 1 artifacts uploaded" in text
        assert db.execute("select value, step from metrics where key='x/late'").fetchall() == [(0.5, 99)]
        assert (artifacts / "late.txt").read_text() == "written later\n"
    finally:
        (run_dir / "metrics.jsonl").write_text(metrics_log)
        (run_dir / "late.txt").unlink(missing_ok=True)


@pytest.mark.slow
def test_sync_uploads_a_run_made_with_no_store(tmp_path, monkeypatch, synth_cache, capsys):
    monkeypatch.chdir(tmp_path)
    code, _ = _run(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data",
                   _data(tmp_path, synth_cache, batch_size=8),
                   "--trainer.logger", "false", "--trainer.default_root_dir", "outputs/no_store")
    assert code == 0 and not (tmp_path / "mlflow.db").exists()
    run_dir = tmp_path / "outputs" / "no_store"
    code, text = _run(capsys, "sync", "--run-dir", str(run_dir))
    assert code == 0 and "synced" in text
    db = _store(tmp_path / "mlflow.db")
    (run_id, status), = db.execute("select run_uuid, status from runs").fetchall()
    assert status == "FINISHED"
    params = dict(db.execute("select key, value from params").fetchall())
    assert params["model.class_path"] == "copra_bench.baselines.FrozenVLM"
    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    auc = dict(db.execute("select key, value from metrics").fetchall())["test/synth_ucf_A/step1/auc"]
    assert auc == pytest.approx(results["synth_ucf_A"]["step1"]["auc"])
    assert main(["evaluate", "--run", run_id, "--bootstrap-samples", "20"]) == 0  # the store's copy is a complete run: evaluate reads it


@pytest.mark.slow
def test_evaluate_reads_the_tracked_copy_when_the_local_scores_folder_is_empty(trained_run, tmp_path,
                                                                               monkeypatch, capsys):
    _, run_dir = trained_run
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["sync", "--run-dir", str(run_dir), "--tracking-uri", uri]) == 0
    run_id = json.loads((run_dir / "sync.json").read_text())[uri]
    capsys.readouterr()
    moved = tmp_path / "scores_moved"
    (run_dir / "scores").rename(moved)
    (run_dir / "scores").mkdir()  # present but empty: a copy in progress, a cleaned scratch disk
    try:
        code, text = _run(capsys, "evaluate", "--run", run_id, "--tracking-uri", uri, "--bootstrap-samples", "20")
    finally:
        (run_dir / "scores").rmdir()
        moved.rename(run_dir / "scores")
    results = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert code == 0 and f"{100 * results['synth_ucf_B']['step1']['auc']:7.2f}" in text


# ------------------------------------------------------------------------------------------------ the seek-read
def test_training_clips_read_by_seeking_are_the_frames_of_a_full_decode(small_world, tmp_path, monkeypatch):
    from copra_bench.datamodules import SyntheticUCFCrimeDataModule, video_io
    from copra_bench.datamodules.datasets import ClipDataset, clip_indices
    from copra_bench.datamodules.video_io import read_frames, read_frames_seeking

    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.prepare_data()
    dm.setup("fit")
    clips = ClipDataset(dm.train_records, frames_per_clip=6, regime="sparse", window_seconds=2.0, frame_size=None,
                        train=True)
    for index, record in enumerate(dm.train_records):
        item = clips[index]
        assert np.array_equal(item["frames"].numpy(), read_frames(record.path, item["frame_indices"].numpy()))

    # A longer video with a keyframe every 12 frames, where seeking skips most of the decode
    long_video = tmp_path / "long.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(long_video), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "12", "bf": "2", "crf": "18"})
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(300):
            frame = np.full((32, 32, 3), i % 256, dtype=np.uint8) + rng.integers(0, 8, (32, 32, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    jitter = torch.Generator().manual_seed(0)
    full_decodes = []
    monkeypatch.setattr(video_io, "read_frames", lambda *a, **k: full_decodes.append(a) or read_frames(*a, **k))
    for _ in range(3):
        indices = clip_indices(300, k=8, regime="sparse", fps=25.0, seconds=2.0, jitter=jitter)
        assert np.array_equal(read_frames_seeking(long_video, indices), read_frames(long_video, indices))
    assert not full_decodes  # it sought: no fall-back to decoding from frame 0


def test_a_checkpoint_write_on_a_full_disk_names_the_file_and_keeps_the_last_one(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileOpener

    from copra_bench.errors import OutputWriteError
    from copra_bench.tracking.checkpoint_io import NamedCheckpointIO

    trainer = yaml.safe_load((CONFIGS / "trainer" / "default.yaml").read_text())
    assert {"class_path": "copra_bench.tracking.checkpoint_io.NamedCheckpointIO"} in trainer["plugins"]
    last = tmp_path / "checkpoints" / "last.ckpt"
    plugin = NamedCheckpointIO()
    plugin.save_checkpoint({"weights": torch.ones(3)}, last)
    write = LocalFileOpener.write

    def half_then_full(self, data):
        write(self, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(LocalFileOpener, "write", half_then_full)
    with pytest.raises(OutputWriteError, match=f"cannot write {last}: No space left on device. The disk is full"):
        plugin.save_checkpoint({"weights": torch.zeros(1000)}, last)
    monkeypatch.undo()
    assert torch.equal(torch.load(last)["weights"], torch.ones(3)) and list(last.parent.iterdir()) == [last]


def test_a_checkpoint_with_a_non_finite_tensor_is_never_written():
    from copra_bench.baselines import PromptTuning

    from copra_bench.rl.engine import TrainingError

    method = PromptTuning(backbone="tiny-qwen2-vl", backbone_dtype="float32", num_virtual_tokens=2)
    state = {k: v.clone() for k, v in method.state_dict().items()}
    method.on_save_checkpoint({"state_dict": dict(state), "optimizer_states": []})  # finite: written
    trained = next(k for k in state if k not in method.frozen_state_keys())
    state[trained][0] = float("nan")
    with pytest.raises(TrainingError, match=rf"checkpoint not written: 1 of \d+ tensors are not finite \(e.g. "
                                            rf"{trained}\).*last checkpoint on disk is kept"):
        method.on_save_checkpoint({"state_dict": state, "optimizer_states": []})
    adam = {"state": {0: {"exp_avg_sq": torch.tensor([float("inf")])}}, "param_groups": []}
    with pytest.raises(TrainingError, match="optimizer.0.state.0.exp_avg_sq"):
        method.on_save_checkpoint({"state_dict": method.state_dict(), "optimizer_states": [adam]})


def test_videos_skipped_by_loader_workers_reach_the_evaluator(small_world, tmp_path):
    """DataLoader workers share no memory with the main process: the skipped videos travel through the ledger."""
    from copra_bench.datamodules import UCFCrimeDataModule

    copy = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    victim = min((copy / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))
    truncate_keeping_header(victim)
    dm = UCFCrimeDataModule(root=str(copy), annotations="release", window_seconds=2.0, frames_per_window=4,
                            on_bad_video="skip", num_workers=2)
    dm.setup("test")
    (loader,) = dm.test_dataloader()
    seen = {int(v) for batch in loader for v in batch["video_index"]}
    index = next(i for i, r in enumerate(dm.test_sets[0].records) if r.path == victim)
    assert seen >= set(range(4)) - {index}  # the other videos went on
    (problem,) = dm.decode_failures()["ucf_crime"].values()
    assert list(dm.decode_failures()["ucf_crime"]) == [index] and str(victim) in problem

"""Faults of the data, through the CLI as a user meets them (issue 14): a test video that probes fine but is
truncated, under ``on_bad_video: skip`` and the default; and training clips read by seeking."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from copra_bench.evaluation.assembly import load_scores

from .conftest import copy_synthetic_ucf, small_cross_domain
from .fault_runs import (
    FROZEN,
    MAIN,
    run_cli,
    run_dirs,
    truncate_keeping_header,
    write_yaml,
)


def _with_truncated_target(tmp_path: Path, small_world: dict, synth_cache: Path, on_bad_video: str) -> tuple[str, Path]:
    copy = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    victim = min((copy / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))
    truncate_keeping_header(victim)
    data = small_cross_domain(synth_cache, frames_per_window=4, on_bad_video=on_bad_video)
    data["init_args"]["target"] = {"class_path": "copra_bench.datamodules.UCFCrimeDataModule",
                                   "init_args": {"root": str(copy), "annotations": "release"}}
    return write_yaml(tmp_path / f"data_{on_bad_video}.yaml", data), victim


@pytest.mark.slow
def test_a_truncated_video_is_skipped_listed_and_the_rest_goes_on(tmp_path, monkeypatch, small_world, synth_cache,
                                                                  capsys):
    monkeypatch.chdir(tmp_path)
    data, victim = _with_truncated_target(tmp_path, small_world, synth_cache, "skip")
    code, text = run_cli(capsys, "data", "inspect", "--config", data, "--split", "test")
    assert code == 0 and "--deep decodes every frame" in text  # headers only: it passes, and the doctor says so
    code, text = run_cli(capsys, "data", "inspect", "--config", data, "--split", "test", "--deep")
    assert code == 1 and f"{victim} (found by --deep" in text

    with pytest.warns(UserWarning, match="skipped while decoding"):
        code, text = run_cli(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data", data)
    assert code == 0 and "1 videos skipped while decoding" in text, text
    (run_dir,) = run_dirs(tmp_path)
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
    code, text = run_cli(capsys, "test", "--config", MAIN, "--model", FROZEN, "--data", data)
    assert code == 2 and str(victim) in text and "on_bad_video: skip" in text and "--deep" in text
    assert "Traceback" not in text



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

"""Bad input and decoding of the DataModules: missing roots and videos, truncated files, empty splits, one decode per
test video, resizing, mixed resolutions, seeking (the contract every DataModule passes is in test_datamodules.py)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from copra_bench.datamodules import (
    SyntheticUCFCrimeDataModule,
    UCFCrimeDataModule,
)
from copra_bench.datamodules.base import VADDataModule
from copra_bench.datamodules.video_io import read_frames
from copra_bench.errors import DataError
from copra_bench.windows import num_windows

from .conftest import copy_synthetic_ucf


def test_missing_root_names_path_and_how_to_fix(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*does not exist.*data synth"):
        UCFCrimeDataModule(root=str(tmp_path / "nowhere"))


def test_missing_and_corrupt_videos_are_all_listed(small_world, tmp_path):

    copy = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    train = sorted((copy / "Training_Normal_Videos_Anomaly").glob("*.mp4"))
    train[0].unlink()
    train[1].write_bytes(b"not a video at all")
    with pytest.raises(DataError) as err:
        UCFCrimeDataModule(root=str(copy), annotations="release", frame_size=None).load_split("train")
    message = str(err.value)
    assert "2 of 6 videos cannot be read" in message  # 3 normal + 3 abnormal training videos
    assert f"missing: {copy}" in message and train[0].stem in message
    assert f"undecodable: {train[1]}" in message


def test_truncated_video_fails_naming_the_file(small_world, tmp_path):

    copy = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    victim = sorted((copy / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    reader = UCFCrimeDataModule(root=str(copy), annotations="release", frame_size=None, window_seconds=2.0,
                                frames_per_window=4)
    with pytest.raises(DataError, match=victim.stem):
        reader.setup("test")
        for loader in reader.test_dataloader():
            for _ in loader:
                pass


def test_empty_split_is_an_error(small_world, tmp_path):

    copy = copy_synthetic_ucf(small_world, tmp_path / "ucf")
    (copy / "Anomaly_Detection_splits" / "Anomaly_Test.txt").write_text("\n")
    with pytest.raises(DataError, match="test split is empty"):
        UCFCrimeDataModule(root=str(copy), annotations="release").load_split("test")


def test_each_test_video_is_decoded_once_per_pass(small_world, monkeypatch):
    from copra_bench.datamodules import video_io

    opened: list[str] = []
    original = video_io._decode

    def counting(path, needed=None):
        opened.append(path.name)
        yield from original(path, needed)

    monkeypatch.setattr(video_io, "_decode", counting)
    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.setup("test")
    windows = sum(batch["frames"].shape[0] for batch in dm.test_dataloader()[0])
    records = dm.test_sets[0].records
    assert windows == sum(num_windows(r.num_frames, stride=16) for r in records) > len(records)
    assert sorted(opened) == sorted(r.path.name for r in records)


def test_resize_keeps_aspect_ratio():
    from copra_bench.datamodules.video_io import output_size

    assert output_size(320, 240, None) == (320, 240)
    assert output_size(320, 240, 120) == (160, 120)
    assert output_size(240, 320, 120) == (120, 160)
    assert output_size(64, 64, 32) == (32, 32)
    assert output_size(1280, 720, 224) == (398, 224)  # 398.2 rounded to an even width


def test_batches_of_mixed_resolutions_stay_lists():
    items = [{"frames": torch.zeros(2, 4, 6, 3, dtype=torch.uint8), "label": 0},
             {"frames": torch.zeros(2, 8, 6, 3, dtype=torch.uint8), "label": 1}]
    batch = VADDataModule.collate(items)
    assert isinstance(batch["frames"], list) and batch["label"].tolist() == [0, 1]
    same = VADDataModule.collate([{"frames": torch.zeros(2, 4, 6, 3), "label": 0}] * 3)
    assert same["frames"].shape == (3, 2, 4, 6, 3)


@pytest.mark.parametrize("suffix, gop", [(".mp4", 10), (".avi", 25), (".mp4", 250)])
def test_seek_read_gives_the_frames_of_a_sequential_read(tmp_path, suffix, gop):
    import av

    from copra_bench.datamodules.video_io import read_frames_seeking

    path = tmp_path / f"v{suffix}"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb", rate=8, options={"crf": "0", "g": str(gop)})
        stream.width = stream.height = 32
        stream.pix_fmt = "rgb24"
        for _ in range(150):
            frame = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    indices = np.array([0, 37, 90, 149, 5, 64, 64, 120, 21])
    np.testing.assert_array_equal(read_frames_seeking(path, indices), read_frames(path, indices))
    np.testing.assert_array_equal(read_frames_seeking(path, indices, size=16), read_frames(path, indices, size=16))

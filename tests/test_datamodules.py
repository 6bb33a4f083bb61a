"""Contract tests every VAD DataModule passes, run on synthetic data in its own layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from copra_bench.datamodules import CrossDomainDataModule, SyntheticUCFCrimeDataModule, UCFCrimeDataModule
from copra_bench.datamodules.base import VADDataModule
from copra_bench.datamodules.video_io import read_frames
from copra_bench.errors import DataError
from copra_bench.windows import num_windows, window_frame_indices


class DataModuleContract:
    """What every DataModule must guarantee. Subclasses provide the ``datamodule`` fixture."""

    @pytest.fixture()
    def datamodule(self) -> VADDataModule:
        raise NotImplementedError

    def test_train_items_are_k_frames_with_video_label(self, datamodule):
        datamodule.setup("fit")
        assert datamodule.train_records and datamodule.val_records
        assert {r.label for r in datamodule.val_records} == {0, 1}, "validation is stratified"
        names = {r.name for r in datamodule.train_records} & {r.name for r in datamodule.val_records}
        assert not names, "train and validation videos overlap"
        batch = next(iter(datamodule.train_dataloader()))
        k = datamodule.frames_per_window
        assert batch["frames"].dtype == torch.uint8 and batch["frames"].shape[1] == k
        assert batch["frames"].shape[-1] == 3 and set(batch["label"].tolist()) <= {0, 1}

    @pytest.mark.parametrize("regime", ["sparse", "dense"])
    def test_training_regimes_sample_inside_the_video(self, datamodule, regime):
        datamodule.train_regime = regime
        datamodule.setup("fit")
        ds = datamodule._clips(datamodule.train_records, train=True)
        for i in range(len(ds)):
            item = ds[i]
            record = datamodule.train_records[i]
            idx = item["frame_indices"].numpy()
            assert idx.min() >= 0 and idx.max() < record.num_frames
            if regime == "dense":
                assert idx.max() - idx.min() <= round(datamodule.window_spec.seconds * record.fps)

    @pytest.mark.parametrize("workers", [0, 2])
    def test_test_windows_cover_every_video_once_and_match_decoding(self, datamodule, workers):
        datamodule.num_workers = workers
        for test_set in datamodule.test_sets:
            loader = datamodule.test_dataloader()[datamodule.test_sets.index(test_set)]
            seen: dict[tuple[int, int], torch.Tensor] = {}
            for batch in loader:
                for j, key in enumerate(zip(batch["video_index"].tolist(), batch["window_index"].tolist())):
                    assert key not in seen, f"window {key} read twice"
                    seen[key] = batch["frames"][j]
            for v, record in enumerate(test_set.records):
                assert record.gt is not None and record.gt.shape == (record.num_frames,)
                n_win = num_windows(record.num_frames, stride=test_set.window_spec.stride)
                assert {w for (vv, w) in seen if vv == v} == set(range(n_win))
            # streamed windows hold exactly the frames a direct decode of the window indices gives
            record = test_set.records[0]
            indices = window_frame_indices(record.num_frames, fps=record.fps, spec=test_set.window_spec)
            for w in (0, indices.shape[0] // 2, indices.shape[0] - 1):
                direct = read_frames(record.path, indices[w], size=datamodule.frame_size)
                np.testing.assert_array_equal(seen[(0, w)].numpy(), direct)


class TestSyntheticUCFCrime(DataModuleContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        return SyntheticUCFCrimeDataModule(domain="A", **small_world)

    def test_reader_recovers_the_generated_ground_truth(self, datamodule):
        datamodule.setup("test")
        meta = json.loads((datamodule.root / "synthetic_meta.json").read_text())
        truth = {v["name"]: v for v in meta["videos"] if v["split"] == "test"}
        records = datamodule.test_sets[0].records
        assert {r.name for r in records} == set(truth)
        for record in records:
            expected = np.zeros(truth[record.name]["num_frames"], np.uint8)
            for start, end, _ in truth[record.name]["events"]:
                expected[start:end] = 1
            np.testing.assert_array_equal(record.gt, expected)
            assert record.label == truth[record.name]["label"] and record.fps == meta["spec"]["fps"]


class TestCrossDomain(DataModuleContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        args = {k: small_world[k] for k in ("window_seconds", "frames_per_window", "batch_size", "val_fraction")}
        world = {k: v for k, v in small_world.items() if k not in args}
        return CrossDomainDataModule(SyntheticUCFCrimeDataModule(domain="A", **world),
                                     SyntheticUCFCrimeDataModule(domain="B", **world), frame_size=None, **args)

    def test_trains_on_source_tests_on_target_then_source(self, datamodule):
        datamodule.setup("fit")
        assert all(r.path.is_relative_to(datamodule.source.root) for r in datamodule.train_records)
        assert [ts.name for ts in datamodule.test_sets] == ["synth_ucf_B", "synth_ucf_A"]
        assert all(ts.window_spec == datamodule.window_spec for ts in datamodule.test_sets)


def test_missing_root_names_path_and_how_to_fix(tmp_path):
    with pytest.raises(DataError, match=r"nowhere.*does not exist.*data synth"):
        UCFCrimeDataModule(root=str(tmp_path / "nowhere"))


def test_missing_and_corrupt_videos_are_all_listed(small_world, tmp_path):
    import shutil

    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.prepare_data()
    copy = tmp_path / "ucf"
    shutil.copytree(dm.root, copy)
    train = sorted((copy / "Training_Normal_Videos_Anomaly").glob("*.mp4"))
    train[0].unlink()
    train[1].write_bytes(b"not a video at all")
    with pytest.raises(DataError) as err:
        UCFCrimeDataModule(root=str(copy), frame_size=None).load_split("train")
    message = str(err.value)
    assert "2 of 6 videos cannot be read" in message  # 3 normal + 3 abnormal training videos
    assert f"missing: {copy}" in message and train[0].stem in message
    assert f"undecodable: {train[1]}" in message


def test_truncated_video_fails_naming_the_file(small_world, tmp_path):
    import shutil

    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.prepare_data()
    copy = tmp_path / "ucf"
    shutil.copytree(dm.root, copy)
    victim = sorted((copy / "Testing_Normal_Videos_Anomaly").glob("*.mp4"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    reader = UCFCrimeDataModule(root=str(copy), frame_size=None, window_seconds=2.0, frames_per_window=4)
    with pytest.raises(DataError, match=victim.stem):
        reader.setup("test")
        for loader in reader.test_dataloader():
            for _ in loader:
                pass


def test_empty_split_is_an_error(small_world, tmp_path):
    import shutil

    dm = SyntheticUCFCrimeDataModule(domain="A", **small_world)
    dm.prepare_data()
    copy = tmp_path / "ucf"
    shutil.copytree(dm.root, copy)
    (copy / "Anomaly_Detection_splits" / "Anomaly_Test.txt").write_text("\n")
    with pytest.raises(DataError, match="test split is empty"):
        UCFCrimeDataModule(root=str(copy)).load_split("test")


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

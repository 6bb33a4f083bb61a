"""Contract tests every VAD DataModule passes, run on synthetic data in its own layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from copra_bench.datamodules import (
    CrossDomainDataModule, MultiSourceDataModule, SyntheticShanghaiTechDataModule, SyntheticUCFCrimeDataModule,
    SyntheticXDViolenceDataModule,
)
from copra_bench.datamodules.base import VADDataModule
from copra_bench.datamodules.datasets import WindowDataset
from copra_bench.datamodules.video_io import read_frames
from copra_bench.errors import DataError
from copra_bench.windows import num_windows, uniform_indices, window_frame_indices


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

    @pytest.mark.parametrize("regime", ["sparse", "dense", "chunked"])
    def test_training_regimes_sample_inside_the_video(self, datamodule, regime):
        datamodule.train_regime = regime
        datamodule.train_chunk_seconds = 2.5
        datamodule.setup("fit")
        ds = datamodule._clips(datamodule.train_records, train=True)
        for i in range(len(ds)):
            item = ds[i]
            record = datamodule.train_records[i]
            idx = item["frame_indices"].numpy()
            assert idx.min() >= 0 and idx.max() < record.num_frames
            if regime == "dense":
                assert idx.max() - idx.min() <= round(datamodule.window_spec.seconds * record.fps)
            if regime == "chunked":  # inside one chunk of the fixed grid [j*C, (j+1)*C)
                size = round(2.5 * record.fps)
                assert idx.min() // size == idx.max() // size

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


    @pytest.mark.parametrize("unit, workers", [("chunk", 0), ("video", 2)])
    def test_conditioning_units_carry_the_frames_of_their_unit(self, datamodule, unit, workers):
        datamodule.num_workers = workers
        datamodule.set_conditioning(unit, chunk_seconds=2.5)
        test_set = datamodule.test_sets[0]
        seen = {}
        for batch in datamodule.test_dataloader()[0]:
            assert isinstance(batch["condition_frames"], list), "condition frames are never stacked"
            for j, key in enumerate(zip(batch["video_index"].tolist(), batch["window_index"].tolist())):
                seen[key] = (int(batch["condition_key"][j]), batch["condition_frames"][j])
        assert len(seen) == sum(num_windows(r.num_frames, stride=16) for r in test_set.records)
        for (v, w), (key, frames) in seen.items():
            record = test_set.records[v]
            size = round(2.5 * record.fps)
            expected_key = 0 if unit == "video" else (w * 16) // size
            assert key == expected_key
            start, end = (0, record.num_frames) if unit == "video" else (key * size,
                                                                         min((key + 1) * size, record.num_frames))
            direct = read_frames(record.path, uniform_indices(start, end, datamodule.frames_per_window),
                                 size=datamodule.frame_size)
            np.testing.assert_array_equal(frames.numpy(), direct)

    def test_windows_of_one_unit_share_one_condition_tensor(self, datamodule):
        test_set = datamodule.test_sets[0]
        dataset = WindowDataset(test_set.records, spec=test_set.window_spec, frame_size=None, unit="chunk",
                                chunk_seconds=2.5)
        by_unit: dict[tuple[int, int], set[int]] = {}
        for item in dataset:
            by_unit.setdefault((item["video_index"], item["condition_key"]), set()).add(id(item["condition_frames"]))
        assert by_unit and all(len(ids) == 1 for ids in by_unit.values())
        assert any(key > 0 for _, key in by_unit), "the videos span more than one chunk"

    def test_without_conditioning_items_carry_no_condition(self, datamodule):
        batch = next(iter(datamodule.test_dataloader()[0]))
        assert "condition_frames" not in batch and "condition_key" not in batch
        with pytest.raises(DataError, match="conditioning unit"):
            datamodule.set_conditioning("scene")

    def test_protocol_settings_are_flat_and_complete(self, datamodule):
        settings = datamodule.protocol_settings()
        assert all(isinstance(v, (str, int, float, bool)) for v in settings.values())
        for key in ("gt_end_inclusive", "annotation_source", "frame_size", "window_seconds", "window_stride",
                    "frames_per_window", "train_regime", "on_bad_video", "source"):
            assert key in settings, key
        assert settings["window_stride"] == datamodule.window_spec.stride
        assert settings["frames_per_window"] == datamodule.frames_per_window


def _expected_gt(video: dict) -> np.ndarray:
    expected = np.zeros(video["num_frames"], np.uint8)
    for start, end, _ in video["events"]:
        expected[start:end] = 1
    return expected


class SyntheticReaderContract(DataModuleContract):
    """A reader on the synthetic world in its own layout recovers exactly what the generator wrote."""

    def test_reader_recovers_the_generated_ground_truth(self, datamodule):
        datamodule.setup("test")
        meta = json.loads((datamodule.root / "synthetic_meta.json").read_text())
        truth = {v["name"]: v for v in meta["videos"] if v["split"] == "test"}
        records = datamodule.test_sets[0].records
        assert {r.name for r in records} == set(truth)
        for record in records:
            np.testing.assert_array_equal(record.gt, _expected_gt(truth[record.name]))
            assert record.label == truth[record.name]["label"] and record.fps == meta["spec"]["fps"]
            assert record.num_frames == truth[record.name]["num_frames"]
            assert record.path == datamodule.root / truth[record.name]["relpath"]
        datamodule.setup("fit")
        train = {v["name"]: v["label"] for v in meta["videos"] if v["split"] == "train"}
        assert {r.name: r.label for r in datamodule.train_records + datamodule.val_records} == train


class TestSyntheticUCFCrime(SyntheticReaderContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        return SyntheticUCFCrimeDataModule(domain="A", **small_world)


class TestSyntheticUCFCrimeFrameFolders(SyntheticReaderContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        return SyntheticUCFCrimeDataModule(domain="A", frames=True, **small_world)

    def test_videos_are_frame_folders(self, datamodule):
        datamodule.setup("test")
        record = datamodule.test_sets[0].records[0]
        assert record.path.is_dir() and (record.path / "000001.jpg").is_file()
        assert datamodule.protocol_settings()["source"] == "frames"


class TestSyntheticXDViolence(SyntheticReaderContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        return SyntheticXDViolenceDataModule(domain="B", **small_world)

    def test_names_give_multi_label_codes(self, datamodule):
        datamodule.setup("test")
        for record in datamodule.test_sets[0].records:
            assert "_label_" in record.name
            assert record.classes == (("A",) if record.label == 0 else (record.name.rsplit("_label_")[1][:2],))


class TestSyntheticShanghaiTech(SyntheticReaderContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        return SyntheticShanghaiTechDataModule(domain="C", **small_world)

    def test_release_mixes_videos_and_frame_folders(self, datamodule):
        datamodule.setup("test")
        kinds = {r.label: r.path for r in datamodule.test_sets[0].records}
        assert kinds[1].is_dir() and kinds[1].parent.name == "frames" and (kinds[1] / "000.jpg").is_file()
        assert kinds[0].suffix == ".avi"


class TestCrossDomain(DataModuleContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        args = {k: small_world[k] for k in ("window_seconds", "frames_per_window", "batch_size", "val_fraction")}
        world = {k: v for k, v in small_world.items() if k not in args}
        return CrossDomainDataModule(SyntheticUCFCrimeDataModule(domain="A", **world),
                                     SyntheticXDViolenceDataModule(domain="B", **world), frame_size=None, **args)

    def test_trains_on_source_tests_on_target_then_source(self, datamodule):
        datamodule.setup("fit")
        assert all(r.path.is_relative_to(datamodule.source.root) for r in datamodule.train_records)
        assert [ts.name for ts in datamodule.test_sets] == ["synth_xd_B", "synth_ucf_A"]
        assert all(ts.window_spec == datamodule.window_spec for ts in datamodule.test_sets)

    def test_conditioning_and_settings_reach_both_test_sets(self, datamodule):
        datamodule.set_conditioning("video")
        assert datamodule.source.conditioning_unit == datamodule.target.conditioning_unit == "video"
        settings = datamodule.protocol_settings()
        assert settings["dataset"] == "synth_ucf_A_to_synth_xd_B"
        assert settings["annotation_source"] == "synth_ucf_A:official,synth_xd_B:official"


class TestMultiSource(DataModuleContract):
    @pytest.fixture()
    def datamodule(self, small_world):
        args = {k: small_world[k] for k in ("window_seconds", "frames_per_window", "batch_size", "val_fraction")}
        world = {k: v for k, v in small_world.items() if k not in args}
        return MultiSourceDataModule([SyntheticUCFCrimeDataModule(domain="A", **world),
                                      SyntheticXDViolenceDataModule(domain="B", **world)],
                                     SyntheticShanghaiTechDataModule(domain="C", **world), test_on_sources=True,
                                     **args)

    def test_trains_on_all_sources_tests_on_the_held_out_one(self, datamodule):
        datamodule.setup("fit")
        roots = [s.root for s in datamodule.sources]
        for root in roots:
            assert any(r.path.is_relative_to(root) for r in datamodule.train_records)
            assert any(r.path.is_relative_to(root) for r in datamodule.val_records)
        assert len(datamodule.train_records) + len(datamodule.val_records) == 12
        assert [ts.name for ts in datamodule.test_sets] == ["synth_sh_C", "synth_ucf_A", "synth_xd_B"]
        assert datamodule.name == "synth_ucf_A+synth_xd_B_to_synth_sh_C"

    def test_a_source_cannot_be_the_target(self, small_world):
        a = SyntheticUCFCrimeDataModule(domain="A", **small_world)
        with pytest.raises(DataError, match="must all differ"):
            MultiSourceDataModule([a, SyntheticXDViolenceDataModule(domain="B", **small_world)],
                                  SyntheticUCFCrimeDataModule(domain="A", **small_world))

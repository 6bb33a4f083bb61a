"""The DataModule base every VAD dataset derives from.

A concrete dataset only says how to list its videos (:meth:`VADDataModule.load_split`); the base owns everything
that must be identical for every method so comparisons are fair: the training clip regime, the held-out validation
videos, the dense test windows (:class:`~copra_bench.windows.WindowSpec`), frame sizes and loaders.
"""

from __future__ import annotations

import abc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, default_collate

from copra_bench.datamodules.datasets import ClipDataset, TrainRegime, WindowDataset
from copra_bench.datamodules.records import VideoRecord
from copra_bench.datamodules.video_io import probe_video
from copra_bench.errors import DataError, VideoDecodeError
from copra_bench.windows import WindowSpec

Split = Literal["train", "test"]


@dataclass
class TestSet:
    """A named set of test videos with frame-level ground truth; metrics are reported per test set."""

    name: str
    records: list[VideoRecord]
    window_spec: WindowSpec


class VADDataModule(L.LightningDataModule, abc.ABC):
    """Base of all video anomaly detection DataModules.

    Args:
        frames_per_window: ``K``, frames per training clip and per test window (8 in the paper).
        window_seconds: Length of a test window and of a dense training segment.
        window_stride: Frames between test window centres (16 in the field).
        frame_size: Decoded frames are resized so their shorter side is ``frame_size``, aspect ratio kept
            (``None``: native size, the default). The VLM's processor then applies its own documented resize to its
            patch grid; a smaller decode size saves memory and time but is a protocol choice (recorded with the run).
        train_regime: ``sparse`` (K frames over the whole video) or ``dense`` (K frames over one 10 s segment).
        val_fraction: Share of training videos held out (stratified by label) for validation.
        batch_size: Training/validation clips per batch.
        test_batch_size: Test windows per batch (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of the train/validation partition.
        gt_end_inclusive: Whether annotated end frames are part of the event (see ``intervals_to_gt``).
        fps: Override the fps read from the containers (e.g. for frame folders).
    """

    def __init__(self, *, frames_per_window: int = 8, window_seconds: float = 10.0, window_stride: int = 16,
                 frame_size: int | None = None, train_regime: TrainRegime = "sparse", val_fraction: float = 0.1,
                 batch_size: int = 8, test_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 gt_end_inclusive: bool = False, fps: float | None = None) -> None:
        super().__init__()
        if train_regime not in ("sparse", "dense"):
            raise DataError(f"train_regime must be 'sparse' or 'dense', got {train_regime!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.window_spec = WindowSpec(stride=window_stride, seconds=window_seconds,
                                      frames_per_window=frames_per_window)
        self.frames_per_window = frames_per_window
        self.frame_size = frame_size
        self.train_regime = train_regime
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.test_batch_size = test_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.gt_end_inclusive = gt_end_inclusive
        self.fps = fps
        self.train_records: list[VideoRecord] = []
        self.val_records: list[VideoRecord] = []
        self._test_sets: list[TestSet] | None = None

    # ----------------------------------------------------------------------------------------- what a dataset writes
    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short dataset name used in metric keys and run names (``ucf_crime``, ``synthA``...)."""

    @abc.abstractmethod
    def load_split(self, split: Split) -> list[VideoRecord]:
        """All videos of a split with label and classes; test videos with frame-level ``gt``.

        Implementations call :meth:`probe` to fill frame counts before building ground truth.
        """

    # ------------------------------------------------------------------------------------------------------ helpers
    def probe(self, records: list[VideoRecord]) -> list[VideoRecord]:
        """Fill ``num_frames`` and ``fps`` from each container; one error listing every unreadable file."""
        def check(record: VideoRecord) -> str | None:
            if not record.path.is_file():
                return f"missing: {record.path}"
            try:
                info = probe_video(record.path)
            except VideoDecodeError as err:
                return f"undecodable: {record.path} ({err})"
            record.num_frames = record.num_frames or info.num_frames
            record.fps = float(self.fps or info.fps)
            return None

        # Opening ~2000 containers is I/O bound (network file systems especially): a few threads.
        with ThreadPoolExecutor(max_workers=8) as pool:
            bad = [problem for problem in pool.map(check, records) if problem]
        if bad:
            shown = "\n  ".join(bad[:50]) + (f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else "")
            raise DataError(f"{self.name}: {len(bad)} of {len(records)} videos cannot be read:\n  {shown}\n"
                            "Restore these files (or remove them from the split list) and run again.")
        return records

    # ------------------------------------------------------------------------------------------------------- stages
    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.train_records:
            self.train_records, self.val_records = self._split_train(self.load_split("train"))
        if stage in ("test", "predict", None) and self._test_sets is None:
            self._test_sets = [TestSet(self.name, self.load_split("test"), self.window_spec)]

    def _split_train(self, records: list[VideoRecord]) -> tuple[list[VideoRecord], list[VideoRecord]]:
        if not records:
            raise DataError(f"{self.name}: the training split is empty")
        if self.val_fraction == 0:
            return records, []
        rng = np.random.default_rng(self.seed)
        val: list[VideoRecord] = []
        for label in (0, 1):  # stratified: both classes in validation whenever the training split has them
            group = [r for r in records if r.label == label]
            take = int(round(len(group) * self.val_fraction))
            if group and take == 0 and len(group) > 1:
                take = 1
            val += [group[i] for i in sorted(rng.permutation(len(group))[:take].tolist())]
        held = {id(r) for r in val}
        return [r for r in records if id(r) not in held], val

    @property
    def test_sets(self) -> list[TestSet]:
        """The named test sets, in test-dataloader order (call ``setup('test')`` first)."""
        if self._test_sets is None:
            self.setup("test")
        return self._test_sets  # type: ignore[return-value]

    # -------------------------------------------------------------------------------------------------- dataloaders
    def _clips(self, records: list[VideoRecord], *, train: bool) -> ClipDataset:
        return ClipDataset(records, frames_per_clip=self.frames_per_window, regime=self.train_regime,
                           window_seconds=self.window_spec.seconds, frame_size=self.frame_size, train=train)

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """Batch items; frames of different resolutions (e.g. XD-Violence at native size) stay a list."""
        shapes = {tuple(item["frames"].shape) for item in items}
        if len(shapes) == 1:
            return default_collate(items)
        frames = [item.pop("frames") for item in items]
        batch = default_collate(items)
        batch["frames"] = frames
        return batch

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._clips(self.train_records, train=True), batch_size=self.batch_size, shuffle=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          collate_fn=self.collate)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_records:
            return []
        return DataLoader(self._clips(self.val_records, train=False), batch_size=self.batch_size,
                          num_workers=self.num_workers, collate_fn=self.collate)

    def test_dataloader(self) -> list[DataLoader]:
        return [DataLoader(WindowDataset(ts.records, spec=ts.window_spec, frame_size=self.frame_size),
                           batch_size=self.test_batch_size, num_workers=self.num_workers, collate_fn=self.collate)
                for ts in self.test_sets]

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

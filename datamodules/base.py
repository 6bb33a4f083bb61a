"""The DataModule base every VAD dataset derives from.

A concrete dataset only says how to list its videos (:meth:`VADDataModule.load_split`); the base owns everything
that must be identical for every method so comparisons are fair: the training clip regime, the held-out validation
videos, the dense test windows (:class:`~copra_bench.windows.WindowSpec`), frame sizes and loaders.
"""

from __future__ import annotations

import abc
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, default_collate

from copra_bench.datamodules.datasets import (
    CONDITIONING_UNITS, TRAIN_REGIMES, ClipDataset, ConditioningUnit, EpochShuffle, RankShard, ResumableLoader,
    SkipLedger, TrainRegime, WindowDataset,
)
from copra_bench.datamodules.records import DataRecords, VideoRecord
from copra_bench.datamodules.samplers import ddp_rank_and_world
from copra_bench.datamodules.video_io import probe_video
from copra_bench.errors import DataError, VideoDecodeError
from copra_bench.windows import WindowSpec

Split = Literal["train", "test"]
OnBadVideo = Literal["error", "skip"]
ProtocolValue = str | int | float | bool


@dataclass
class TestSet:
    """A named set of test videos with frame-level ground truth; metrics are reported per test set.

    ``family`` is the dataset whose protocol the set follows (one of
    :data:`~copra_bench.evaluation.postprocess.DATASET_FAMILIES`): it picks the post-processing parameters and the
    primary AP variant, whatever the set is named.
    """

    name: str
    records: list[VideoRecord]
    window_spec: WindowSpec
    family: str


class VADDataModule(L.LightningDataModule, abc.ABC):
    """Base of all video anomaly detection DataModules.

    Args:
        frames_per_window: ``K``, frames per training clip and per test window (8 in the paper).
        window_seconds: Length of a test window and of a dense training segment.
        window_stride: Frames between test window centres (16 in the field).
        frame_size: Decoded frames are resized so their shorter side is ``frame_size``, aspect ratio kept
            (``None``: native size, the default). The VLM's processor then applies its own documented resize to its
            patch grid; a smaller decode size saves memory and time but is a protocol choice (recorded with the run).
        train_regime: ``sparse`` (K frames over the whole video), ``dense`` (K frames over one ``window_seconds``
            segment) or ``chunked`` (K frames over one ``train_chunk_seconds`` chunk).
        train_chunk_seconds: Chunk length of the ``chunked`` regime (the paper studies 30, 60 and 120 s).
        val_fraction: Share of training videos held out (stratified by label) for validation.
        batch_size: Training/validation clips per batch.
        test_batch_size: Test windows per batch (default: ``batch_size``).
        num_workers: DataLoader workers.
        seed: Seed of the train/validation partition.
        gt_end_inclusive: Whether annotated end frames are part of the event (see ``intervals_to_gt``).
        fps: Override the fps read from the containers (frame folders: their rate; see each dataset's default).
        on_bad_video: ``error`` (default): missing or undecodable videos stop the run with one error listing every
            bad file; ``skip``: they are left out with a warning giving the count, and :meth:`records_to_log` hands the
            run the count (``data/skipped_videos``), the list of files and each test set's evaluated videos. A test
            video that probes fine but fails while its windows are decoded (a truncated file) follows the same
            setting: an error naming the file, or skipped (:meth:`decode_failures`) while the others go on.
    """

    #: Which dataset's evaluation protocol this DataModule's test set follows (``ucf_crime``, ``xd_violence``,
    #: ``shanghaitech``, ``synthetic``, ``generic``); each dataset sets its own.
    dataset_family: str = "generic"

    def __init__(self, *, frames_per_window: int = 8, window_seconds: float = 10.0, window_stride: int = 16,
                 frame_size: int | None = None, train_regime: TrainRegime = "sparse", val_fraction: float = 0.1,
                 batch_size: int = 8, test_batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 gt_end_inclusive: bool = False, fps: float | None = None, train_chunk_seconds: float = 60.0,
                 on_bad_video: OnBadVideo = "error") -> None:
        super().__init__()
        if train_regime not in TRAIN_REGIMES:
            raise DataError(f"train_regime must be one of {', '.join(TRAIN_REGIMES)}, got {train_regime!r}")
        if on_bad_video not in ("error", "skip"):
            raise DataError(f"on_bad_video must be 'error' or 'skip', got {on_bad_video!r}")
        if train_chunk_seconds <= 0:
            raise DataError(f"train_chunk_seconds must be > 0, got {train_chunk_seconds}")
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
        self.train_chunk_seconds = train_chunk_seconds
        self.on_bad_video = on_bad_video
        #: Frame rate of frame-folder videos when ``fps`` is not set (frame folders carry none; set by readers).
        self.frames_fps: float | None = None
        self.conditioning_unit: ConditioningUnit = "window"
        self.conditioning_chunk_seconds = 120.0
        #: Videos left out by ``on_bad_video: skip``, per split: ``"missing: <path>"`` / ``"undecodable: <path> (...)"``.
        self.skipped: dict[str, list[str]] = {}
        self.train_records: list[VideoRecord] = []
        self.val_records: list[VideoRecord] = []
        self._test_sets: list[TestSet] | None = None
        self._skip_ledger: SkipLedger | None = None

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
    def annotation_source(self) -> str:
        """Which ground truth the test split uses (recorded with the run; numbers on different GTs differ)."""
        return "n/a"

    def protocol_settings(self) -> dict[str, ProtocolValue]:
        """Every setting that changes the numbers of a run, flat (logged as ``protocol.<key>`` params)."""
        return {
            "dataset": self.name, "annotation_source": self.annotation_source(),
            "gt_end_inclusive": self.gt_end_inclusive,
            "source": getattr(self, "source", "videos"),
            "fps": float(self.fps) if self.fps else "container",
            "frames_fps": float(self.frames_fps) if self.frames_fps else "n/a", "frame_size": self.frame_size or "native",
            "window_seconds": float(self.window_spec.seconds), "window_stride": self.window_spec.stride,
            "frames_per_window": self.frames_per_window, "train_regime": self.train_regime,
            "train_chunk_seconds": float(self.train_chunk_seconds), "on_bad_video": self.on_bad_video,
            "conditioning_unit": self.conditioning_unit,
            "conditioning_chunk_seconds": float(self.conditioning_chunk_seconds),
        }

    def set_conditioning(self, unit: ConditioningUnit, chunk_seconds: float = 120.0) -> None:
        """Make test/predict items carry the frames of their conditioning unit (see
        :class:`~copra_bench.datamodules.datasets.WindowDataset`). Call before ``test_dataloader()`` (a method calls
        it from its ``setup()``); ``window`` (the default) adds nothing."""
        if unit not in CONDITIONING_UNITS:
            raise DataError(f"conditioning unit must be one of {', '.join(CONDITIONING_UNITS)}, got {unit!r}")
        if chunk_seconds <= 0:
            raise DataError(f"conditioning chunk_seconds must be > 0, got {chunk_seconds}")
        self.conditioning_unit = unit
        self.conditioning_chunk_seconds = float(chunk_seconds)

    def find_bad_videos(self, records: list[VideoRecord]) -> list[tuple[VideoRecord, str]]:
        """Probe every record (fills ``num_frames`` and ``fps``); ``(record, problem)`` for each unreadable one."""
        def check(record: VideoRecord) -> str | None:
            if not record.path.exists():
                return f"missing: {record.path}"
            try:
                info = probe_video(record.path, fps=self.fps or (self.frames_fps if record.path.is_dir() else None))
            except VideoDecodeError as err:
                return f"undecodable: {record.path} ({err})"
            record.num_frames = record.num_frames or info.num_frames
            record.fps = float(info.fps)
            return None

        # Opening ~2000 containers is I/O bound (network file systems especially): a few threads.
        with ThreadPoolExecutor(max_workers=8) as pool:
            problems = list(pool.map(check, records))
        return [(r, p) for r, p in zip(records, problems, strict=True) if p]

    def probe(self, records: list[VideoRecord], split: str = "") -> list[VideoRecord]:
        """Fill ``num_frames`` and ``fps`` from each container; the readable records.

        Unreadable videos: one error listing every one of them (``on_bad_video: error``), or they are left out with
        a warning giving the count (``skip``; listed in :attr:`skipped`).
        """
        bad = self.find_bad_videos(records)
        if not bad:
            return records
        lines = [problem for _, problem in bad]
        where = f"{self.name} {split}".strip()
        if self.on_bad_video == "skip":
            self.skipped[split] = lines
            warnings.warn(f"{where}: skipping {len(bad)} of {len(records)} videos that cannot be read (on_bad_video: "
                          f"skip); e.g. {lines[0]}", stacklevel=2)
            dropped = {id(r) for r, _ in bad}
            return [r for r in records if id(r) not in dropped]
        shown = "\n  ".join(lines[:50]) + (f"\n  ... and {len(lines) - 50} more" if len(lines) > 50 else "")
        raise DataError(f"{where}: {len(bad)} of {len(records)} videos cannot be read:\n  {shown}\n"
                        "Restore these files (or remove them from the split list, or set on_bad_video: skip) and "
                        "run again. `python -m copra_bench data inspect --config <data config>` lists every problem.")

    def skipped_videos(self) -> dict[str, list[str]]:
        """Videos left out by ``on_bad_video: skip``: ``{"<dataset>/<split>": [problem, ...]}``."""
        return {f"{self.name}/{split}": lines for split, lines in self.skipped.items() if lines}

    def records_to_log(self) -> DataRecords:
        """What the run records about the data: the skipped videos and, for every test set already set up, the
        videos that enter its metric (``data/skipped_videos``, ``skipped_videos.txt``, ``evaluated_videos/``)."""
        evaluated = {ts.name: [r.name for r in ts.records] for ts in self._test_sets or []}
        return DataRecords(skipped=self.skipped_videos(), evaluated=evaluated)

    def test_set_families(self) -> dict[str, str]:
        """``{test set name: dataset family}`` in test-dataloader order, without loading the test split."""
        return {self.name: self.dataset_family}

    # ------------------------------------------------------------------------------------------------------- stages
    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.train_records:
            self.train_records, self.val_records = self._split_train(self.load_split("train"))
        if stage in ("test", "predict", None) and self._test_sets is None:
            self._test_sets = [TestSet(self.name, self.load_split("test"), self.window_spec, self.dataset_family)]

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
                           window_seconds=self.window_spec.seconds, frame_size=self.frame_size, train=train,
                           chunk_seconds=self.train_chunk_seconds)

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """Batch items; frames of different resolutions (e.g. XD-Violence at native size) stay a list, and so do
        ``condition_frames`` always (windows of one unit share one tensor: stacking would copy it per window)."""
        items = [dict(item) for item in items]
        condition = [item.pop("condition_frames") for item in items] if "condition_frames" in items[0] else None
        shapes = {tuple(item["frames"].shape) for item in items}
        if len(shapes) == 1:
            batch = default_collate(items)
        else:
            frames = [item.pop("frames") for item in items]
            batch = default_collate(items)
            batch["frames"] = frames
        if condition is not None:
            batch["condition_frames"] = condition
        return batch

    def train_dataloader(self) -> DataLoader:
        clips = self._clips(self.train_records, train=True)
        # under DDP, batch_size per rank: the global batch of N ranks is that of one process with N x batch_size
        sampler = EpochShuffle(len(clips), seed=self.seed, batch_size=self.batch_size)
        loader = ResumableLoader(clips, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                                 persistent_workers=self.num_workers > 0, collate_fn=self.collate)
        loader.progress = self._batches_done
        return loader

    def _batches_done(self) -> int:
        """Training batches of the current epoch already stepped on (read when a checkpoint is saved, which happens
        after the batch's optimiser step)."""
        trainer = getattr(self, "trainer", None)
        return 0 if trainer is None else int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_records:
            return []
        world = ddp_rank_and_world()[1]
        if len(self.val_records) < world:  # a rank without a batch leaves the others waiting in DDP's forward
            raise DataError(f"{self.name}: {len(self.val_records)} validation clips for {world} DDP ranks; every rank "
                            "needs one (clips are never repeated). Raise data.init_args.val_fraction, use fewer "
                            "devices, or set val_fraction: 0 (no validation).")
        # every clip on exactly one rank, unpadded (Lightning's DistributedSampler would repeat some)
        return DataLoader(self._clips(self.val_records, train=False), batch_size=self.batch_size,
                          sampler=RankShard(len(self.val_records)), num_workers=self.num_workers,
                          collate_fn=self.collate)

    def test_dataloader(self) -> list[DataLoader]:
        self._skip_ledger = SkipLedger() if self.on_bad_video == "skip" else None
        return [DataLoader(WindowDataset(ts.records, spec=ts.window_spec, frame_size=self.frame_size,
                                         unit=self.conditioning_unit, chunk_seconds=self.conditioning_chunk_seconds,
                                         name=ts.name, on_bad_video=self.on_bad_video, ledger=self._skip_ledger),
                           batch_size=self.test_batch_size, num_workers=self.num_workers, collate_fn=self.collate)
                for ts in self.test_sets]

    def decode_failures(self) -> dict[str, dict[int, str]]:
        """Test videos skipped while decoding in the last test/predict pass (``on_bad_video: skip``): ``{test set:
        {video index in the set: problem}}`` (this process's readers; the evaluator gathers the DDP ranks)."""
        return self._skip_ledger.read() if self._skip_ledger is not None else {}

    def predict_dataloader(self) -> list[DataLoader]:
        return self.test_dataloader()

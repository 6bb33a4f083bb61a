"""Torch datasets shared by every VAD DataModule: training clips and streamed dense test windows."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from copra_bench.datamodules.records import VideoRecord
from copra_bench.datamodules.samplers import (
    EpochShuffle,
    RankShard,
    ResumableLoader,
    ddp_rank_and_world,
)
from copra_bench.datamodules.sharding import deal_videos
from copra_bench.datamodules.video_io import iter_windows, read_frames_seeking
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from copra_bench.errors import VideoDecodeError
from copra_bench.windows import (
    WindowSpec,
    half_window,
    num_windows,
    uniform_indices,
    window_frame_indices,
)

TrainRegime = Literal["sparse", "dense", "chunked"]
TRAIN_REGIMES = ("sparse", "dense", "chunked")
ConditioningUnit = Literal["window", "chunk", "video"]
CONDITIONING_UNITS = ("window", "chunk", "video")


def chunk_length(fps: float, chunk_seconds: float) -> int:
    """Frames per chunk: ``round(chunk_seconds * fps)`` (at least 1). Chunk ``j`` is ``[j*C, (j+1)*C)``."""
    return max(1, round(chunk_seconds * fps))


def clip_indices(num_frames: int, *, k: int, regime: TrainRegime, fps: float, seconds: float,
                 jitter: torch.Generator | None, chunk_seconds: float = 60.0) -> np.ndarray:
    """``k`` frame indices of one training clip.

    ``sparse``: spread over the whole video (the regime the COPRA paper criticises: long-range, few frames);
    ``dense``: over one ``seconds``-long segment (what the test windows see); ``chunked``: over one chunk of
    ``chunk_seconds`` on the fixed chunk grid ``[j*C, (j+1)*C)`` that test-time chunk conditioning uses (the last
    chunk may be shorter). With ``jitter`` (training) each of the ``k`` slots is drawn inside its sub-segment and the
    segment/chunk is random; without it (validation) the sampling is the deterministic uniform one of the test
    windows, on the segment centred in the video (dense) or the chunk holding the middle frame (chunked).
    """
    if regime == "sparse":
        start, end = 0, num_frames
    elif regime == "dense":
        length = min(num_frames, 2 * half_window(fps=fps, seconds=seconds))
        if jitter is None:
            start = (num_frames - length) // 2
        else:
            start = int(torch.randint(0, num_frames - length + 1, (1,), generator=jitter))
        end = start + length
    elif regime == "chunked":
        size = chunk_length(fps, chunk_seconds)
        chunks = -(-num_frames // size)
        chunk = (num_frames // 2) // size if jitter is None else int(torch.randint(0, chunks, (1,), generator=jitter))
        start, end = chunk * size, min((chunk + 1) * size, num_frames)
    else:
        raise ValueError(f"unknown training regime {regime!r}; use one of {', '.join(TRAIN_REGIMES)}")
    if jitter is None:
        return uniform_indices(start, end, k)
    offsets = torch.rand(k, generator=jitter).numpy()
    slots = (np.arange(k) + offsets) * (end - start) / k
    return np.minimum(start + np.floor(slots).astype(np.int64), end - 1)


class ClipDataset(Dataset):
    """One clip of ``K`` frames per video with its video-level label (training and validation items)."""

    def __init__(self, records: list[VideoRecord], *, frames_per_clip: int, regime: TrainRegime,
                 window_seconds: float, frame_size: int | None, train: bool, chunk_seconds: float = 60.0) -> None:
        self.records = records
        self.chunk_seconds = chunk_seconds
        self.frames_per_clip = frames_per_clip
        self.regime = regime
        self.window_seconds = window_seconds
        self.frame_size = frame_size
        self.train = train

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        # EpochShuffle hands out (index, key): the jitter of a clip depends on (seed, epoch, index) only, not on what
        # was drawn before, so a resumed run (or another worker count) draws the very clips an uninterrupted one does.
        index, key = item if isinstance(item, tuple) else (item, None)
        record = self.records[index]
        jitter = None
        if self.train:
            jitter = torch.Generator().manual_seed(key if key is not None else int(torch.randint(0, 2**62, (1,))))
        indices = clip_indices(record.num_frames, k=self.frames_per_clip, regime=self.regime, fps=record.fps,
                               seconds=self.window_seconds, jitter=jitter, chunk_seconds=self.chunk_seconds)
        # The seek-read decodes a few GOPs per frame instead of the whole video up to the last index (a sparse clip
        # spans the video); it returns the frames read_frames would, and falls back to it when it cannot be exact.
        frames = read_frames_seeking(record.path, indices, size=self.frame_size)
        return {"frames": torch.from_numpy(frames), "label": record.label, "video_index": index,
                "frame_indices": torch.from_numpy(indices)}


def _shard() -> tuple[int, int, int, int]:
    """(DDP rank, world size, DataLoader worker, workers) of this reader."""
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info else (1, 0)
    return (*ddp_rank_and_world(), worker, workers)


class SkipLedger:
    """Where the test loader's readers (the main process or DataLoader workers, which share no memory with it)
    record the videos they skipped while decoding under ``on_bad_video: skip``: one small file per video in a
    private temporary folder, read back by the evaluator when the pass ends."""

    def __init__(self, folder: str | Path | None = None) -> None:
        if folder is None:
            folder = tempfile.mkdtemp(prefix="copra_skipped_")
            atexit.register(shutil.rmtree, folder, True)
        self.folder = Path(folder)

    def record(self, test_set: str, video_index: int, problem: str) -> None:
        path = self.folder / test_set
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{video_index}.txt").write_text(problem)

    def read(self) -> dict[str, dict[int, str]]:
        """``{test set: {video index: problem}}``."""
        return {d.name: {int(f.stem): f.read_text() for f in d.glob("*.txt")}
                for d in sorted(self.folder.iterdir()) if d.is_dir()} if self.folder.is_dir() else {}


def decode_failure(path: Path, err: VideoDecodeError) -> str:
    """The line a video that failed while its test windows were decoded gets in ``skipped_videos.txt``."""
    return (f"undecodable while decoding its windows: {path} ({err}); probing passed, `data inspect --deep` "
            "(decode every frame) finds such files before a run")


class WindowDataset(IterableDataset):
    """Every dense test window of every video, each video decoded once per pass.

    Videos are dealt to DDP ranks, then to each rank's DataLoader workers, longest first by window count
    (:func:`~copra_bench.datamodules.sharding.deal_videos`: the slowest rank within a few percent of the mean on the
    real test sets), so each window is read by exactly one reader (no DistributedSampler padding: no duplicated or
    dropped windows). Items carry the video and window index;
    the module puts the scores back together per video.

    Conditioning (``unit`` ``chunk`` or ``video``, for methods that adapt per unit of time such as COPRA): each item
    also carries ``condition_key`` (the index of the chunk ``[j*C, (j+1)*C)`` holding the window centre, ``C =
    round(chunk_seconds * fps)``; always 0 for ``video``) and ``condition_frames`` (``[K, H, W, 3]`` uint8, the frames
    ``uniform_indices(unit_start, unit_end, K)`` of that unit; one tensor object shared by all windows of the unit).
    These K frames per unit are read by a short seek-read before the video's windows are streamed: they are the only
    frames decoded twice in a test pass.

    A video that fails while decoding (a truncated file whose header is intact: probing passed) is an error naming
    the file and ``on_bad_video``; with ``on_bad_video="skip"`` and a ``ledger`` it is recorded there under ``name``
    with a warning and the next video follows (the evaluator leaves its windows out).
    """

    def __init__(self, records: list[VideoRecord], *, spec: WindowSpec, frame_size: int | None,
                 unit: ConditioningUnit = "window", chunk_seconds: float = 120.0, name: str = "",
                 on_bad_video: str = "error", ledger: SkipLedger | None = None) -> None:
        if unit not in CONDITIONING_UNITS:
            raise ValueError(f"conditioning unit must be one of {', '.join(CONDITIONING_UNITS)}, got {unit!r}")
        self.records = records
        self.spec = spec
        self.frame_size = frame_size
        self.unit = unit
        self.chunk_seconds = chunk_seconds
        self.name = name
        self.on_bad_video = on_bad_video
        self.ledger = ledger

    def windows_of(self, index: int) -> np.ndarray:
        record = self.records[index]
        return window_frame_indices(record.num_frames, fps=record.fps, spec=self.spec)

    # No __len__ on purpose: with several workers each one ends on a partial batch, so a length-derived batch count
    # (which Lightning uses to stop the loop) is too small and the last windows would be silently dropped.

    def window_counts(self) -> list[int]:
        """Windows of each video, in record order (the weights the videos are dealt by)."""
        return [num_windows(r.num_frames, stride=self.spec.stride) for r in self.records]

    def num_windows(self) -> int:
        """Windows of all videos (over all readers)."""
        return sum(self.window_counts())

    def videos_of(self, *, rank: int, world_size: int, worker: int, num_workers: int) -> list[int]:
        """The videos one reader decodes (``num_workers`` 0 or 1: the rank's only reader)."""
        return deal_videos(window_counts=self.window_counts(), world_size=world_size,
                           num_workers=num_workers)[rank][worker]

    def num_batches(self, batch_size: int, *, num_workers: int = 0, rank: int = 0, world_size: int = 1) -> int:
        """Batches one DDP rank's DataLoader yields in a pass, for progress bars (Lightning is not told a length, see
        above): the videos are dealt to the readers as in :meth:`__iter__`, and each reader (a worker, or the main
        process with ``num_workers=0``) ends on its own partial batch."""
        counts = self.window_counts()
        readers = deal_videos(window_counts=counts, world_size=world_size, num_workers=num_workers)[rank]
        return sum(-(-sum(counts[i] for i in videos) // batch_size) for videos in readers)

    def condition_units(self, record: VideoRecord) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Per window, the key of its conditioning unit; per key, the K frame indices of that unit."""
        centres = np.arange(num_windows(record.num_frames, stride=self.spec.stride)) * self.spec.stride
        if self.unit == "video":
            return np.zeros_like(centres), {0: uniform_indices(0, record.num_frames, self.spec.frames_per_window)}
        size = chunk_length(record.fps, self.chunk_seconds)
        keys = centres // size
        return keys, {int(j): uniform_indices(int(j) * size, min((int(j) + 1) * size, record.num_frames),
                                              self.spec.frames_per_window) for j in np.unique(keys)}

    def _condition_frames(self, record: VideoRecord) -> tuple[np.ndarray, dict[int, torch.Tensor]]:
        keys, units = self.condition_units(record)
        order = sorted(units)
        flat = np.concatenate([units[j] for j in order])
        frames = read_frames_seeking(record.path, flat, size=self.frame_size)
        k = self.spec.frames_per_window
        return keys, {j: torch.from_numpy(frames[i * k:(i + 1) * k].copy()) for i, j in enumerate(order)}

    def __iter__(self) -> Iterator[dict]:
        rank, world, worker, workers = _shard()
        for index in self.videos_of(rank=rank, world_size=world, worker=worker, num_workers=workers):
            try:
                yield from self._items(index)
            except VideoDecodeError as err:
                path = self.records[index].path
                if self.on_bad_video != "skip" or self.ledger is None:
                    raise VideoDecodeError(
                        f"{err}\nIt failed while its test windows were decoded (probing, which opens the container "
                        "only, passed; `python -m copra_bench data inspect --deep` decodes every frame and finds "
                        "such files). Re-encode or remove it, or set data.init_args.on_bad_video: skip to leave it "
                        "out (listed in skipped_videos.txt, the other videos go on).") from err
                problem = decode_failure(path, err)
                self.ledger.record(self.name, index, problem)
                warnings.warn(f"{self.name}: skipping {path} (on_bad_video: skip): {err}", stacklevel=2)

    def _items(self, index: int) -> Iterator[dict]:
        record = self.records[index]
        indices = self.windows_of(index)
        keys, condition = (None, None) if self.unit == "window" else self._condition_frames(record)
        for window, frames in iter_windows(record.path, indices, size=self.frame_size):
            item = {"frames": torch.from_numpy(frames), "video_index": index, "window_index": window,
                    "label": record.label}
            if keys is not None:
                key = int(keys[window])
                item["condition_key"] = key
                item["condition_frames"] = condition[key]
            yield item


__all__ = ["ClipDataset", "EpochShuffle", "RankShard", "ResumableLoader", "SkipLedger", "WindowDataset"]

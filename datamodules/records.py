"""What a DataModule knows about one video, how frame-level ground truth is built from annotated intervals, and
what a DataModule asks a run to record about its videos."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from copra_bench.errors import DataError


@dataclass
class VideoRecord:
    """One video of a split.

    Attributes:
        name: Unique name within the dataset (the file stem, e.g. ``Abuse028_x264``).
        path: The video file.
        label: Video-level label, 0 normal, 1 abnormal (all the weak supervision training may use).
        classes: Class label(s): the UCF-Crime class, XD-Violence codes, ``("Normal",)`` for normal videos.
        num_frames: Frame count of the video (from the container unless overridden).
        fps: Frames per second (from the container unless overridden).
        gt: Frame-level ground truth (uint8, one entry per frame) for test videos, ``None`` for training videos.
    """

    name: str
    path: Path
    label: int
    classes: tuple[str, ...] = ()
    num_frames: int = 0
    fps: float = 0.0
    gt: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DataRecords:
    """What a DataModule asks the run to record (the run's writer logs it; DataModules write no artifacts).

    Attributes:
        skipped: Videos left out by ``on_bad_video: skip``: ``{"<dataset>/<split>": [problem, ...]}``.
        evaluated: Per test set, exactly the videos that enter its metric (empty until the test split is set up).
    """

    skipped: dict[str, list[str]]
    evaluated: dict[str, list[str]]


def intervals_to_gt(intervals: list[tuple[int, int]], num_frames: int, *, end_inclusive: bool = False,
                    video: str = "") -> np.ndarray:
    """Frame-level 0/1 ground truth from annotated ``(start, end)`` intervals.

    Args:
        intervals: Annotated events as frame numbers (0-based, as in the UCF-Crime and XD-Violence files).
        num_frames: Length of the video; intervals past it are clipped with a warning naming the video
            (five official UCF-Crime intervals end 1-2 frames past the true frame count).
        end_inclusive: ``False``: ``gt[s:e] = 1`` (VadCLIP, VERA); ``True``: ``gt[s:e+1] = 1`` (RTFM, LAVAD).
        video: Name used in warnings.
    """
    gt = np.zeros(num_frames, dtype=np.uint8)
    for start, end in intervals:
        stop = end + 1 if end_inclusive else end
        if stop > num_frames or start < 0:
            warnings.warn(f"{video}: annotated interval [{start}, {end}] lies outside the video's {num_frames} "
                          f"frames; clipped to the video", stacklevel=2)
        gt[max(start, 0):min(stop, num_frames)] = 1
    return gt


class OncePerVideo:
    """The rule for a list file where each video may appear once (split lists, annotation files).

    A video's second line is dropped with a warning when it repeats the first exactly (after whitespace), and is an
    error naming the file, both lines and what to do when it differs: a video listed twice would be counted twice,
    and two differing annotations would leave one of them silently in force.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._first: dict[str, tuple[int, str]] = {}
        self.dropped = 0

    def first(self, video: str, number: int, line: str) -> bool:
        """True for the first line of ``video``; False for an exact repeat (dropped)."""
        text = " ".join(line.split())
        if video not in self._first:
            self._first[video] = (number, text)
            return True
        first_number, first_text = self._first[video]
        if text != first_text:
            raise DataError(
                f"{self.path}: {video} has two differing {self.what} entries, line {first_number} {first_text!r} and "
                f"line {number} {text!r}; keep the one that is right and delete the other (a video may be listed "
                "once)")
        self.dropped += 1
        warnings.warn(f"{self.path}, line {number}: repeats line {first_number} ({video}) exactly; the repeat is "
                      "dropped", stacklevel=3)
        return False

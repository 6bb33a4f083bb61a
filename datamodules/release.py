"""Base of the DataModules that read a dataset release from disk (UCF-Crime, XD-Violence, ShanghaiTech).

A release reader answers two questions and the base does the rest identically for every dataset:
:meth:`ReleaseDataModule.list_split` (which videos a split should hold, where each is expected, and what the
annotation files say about them) and :meth:`ReleaseDataModule.ground_truth` (frame-level GT of a probed test video).
The same listing feeds the run (:meth:`load_split`: strict) and the dataset doctor (``data inspect``: reports all).

Where the list/annotation files come from is the ``annotations`` option: ``shipped`` (the copies shipped with the
package, :mod:`copra_bench.datamodules.annotations`; the default for the real datasets, so ``root`` needs the videos
only), ``release`` (the release's own files under ``root``) or a folder laid out like the release.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from copra_bench.datamodules.annotations import shipped
from copra_bench.datamodules.base import Split, VADDataModule
from copra_bench.datamodules.records import VideoRecord
from copra_bench.datamodules.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from copra_bench.errors import DataError

Source = Literal["videos", "frames"]
#: The named ``annotations`` choices (any other value is a folder).
ANNOTATION_CHOICES = ("shipped", "release")


@dataclass
class SplitListing:
    """What a split should hold according to the release's list and annotation files.

    Attributes:
        records: Every video of the split, ``path`` where it was found or is expected (missing ones included, so
            probing reports them).
        expected: Videos the protocol specifies for the split (the list length, or the official size).
        files: The list/annotation files this listing was read from.
        annotations_without_video: Annotation entries naming no video of the split.
        videos_without_annotation: Test videos the annotation does not cover (their GT is unknown).
        label_mismatches: Videos whose label from the name/list disagrees with the annotation.
    """

    records: list[VideoRecord]
    expected: int
    files: list[Path] = field(default_factory=list)
    annotations_without_video: list[str] = field(default_factory=list)
    videos_without_annotation: list[str] = field(default_factory=list)
    label_mismatches: list[str] = field(default_factory=list)


def index_sources(root: Path, source: Source) -> dict[str, Path]:
    """``{name: path}`` of every video file (``source: videos``) or frame folder (``frames``: a directory holding
    images, named by the directory) under ``root``, walked once. The first one found wins on duplicate names."""
    index: dict[str, Path] = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        if source == "frames":
            if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
                index.setdefault(Path(folder).name, Path(folder))
                dirs.clear()  # a frame folder holds no further videos
            continue
        for file in sorted(files):
            if file.lower().endswith(VIDEO_EXTENSIONS):
                index.setdefault(file.rsplit(".", 1)[0], Path(folder) / file)
    return index


def _brief(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


class ReleaseDataModule(VADDataModule, abc.ABC):
    """A dataset read from its release layout: videos as released, or pre-extracted frame folders.

    Args:
        root: The release folder.
        source: ``videos`` (the files as released) or ``frames`` (one folder of images per video, named like the
            video: ``<video>/000001.jpg ...``); frame folders need ``fps`` (or the dataset's documented default).
        annotations: Where the split lists and annotation files are read from: ``shipped`` (the package's copies of
            the official files), ``release`` (the release's own, under ``root``) or a folder holding them in the
            release's layout (absolute, or relative to ``root``). Default: ``shipped`` for the dataset whose files
            are shipped, ``release`` for a subclass reading another dataset in the same layout (the synthetic world
            writes its own).
        **kwargs: See :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    #: Frame rate of the release, used for frame folders when ``fps`` is not set (None: ``fps`` is required; a frame
    #: folder without a rate is reported as undecodable).
    default_frames_fps: float | None = None
    #: How to obtain the data, appended to errors about the root.
    how_to_get: str = ""
    #: The folder of :mod:`copra_bench.datamodules.annotations` holding this dataset's files (None: none shipped).
    shipped_dataset: str | None = None
    #: Whether ``source: videos`` still reads some videos as frame folders (ShanghaiTech's test part).
    frames_with_videos: bool = False

    def __init__(self, root: str, *, source: Source = "videos", annotations: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if source not in ("videos", "frames"):
            raise DataError(f"source must be 'videos' or 'frames', got {source!r}")
        self.root = Path(root).expanduser()
        self.source = source
        own = self.shipped_dataset is not None and self.dataset_family == self.shipped_dataset
        self.annotations = annotations or ("shipped" if own else "release")
        if self.annotations == "shipped" and self.shipped_dataset is None:
            raise DataError(f"{type(self).__name__}: no annotation files are shipped for this dataset; set "
                            "annotations to 'release' or a folder")
        # The rate of frame folders: for video files the container's own rate is used (and recorded), so the
        # release's default is not a rate the run used.
        reads_folders = source == "frames" or self.frames_with_videos
        self.frames_fps = self.fps or (self.default_frames_fps if reads_folders else None)
        self._index: dict[str, Path] | None = None
        self.check_root()

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise DataError(f"{type(self).__name__} root {self.root} does not exist. {self.how_to_get}")

    def annotations_dir(self) -> Path:
        """The folder the split lists and annotation files are read from (see ``annotations``).

        Raises:
            DataError: ``annotations`` names a folder that does not exist.
        """
        if self.annotations == "shipped":
            return shipped(str(self.shipped_dataset))
        if self.annotations == "release":
            return self.root
        folder = Path(self.annotations).expanduser()
        folder = folder if folder.is_absolute() else self.root / folder
        if not folder.is_dir():
            raise DataError(f"{type(self).__name__}: annotations folder {folder} does not exist (annotations must be "
                            f"{' or '.join(map(repr, ANNOTATION_CHOICES))} or a folder holding the release's list "
                            "and annotation files)")
        return folder

    def release_dir(self) -> Path | None:
        """The release-layout folder whose own files ``data inspect`` compares with the shipped copies: the folder
        the run reads when that is not the shipped one, else ``root`` (None when nothing is shipped to compare)."""
        if self.shipped_dataset is None or self.dataset_family != self.shipped_dataset:
            return None
        return self.root if self.annotations == "shipped" else self.annotations_dir()

    def compare_with_shipped(self, split: Split) -> list[str]:
        """Differences between the release's own list/annotation files of ``split`` and the shipped copies, one line
        each, naming the file and the first differing lines or videos (empty: identical, or nothing to compare)."""
        return []

    def video_index(self) -> dict[str, Path]:
        """``{name: path}`` of every video (or frame folder, with ``source: frames``) under ``root``."""
        if self._index is None:
            self._index = index_sources(self.root, self.source)
        return self._index

    def resolve(self, root: Path, override: str | None, candidates: tuple[str, ...], what: str) -> Path:
        """An annotation/list file: ``override`` (relative to ``root`` or absolute) or the first candidate found."""
        if override:
            path = Path(override).expanduser()
            path = path if path.is_absolute() else root / path
            if not path.is_file():
                raise DataError(f"{what} {path} does not exist. {self.how_to_get}")
            return path
        for name in candidates:
            if (root / name).is_file():
                return root / name
        raise DataError(f"no {what} ({' or '.join(candidates)}) under {root}. {self.how_to_get}")

    # ----------------------------------------------------------------------------------------- what a dataset writes
    @abc.abstractmethod
    def list_split(self, split: Split) -> SplitListing:
        """The split's videos (unprobed) and what the annotation files say about them."""

    def list_videos(self, split: Split) -> SplitListing | None:
        """The split's videos without reading its annotation (the doctor's fallback when the annotation cannot be
        read, so the videos are still checked in the same pass); None when the split list itself needs it."""
        return None

    @abc.abstractmethod
    def ground_truth(self, record: VideoRecord) -> np.ndarray:
        """Frame-level GT (uint8, ``record.num_frames`` long) of a probed test video."""

    # --------------------------------------------------------------------------------------------------- the base
    def load_split(self, split: Split) -> list[VideoRecord]:
        self.check_root()
        listing = self.list_split(split)
        where = f"{self.name} {split} split"
        if not listing.records:
            raise DataError(f"{where} is empty: {', '.join(map(str, listing.files)) or self.root} lists no videos")
        if split == "test" and listing.videos_without_annotation:
            raise DataError(f"{where}: {len(listing.videos_without_annotation)} test videos have no annotation "
                            f"entry, their ground truth is unknown: {_brief(listing.videos_without_annotation)}")
        if listing.label_mismatches:
            raise DataError(f"{where}: {len(listing.label_mismatches)} videos whose label disagrees with the "
                            f"annotation: {_brief(listing.label_mismatches, 5)}. Fix the annotation or the names; "
                            "`python -m copra_bench data inspect` lists them all.")
        records = self.probe(listing.records, split)
        if not records:
            raise DataError(f"{where} is empty: all of its videos were skipped as unreadable")
        if split == "test":
            for record in records:
                record.gt = self.ground_truth(record)
        return records

"""ShanghaiTech Campus in the weakly supervised split of Zhong et al. 2019, read from the original release.

Expected under ``root``::

    SH_Train.txt, SH_Test.txt              the split lists, one name a line (also under list/ or splits/)
    training/videos/<NN_NNN>.avi           the 330 normal videos of the original training part
    testing/frames/<NN_NNNN>/NNN.jpg       the 107 original test videos, released as frame folders
    testing/test_frame_mask/<NN_NNNN>.npy  per-frame 0/1 masks of those 107 videos

The split lists and the frame masks ship with the package and are read from there by default
(``annotations: shipped``), so ``root`` needs the videos and frame folders only; ``annotations: release`` reads
the copy's own (a folder given as ``annotations`` holds the lists and ``test_frame_mask/`` or
``testing/test_frame_mask/``).

Names ``01_0014`` come from the original test part (frames + mask; the mask gives the video label and, for test
videos, the frame GT); names ``01_001`` come from the training videos and are normal. ``source: videos`` reads the
release as it is (training part as videos, test part as frames); ``source: frames`` reads every video from frame
folders (``training/frames/<name>/`` as commonly pre-extracted). Frame folders have no rate: ``frames_fps`` is
``fps`` when set, else 24 (the rate assumed for the release's frames; set ``fps`` if your copy differs).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from copra_bench.datamodules.annotations import shipped
from copra_bench.datamodules.annotations.compare import compare_files, compare_masks
from copra_bench.datamodules.base import Split
from copra_bench.datamodules.records import OncePerVideo, VideoRecord
from copra_bench.datamodules.release import ReleaseDataModule, SplitListing, index_sources
from copra_bench.errors import DataError

SPLIT_FILES = {"train": "SH_Train.txt", "test": "SH_Test.txt"}
LIST_DIRS = ("", "list", "splits", "Anomaly_Detection_splits")
MASK_DIR = "testing/test_frame_mask"
MASK_DIRS = (MASK_DIR, "test_frame_mask")
TEST_PART_NAME = re.compile(r"^\d{2}_\d{4}$")
TRAIN_PART_NAME = re.compile(r"^\d{2}_\d{3}$")
HOW_TO_GET = ("Point data.root at the ShanghaiTech Campus release (training/videos/, testing/frames/; the "
              "SH_Train.txt / SH_Test.txt lists of Zhong et al. and the test frame masks ship with the package, "
              "annotations: release reads the copy's own), or "
              "generate a synthetic copy with `python -m copra_bench data synth --out DIR --layout shanghaitech`.")


def _name_key(line: str) -> tuple[str, object] | None:
    name = line.strip().replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0]
    return (name, ()) if name else None


def parse_split_list(path: Path) -> list[str]:
    """Video names of ``SH_Train.txt`` / ``SH_Test.txt``; a malformed line is an error naming file and line."""
    names = []
    once = OncePerVideo(path, "split-list")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        name = name.replace("\\", "/").rsplit("/", 1)[-1].split(".", 1)[0]
        if not (TEST_PART_NAME.match(name) or TRAIN_PART_NAME.match(name)):
            raise DataError(f"{path}, line {number}: expected a ShanghaiTech name like 01_0014 or 01_001, "
                            f"got {line.strip()!r}")
        if once.first(name, number, line):
            names.append(name)
    return names


def load_mask(path: Path) -> np.ndarray:
    """A ``test_frame_mask`` file as a uint8 0/1 vector."""
    try:
        mask = np.load(path)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the frame mask {path}: {err}") from err
    if mask.ndim != 1:
        raise DataError(f"{path}: a frame mask must be one value per frame, got shape {mask.shape}")
    return (mask > 0).astype(np.uint8)


def mask_to_gt(mask: np.ndarray, num_frames: int, *, video: str) -> np.ndarray:
    """The mask as GT of a ``num_frames`` video: longer masks are clipped with a warning naming the video."""
    if mask.shape[0] > num_frames:
        warnings.warn(f"{video}: the frame mask has {mask.shape[0]} entries for {num_frames} frames; clipped to "
                      "the video", stacklevel=2)
        return mask[:num_frames].copy()
    if mask.shape[0] < num_frames:
        raise DataError(f"{video}: the frame mask has {mask.shape[0]} entries but the video has {num_frames} "
                        "frames; the frames or the mask belong to another copy of the dataset")
    return mask


class ShanghaiTechDataModule(ReleaseDataModule):
    """ShanghaiTech weakly supervised: 238 training videos (63 abnormal), 199 test videos (44 abnormal).

    Args:
        root: The release folder (see the module docstring for the layout).
        split_dir: Folder of ``SH_Train.txt`` / ``SH_Test.txt``, relative to ``root`` or absolute (default: from
            ``annotations``; in a release-layout folder, the folder itself, ``list/`` or ``splits/``).
        mask_dir: Folder of the ``<name>.npy`` frame masks, relative to ``root`` or absolute (default: from
            ``annotations``; in a release-layout folder ``testing/test_frame_mask``).
        annotations: ``shipped`` (default), ``release`` or a folder: see
            :class:`~copra_bench.datamodules.release.ReleaseDataModule`.
        source: ``videos`` (the release as it is) or ``frames`` (every video as a frame folder).
        **kwargs: See :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    dataset_family = "shanghaitech"
    shipped_dataset = "shanghaitech"

    default_frames_fps = 24.0
    frames_with_videos = True  # the test part is released as frames only
    how_to_get = HOW_TO_GET

    def __init__(self, root: str, *, split_dir: str | None = None, mask_dir: str | None = None, **kwargs) -> None:
        self.split_dir = split_dir
        self.mask_dir = mask_dir
        super().__init__(root, **kwargs)

    @property
    def name(self) -> str:
        return "shanghaitech"

    def annotation_source(self) -> str:
        return "test_frame_mask"

    def masks_folder(self, base: Path | None = None) -> Path:
        """The frame-mask folder: ``mask_dir`` (relative to ``root``), else the one of ``base`` (default: the
        ``annotations`` folder): ``testing/test_frame_mask`` or ``test_frame_mask`` (the first that exists)."""
        if self.mask_dir and base is None:
            folder = Path(self.mask_dir).expanduser()
            return folder if folder.is_absolute() else self.root / folder
        base = base or self.annotations_dir()
        return next((base / d for d in MASK_DIRS if (base / d).is_dir()), base / MASK_DIR)

    def split_file(self, split: Split, base: Path | None = None) -> Path:
        if self.split_dir and base is None:
            return self.resolve(self.root, str(Path(self.split_dir) / SPLIT_FILES[split]), (), f"{split} list")
        return self.resolve(base or self.annotations_dir(), None,
                            tuple(str(Path(d) / SPLIT_FILES[split]) for d in LIST_DIRS), f"ShanghaiTech {split} list")

    def compare_with_shipped(self, split: Split) -> list[str]:
        release = self.release_dir()
        if release is None:
            return []
        ours = shipped("shanghaitech", SPLIT_FILES[split])
        try:
            theirs = self.split_file(split, base=release)
        except DataError:  # the copy has no list of its own: nothing to compare
            theirs = None
        out = [compare_files(theirs, ours, _name_key)] if theirs and theirs != ours else []
        masks = self.masks_folder(base=release)
        if masks.is_dir() and masks != shipped("shanghaitech", "test_frame_mask"):
            out.append(compare_masks(masks, shipped("shanghaitech", "test_frame_mask"), parse_split_list(ours)))
        return [d for d in out if d]

    def video_index(self) -> dict[str, Path]:
        if self._index is None:
            index = index_sources(self.root, self.source)
            if self.source == "videos":  # the test part is released as frames only
                for name, path in index_sources(self.root, "frames").items():
                    index.setdefault(name, path)
            self._index = index
        return self._index

    def _expected_path(self, name: str) -> Path:
        if TEST_PART_NAME.match(name):
            return self.root / "testing" / "frames" / name
        if self.source == "frames":
            return self.root / "training" / "frames" / name
        return self.root / "training" / "videos" / f"{name}.avi"

    def list_videos(self, split: Split) -> SplitListing | None:
        split_path = self.split_file(split)
        names = parse_split_list(split_path)
        index = self.video_index()
        records = [VideoRecord(name=n, path=index.get(n, self._expected_path(n)), label=0) for n in names]
        return SplitListing(records=records, expected=len(names), files=[split_path])

    def list_split(self, split: Split) -> SplitListing:
        split_path = self.split_file(split)
        names = parse_split_list(split_path)
        index = self.video_index()
        masks = self.masks_folder()
        listing = SplitListing(records=[], expected=len(names), files=[split_path, masks])
        for name in names:
            mask_path = masks / f"{name}.npy"
            has_mask = mask_path.is_file()
            label = int(load_mask(mask_path).any()) if has_mask else 0
            if TEST_PART_NAME.match(name) and not has_mask:
                listing.videos_without_annotation.append(name)
            if has_mask and name not in index:
                listing.annotations_without_video.append(name)
            listing.records.append(VideoRecord(name=name, path=index.get(name, self._expected_path(name)),
                                               label=label, classes=("Abnormal",) if label else ("Normal",)))
        if split == "train":  # training uses video labels only: an unmasked test-part video cannot be labelled
            listing.label_mismatches = [f"{n} (test-part video without a frame mask: its label is unknown)"
                                        for n in listing.videos_without_annotation]
            listing.videos_without_annotation = []
        return listing

    def ground_truth(self, record: VideoRecord) -> np.ndarray:
        mask_path = self.masks_folder() / f"{record.name}.npy"
        if not mask_path.is_file():
            return np.zeros(record.num_frames, dtype=np.uint8)
        return mask_to_gt(load_mask(mask_path), record.num_frames, video=record.name)

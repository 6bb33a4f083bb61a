"""XD-Violence (Wu et al. 2020), read from the release layout as downloaded.

Expected under ``root``::

    train/ ... <name>.mp4      the 3954 training videos (the release's parts 1-1004/, 1005-2004/ ... at any depth;
                               also found as Train/, training/, videos/train/)
    test/  ... <name>.mp4      the 800 test videos (also Test/, testing/, test_videos/, videos/test/)
    annotations.txt            temporal annotation of the 500 violent test videos: ``name s1 e1 [s2 e2 ...]``
                               (shipped with the package and read from there by default, ``annotations: shipped``;
                               ``annotations: release`` reads the release's own)

Names carry the label codes: ``<source>__#<time or id>_label_<L1>-<L2>-<L3>`` (``A`` normal, ``B1`` fighting,
``B2`` shooting, ``B4`` riot, ``B5`` abuse, ``B6`` car accident, ``G`` explosion; ``0`` padding). With
``source: frames`` each video is a folder of images named like the video inside the same split folders; fps
defaults to the release's 24.

Annotation names are matched on the stem: 14 names of the public ``annotations.txt`` carry ``.mp4``, and a literal
match loses their ground truth (VERA's xd_test_800.json has 486 violent test videos instead of 500 for that reason).
The label code in the name is cross-checked against the annotation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copra_bench.datamodules.annotations import shipped
from copra_bench.datamodules.annotations.compare import compare_files
from copra_bench.datamodules.base import Split
from copra_bench.datamodules.records import OncePerVideo, VideoRecord, intervals_to_gt
from copra_bench.datamodules.release import ReleaseDataModule, SplitListing, index_sources
from copra_bench.errors import DataError

XD_CODES = {"A": "Normal", "B1": "Fighting", "B2": "Shooting", "B4": "Riot", "B5": "Abuse", "B6": "Car accident",
            "G": "Explosion"}
OFFICIAL_COUNTS = {"train": 3954, "test": 800}
SPLIT_DIRS = {"train": ("train", "Train", "training", "videos/train", "train_videos"),
              "test": ("test", "Test", "testing", "videos/test", "test_videos")}
ANNOTATION_FILES = ("annotations.txt", "Annotation/annotations.txt", "test_annotations.txt")
HOW_TO_GET = ("Point data.root at the XD-Violence release (train/ and test/ folders of .mp4 videos; "
              "annotations.txt ships with the package, annotations: release reads the release's own), or generate "
              "a synthetic copy of that layout with "
              "`python -m copra_bench data synth --out DIR --layout xd_violence` and point data.root at DIR.")


def xd_stem(name: str) -> str:
    """``v=abc__#1_label_A.mp4`` or a path to it -> ``v=abc__#1_label_A``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".mp4") else base


def label_codes(name: str) -> tuple[str, ...]:
    """The label codes in a video name: ``..._label_G-B2-B6`` -> ``("G", "B2", "B6")``, ``..._label_A`` -> ``("A",)``.

    Raises:
        DataError: when the name has no ``_label_`` part or an unknown code.
    """
    stem = xd_stem(name)
    if "_label_" not in stem:
        raise DataError(f"XD-Violence video name {name!r} has no '_label_<codes>' part")
    codes = tuple(c for c in stem.rsplit("_label_", 1)[1].split("-") if c != "0")
    unknown = [c for c in codes if c not in XD_CODES]
    if not codes or unknown:
        raise DataError(f"XD-Violence video name {name!r}: unknown label code(s) {unknown or codes}; known: "
                        f"{', '.join(XD_CODES)}")
    return codes


def _annotation_key(line: str) -> tuple[str, object] | None:
    fields = line.split()
    return (xd_stem(fields[0]), [int(v) for v in fields[1:]]) if fields else None


def parse_annotations(path: Path) -> dict[str, list[tuple[int, int]]]:
    """``{stem: [(start, end), ...]}`` from ``annotations.txt`` (``name s1 e1 [s2 e2 ...]``, names with or without
    ``.mp4``). A malformed line is an error naming the file and line number."""
    table: dict[str, list[tuple[int, int]]] = {}
    once = OncePerVideo(path, "annotation")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or len(fields) % 2 == 0:
            raise DataError(f"{path}, line {number}: expected 'name s1 e1 [s2 e2 ...]' (an even number of frame "
                            f"numbers), got {len(fields) - 1} numbers: {line.strip()!r}")
        try:
            bounds = [int(v) for v in fields[1:]]
        except ValueError:
            raise DataError(f"{path}, line {number}: frame numbers must be integers: {line.strip()!r}") from None
        events = list(zip(bounds[0::2], bounds[1::2], strict=True))
        if any(s < 0 or e < s for s, e in events):
            raise DataError(f"{path}, line {number}: invalid interval in {line.strip()!r}")
        if once.first(xd_stem(fields[0]), number, line):
            table[xd_stem(fields[0])] = events
    return table


class XDViolenceDataModule(ReleaseDataModule):
    """XD-Violence: 3954 training videos with video labels (from the names), 800 test videos, 500 of them violent
    with frame-level annotation.

    Args:
        root: The release folder (see the module docstring for the layout).
        train_dir, test_dir: The split folders, relative to ``root`` or absolute (default: found under ``root``).
        annotation_file: Test annotation, relative to ``root`` or absolute (default: ``annotations.txt`` from
            ``annotations``).
        annotations: ``shipped`` (default), ``release`` or a folder: see
            :class:`~copra_bench.datamodules.release.ReleaseDataModule`.
        expected_counts: Videos each split should hold, checked by ``data inspect`` (default: the official
            3954 / 800; set it when working on a documented subset).
        source: ``videos`` (as released) or ``frames`` (a folder of images per video, named like the video).
        **kwargs: See :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    dataset_family = "xd_violence"
    shipped_dataset = "xd_violence"

    default_frames_fps = 24.0
    how_to_get = HOW_TO_GET

    def __init__(self, root: str, *, train_dir: str | None = None, test_dir: str | None = None,
                 annotation_file: str | None = None, expected_counts: dict[str, int] | None = None,
                 **kwargs) -> None:
        self.train_dir = train_dir
        self.test_dir = test_dir
        self.annotation_file = annotation_file
        self.expected_counts = dict(expected_counts or OFFICIAL_COUNTS)
        self._annotation: dict[str, list[tuple[int, int]]] = {}
        self._split_index: dict[str, dict[str, Path]] = {}
        super().__init__(root, **kwargs)

    @property
    def name(self) -> str:
        return "xd_violence"

    def annotation_source(self) -> str:
        return Path(self.annotation_file).name if self.annotation_file else "official"

    def annotation_path(self) -> Path:
        if self.annotation_file:
            return self.resolve(self.root, self.annotation_file, ANNOTATION_FILES, "XD-Violence annotation")
        return self.resolve(self.annotations_dir(), None, ANNOTATION_FILES, "XD-Violence annotation")

    def compare_with_shipped(self, split: Split) -> list[str]:
        release = self.release_dir()
        if release is None or split != "test":
            return []
        theirs = next((release / n for n in ANNOTATION_FILES if (release / n).is_file()), None)
        ours = shipped("xd_violence", "annotations.txt")
        difference = compare_files(theirs, ours, _annotation_key) if theirs and theirs != ours else None
        return [difference] if difference else []

    def split_folder(self, split: Split) -> Path:
        override = self.train_dir if split == "train" else self.test_dir
        if override:
            folder = Path(override).expanduser()
            folder = folder if folder.is_absolute() else self.root / folder
            if not folder.is_dir():
                raise DataError(f"XD-Violence {split} folder {folder} does not exist. {HOW_TO_GET}")
            return folder
        for name in SPLIT_DIRS[split]:
            if (self.root / name).is_dir():
                return self.root / name
        raise DataError(f"no XD-Violence {split} folder ({' or '.join(SPLIT_DIRS[split])}) under {self.root}. "
                        f"{HOW_TO_GET}")

    def list_videos(self, split: Split) -> SplitListing | None:
        return self._listing(split, with_annotation=False)

    def list_split(self, split: Split) -> SplitListing:
        return self._listing(split, with_annotation=True)

    def _listing(self, split: Split, *, with_annotation: bool) -> SplitListing:
        folder = self.split_folder(split)
        if split not in self._split_index:
            self._split_index[split] = index_sources(folder, self.source)
        index = self._split_index[split]
        listing = SplitListing(records=[], expected=int(self.expected_counts.get(split, len(index))), files=[folder])
        names = sorted(index)
        if split == "test" and with_annotation:
            annotation_path = self.annotation_path()
            listing.files.append(annotation_path)
            self._annotation = parse_annotations(annotation_path)
            # annotated but absent: a test video of the split, reported once, as missing (expected in the folder)
            names = sorted(set(names) | set(self._annotation))
        for stem in names:
            try:
                codes = label_codes(stem)
            except DataError as err:  # listed (with every other problem) rather than stopping at the first
                listing.label_mismatches.append(str(err))
                continue
            label = int(codes != ("A",))
            path = index.get(stem, folder / (stem if self.source == "frames" else f"{stem}.mp4"))
            listing.records.append(VideoRecord(name=stem, path=path, label=label, classes=codes))
            if split != "test" or not with_annotation:
                continue
            annotated = stem in self._annotation
            if label and not annotated:
                listing.videos_without_annotation.append(stem)
            elif annotated and not label:
                listing.label_mismatches.append(f"{stem} (name says normal, annotation has "
                                                f"{len(self._annotation[stem])} events)")
        return listing

    def ground_truth(self, record: VideoRecord) -> np.ndarray:
        return intervals_to_gt(self._annotation.get(record.name, []), record.num_frames,
                               end_inclusive=self.gt_end_inclusive, video=record.name)

"""UCF-Crime (Sultani et al. 2018), read from the release layout as downloaded.

Expected under ``root`` (any of the layouts that circulate)::

    Anomaly-Videos-Part-{1..4}/<Class>/<Class>NNN_x264.mp4   (or Videos/<Class>/... or <Class>/...)
    Training_Normal_Videos_Anomaly/Normal_VideosNNN_x264.mp4
    Testing_Normal_Videos_Anomaly/Normal_Videos_NNN_x264.mp4
    Anomaly_Detection_splits/Anomaly_Train.txt, Anomaly_Test.txt     (or directly under root)
    Temporal_Anomaly_Annotation_for_Testing_Videos.txt               (or Temporal_Anomaly_Annotation.txt)

The split lists and the temporal annotation are read from the copies shipped with the package by default
(``annotations: shipped``), so ``root`` needs the videos only; ``annotations: release`` reads the release's own.
Videos are found by file stem anywhere under ``root``, so the Part-1..4 / Videos/ variants need no option.
With ``source: frames`` each video is a folder of images named by the stem (``.../Abuse028_x264/000001.jpg``),
anywhere under ``root``; fps defaults to the release's 30.
"""

from __future__ import annotations

from pathlib import Path

import json

import numpy as np

from copra_bench.datamodules.annotations import shipped
from copra_bench.datamodules.annotations.compare import compare_files
from copra_bench.datamodules.base import Split
from copra_bench.datamodules.records import OncePerVideo, VideoRecord, intervals_to_gt
from copra_bench.datamodules.release import ReleaseDataModule, SplitListing
from copra_bench.errors import DataError

UCF_CLASSES = ("Abuse", "Arrest", "Arson", "Assault", "Burglary", "Explosion", "Fighting", "RoadAccidents",
               "Robbery", "Shooting", "Shoplifting", "Stealing", "Vandalism")
NORMAL_FOLDERS = ("Training_Normal_Videos_Anomaly", "Testing_Normal_Videos_Anomaly", "Normal_Videos_event")
SPLIT_FILES = {"train": "Anomaly_Train.txt", "test": "Anomaly_Test.txt"}
ANNOTATION_FILES = ("Temporal_Anomaly_Annotation_for_Testing_Videos.txt", "Temporal_Anomaly_Annotation.txt")
#: ``annotation_file: vera``: the shipped copy of VERA's UCF_Eval.json (another ground truth).
VERA_FILE = "UCF_Eval.json"
HOW_TO_GET = ("Point data.root at the UCF-Crime release (the folder holding Anomaly-Videos-Part-*/ or Videos/, "
              "Training_Normal_Videos_Anomaly/, Testing_Normal_Videos_Anomaly/; the split lists and the temporal "
              "annotation ship with the package, annotations: release reads the release's own "
              "Anomaly_Detection_splits/), or generate a synthetic copy of that layout with "
              "`python -m copra_bench data synth --out DIR --layout ucf_crime` and point data.root at DIR.")


def video_stem(name: str) -> str:
    """``Abuse/Abuse028_x264.mp4`` or ``Abuse028_x264.mp4`` or ``Abuse028_x264`` -> ``Abuse028_x264``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base[:-4] if base.lower().endswith(".mp4") else base


def parse_split(path: Path) -> list[tuple[str, str]]:
    """``(stem, class)`` for every line of an official split list (``Abuse/Abuse001_x264.mp4``)."""
    return [(stem, cls) for stem, cls, _ in parse_split_with_paths(path)]


def parse_split_with_paths(path: Path) -> list[tuple[str, str, str]]:
    """``(stem, class, relative path as listed)`` for every line of an official split list."""
    entries = []
    once = OncePerVideo(path, "split-list")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        folder, _, file = line.replace("\\", "/").rpartition("/")
        if not file.lower().endswith(".mp4"):
            raise DataError(f"{path}, line {number}: expected '<Class>/<name>.mp4', got {line!r}")
        top = folder.split("/")[-1] if folder else ""
        video_class = "Normal" if (top in NORMAL_FOLDERS or file.startswith("Normal_Videos")) else top
        if video_class != "Normal" and video_class not in UCF_CLASSES:
            raise DataError(f"{path}, line {number}: unknown UCF-Crime class {top!r} in {line!r}")
        if once.first(video_stem(file), number, line):
            entries.append((video_stem(file), video_class, line.replace("\\", "/")))
    return entries


def parse_vera_json(path: Path) -> dict[str, tuple[str, list[tuple[int, int]]]]:
    """``{stem: (class, [(start, end), ...])}`` from VERA's ``UCF_Eval.json`` (``video``: ``frames/<Class>/<name>.mp4``,
    ``temporal_label``: ``[s1, e1, s2, e2]`` with ``-1`` for none). A different ground truth from the official file."""
    try:
        entries = json.loads(path.read_text())
        table = {}
        for entry in entries:
            bounds = [int(v) for v in entry["temporal_label"]]
            folder = entry["video"].replace("\\", "/").rsplit("/", 2)[-2]
            table[video_stem(entry["video"])] = (folder, [(s, e) for s, e in zip(bounds[0::2], bounds[1::2])
                                                          if not (s == -1 and e == -1)])
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise DataError(f"{path}: not a VERA UCF_Eval.json list (entries with 'video' and 'temporal_label'): "
                        f"{err}") from err
    return table


def _split_key(line: str) -> tuple[str, object] | None:
    line = line.strip().replace("\\", "/")
    return (video_stem(line), line.rpartition("/")[0].split("/")[-1]) if line else None


def _annotation_key(line: str) -> tuple[str, object] | None:
    fields = line.split()
    return (video_stem(fields[0]), (fields[1], [int(v) for v in fields[2:]])) if fields else None


def parse_temporal_annotation(path: Path) -> dict[str, tuple[str, list[tuple[int, int]]]]:
    """``{stem: (class, [(start, end), ...])}`` from the official test annotation (``-1`` = no event).

    Accepts names with or without ``.mp4`` and any whitespace between fields.
    """
    table: dict[str, tuple[str, list[tuple[int, int]]]] = {}
    once = OncePerVideo(path, "temporal-annotation")
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DataError(f"{path}, line {number}: expected 6 fields 'name class s1 e1 s2 e2', "
                            f"got {len(fields)}: {line.strip()!r}")
        try:
            bounds = [int(v) for v in fields[2:]]
        except ValueError:
            raise DataError(f"{path}, line {number}: frame numbers must be integers: {line.strip()!r}") from None
        events = []
        for start, end in zip(bounds[0::2], bounds[1::2]):
            if start == -1 and end == -1:
                continue
            if start < 0 or end < start:
                raise DataError(f"{path}, line {number}: invalid interval ({start}, {end}) in {line.strip()!r}")
            events.append((start, end))
        if once.first(video_stem(fields[0]), number, line):
            table[video_stem(fields[0])] = (fields[1], events)
    return table


class UCFCrimeDataModule(ReleaseDataModule):
    """UCF-Crime: 1610 training videos with video labels, 290 test videos with frame-level annotation.

    Args:
        root: The release folder (see the module docstring for the layout).
        annotation_file: Test annotation, relative to ``root`` or absolute (default: the official file, from
            ``annotations``): the official text format, or VERA's JSON list (``.json``); ``vera`` names the shipped
            copy of VERA's ``UCF_Eval.json``. Any other source is a different ground truth: numbers are not
            comparable (recorded as ``protocol.annotation_source``).
        split_dir: Folder of ``Anomaly_Train.txt`` / ``Anomaly_Test.txt`` (default: from ``annotations``).
        annotations: ``shipped`` (default), ``release`` or a folder: see
            :class:`~copra_bench.datamodules.release.ReleaseDataModule`.
        source: ``videos`` (as released) or ``frames`` (pre-extracted frame folders named by the video stem).
        **kwargs: See :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    dataset_family = "ucf_crime"
    shipped_dataset = "ucf_crime"

    default_frames_fps = 30.0
    how_to_get = HOW_TO_GET

    def __init__(self, root: str, *, annotation_file: str | None = None, split_dir: str | None = None,
                 **kwargs) -> None:
        self.annotation_file = annotation_file
        self.split_dir = split_dir
        self._annotation: dict[str, tuple[str, list[tuple[int, int]]]] = {}
        super().__init__(root, **kwargs)

    @property
    def name(self) -> str:
        return "ucf_crime"

    def annotation_source(self) -> str:
        if self.annotation_file == "vera":
            return VERA_FILE
        return Path(self.annotation_file).name if self.annotation_file else "official"

    def _find(self, override: str | None, candidates: tuple[str, ...], what: str, base: Path | None = None
              ) -> Path | None:
        """``override`` (relative to ``root``), else the first candidate in ``base`` (default: the ``annotations``
        folder) or its ``Anomaly_Detection_splits/``; an error when none is there, unless ``base`` is given."""
        if override:
            return self.resolve(self.root, override, candidates, what)
        root = base or self.annotations_dir()
        for folder in (root / "Anomaly_Detection_splits", root):
            for name in candidates:
                if (folder / name).is_file():
                    return folder / name
        if base is not None:
            return None
        raise DataError(f"no {what} ({' or '.join(candidates)}) in {root} or "
                        f"{root / 'Anomaly_Detection_splits'}. {HOW_TO_GET}")

    def split_file(self, split: Split) -> Path:
        override = str(Path(self.split_dir) / SPLIT_FILES[split]) if self.split_dir else None
        return self._find(override, (SPLIT_FILES[split],), f"{split} split list")  # type: ignore[return-value]

    def annotation_path(self) -> Path:
        if self.annotation_file == "vera":
            return shipped("ucf_crime", VERA_FILE)
        return self._find(self.annotation_file, ANNOTATION_FILES, "temporal annotation")  # type: ignore[return-value]

    def read_annotation(self, path: Path) -> dict[str, tuple[str, list[tuple[int, int]]]]:
        return parse_vera_json(path) if path.suffix.lower() == ".json" else parse_temporal_annotation(path)

    def compare_with_shipped(self, split: Split) -> list[str]:
        release = self.release_dir()
        if release is None:
            return []
        pairs = [(SPLIT_FILES[split], (SPLIT_FILES[split],), _split_key)]
        if split == "test":
            pairs.append(("Temporal_Anomaly_Annotation.txt", ANNOTATION_FILES, _annotation_key))
        found = [(self._find(None, names, "", base=release), shipped("ucf_crime", ours), key)
                 for ours, names, key in pairs]
        return [d for theirs, ours, key in found if theirs is not None and theirs != ours
                and (d := compare_files(theirs, ours, key))]

    def _videos(self, split: Split) -> tuple[SplitListing, list[tuple[str, str]], dict[str, Path]]:
        split_path = self.split_file(split)
        entries = parse_split_with_paths(split_path)
        index = self.video_index()
        # Where a missing video was expected: anywhere under root (found by its stem); the hint names the split
        # list's own relative path, the release's <Class>/<name>.mp4 (frame folders: <Class>/<name>).
        hint = (lambda rel: self.root / rel.rsplit(".", 1)[0]) if self.source == "frames" else (lambda rel: self.root / rel)
        records = [VideoRecord(name=stem, path=index.get(stem, hint(rel)), label=int(cls != "Normal"),
                               classes=(cls,)) for stem, cls, rel in entries]
        listing = SplitListing(records=records, expected=len(entries), files=[split_path])
        return listing, [(stem, cls) for stem, cls, _ in entries], index

    def list_videos(self, split: Split) -> SplitListing | None:
        return self._videos(split)[0]

    def list_split(self, split: Split) -> SplitListing:
        listing, entries, _ = self._videos(split)
        records = listing.records
        if split == "test":
            annotation_path = self.annotation_path()
            listing.files.append(annotation_path)
            self._annotation = self.read_annotation(annotation_path)
            listed = {stem for stem, _ in entries}
            # a listed video that is not on disk is reported once, as missing
            listing.annotations_without_video = sorted(n for n in self._annotation if n not in listed)
            listing.videos_without_annotation = [r.name for r in records if r.name not in self._annotation]
            for record in records:
                if record.name not in self._annotation:
                    continue
                cls, events = self._annotation[record.name]
                if cls != record.classes[0] or bool(events) != bool(record.label):
                    listing.label_mismatches.append(
                        f"{record.name} (split list: {record.classes[0]}; annotation: {cls}, {len(events)} events)")
        return listing

    def ground_truth(self, record: VideoRecord) -> np.ndarray:
        _, events = self._annotation[record.name]
        return intervals_to_gt(events, record.num_frames, end_inclusive=self.gt_end_inclusive, video=record.name)

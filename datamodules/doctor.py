"""The dataset doctor behind ``python -m copra_bench data inspect``: everything wrong with a copy, before a run.

For every split a protocol uses it reports videos found / expected, ALL missing and undecodable files (not the
first error only), total and anomalous frames, the frame rates seen, annotation entries without a video, videos
without annotation, label mismatches and intervals clipped to the video, and how the release's own list/annotation
files differ from the shipped copies (a warning). ``ok`` is False when the protocol cannot run as specified (the CLI
then exits non-zero). With ``subset`` only the videos present are checked: the ones absent are counted, not errors.
"""

from __future__ import annotations

import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from copra_bench.datamodules.base import VADDataModule
from copra_bench.datamodules.cross_domain import ComposedDataModule, CrossDomainDataModule
from copra_bench.datamodules.multi_source import MultiSourceDataModule
from copra_bench.datamodules.records import VideoRecord
from copra_bench.datamodules.release import ReleaseDataModule, SplitListing
from copra_bench.datamodules.video_io import _decode, probe_video
from copra_bench.errors import CopraError, VideoDecodeError


@dataclass
class SplitReport:
    """What the doctor found for one split of one dataset."""

    dataset: str
    split: str
    expected: int = 0
    listed: int = 0
    readable: int = 0
    files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    undecodable: list[str] = field(default_factory=list)
    total_frames: int = 0
    anomalous_frames: int | None = None
    fps_seen: Counter = field(default_factory=Counter)
    annotations_without_video: list[str] = field(default_factory=list)
    videos_without_annotation: list[str] = field(default_factory=list)
    label_mismatches: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)
    #: Containers whose header miscounts frames (counted from the packets instead): a note, not a problem.
    recounted: list[str] = field(default_factory=list)
    annotation_differences: list[str] = field(default_factory=list)
    #: ``subset``: listed videos not in this copy (not checked); None when the whole split was checked.
    absent: int | None = None
    error: str | None = None
    #: The split's annotation could not be read: its videos were still listed and checked (ground truth was not).
    annotation_error: str | None = None
    #: Whether every frame was decoded (``--deep``), not only each container's header read.
    deep: bool = False

    def problems(self) -> list[str]:
        """Why this split cannot run as specified (empty: it can)."""
        out = []
        if self.error:
            out.append(self.error)
        if self.annotation_error:
            out.append(self.annotation_error)
        if not self.error and self.listed == 0:
            out.append("no video of the split is in this copy" if self.absent else "the split is empty")
        if self.listed != self.expected and not self.error and self.absent is None:
            out.append(f"{self.listed} videos listed, {self.expected} expected")
        for what, items in (("missing videos", self.missing), ("undecodable videos", self.undecodable),
                            ("annotation entries without a video", self.annotations_without_video),
                            ("videos without annotation", self.videos_without_annotation),
                            ("label mismatches", self.label_mismatches)):
            if items:
                out.append(f"{len(items)} {what}")
        return out

    @property
    def ok(self) -> bool:
        return not self.problems()


def _probe(dm: VADDataModule, record: VideoRecord, deep: bool) -> tuple[str, str | None]:
    """``("missing"|"undecodable"|"ok", detail)``; fills ``num_frames`` and ``fps`` of readable records."""
    if not record.path.exists():
        return "missing", f"{record.name} (not found; expected at {record.path})"
    try:
        info = probe_video(record.path, fps=dm.frames_fps if record.path.is_dir() else None)
        if deep:  # decode every frame: catches files whose header is fine but whose data is truncated
            try:
                decoded = sum(1 for _ in _decode(record.path))
            except VideoDecodeError as err:
                raise VideoDecodeError(f"found by --deep, decoding every frame: {err}") from err
            if decoded < info.num_frames:
                raise VideoDecodeError(f"found by --deep: only {decoded} of the {info.num_frames} frames the "
                                       "container claims decode")
    except VideoDecodeError as err:
        return "undecodable", f"{record.path} ({err})"
    record.num_frames = record.num_frames or info.num_frames
    record.fps = float(dm.fps or info.fps)
    if info.header:
        note = f"{record.path}: header says {info.header}; {info.num_frames} frames at {info.fps:g} fps"
        return "ok", f"{info.fps:g}|{note}"
    return "ok", f"{info.fps:g}"


def _keep_present(listing: SplitListing) -> int:
    """``subset``: drop the listed videos that are not in the copy, and what is said about them only; their count."""
    absent = {r.name for r in listing.records if not r.path.exists()}
    listing.records = [r for r in listing.records if r.name not in absent]
    listing.annotations_without_video = [n for n in listing.annotations_without_video if n not in absent]
    listing.videos_without_annotation = [n for n in listing.videos_without_annotation if n not in absent]
    listing.label_mismatches = [m for m in listing.label_mismatches if m.split(" ", 1)[0] not in absent]
    return len(absent)


def inspect_split(dm: ReleaseDataModule, split: str, *, deep: bool = False, subset: bool = False) -> SplitReport:
    """Everything about one split of a release reader, without stopping at the first problem.

    Args:
        subset: Check only the videos present in the copy; the listed ones that are absent are counted
            (``absent``), and the split's expected size is then the number present.
    """
    report = SplitReport(dataset=dm.name, split=split, deep=deep)
    try:
        dm.prepare_data()
        try:
            listing: SplitListing = dm.list_split(split)  # type: ignore[arg-type]
        except CopraError as err:  # a bad annotation line: still list and check every video in this pass
            fallback = dm.list_videos(split)  # type: ignore[arg-type]
            if fallback is None:
                raise
            listing, report.annotation_error = fallback, str(err)
        try:
            report.annotation_differences = dm.compare_with_shipped(split)  # type: ignore[arg-type]
        except CopraError as err:
            report.annotation_differences = [f"not compared: {err}"]
    except CopraError as err:
        report.error = str(err)
        return report
    if subset:
        report.absent = _keep_present(listing)
        listing.expected = len(listing.records)
    report.expected, report.listed = listing.expected, len(listing.records)
    report.files = [str(f) for f in listing.files]
    report.annotations_without_video = listing.annotations_without_video
    report.videos_without_annotation = listing.videos_without_annotation
    report.label_mismatches = listing.label_mismatches
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda r: _probe(dm, r, deep), listing.records))
    readable = []
    for record, (status, detail) in zip(listing.records, results, strict=True):
        if status == "missing":
            report.missing.append(detail)
        elif status == "undecodable":
            report.undecodable.append(detail)
        else:
            readable.append(record)
            fps, _, recount = detail.partition("|")
            report.fps_seen[fps] += 1
            if recount:
                report.recounted.append(recount)
    report.readable = len(readable)
    report.total_frames = sum(r.num_frames for r in readable)
    if split == "test" and report.annotation_error is None:
        unannotated = set(listing.videos_without_annotation)
        report.anomalous_frames = 0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for record in readable:
                if record.name in unannotated:
                    continue
                try:
                    report.anomalous_frames += int(dm.ground_truth(record).sum())
                except CopraError as err:
                    report.label_mismatches.append(f"{record.name} ({err})")
        report.clipped = [str(w.message) for w in caught]
    return report


def protocol_splits(dm: VADDataModule) -> list[tuple[VADDataModule, str]]:
    """The (dataset, split) pairs a protocol reads, in order."""
    if isinstance(dm, CrossDomainDataModule):
        pairs = [(dm.source, "train"), (dm.target, "test")]
        return pairs + ([(dm.source, "test")] if dm.test_on_source else [])
    if isinstance(dm, MultiSourceDataModule):
        pairs = [(s, "train") for s in dm.sources] + [(dm.target, "test")]
        return pairs + ([(s, "test") for s in dm.sources] if dm.test_on_sources else [])
    if isinstance(dm, ComposedDataModule):
        return [(m, split) for m in dm.members for split in ("train", "test")]
    return [(dm, "train"), (dm, "test")]


def inspect_datamodule(dm: VADDataModule, *, deep: bool = False, splits: tuple[str, ...] = ("train", "test"),
                       subset: bool = False) -> list[SplitReport]:
    """One report per (dataset, split) the protocol uses (``subset``: see :func:`inspect_split`)."""
    reports = []
    for member, split in protocol_splits(dm):
        if split not in splits:
            continue
        if isinstance(member, ReleaseDataModule):
            reports.append(inspect_split(member, split, deep=deep, subset=subset))
            continue
        report = SplitReport(dataset=member.name, split=split)  # a custom dataset: all we can do is load it
        try:
            member.prepare_data()
            records = member.load_split(split)  # type: ignore[arg-type]
            report.expected = report.listed = report.readable = len(records)
            report.total_frames = sum(r.num_frames for r in records)
        except CopraError as err:
            report.error = str(err)
        reports.append(report)
    return reports


def _section(title: str, items: list[str]) -> list[str]:
    return [f"  {title} ({len(items)}):"] + [f"    {item}" for item in items] if items else []


def format_report(reports: list[SplitReport]) -> str:
    """Plain-text report, every problem listed once."""
    lines = []
    for r in reports:
        state = "OK" if r.ok else "PROBLEMS"
        lines.append(f"{r.dataset} {r.split}: {r.readable} readable of {r.listed} listed, {r.expected} expected "
                     f"[{state}]")
        if r.error:
            lines.append(f"  error: {r.error}")
            continue
        if r.annotation_error:
            lines.append(f"  annotation error (videos still checked, ground truth not): {r.annotation_error}")
        lines += [f"  read from: {f}" for f in r.files]
        if r.absent is not None:
            lines.append(f"  subset: {r.absent} of the {r.absent + r.listed} listed videos are not in this copy "
                         f"(not checked); checked the {r.listed} present")
        lines += _section("missing", r.missing) + _section("undecodable", r.undecodable)
        if not r.deep and r.listed:
            lines.append("  decoding: headers read only; a truncated file whose header is intact passes here and "
                         "fails in the run (--deep decodes every frame)")
        frames = f"  frames: {r.total_frames} total"
        if r.anomalous_frames is not None:
            share = 100.0 * r.anomalous_frames / max(r.total_frames, 1)
            frames += f", {r.anomalous_frames} anomalous ({share:.2f}%)"
        lines.append(frames)
        lines.append("  fps seen: " + (", ".join(f"{fps} x {n}" for fps, n in sorted(r.fps_seen.items())) or "none"))
        lines += _section("annotation entries without a video", r.annotations_without_video)
        lines += _section("videos without annotation", r.videos_without_annotation)
        lines += _section("label mismatches", r.label_mismatches)
        lines += _section("intervals clipped to the video (warning)", r.clipped)
        lines += _section("container headers that miscount frames (counted from the packets; note)", r.recounted)
        lines += _section("the release's own files differ from the shipped copies (warning; the run reads "
                          "what `read from` says)", r.annotation_differences)
    problems = [f"{r.dataset} {r.split}: {p}" for r in reports for p in r.problems()]
    if problems:
        lines.append(f"VERDICT: the protocol cannot run as specified ({len(problems)} problems):")
        lines += [f"  - {p}" for p in problems]
    else:
        lines.append("VERDICT: OK, the protocol can run as specified")
    return "\n".join(lines) + "\n"

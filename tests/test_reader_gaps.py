"""Reader gaps found on real videos: containers whose header miscounts frames, the doctor's one-pass listing when an
annotation line is bad, the expected path of a missing video, and the frame rate a run records."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from copra_bench.datamodules import UCFCrimeDataModule
from copra_bench.datamodules.doctor import inspect_split
from copra_bench.datamodules.video_io import iter_windows, probe_video, read_frames

from copra_bench.cli import main

from .test_doctor import _config, _copy

FRAMES, RATE = 250, 25


def _write(path, *, ticks_per_frame: int, codec: str = "mpeg4") -> None:
    """FRAMES frames whose values encode their index, at RATE fps, in a time base ``ticks_per_frame`` finer than the
    frame rate (2: what an .avi re-wrap with a doubled time base looks like; the muxer fills the gaps)."""
    tick = fractions.Fraction(1, RATE * ticks_per_frame)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=RATE * ticks_per_frame)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = tick
        for i in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 3) % 256, np.uint8), format="rgb24")
            frame.pts, frame.time_base = ticks_per_frame * i, tick
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_avi_rewrap_with_a_doubled_time_base_probes_as_the_decoded_stream(tmp_path):
    rewrap, honest = tmp_path / "rewrap.avi", tmp_path / "honest.mp4"
    _write(rewrap, ticks_per_frame=2)
    _write(honest, ticks_per_frame=1)
    with av.open(str(rewrap)) as container:  # the container's own header: about twice the frames at twice the rate
        stream = container.streams.video[0]
        header_frames = stream.frames
        assert header_frames >= 2 * FRAMES - 1 and float(stream.average_rate) == 2 * RATE
    with av.open(str(rewrap)) as container:
        decoded = sum(1 for _ in container.decode(video=0))
    info = probe_video(rewrap)
    assert (info.num_frames, info.fps) == (decoded, RATE) == (FRAMES, RATE)
    assert info.header == f"{header_frames} frames at {2 * RATE} fps"  # what data inspect notes
    assert (probe_video(honest).num_frames, probe_video(honest).fps) == (FRAMES, RATE)
    # every frame the probe promises decodes, in order (a window reader would otherwise die mid-video)
    last = read_frames(rewrap, [0, FRAMES - 1])
    assert abs(int(last[1].mean()) - (FRAMES - 1) * 3 % 256) <= 4
    windows = np.array([[0, 100, 200, FRAMES - 1]])
    assert [w for w, _ in iter_windows(rewrap, windows)] == [0]


@pytest.fixture()
def broken_ucf(synth_cache, tmp_path):
    """A synthetic UCF-Crime tree with one bad annotation line and one truncated test video."""
    root, meta = _copy("ucf_crime", synth_cache, tmp_path)
    test = [v for v in meta["videos"] if v["split"] == "test"]
    annotation = root / "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
    lines = annotation.read_text().splitlines(keepends=True)
    annotation.write_text("".join(lines[:-1]) + "Broken001_x264.mp4  Abuse  12\n")
    truncated = root / test[0]["relpath"]
    truncated.write_bytes(truncated.read_bytes()[:300])
    return root, meta, truncated


def test_doctor_lists_every_video_when_an_annotation_line_is_bad(broken_ucf, tmp_path, capsys):
    root, meta, truncated = broken_ucf
    dm = UCFCrimeDataModule(str(root), annotations="release")
    report = inspect_split(dm, "test")
    assert report.error is None and "line" in report.annotation_error and "Broken001" in report.annotation_error
    assert report.listed == sum(v["split"] == "test" for v in meta["videos"])
    assert [u.split(" ")[0] for u in report.undecodable] == [str(truncated)]
    assert any(str(truncated) in p or "undecodable" in p for p in report.problems())
    assert any("Broken001" in p for p in report.problems())
    code = main(["data", "inspect", "--config", _config(tmp_path, "copra_bench.datamodules.UCFCrimeDataModule",
                                                        root=str(root), annotations="release"), "--split", "test"])
    out = capsys.readouterr().out
    assert code == 1 and "annotation error (videos still checked" in out and f"    {truncated} (" in out


def test_missing_video_hint_names_the_release_path_and_counts_it_once(synth_cache, tmp_path):
    root, meta = _copy("ucf_crime", synth_cache, tmp_path)
    video = next(v for v in meta["videos"] if v["split"] == "test" and v["label"] == 1)
    (root / video["relpath"]).unlink()
    report = inspect_split(UCFCrimeDataModule(str(root), annotations="release"), "test")
    cls = video["name"].rstrip("0123456789_x")
    hint = next(m for m in report.missing if m.startswith(video["name"]))
    assert f"expected at {root / cls / video['name']}.mp4" in hint  # the split list's <Class>/<name>.mp4
    assert video["name"] not in report.annotations_without_video


def test_frames_fps_is_recorded_only_where_frame_folders_are_read(tmp_path):
    assert UCFCrimeDataModule(str(tmp_path)).protocol_settings()["frames_fps"] == "n/a"
    assert UCFCrimeDataModule(str(tmp_path), source="frames").protocol_settings()["frames_fps"] == 30.0
    assert UCFCrimeDataModule(str(tmp_path), fps=25.0).protocol_settings()["frames_fps"] == 25.0


def test_doctor_lists_shanghaitech_videos_when_a_frame_mask_is_unreadable(synth_cache, tmp_path):
    from copra_bench.datamodules import ShanghaiTechDataModule

    root, meta = _copy("shanghaitech", synth_cache, tmp_path)
    test = [v for v in meta["videos"] if v["split"] == "test"]
    masked = next(v for v in test if v["relpath"].startswith("testing/frames/"))
    (root / "testing" / "test_frame_mask" / f"{masked['name']}.npy").write_bytes(b"not a mask")
    video = next(v for v in test if v["relpath"].endswith(".avi"))
    truncated = root / video["relpath"]
    truncated.write_bytes(truncated.read_bytes()[:200])
    report = inspect_split(ShanghaiTechDataModule(str(root), annotations="release"), "test")
    assert report.error is None and "cannot read the frame mask" in report.annotation_error
    assert report.listed == len(test) and [u.split(" ")[0] for u in report.undecodable] == [str(truncated)]
    assert not report.ok

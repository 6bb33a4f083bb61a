"""Test-pass decoding: windows per second of the dense test loader against plain decoding of the same videos.

The loader decodes every test video once and cuts all its overlapping windows from that single pass
(datamodules/video_io.iter_windows); plain PyAV decoding of every frame (frame folders: every image) is the
reference. ``speed_vs_raw`` = raw decode time / loader time (the issue aims for >= 0.7). Run from the repository root:

    .venv/bin/python benchmarks/test_loader.py [--size 320] [--videos 4] [--layout ucf_crime] [--frames]
                                               [--conditioning window|chunk|video] [--chunk-seconds 10]

Uses a synthetic world in a temporary cache (lossless x264rgb videos, or JPEG frame folders with --frames).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import av

from copra_bench.datamodules import (
    SyntheticShanghaiTechDataModule, SyntheticUCFCrimeDataModule, SyntheticXDViolenceDataModule,
)
from copra_bench.datamodules.video_io import _read_image, frame_files

MODULES = {"ucf_crime": SyntheticUCFCrimeDataModule, "xd_violence": SyntheticXDViolenceDataModule,
           "shanghaitech": SyntheticShanghaiTechDataModule}


def raw_decode(paths) -> tuple[int, float]:
    """Decode every frame of every video to RGB (frame folders: every image), as plainly as PyAV allows."""
    start, frames = time.perf_counter(), 0
    for path in paths:
        if path.is_dir():
            for file in frame_files(path):
                _read_image(file).to_ndarray(format="rgb24")
                frames += 1
            continue
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height >= 320 * 240:
                stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24")
                frames += 1
    return frames, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=320, help="side of the synthetic videos")
    parser.add_argument("--videos", type=int, default=4, help="test videos per label")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--layout", choices=sorted(MODULES), default="ucf_crime")
    parser.add_argument("--frames", action="store_true", help="frame folders instead of video files")
    parser.add_argument("--conditioning", choices=("window", "chunk", "video"), default="window")
    parser.add_argument("--chunk-seconds", type=float, default=10.0)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="copra_bench_loader_")
    dm = MODULES[args.layout](domain="A", num_train_normal=1, num_train_abnormal=1, num_test_normal=args.videos,
                              num_test_abnormal=args.videos, video_fps=args.fps, min_seconds=args.seconds,
                              max_seconds=args.seconds, video_size=args.size, cache_dir=cache, frame_size=None,
                              batch_size=8, frames=args.frames)
    dm.prepare_data()
    dm.set_conditioning(args.conditioning, chunk_seconds=args.chunk_seconds)
    dm.setup("test")
    records = dm.test_sets[0].records
    frames, raw_s = raw_decode([r.path for r in records])
    start, windows = time.perf_counter(), 0
    for batch in dm.test_dataloader()[0]:
        windows += len(batch["frames"])
    loader_s = time.perf_counter() - start
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "layout": args.layout, "source": "frames" if args.frames else "videos", "conditioning": args.conditioning,
        "videos": len(records), "frames": frames, "size": args.size, "fps": args.fps, "windows": windows,
        "raw_decode_s": round(raw_s, 2), "raw_frames_per_s": round(frames / raw_s, 1),
        "loader_s": round(loader_s, 2), "loader_windows_per_s": round(windows / loader_s, 1),
        "speed_vs_raw": round(raw_s / loader_s, 3),
        # decoding each window's 10 s span on its own would decode every frame this many times
        "naive_per_window_decode_factor": round(windows * min(args.seconds, 10.0) * args.fps / frames, 1),
    }, indent=2))


if __name__ == "__main__":
    main()

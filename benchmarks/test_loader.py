"""Test-pass decoding: windows per second of the dense test loader against plain PyAV decoding of the same videos.

The loader decodes every test video once and cuts all its overlapping windows from that single pass
(datamodules/video_io.iter_windows); raw decoding is the floor it cannot beat. Run from the repository root:
``.venv/bin/python benchmarks/test_loader.py [--size 320] [--videos 4]``. Uses a synthetic world in a temporary cache.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import av

from copra_bench.datamodules import SyntheticUCFCrimeDataModule


def raw_decode(paths, size: int | None) -> tuple[int, float]:
    start, frames = time.perf_counter(), 0
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.codec_context.width * stream.codec_context.height >= 320 * 240:
                stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frame.to_ndarray(format="rgb24", width=size, height=size) if size else frame.to_ndarray(format="rgb24")
                frames += 1
    return frames, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=320, help="side of the synthetic videos")
    parser.add_argument("--videos", type=int, default=4, help="test videos per label")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=int, default=30)
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="copra_bench_loader_")
    dm = SyntheticUCFCrimeDataModule(domain="A", num_train_normal=1, num_train_abnormal=1,
                                     num_test_normal=args.videos, num_test_abnormal=args.videos,
                                     video_fps=args.fps, min_seconds=args.seconds, max_seconds=args.seconds,
                                     video_size=args.size, cache_dir=cache, frame_size=None, batch_size=8)
    dm.prepare_data()
    dm.setup("test")
    records = dm.test_sets[0].records
    frames, raw_s = raw_decode([r.path for r in records], None)
    start, windows = time.perf_counter(), 0
    for batch in dm.test_dataloader()[0]:
        windows += batch["frames"].shape[0]
    loader_s = time.perf_counter() - start
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "videos": len(records), "frames": frames, "size": args.size, "fps": args.fps, "windows": windows,
        "raw_decode_s": round(raw_s, 2), "raw_frames_per_s": round(frames / raw_s, 1),
        "loader_s": round(loader_s, 2), "loader_windows_per_s": round(windows / loader_s, 1),
        "loader_vs_raw_time": round(raw_s / loader_s, 3),
        # decoding each window's 10 s span on its own would decode every frame this many times
        "naive_per_window_decode_factor": round(windows * min(args.seconds, 10.0) * args.fps / frames, 1),
    }, indent=2))


if __name__ == "__main__":
    main()

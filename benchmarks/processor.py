"""Cost of the VLM's video preprocessing (resize, normalise, patchify) for one batch of real-size test windows.

Uses transformers' Qwen2-VL video processor with its released defaults (what a Qwen2-VL-7B-Instruct checkpoint
ships), on CPU, or on CUDA with ``--device cuda`` (VLMBackbone runs it on the model's device). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from transformers import Qwen2VLVideoProcessor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    processor = Qwen2VLVideoProcessor()
    rows = []
    for height, width in [(240, 320), (448, 448), (720, 1280)]:
        clips = [torch.randint(0, 255, (8, 3, height, width), dtype=torch.uint8, device=args.device)
                 for _ in range(args.windows)]
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = processor(videos=clips, do_sample_frames=False, cap_pixels_per_frame=False, device=args.device,
                            return_tensors="pt")
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        t, h, w = out["video_grid_thw"][0].tolist()
        rows.append({"frames": f"{width}x{height}", "grid_thw": [t, h, w], "video_tokens_per_window": t * h * w // 4,
                     "ms_per_batch_median": round(1000 * sorted(times)[len(times) // 2], 1)})
    print(json.dumps({"machine": f"{platform.machine()}, {os.cpu_count()} cores", "device": args.device,
                      "windows_per_batch": args.windows, "frames_per_window": 8, "results": rows}, indent=2))


if __name__ == "__main__":
    main()

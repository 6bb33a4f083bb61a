"""``copra_bench data synth``: write a synthetic world in a release layout to a folder of the user's choice."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from copra_bench.datamodules.synthetic.layouts import LAYOUTS, META_FILE, layout_generator
from copra_bench.datamodules.synthetic.scene import DOMAINS
from copra_bench.datamodules.synthetic.spec import SyntheticSpec


def main_synth(argv: list[str] | None = None) -> int:
    """CLI ``copra_bench data synth``: write a synthetic dataset to ``--out``; returns 0 on success."""
    defaults = SyntheticSpec()
    parser = argparse.ArgumentParser(prog="copra_bench data synth",
                                     description="Write the deterministic synthetic surveillance dataset in a real "
                                                 "release layout.")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--layout", default="ucf_crime", help=f"release layout (known: {', '.join(sorted(LAYOUTS))})")
    parser.add_argument("--domain", default=defaults.domain,
                        help=f"camera domain (known: {', '.join(sorted(DOMAINS))})")
    for f in fields(SyntheticSpec):
        if f.name != "domain":
            parser.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(defaults, f.name)),
                                default=getattr(defaults, f.name), help=f"default: {getattr(defaults, f.name)}")
    parser.add_argument("--frames", action="store_true",
                        help="write pre-extracted frame folders (<video>/000001.jpg ...) instead of video files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        generate = layout_generator(args.layout)
        spec = SyntheticSpec(**{f.name: getattr(args, f.name) for f in fields(SyntheticSpec)})
    except ValueError as err:
        parser.error(str(err))
    out = generate(args.out, spec, progress=not args.no_progress, **({"frames": True} if args.frames else {}))
    print(out)
    videos = json.loads((out / META_FILE).read_text())["videos"]
    n_abn = sum(v["label"] for v in videos)
    print(f"{len(videos)} videos ({n_abn} abnormal, {len(videos) - n_abn} normal), "
          f"{sum(v['num_frames'] for v in videos)} frames at {spec.fps} fps, "
          f"{spec.frame_size}x{spec.frame_size}, {args.layout} layout{' (frame folders)' if args.frames else ''}, "
          f"domain {spec.domain}")
    return 0

"""Writing rendered frames to disk: lossless ``.mp4`` files (``libx264rgb``, crf 0) or JPEG frame folders.

Lossless video means the real readers decode exactly the rendered frames; frame folders are lossy JPEG, like the real
pre-extracted copies of the releases.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np


def write_mp4(path: str | Path, chunks: Iterable[np.ndarray], *, fps: int) -> int:
    """Write uint8 RGB frames losslessly (libx264rgb, crf 0) to ``path``; returns the number of frames written."""
    count = 0
    with av.open(str(path), "w") as container:
        stream = None
        for chunk in chunks:
            if stream is None:
                stream = container.add_stream("libx264rgb", rate=fps, options={"crf": "0", "preset": "ultrafast"})
                stream.height, stream.width = chunk.shape[1:3]
                stream.pix_fmt = "rgb24"
            for frame in chunk:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
                count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def write_frames(folder: str | Path, chunks: Iterable[np.ndarray], *, pattern: str = "{:06d}.jpg", first: int = 1,
                 quality: int = 95) -> int:
    """Write uint8 RGB frames as a frame folder (``000001.jpg ...`` by default; ShanghaiTech uses ``000.jpg ...``,
    ``pattern="{:03d}.jpg", first=0``); returns the number of frames written. JPEG is lossy, as in the real copies."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for chunk in chunks:
        for frame in chunk:
            Image.fromarray(frame).save(folder / pattern.format(first + count), quality=quality)
            count += 1
    return count


def write_video(path: Path, chunks: Iterable[np.ndarray], *, fps: int, frames: bool) -> int:
    """A video file at ``path`` or, with ``frames``, a frame folder at ``path`` without its suffix."""
    if frames:
        return write_frames(path.with_suffix(""), chunks)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_mp4(path, chunks, fps=fps)

"""Video decoding with PyAV: probe, read a few frames, and stream overlapping windows decoding each frame once.

Dense test windows overlap ~19x (10 s windows every 16 frames at 30 fps), so decoding per window would decode every
frame ~19 times. :func:`iter_windows` decodes a video once, front to back, keeps only the frames some pending window
still needs, and yields each window as soon as its last frame has been decoded: memory stays bounded by one window's
span whatever the video length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from copra_bench.errors import VideoDecodeError


THREADED_DECODE_MIN_PIXELS = 320 * 240


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    num_frames: int
    fps: float
    width: int
    height: int


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoDecodeError(f"cannot open video {path}: {err}. Re-download or re-encode the file, "
                               "or remove it from the split list.") from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path} has no video stream")
    return container


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, fps and size from the container; counts packets when the container has no frame count."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        num_frames = int(stream.frames or 0)
        if num_frames <= 0:
            try:
                num_frames = sum(1 for packet in container.demux(stream) if packet.size > 0)
            except av.error.FFmpegError as err:
                raise VideoDecodeError(f"cannot read packets of {path}: {err}") from err
        width, height = stream.codec_context.width, stream.codec_context.height
    if num_frames <= 0 or fps <= 0:
        raise VideoDecodeError(f"{path}: the container reports {num_frames} frames at {fps} fps; the file is "
                               "probably truncated or corrupt")
    return VideoInfo(num_frames=num_frames, fps=fps, width=width, height=height)


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """``(width, height)`` after resizing the shorter side to ``short_side`` with the aspect ratio kept (even
    sizes, as codecs and patch grids like); the native size when ``short_side`` is ``None``."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    even = lambda v: max(2, int(round(v * scale / 2)) * 2)  # noqa: E731
    return (short_side, even(height)) if width <= height else (even(width), short_side)


def _frame_to_array(frame: av.VideoFrame, size: int | None) -> np.ndarray:
    if size is None:
        return frame.to_ndarray(format="rgb24")
    width, height = output_size(frame.width, frame.height, size)
    # swscale resizes while converting, far cheaper than resizing the full-size RGB array afterwards.
    return frame.to_ndarray(format="rgb24", width=width, height=height)


def _decode(path: Path) -> Iterator[tuple[int, av.VideoFrame]]:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        # Frame threading pays off on real-size videos; on tiny ones its overhead makes decoding ~3x slower.
        if stream.codec_context.width * stream.codec_context.height >= THREADED_DECODE_MIN_PIXELS:
            stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            yield index, frame
    except av.error.FFmpegError as err:
        raise VideoDecodeError(f"decoding {path} failed: {err}. The file is corrupt; re-download or re-encode it.") \
            from err
    finally:
        container.close()


def read_frames(path: str | Path, indices: np.ndarray | list[int], *, size: int | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) as ``[len(indices), H, W, 3]`` uint8 RGB.

    ``size``: shorter side after resizing (aspect ratio kept), ``None`` for the native size.
    """
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    wanted = set(indices.tolist())
    last = int(indices.max())
    kept: dict[int, np.ndarray] = {}
    for index, frame in _decode(path):
        if index in wanted:
            kept[index] = _frame_to_array(frame, size)
        if index >= last:
            break
    missing = wanted.difference(kept)
    if missing:
        raise VideoDecodeError(f"{path}: decoded only {len(kept) and max(kept) + 1} frames but frame {min(missing)} "
                               "was requested; the file is shorter than its container claims (truncated?)")
    return np.stack([kept[i] for i in indices.tolist()])


def iter_windows(path: str | Path, window_indices: np.ndarray, *, size: int | None = None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(window_index, frames[K, H, W, 3])`` for every row of ``window_indices``, decoding the video once.

    Args:
        path: The video file.
        window_indices: ``[num_windows, K]`` frame indices per window, windows ordered by centre (so each window's
            first and last frame never decrease from one window to the next).
        size: Resize so the shorter side is ``size`` (aspect ratio kept; done while converting), or ``None`` for
            the native size.
    """
    path = Path(path)
    window_indices = np.asarray(window_indices, dtype=np.int64)
    n_windows = window_indices.shape[0]
    window_last = window_indices.max(axis=1)
    # The smallest frame still needed by windows w.. (suffix minimum): frames below it can be dropped.
    still_needed_from = np.minimum.accumulate(window_indices.min(axis=1)[::-1])[::-1]
    needed = np.zeros(int(window_last.max()) + 1, dtype=bool)
    needed[window_indices.ravel()] = True
    buffer: dict[int, np.ndarray] = {}
    next_window = 0
    for index, frame in _decode(path):
        if index < needed.shape[0] and needed[index]:
            buffer[index] = _frame_to_array(frame, size)
        while next_window < n_windows and window_last[next_window] <= index:
            rows = window_indices[next_window]
            yield next_window, np.stack([buffer[i] for i in rows.tolist()])
            next_window += 1
            if next_window < n_windows:
                floor = still_needed_from[next_window]
                for stale in [i for i in buffer if i < floor]:
                    del buffer[stale]
        if next_window == n_windows:
            return
    raise VideoDecodeError(f"{path}: the video ended before window {next_window} of {n_windows} could be read "
                           f"(it needs frame {int(window_last[next_window])}); the file is shorter than its "
                           "container claims (truncated?)")

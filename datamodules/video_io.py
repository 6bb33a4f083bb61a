"""Video decoding with PyAV: probe, read a few frames, and stream overlapping windows decoding each frame once.

A "video" is either a container file (``.mp4``, ``.avi``...) or a frame folder (``<video>/000001.jpg ...`` or
ShanghaiTech's ``<video>/000.jpg ...``: frame ``i`` is the ``i``-th image in numeric order). Frame folders carry no
frame rate: the DataModule supplies it (config ``fps`` or the dataset's documented rate).

Dense test windows overlap ~19x (10 s windows every 16 frames at 30 fps), so decoding per window would decode every
frame ~19 times. :func:`iter_windows` decodes a video once, front to back, keeps only the frames some pending window
still needs, and yields each window as soon as its last frame has been decoded: memory stays bounded by one window's
span whatever the video length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import re

import av
import numpy as np
from PIL import Image

from copra_bench.errors import VideoDecodeError


THREADED_DECODE_MIN_PIXELS = 320 * 240
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_DIGITS = re.compile(r"(\d+)")


def is_frame_folder(path: Path) -> bool:
    """A directory holding at least one image file."""
    return path.is_dir() and any(f.suffix.lower() in IMAGE_EXTENSIONS for f in path.iterdir())


def frame_files(folder: str | Path) -> list[Path]:
    """The images of a frame folder in frame order (numeric order of the last number in the name)."""
    def order(path: Path) -> tuple:
        numbers = _DIGITS.findall(path.stem)
        return (int(numbers[-1]) if numbers else -1, path.name)

    files = [f for f in Path(folder).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=order)


def _read_image(path: Path) -> av.VideoFrame:
    try:
        with Image.open(path) as image:
            return av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
    except (OSError, ValueError) as err:
        raise VideoDecodeError(f"cannot decode frame image {path}: {err}. Re-extract the frames of this video.") \
            from err


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video."""

    num_frames: int
    fps: float
    width: int
    height: int
    #: When the container's header said otherwise: what it said (``"499 frames at 50 fps"``); counted from packets.
    header: str = ""


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


#: Containers whose header frame count and rate can count the empty "drop" packets a re-wrap writes (an ``.avi``
#: re-wrap of a 250-frame 25 fps H.264 video probes as ~500 frames at 50 fps): counted from the packets instead.
COUNT_PACKETS_FORMATS = frozenset({"avi"})


def stream_frames(container: av.container.InputContainer, stream) -> tuple[int, float]:
    """``(frames, fps)`` from the packets that hold data (no decoding): their count, and the rate from the median
    step between their sorted timestamps (0.0 when the packets have none)."""
    count, stamps = 0, []
    for packet in container.demux(stream):
        if packet.size <= 0:
            continue
        count += 1
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is not None:
            stamps.append(stamp)
    steps = np.diff(np.unique(np.asarray(stamps, dtype=np.int64)))
    if steps.size == 0 or stream.time_base is None:
        return count, 0.0
    return count, 1.0 / float(float(np.median(steps)) * stream.time_base)


def probe_video(path: str | Path, *, fps: float | None = None) -> VideoInfo:
    """Frame count, fps and size from the container; from its packets when the container has no frame count or is
    of a kind whose header may count empty packets (:data:`COUNT_PACKETS_FORMATS`).

    Frame folders: the number of images and the size of the first one; ``fps`` must be given (a folder has none).
    For containers ``fps`` (when given) replaces the container's rate.
    """
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise VideoDecodeError(f"frame folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        if not fps:
            raise VideoDecodeError(f"frame folder {path} has no frame rate: set the DataModule's fps")
        first = _read_image(files[0])
        return VideoInfo(num_frames=len(files), fps=float(fps), width=first.width, height=first.height)
    header = ""
    with _open(path) as container:
        stream = container.streams.video[0]
        fps_read = float(stream.average_rate or stream.guessed_rate or 0.0)
        num_frames = int(stream.frames or 0)
        if num_frames <= 0 or set(container.format.name.split(",")) & COUNT_PACKETS_FORMATS:
            try:
                counted, rate = stream_frames(container, stream)
            except av.error.FFmpegError as err:
                raise VideoDecodeError(f"cannot read packets of {path}: {err}") from err
            if counted != num_frames and counted > 0:
                header = f"{num_frames} frames at {fps_read:g} fps" if num_frames > 0 else ""
                fps_read = rate or (fps_read * counted / num_frames if num_frames > 0 else fps_read)
                num_frames = counted
        width, height = stream.codec_context.width, stream.codec_context.height
    fps = float(fps or fps_read)
    if num_frames <= 0 or fps <= 0:
        raise VideoDecodeError(f"{path}: the container reports {num_frames} frames at {fps} fps; the file is "
                               "probably truncated or corrupt")
    return VideoInfo(num_frames=num_frames, fps=fps, width=width, height=height, header=header)


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


def _decode(path: Path, needed: np.ndarray | None = None) -> Iterator[tuple[int, av.VideoFrame]]:
    """``(index, frame)`` in frame order. Containers are decoded front to back (every frame); frame folders read
    only the images whose ``needed[index]`` is set (all when ``needed`` is None)."""
    if path.is_dir():
        yield from _read_folder(path, needed)
        return
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


def _read_folder(path: Path, needed: np.ndarray | None) -> Iterator[tuple[int, av.VideoFrame]]:
    files = frame_files(path)
    if not files:
        raise VideoDecodeError(f"frame folder {path} holds no images")
    for index, file in enumerate(files):
        if needed is None or (index < needed.shape[0] and needed[index]):
            yield index, _read_image(file)
        elif needed is not None and index >= needed.shape[0]:
            return


def read_frames(path: str | Path, indices: np.ndarray | list[int], *, size: int | None = None) -> np.ndarray:
    """Decode the frames at ``indices`` (any order, repeats allowed) as ``[len(indices), H, W, 3]`` uint8 RGB.

    ``size``: shorter side after resizing (aspect ratio kept), ``None`` for the native size.
    """
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    wanted = set(indices.tolist())
    last = int(indices.max())
    kept: dict[int, np.ndarray] = {}
    needed = np.zeros(last + 1, dtype=bool)
    needed[indices] = True
    for index, frame in _decode(path, needed):
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
    for index, frame in _decode(path, needed):
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


def read_frames_seeking(path: str | Path, indices: np.ndarray | list[int], *, size: int | None = None
                        ) -> np.ndarray:
    """Like :func:`read_frames`, but seeks to the keyframe before each far-away frame instead of decoding the
    whole video up to the last index: a few frames spread over a long video cost a few GOPs each.

    The index of a decoded frame is taken from its timestamp (constant frame rate assumed, as in the VAD releases);
    a container without timestamps falls back to :func:`read_frames`. Frame folders read only the wanted images.
    """
    path = Path(path)
    indices = np.asarray(indices, dtype=np.int64)
    if path.is_dir():
        return read_frames(path, indices, size=size)
    wanted = sorted(set(indices.tolist()))
    kept: dict[int, np.ndarray] = {}
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        base = stream.start_time or 0
        if rate is None or stream.time_base is None:
            return read_frames(path, indices, size=size)
        if stream.codec_context.width * stream.codec_context.height >= THREADED_DECODE_MIN_PIXELS:
            stream.thread_type = "AUTO"
        frames_per_tick = float(stream.time_base * rate)
        position = -1  # index of the last frame decoded by the current sequential run
        decoder = None
        gop = 0  # largest distance seen from a seek's landing keyframe to its target: a seek cannot save more
        for target in wanted:
            # Keep decoding forward when the target is near (a seek would land on a keyframe before us anyway).
            seek = decoder is None or target - position > max(2 * float(rate), gop)
            if seek:
                container.seek(int(base + target / frames_per_tick), stream=stream, backward=True, any_frame=False)
                decoder = container.decode(stream)
                position = -1
            try:
                for frame in decoder:
                    if frame.pts is None:
                        return read_frames(path, indices, size=size)
                    position = round((frame.pts - base) * frames_per_tick)
                    if seek:
                        gop, seek = max(gop, target - position), False
                    if position == target:
                        kept[target] = _frame_to_array(frame, size)
                        break
                    if position > target:  # the seek landed past the target: give up seeking for this file
                        return read_frames(path, indices, size=size)
            except av.error.FFmpegError as err:
                raise VideoDecodeError(f"decoding {path} failed: {err}") from err
            if target not in kept:
                raise VideoDecodeError(f"{path}: frame {target} was requested but the video ends at frame "
                                       f"{position}; the file is shorter than its container claims (truncated?)")
    return np.stack([kept[i] for i in indices.tolist()])

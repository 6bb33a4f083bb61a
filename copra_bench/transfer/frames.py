"""Which frames of a document's video (or span) the VLM sees, as each benchmark's own code picks them.

* ``vru_arange``: VRU-Accident's loader for the Qwen / LLaVA-NeXT models (``utils/utils.py:DataLoader``):
  ``np.arange(0, total_frames, total_frames / 8).astype(int)``, i.e. K frames from frame 0 at a fixed stride.
* ``segment_centres``: HolmesVAU / InternVL's ``get_index`` (``holmesvau/holmesvau_utils.py``, ``select_frames=12``)
  on the whole video: ``[0, last frame]`` cut into K equal segments, the centre frame of each
  (``int(seg / 2 + round(seg * i))``). On a span, the frames ``get_index`` picks from the clip file
  ``HIVAU-70k/split_video.py`` cuts (frames ``int(start * fps) .. min(int(end * fps), last frame) - 1``), mapped
  back to the source video, so no cut files are needed.

Spans are seconds of the source video, read by seeking (:func:`read_frames_seeking`), never from pre-cut files.
"""

from __future__ import annotations

import numpy as np

from copra_bench.datamodules.video_io import VideoInfo, read_frames_seeking

__all__ = ["SAMPLINGS", "frame_indices", "read_document_frames"]

SAMPLINGS = ("vru_arange", "segment_centres")


def frame_indices(sampling: str, num_frames: int, info: VideoInfo,
                  span: tuple[float, float] | None = None) -> np.ndarray:
    """The K frame indices of a document (always K, in order, inside the video)."""
    last = info.num_frames - 1
    if sampling == "vru_arange":
        if span is not None:
            start, stop = max(0, round(span[0] * info.fps)), min(round(span[1] * info.fps), last + 1)
        else:
            start, stop = 0, info.num_frames
        total = max(stop - start, 1)
        picked = np.arange(0, total, total / num_frames).astype(int)[:num_frames] + start
    elif sampling == "segment_centres":
        if span is None:
            offset, clip_last = 0, last
        else:  # split_video.py: get_batch(range(int(start * fps), min(int(end * fps), last))) -> a new file
            offset = int(span[0] * info.fps)
            clip_last = max(min(int(span[1] * info.fps), last) - offset - 1, 0)
        seg = float(clip_last) / num_frames
        picked = np.array([offset + int(seg / 2 + np.round(seg * i)) for i in range(num_frames)])
    else:
        raise ValueError(f"unknown frame sampling {sampling!r}; one of {', '.join(SAMPLINGS)}")
    if len(picked) < num_frames:  # a video shorter than K frames: repeat the last one
        picked = np.concatenate([picked, np.full(num_frames - len(picked), picked[-1] if len(picked) else 0)])
    return np.clip(picked, 0, last).astype(np.int64)


def read_document_frames(path, indices: np.ndarray, *, size: int | None = None) -> np.ndarray:
    """uint8 ``[K, H, W, 3]`` frames at ``indices`` (``size``: shorter side, None for native)."""
    return read_frames_seeking(path, indices, size=size)

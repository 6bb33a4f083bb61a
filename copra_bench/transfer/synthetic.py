"""The embedded default tasks: the synthetic transfer set (:mod:`copra_bench.datamodules.synthetic.transfer`) read
by the real readers, so that ``transfer`` runs end to end on CPU with nothing downloaded.

Each class generates (once, cached) the synthetic videos and their files in the real formats, then is the real task
on them: :class:`SyntheticVRUAccidentVQA` is :class:`VRUAccidentVQA` on subsets ``SYN_A``, ``SYN_B``, ``SYN_C``, and so
on. The protocol (frames, tokens, prompts, metrics) is the real benchmark's unless the config changes it.
"""

from __future__ import annotations

from collections.abc import Sequence

from copra_bench.datamodules.synthetic.transfer import (
    ensure_transfer_set,
    transfer_specs,
)

from .hivau import LEVELS, HIVAUCaption
from .vru_accident import VRUAccidentCaption, VRUAccidentVQA

__all__ = ["SyntheticHIVAUCaption", "SyntheticVRUAccidentCaption", "SyntheticVRUAccidentVQA"]


def _root(domains: Sequence[str], seed: int, abnormal: int, normal: int, frame_size: int,
          cache_dir: str | None) -> str:
    specs = transfer_specs(tuple(domains), seed=seed, abnormal=abnormal, normal=normal, frame_size=frame_size)
    return str(ensure_transfer_set(specs, cache_dir=cache_dir))


class SyntheticVRUAccidentVQA(VRUAccidentVQA):
    """VRU-Accident MC-VQA on the synthetic transfer set (four categories per video, one subset per domain).

    Args:
        domains: synthetic domains, one subset ``SYN_<domain>`` each.
        seed, abnormal, normal, frame_size: the test videos per domain (:func:`transfer_specs`).
        cache_dir: where the set is cached (default ``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``).
        **kwargs: :class:`VRUAccidentVQA` settings (num_frames, max_new_tokens, answer_from_last_line).
    """

    name = "synthetic_vqa"

    def __init__(self, *, domains: Sequence[str] = ("A", "B", "C"), seed: int = 100, abnormal: int = 4,
                 normal: int = 2, frame_size: int = 64, cache_dir: str | None = None, **kwargs) -> None:
        super().__init__(root=_root(domains, seed, abnormal, normal, frame_size, cache_dir),
                         subsets=[f"SYN_{d}" for d in domains], **kwargs)


class SyntheticVRUAccidentCaption(VRUAccidentCaption):
    """VRU-Accident dense captioning on the synthetic transfer set (template captions of each event)."""

    name = "synthetic_caption"

    def __init__(self, *, domains: Sequence[str] = ("A", "B", "C"), seed: int = 100, abnormal: int = 4,
                 normal: int = 2, frame_size: int = 64, cache_dir: str | None = None, **kwargs) -> None:
        super().__init__(root=_root(domains, seed, abnormal, normal, frame_size, cache_dir),
                         subsets=[f"SYN_{d}" for d in domains], **kwargs)


class SyntheticHIVAUCaption(HIVAUCaption):
    """HIVAU-70K captioning on the synthetic transfer set (clip captions, event and video judgements/descriptions)."""

    name = "synthetic_hivau"

    def __init__(self, *, domains: Sequence[str] = ("A", "B", "C"), seed: int = 100, abnormal: int = 4,
                 normal: int = 2, frame_size: int = 64, cache_dir: str | None = None,
                 levels: Sequence[str] = LEVELS, **kwargs) -> None:
        root = _root(domains, seed, abnormal, normal, frame_size, cache_dir)
        super().__init__(root=f"{root}/HIVAU-70k", levels=list(levels), **kwargs)

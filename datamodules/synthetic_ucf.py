"""The embedded default dataset: the synthetic world written in the UCF-Crime release layout.

Generated on first use into a cache folder (``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``) and read back by the
real :class:`~copra_bench.datamodules.ucf_crime.UCFCrimeDataModule` reader, so the embedded default exercises
exactly the code path a real UCF-Crime copy takes.
"""

from __future__ import annotations

from pathlib import Path

from copra_bench.datamodules.base import Split
from copra_bench.datamodules.records import VideoRecord
from copra_bench.datamodules.synthetic import SyntheticSpec, ensure_synthetic
from copra_bench.datamodules.ucf_crime import UCFCrimeDataModule


class SyntheticUCFCrimeDataModule(UCFCrimeDataModule):
    """Synthetic surveillance videos of one visual domain, in the UCF-Crime layout.

    Args:
        domain: Visual domain of the synthetic world: ``A`` sunny plaza, ``B`` night street, ``C`` indoor store
            (background, agents, camera noise and partly different anomaly kinds).
        synth_seed: Seed of the generated world (videos are a pure function of the spec).
        num_train_normal, num_train_abnormal, num_test_normal, num_test_abnormal: Videos per split and label.
        video_fps: Frame rate of the generated videos.
        min_seconds, max_seconds: Range of video durations.
        video_size: Side of the (square) generated frames.
        cache_dir: Where generated worlds are kept (default ``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``).
        root: Use an already generated folder instead of the cache (e.g. one written by ``data synth``).
        frame_size: Decoded frame size; default ``None`` keeps the generated size.
        **kwargs: See :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    def __init__(self, *, domain: str = "A", synth_seed: int = 0, num_train_normal: int = 8,
                 num_train_abnormal: int = 8, num_test_normal: int = 6, num_test_abnormal: int = 6,
                 video_fps: int = 16, min_seconds: float = 12.0, max_seconds: float = 24.0, video_size: int = 64,
                 cache_dir: str | None = None, root: str | None = None, frame_size: int | None = None,
                 **kwargs) -> None:
        self.spec = SyntheticSpec(domain=domain, seed=synth_seed, num_train_normal=num_train_normal,
                                  num_train_abnormal=num_train_abnormal, num_test_normal=num_test_normal,
                                  num_test_abnormal=num_test_abnormal, fps=video_fps, min_seconds=min_seconds,
                                  max_seconds=max_seconds, frame_size=video_size)
        self.cache_dir = cache_dir
        self._generated = root is not None
        super().__init__(root=root or ".", frame_size=frame_size, **kwargs)

    @property
    def name(self) -> str:
        return f"synth_ucf_{self.spec.domain}"

    def check_root(self) -> None:
        if self._generated:
            super().check_root()

    def prepare_data(self) -> None:
        self._ensure()

    def _ensure(self) -> None:
        if not self._generated:
            self.root = Path(ensure_synthetic(self.spec, layout="ucf_crime", cache_dir=self.cache_dir))
            self._index = None
            self._generated = True

    def load_split(self, split: Split) -> list[VideoRecord]:
        self._ensure()
        return super().load_split(split)

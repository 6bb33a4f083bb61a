"""The synthetic world read through each real reader: XD-Violence and ShanghaiTech layouts (UCF-Crime: see
:mod:`copra_bench.datamodules.synthetic.ucf_crime`). Generated on first use into the cache, then read exactly like a
real copy of the release, so every reader is tested end to end on decodable videos (or frame folders)."""

from __future__ import annotations

from pathlib import Path

from copra_bench.datamodules.base import Split
from copra_bench.datamodules.records import VideoRecord
from copra_bench.datamodules.shanghaitech import ShanghaiTechDataModule
from copra_bench.datamodules.synthetic.cache import ensure_synthetic
from copra_bench.datamodules.synthetic.spec import SyntheticSpec
from copra_bench.datamodules.xd_violence import XDViolenceDataModule


class SyntheticWorldMixin:
    """Builds the :class:`SyntheticSpec`, generates the layout into the cache on first use, points ``root`` at it.

    Args:
        domain: Visual domain of the synthetic world: ``A`` sunny plaza, ``B`` night street, ``C`` indoor store
            (background, agents, camera noise and partly different anomaly kinds).
        synth_seed: Seed of the generated world (videos are a pure function of the spec).
        num_train_normal, num_train_abnormal, num_test_normal, num_test_abnormal: Videos per split and label.
        video_fps: Frame rate of the generated videos (also the rate of its frame folders).
        min_seconds, max_seconds: Range of video durations.
        video_size: Side of the (square) generated frames.
        cache_dir: Where generated worlds are kept (default ``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``).
        root: Use an already generated folder instead of the cache (e.g. one written by ``data synth``).
        frames: Generate (or read) pre-extracted frame folders instead of video files.
        frame_size: Decoded frame size; default ``None`` keeps the generated size.
        **kwargs: See the layout's reader and :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    layout = "ucf_crime"
    short_name = "ucf"
    dataset_family = "synthetic"  # every layout of the synthetic world follows its own protocol, not the reader's

    def __init__(self, *, domain: str = "A", synth_seed: int = 0, num_train_normal: int = 8,
                 num_train_abnormal: int = 8, num_test_normal: int = 6, num_test_abnormal: int = 6,
                 video_fps: int = 16, min_seconds: float = 12.0, max_seconds: float = 24.0, video_size: int = 64,
                 cache_dir: str | None = None, root: str | None = None, frames: bool = False,
                 frame_size: int | None = None, **kwargs) -> None:
        self.spec = SyntheticSpec(domain=domain, seed=synth_seed, num_train_normal=num_train_normal,
                                  num_train_abnormal=num_train_abnormal, num_test_normal=num_test_normal,
                                  num_test_abnormal=num_test_abnormal, fps=video_fps, min_seconds=min_seconds,
                                  max_seconds=max_seconds, frame_size=video_size)
        self.cache_dir = cache_dir
        self.frames = frames
        self._generated = root is not None
        kwargs = self.layout_arguments(kwargs)
        super().__init__(root=root or ".", frame_size=frame_size,  # type: ignore[call-arg]
                         source="frames" if frames else "videos", **kwargs)
        self.frames_fps = self.fps or float(video_fps)

    def layout_arguments(self, kwargs: dict) -> dict:
        """Reader arguments implied by the spec (e.g. the expected split sizes)."""
        return kwargs

    @property
    def name(self) -> str:
        return f"synth_{self.short_name}_{self.spec.domain}"

    def check_root(self) -> None:
        if self._generated:
            super().check_root()  # type: ignore[misc]

    def prepare_data(self) -> None:
        self._ensure()

    def _ensure(self) -> None:
        if not self._generated:
            self.root = Path(ensure_synthetic(self.spec, layout=self.layout, cache_dir=self.cache_dir,
                                              frames=self.frames))
            self._index = None
            self._generated = True

    def list_split(self, split: Split):
        self._ensure()
        return super().list_split(split)  # type: ignore[misc]

    def load_split(self, split: Split) -> list[VideoRecord]:
        self._ensure()
        return super().load_split(split)  # type: ignore[misc]


class SyntheticXDViolenceDataModule(SyntheticWorldMixin, XDViolenceDataModule):
    """Synthetic surveillance videos of one visual domain, in the XD-Violence layout (names with label codes,
    ``annotations.txt``). Arguments: see :class:`SyntheticWorldMixin` and :class:`XDViolenceDataModule`."""

    layout = "xd_violence"
    short_name = "xd"

    def layout_arguments(self, kwargs: dict) -> dict:
        counts = {"train": self.spec.num_train_normal + self.spec.num_train_abnormal,
                  "test": self.spec.num_test_normal + self.spec.num_test_abnormal}
        return {"expected_counts": counts, **kwargs}


class SyntheticShanghaiTechDataModule(SyntheticWorldMixin, ShanghaiTechDataModule):
    """Synthetic surveillance videos of one visual domain, in the ShanghaiTech layout (test part as frame folders
    with frame masks, training part as .avi, SH_Train/SH_Test lists). Arguments: see :class:`SyntheticWorldMixin`
    and :class:`ShanghaiTechDataModule`."""

    layout = "shanghaitech"
    short_name = "sh"

"""The embedded default dataset: the synthetic world written in the UCF-Crime release layout.

Generated on first use into a cache folder (``$COPRA_CACHE_DIR`` or ``~/.cache/copra_bench``) and read back by the
real :class:`~copra_bench.datamodules.ucf_crime.UCFCrimeDataModule` reader, so the embedded default exercises
exactly the code path a real UCF-Crime copy takes.
"""

from __future__ import annotations

from copra_bench.datamodules.synthetic.datamodules import SyntheticWorldMixin
from copra_bench.datamodules.ucf_crime import UCFCrimeDataModule


class SyntheticUCFCrimeDataModule(SyntheticWorldMixin, UCFCrimeDataModule):
    """Synthetic surveillance videos of one visual domain, in the UCF-Crime layout.

    Arguments: see :class:`~copra_bench.datamodules.synthetic.datamodules.SyntheticWorldMixin` (domain, counts,
    ``video_fps``, ``frames``...) and :class:`~copra_bench.datamodules.ucf_crime.UCFCrimeDataModule`.
    """

    layout = "ucf_crime"
    short_name = "ucf"

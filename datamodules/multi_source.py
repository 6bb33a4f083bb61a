"""Multi-source protocol: train on the union of several datasets (A + B), test on a held-out one (C)."""

from __future__ import annotations

from copra_bench.datamodules.base import VADDataModule
from copra_bench.datamodules.cross_domain import ComposedDataModule
from copra_bench.errors import DataError


class MultiSourceDataModule(ComposedDataModule):
    """Train/val on every dataset of ``sources`` together; test on ``target`` (and on each source's own test split
    when ``test_on_sources``).

    Each source keeps its own stratified train/validation partition (same ``val_fraction`` and ``seed``), and the
    union of the partitions is used, so no source dominates validation by chance. Shared settings (window geometry,
    frame size, regime, GT convention) are pushed into every member.

    Args:
        sources: The training datasets (at least two; one source is the cross-domain protocol).
        target: The held-out test dataset.
        test_on_sources: Also report the in-domain test split of every source.
        **kwargs: Shared settings, see :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    protocol_name = "multi-source"

    def __init__(self, sources: list[VADDataModule], target: VADDataModule, *, test_on_sources: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if len(sources) < 2:
            raise DataError("a multi-source protocol needs at least two sources; use CrossDomainDataModule for one")
        names = [s.name for s in sources] + [target.name]
        if len(set(names)) != len(names):
            raise DataError(f"multi-source datasets must all differ, got {names}: the target is held out")
        self.sources = list(sources)
        self.target = target
        self.test_on_sources = test_on_sources
        self._adopt([*self.sources, target])

    @property
    def name(self) -> str:
        return "+".join(s.name for s in self.sources) + f"_to_{self.target.name}"

    def load_split(self, split):
        """Training videos of all sources (in source order); test videos of the target."""
        if split == "train":
            return [r for s in self.sources for r in s.load_split("train")]
        return self.target.load_split(split)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.train_records:
            for source in self.sources:
                source.setup("fit")
                self.train_records += source.train_records
                self.val_records += source.val_records
        if stage in ("test", "predict", None) and self._test_sets is None:
            self._test_sets = [self._member_test_set(member) for member in self._test_members()]

    def _test_members(self) -> list[VADDataModule]:
        return [self.target, *self.sources] if self.test_on_sources else [self.target]

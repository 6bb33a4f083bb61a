"""Cross-domain protocol: train (and validate) on one dataset, test on another and on the source's own test split."""

from __future__ import annotations

import inspect
import warnings

from copra_bench.datamodules.base import TestSet, VADDataModule
from copra_bench.errors import DataError


_SHARED = ("frames_per_window", "frame_size", "train_regime", "val_fraction", "seed", "gt_end_inclusive")


def _warn_if_overridden(member: VADDataModule, owner: VADDataModule) -> None:
    """Say so when a member dataset was configured with a shared setting the cross-domain module replaces."""
    defaults = inspect.signature(VADDataModule.__init__).parameters
    for key in _SHARED:
        mine, theirs = getattr(member, key), getattr(owner, key)
        if mine != defaults[key].default and mine != theirs:
            warnings.warn(f"{member.name}: {key}={mine!r} is replaced by the cross-domain setting {theirs!r} "
                          f"(set data.init_args.{key} instead)", stacklevel=3)


class CrossDomainDataModule(VADDataModule):
    """Train/val from ``source``; test on ``target`` (and on ``source``'s test split when ``test_on_source``).

    Window geometry, frame size and batch sizes come from this module and are pushed into both datasets, so the
    two test sets are cut and decoded identically (a fair comparison).

    Args:
        source: The dataset the method is trained on.
        target: The dataset of the domain-shift test.
        test_on_source: Also report the in-domain test split of ``source``.
        **kwargs: Shared settings, see :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    def __init__(self, source: VADDataModule, target: VADDataModule, *, test_on_source: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if source.name == target.name:
            raise DataError(f"cross-domain source and target are both {source.name!r}: use an in-domain config")
        self.source = source
        self.target = target
        self.test_on_source = test_on_source
        for member in (source, target):  # one protocol for both test sets
            _warn_if_overridden(member, self)
            member.window_spec = self.window_spec
            member.frames_per_window = self.frames_per_window
            member.frame_size = self.frame_size
            member.train_regime = self.train_regime
            member.val_fraction = self.val_fraction
            member.seed = self.seed
            member.gt_end_inclusive = self.gt_end_inclusive

    @property
    def name(self) -> str:
        return f"{self.source.name}_to_{self.target.name}"

    def prepare_data(self) -> None:
        self.source.prepare_data()
        self.target.prepare_data()

    def load_split(self, split):
        """Training videos come from the source, test videos from the target."""
        return (self.source if split == "train" else self.target).load_split(split)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.train_records:
            self.source.setup("fit")
            self.train_records, self.val_records = self.source.train_records, self.source.val_records
        if stage in ("test", "predict", None) and self._test_sets is None:
            sets = [TestSet(self.target.name, self.target.load_split("test"), self.window_spec)]
            if self.test_on_source:
                sets.append(TestSet(self.source.name, self.source.load_split("test"), self.window_spec))
            self._test_sets = sets

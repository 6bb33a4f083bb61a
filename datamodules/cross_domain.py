"""Cross-domain protocol: train (and validate) on one dataset, test on another and on the source's own test split.

:class:`ComposedDataModule` is the shared base of the protocols built from member datasets (cross-domain,
multi-source): it pushes one set of protocol settings into every member so all test sets are cut and decoded
identically, forwards test-time conditioning, and combines the members' protocol settings and skipped videos.
"""

from __future__ import annotations

import abc
import inspect
import warnings

from copra_bench.datamodules.base import ProtocolValue, TestSet, VADDataModule
from copra_bench.errors import DataError

_SHARED = ("frames_per_window", "frame_size", "train_regime", "val_fraction", "seed", "gt_end_inclusive",
           "train_chunk_seconds", "on_bad_video")


def _warn_if_overridden(member: VADDataModule, owner: VADDataModule) -> None:
    """Say so when a member dataset was configured with a shared setting the composed module replaces."""
    defaults = inspect.signature(VADDataModule.__init__).parameters
    for key in _SHARED:
        mine, theirs = getattr(member, key), getattr(owner, key)
        if mine != defaults[key].default and mine != theirs:
            warnings.warn(f"{member.name}: {key}={mine!r} is replaced by the {owner.protocol_name} setting "
                          f"{theirs!r} (set data.init_args.{key} instead)", stacklevel=4)


class ComposedDataModule(VADDataModule):
    """A protocol over member datasets; subclasses set :attr:`members` and build train records and test sets."""

    protocol_name = "composed"

    def _adopt(self, members: list[VADDataModule]) -> None:
        self.members = members
        for member in members:  # one protocol for every test set
            _warn_if_overridden(member, self)
            member.window_spec = self.window_spec
            for key in _SHARED:
                setattr(member, key, getattr(self, key))

    def prepare_data(self) -> None:
        for member in self.members:
            member.prepare_data()

    def set_conditioning(self, unit, chunk_seconds: float = 120.0) -> None:
        super().set_conditioning(unit, chunk_seconds)
        for member in self.members:
            member.set_conditioning(unit, chunk_seconds)

    def protocol_settings(self) -> dict[str, ProtocolValue]:
        """This module's settings, plus each member's own (``<member>.<key>``) where they differ."""
        settings = super().protocol_settings()
        settings["dataset"] = self.name
        settings["annotation_source"] = ",".join(f"{m.name}:{m.annotation_source()}" for m in self.members)
        settings["source"] = ",".join(f"{m.name}:{m.source}" for m in self.members)
        for member in self.members:
            for key, value in member.protocol_settings().items():
                if key not in ("dataset",) and settings.get(key) != value and key not in ("annotation_source",
                                                                                          "source"):
                    settings[f"{member.name}.{key}"] = value
        return settings

    def skipped_videos(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for member in self.members:
            out.update(member.skipped_videos())
        return out

    def _member_test_set(self, member: VADDataModule) -> TestSet:
        return TestSet(member.name, member.load_split("test"), self.window_spec, member.dataset_family)

    @abc.abstractmethod
    def _test_members(self) -> list[VADDataModule]:
        """The members whose test splits are this protocol's test sets, in test-dataloader order."""

    def test_set_families(self) -> dict[str, str]:
        """Each test set takes its member's family (a cross-domain target's, a multi-source member's); listed in
        member order (sources first), the order runs have always recorded ``conventions.ap_convention`` in."""
        tested = {id(member) for member in self._test_members()}
        return {member.name: member.dataset_family for member in self.members if id(member) in tested}


class CrossDomainDataModule(ComposedDataModule):
    """Train/val from ``source``; test on ``target`` (and on ``source``'s test split when ``test_on_source``).

    Window geometry, frame size and batch sizes come from this module and are pushed into both datasets, so the
    two test sets are cut and decoded identically (a fair comparison).

    Args:
        source: The dataset the method is trained on.
        target: The dataset of the domain-shift test.
        test_on_source: Also report the in-domain test split of ``source``.
        **kwargs: Shared settings, see :class:`~copra_bench.datamodules.base.VADDataModule`.
    """

    protocol_name = "cross-domain"

    def __init__(self, source: VADDataModule, target: VADDataModule, *, test_on_source: bool = True,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if source.name == target.name:
            raise DataError(f"cross-domain source and target are both {source.name!r}: use an in-domain config")
        self.source = source
        self.target = target
        self.test_on_source = test_on_source
        self._adopt([source, target])

    @property
    def name(self) -> str:
        return f"{self.source.name}_to_{self.target.name}"

    def load_split(self, split):
        """Training videos come from the source, test videos from the target."""
        return (self.source if split == "train" else self.target).load_split(split)

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and not self.train_records:
            self.source.setup("fit")
            self.train_records, self.val_records = self.source.train_records, self.source.val_records
        if stage in ("test", "predict", None) and self._test_sets is None:
            self._test_sets = [self._member_test_set(member) for member in self._test_members()]

    def _test_members(self) -> list[VADDataModule]:
        return [self.target, self.source] if self.test_on_source else [self.target]

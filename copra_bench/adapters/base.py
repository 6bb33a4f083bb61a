"""The protocol of a static adapter: one adaptation of the frozen VLM shared by every input.

A :class:`StaticAdapter` (a soft prompt, a LoRA) adapts its backbone only inside :meth:`StaticAdapter.adaptation`;
outside the context the backbone is the frozen reference (GRPO's KL term needs it). It names its trainable tensors
and how many values they hold, writes itself for use outside the project (``save_pretrained``) and, where it can,
merges into the base weights for test (:meth:`StaticAdapter.merge` / :meth:`StaticAdapter.unmerge`).

``adaptation(repeats)`` is the adaptation protocol of the GRPO engine (:data:`copra_bench.rl.engine.Adaptation`):
a static adapter is the same for every row, whatever ``repeats``.
"""

from __future__ import annotations

import abc
import contextlib
from pathlib import Path

from torch import nn

from copra_bench.errors import CopraError
from copra_bench.vlm import ScoreOutput, VLMBackbone

__all__ = ["StaticAdapter"]


class StaticAdapter(nn.Module, abc.ABC):
    """One adaptation of ``backbone`` shared by all inputs (see the module docstring).

    Subclasses write :meth:`applied`, :meth:`trainable_parameters` and :meth:`save_pretrained`, and set
    :attr:`count_name`; a mergeable one sets :attr:`mergeable` and writes :meth:`merge` / :meth:`unmerge`.
    """

    #: Key of :meth:`num_values` in the method's logged parameter counts (e.g. ``lora_values``).
    count_name: str = "adapter_values"
    #: Whether :meth:`merge` folds the adapter into the base weights (scoring then costs the frozen model's).
    mergeable: bool = False

    def __init__(self, backbone: VLMBackbone) -> None:
        super().__init__()
        self.backbone = backbone

    @abc.abstractmethod
    def applied(self) -> contextlib.AbstractContextManager:
        """The context inside which the backbone is adapted."""

    @abc.abstractmethod
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The tensors the optimiser updates, in a fixed order."""

    @abc.abstractmethod
    def save_pretrained(self, path: str | Path) -> Path:
        """Write the adapter under ``path`` in a form usable outside this project; returns the directory."""

    def adaptation(self, repeats: int = 1) -> contextlib.AbstractContextManager:
        """The GRPO engine's adaptation protocol: the same adaptation for every row, whatever ``repeats``."""
        return self.applied()

    def num_values(self) -> int:
        """Number of trained values."""
        return sum(p.numel() for p in self.trainable_parameters())

    def merge(self) -> None:
        """Fold the adapter into the base weights (until :meth:`unmerge`)."""
        raise CopraError(f"{type(self).__name__} cannot be merged into the base weights")

    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        raise CopraError(f"{type(self).__name__} cannot be merged into the base weights")

    def forward(self, frames, *, return_features: bool = False) -> ScoreOutput:
        """Scores of the adapted backbone."""
        with self.adaptation():
            return self.backbone.score(frames, return_features=return_features)

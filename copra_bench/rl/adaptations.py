"""A minimal trainable adaptation: a bias added to one Linear's output through a forward hook.

It follows the adaptation protocol of :mod:`copra_bench.rl.engine` (``adaptation(repeats)`` -> context manager;
rows input-major) with either one shared bias or one bias per input (rows ``n`` use bias ``n // repeats``), so it
exercises the same row layout as COPRA's per-input LoRA. Used by the GRPO tests and ``benchmarks/grpo_step.py``
as a cheap, policy-agnostic stand-in for a LoRA; it is a real (if weak) adaptation that GRPO can train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["LinearBiasAdaptation"]


class LinearBiasAdaptation(nn.Module):
    """Trainable bias ``[num_inputs or 1, out_features]`` added to ``linear``'s output inside the context.

    Call it as an adaptation: ``with adaptation(repeats): model(...)``. With ``num_inputs`` set, the batch seen by
    ``linear`` must have ``num_inputs * repeats`` rows.
    """

    def __init__(self, linear: nn.Module, *, num_inputs: int | None = None, init_std: float = 0.0) -> None:
        super().__init__()
        out_features = int(linear.weight.shape[0])
        self.linear = [linear]  # a list keeps the frozen module out of this module's parameters / state_dict
        self.per_input = num_inputs is not None
        bias = torch.randn(num_inputs or 1, out_features) * init_std
        self.bias = nn.Parameter(bias.to(device=linear.weight.device, dtype=linear.weight.dtype))
        self.calls: list[int] = []  # rows seen per hooked forward (for tests of the row layout)

    def forward(self, repeats: int) -> contextlib.AbstractContextManager:  # type: ignore[override]
        return self._applied(int(repeats))

    def select(self, inputs: range):
        """The adaptation of some inputs only (a GRPO micro-batch); a shared bias is the same for every input."""
        if not self.per_input:
            return self
        return lambda repeats: self._applied(int(repeats), slice(inputs.start, inputs.stop))

    @contextlib.contextmanager
    def _applied(self, repeats: int, inputs: slice = slice(None)) -> Iterator[None]:
        def hook(_module, _inputs, output):
            rows = output.shape[0]
            self.calls.append(rows)
            own = self.bias[inputs]
            bias = own.repeat_interleave(repeats, dim=0) if self.per_input else own
            if self.per_input and bias.shape[0] != rows:
                raise ValueError(f"adaptation for {own.shape[0]} inputs x {repeats} repeats got {rows} rows")
            return output + bias.view(bias.shape[0], *([1] * (output.dim() - 2)), -1)

        handle = self.linear[0].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

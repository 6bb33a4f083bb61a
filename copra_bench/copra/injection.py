"""Per-input LoRA on a frozen LM at run time: batched, inside ``generate()``, with gradients into the generator.

While :meth:`LoRAInjector.apply` is active, every target Linear of the selected LM layers returns
``W x + scale * (x @ A_i^T) @ B_i^T`` for the input ``i`` owning each row. Rows are the ``B`` inputs each repeated
``repeats`` times consecutively (row ``n`` belongs to input ``n // repeats``), which is how
``generate(num_return_sequences=G)`` and GRPO's ``B * G`` rows are laid out.

How it stays fast (the frozen Linear modules get an instance-level ``forward`` for the duration of the context;
no weight merging, no loop over inputs):

* rows are viewed as ``[B, repeats * T, d]``, so ``repeats`` copies of a delta are never materialised;
* targets reading the same tensor (``q, k, v``; ``gate, up``) share one ``bmm`` of ``x`` with their
  concatenated ``A`` (``[B, d, 3r]``); each module then adds its part with one in-place ``baddbmm_``
  (the add and the product in a single GEMM with beta = 1), with ``scale`` folded into ``B`` beforehand;
* all per-layer operands are cast to the backbone's dtype and laid out contiguous once per :meth:`apply`.

That is 11 kernels per layer for the 7 targets, in prefill ``[N, T, d]`` and in KV-cache decoding ``[N, 1, d]``.
``mode="unfused"`` (one ``bmm`` per module) and ``mode="naive"`` (a Python loop over inputs) are references for
tests and the overhead benchmark. :func:`merged_weights` is the merged-weight reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from copra_bench.errors import CopraError

from .layout import LoRADeltas, LoRALayout
from .mappings import BackboneMapping, _unwrap, mapping_for

__all__ = ["InjectionError", "LoRAInjector", "merged_weights"]

_MODES = ("fused", "unfused", "naive")


class InjectionError(CopraError, RuntimeError):
    """The injected deltas do not fit the batch or the model (row count, nesting, layout)."""


class _Shared:
    """``x @ A_group^T`` computed by the first module of a shared-input group, reused by the others."""

    __slots__ = ("h", "x")

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None
        self.h: torch.Tensor | None = None


class LoRAInjector:
    """Applies per-input :class:`LoRADeltas` to the frozen LM of a VLM.

    Args:
        backbone_or_model: a ``VLMBackbone`` or its transformers ``*ForConditionalGeneration`` model.
        mapping: the family's :class:`BackboneMapping` (looked up when omitted).
        layout: the :class:`LoRALayout` the deltas follow (the mapping's default rank-8 all-target layout when
            omitted).
        mode: ``"fused"`` (default), ``"unfused"`` or ``"naive"`` (see the module docstring).
    """

    def __init__(
        self,
        backbone_or_model: Any,
        mapping: BackboneMapping | None = None,
        layout: LoRALayout | None = None,
        *,
        mode: str = "fused",
    ) -> None:
        if mode not in _MODES:
            raise InjectionError(f"unknown injection mode {mode!r}; choose one of {', '.join(_MODES)}")
        self.model = _unwrap(backbone_or_model)
        self.mapping = mapping or mapping_for(backbone_or_model)
        self.layout = layout or self.mapping.layout(self.model)
        self.mode = mode
        decoder_layers = self.mapping.decoder_layers(self.model)
        if self.layout.layers[-1] >= len(decoder_layers):
            raise InjectionError(
                f"layout layers {list(self.layout.layers)} exceed the {len(decoder_layers)} LM decoder layers"
            )
        # modules[j][target] = the frozen Linear of layout layer j
        self.modules: list[dict[str, nn.Linear]] = []
        for idx in self.layout.layers:
            row = {t: self.mapping.target_module(decoder_layers[idx], t) for t in self.layout.targets}
            for t, m in row.items():
                if (m.in_features, m.out_features) != tuple(self.layout.shapes[t]):
                    raise InjectionError(
                        f"layer {idx} target {t!r} is {m.in_features}->{m.out_features}, the layout says "
                        f"{self.layout.shapes[t]}; rebuild the layout from this backbone"
                    )
            self.modules.append(row)
        self._active = False

    # ------------------------------------------------------------------ public
    @contextlib.contextmanager
    def apply(self, deltas: LoRADeltas, repeats: int = 1) -> Iterator[None]:
        """Inject ``deltas`` (``B`` inputs, each owning ``repeats`` consecutive rows) while the context is open."""
        if self._active or getattr(self.model, "_copra_lora_active", False):
            raise InjectionError("LoRA deltas are already injected into this model; nested apply() is not allowed")
        deltas.check(self.layout)
        if int(repeats) < 1:
            raise InjectionError(f"repeats must be >= 1; got {repeats}")
        saved: list[tuple[nn.Module, Any]] = []
        try:
            self._active = True
            self.model._copra_lora_active = True
            operands = _Operands(deltas, self.layout)
            for j, row in enumerate(self.modules):
                for t, module in row.items():
                    # An instance-level forward (restored on exit) costs less Python per call than a forward
                    # hook, which matters in KV-cache decoding (196 calls per token for a 28-layer LM).
                    saved.append((module, module.__dict__.get("forward")))
                    module.forward = self._wrap(module.forward, operands, j, t, int(repeats))
            yield
        finally:
            for module, previous in reversed(saved):
                if previous is None:
                    module.__dict__.pop("forward", None)
                else:
                    module.forward = previous
            self._active = False
            self.model._copra_lora_active = False

    # ------------------------------------------------------------------ hooks
    def _wrap(self, base_forward, cache: _Operands, j: int, target: str, repeats: int):
        """``forward`` of one target Linear in layout layer ``j``: the frozen output plus this row's update.
        Operands are prepared on first use so that they take the dtype and device of the activations."""
        lay = self.layout
        group = next((g for g in lay.groups if target in g), (target,)) if self.mode == "fused" else (target,)
        offset = sum(lay.rank for t in group[: group.index(target)])
        r = lay.rank
        deltas = cache.deltas
        n_in = deltas.batch_size
        n_rows = n_in * repeats
        shared = cache.shared.setdefault((j, group), _Shared())
        last_reader = group[-1] == target
        sliced = len(group) > 1
        naive = self.mode == "naive"

        def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            output = base_forward(x, *args, **kwargs)
            if x.shape[0] != n_rows:
                raise InjectionError(
                    f"the model ran {x.shape[0]} rows but the injected deltas hold {n_in} inputs x repeats={repeats} "
                    f"(= {n_rows} rows); pass the right `repeats` to apply()"
                )
            if naive:
                return self._naive(x, output, deltas, j, target, repeats)
            if shared.x is not x:
                # [B, repeats*T, in] is a view (rows of one input are consecutive): no repeated deltas
                shared.x, shared.h = x, torch.bmm(x.reshape(n_in, -1, x.shape[-1]), cache.a_t(group, j, x))
            h = shared.h[..., offset : offset + r] if sliced else shared.h
            if last_reader:  # drop the reference to the activations
                shared.x = None
            # in place on a view of the fresh Linear output: one GEMM with beta = 1 does the product and the add
            output.view(n_in, -1, output.shape[-1]).baddbmm_(h, cache.b_t(target, j, x))
            return output

        return forward

    @staticmethod
    def _naive(x, output, deltas, j, target, repeats):
        """Reference: a Python loop over inputs, ``out_rows += scale * (x_rows @ A^T) @ B^T``."""
        parts = []
        for i in range(deltas.batch_size):
            rows = slice(i * repeats, (i + 1) * repeats)
            a = deltas.A[target][i, j].to(x.dtype)
            b = deltas.B[target][i, j].to(x.dtype)
            parts.append(output[rows] + deltas.scale * (x[rows] @ a.transpose(0, 1)) @ b.transpose(0, 1))
        return torch.cat(parts, dim=0)


class _Operands:
    """Per-layer contiguous operands in the activations' dtype, built once per ``apply`` on first use."""

    def __init__(self, deltas: LoRADeltas, layout: LoRALayout) -> None:
        self.deltas, self.layout = deltas, layout
        self._a: dict[tuple[str, ...], tuple[torch.Tensor, ...]] = {}
        self._b: dict[str, tuple[torch.Tensor, ...]] = {}
        self.shared: dict[tuple, _Shared] = {}

    def a_t(self, group: tuple[str, ...], j: int, x: torch.Tensor) -> torch.Tensor:
        at = self._a.get(group)
        if at is None:
            a = torch.cat([self.deltas.A[t] for t in group], dim=2)  # [B, L, g*r, in]
            # [L, B, in, g*r], split once into per-layer views
            at = self._a[group] = a.to(device=x.device, dtype=x.dtype).permute(1, 0, 3, 2).contiguous().unbind(0)
        return at[j]

    def b_t(self, target: str, j: int, x: torch.Tensor) -> torch.Tensor:
        bt = self._b.get(target)
        if bt is None:
            b = self.deltas.B[target] * self.deltas.scale  # [B, L, out, r]
            bt = self._b[target] = b.to(device=x.device, dtype=x.dtype).permute(1, 0, 3, 2).contiguous().unbind(0)
        return bt[j]


@contextlib.contextmanager
def merged_weights(
    backbone_or_model: Any,
    deltas: LoRADeltas,
    index: int,
    *,
    mapping: BackboneMapping | None = None,
    layout: LoRALayout | None = None,
) -> Iterator[None]:
    """Reference for tests: add input ``index``'s update ``scale * B @ A`` to the frozen weights in place (in
    float64, then cast), for every row of the batch; the original weights are restored bit for bit on exit."""
    model = _unwrap(backbone_or_model)
    mapping = mapping or mapping_for(backbone_or_model)
    layout = layout or mapping.layout(model)
    layers = mapping.decoder_layers(model)
    saved: list[tuple[nn.Linear, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for j, idx in enumerate(layout.layers):
                for t in layout.targets:
                    m = mapping.target_module(layers[idx], t)
                    saved.append((m, m.weight.detach().clone()))
                    a = deltas.A[t][index, j].double().to(m.weight.device)
                    b = deltas.B[t][index, j].double().to(m.weight.device)
                    m.weight.copy_((m.weight.double() + deltas.scale * b @ a).to(m.weight.dtype))
        yield
    finally:
        with torch.no_grad():
            for m, w in saved:
                m.weight.copy_(w)

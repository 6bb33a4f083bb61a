"""Shapes of a per-input LoRA update: which layers and Linear modules, their sizes, rank and token segmentation.

A :class:`LoRALayout` is pure bookkeeping shared by the generator (what to emit) and the injector (where it goes).
:class:`LoRADeltas` is what the generator emits for a batch of inputs.

Token layout (rank-anchored segments, after HY-WU): for every selected layer and target module, the LoRA matrices
``A [r, in]`` and ``B^T [r, out]`` are cut along their long axis into column blocks of ``d_seg``; each block is an
``r x d_seg`` slice holding all ``r`` rank rows of ``d_seg`` consecutive input (A) or output (B) features, and is
emitted by one parameter token. The last block of a matrix whose size is not a multiple of ``d_seg`` is cut short
(the surplus values a token emits there are discarded). Within a layer the tokens are ordered: all A tokens
(targets in layout order, segments left to right), then all B tokens; every layer has the same ``S`` tokens, so the
generator works on a ``[L, S]`` grid (intra-layer attention along ``S``, inter-layer attention along ``L``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from copra_bench.errors import CopraError
from copra_bench.vlm.families import ALL_TARGETS

__all__ = ["ALL_TARGETS", "LayoutError", "LoRADeltas", "LoRALayout"]


class LayoutError(CopraError, ValueError):
    """A LoRA layout or a set of deltas is inconsistent (unknown target, bad rank, wrong shapes)."""


@dataclass(frozen=True)
class LoRALayout:
    """Which LoRA matrices a generator emits per input.

    Attributes:
        layers: LM decoder layer indices that get an update (ascending).
        targets: short target names (subset of :data:`~copra_bench.vlm.families.ALL_TARGETS`, canonical
            order).
        shapes: target -> ``(in_features, out_features)`` of its Linear (same in every layer).
        rank: LoRA rank ``r``.
        d_seg: width of one rank-anchored segment (a token emits an ``r x d_seg`` slice).
        groups: tuples of targets that read the same input tensor (e.g. ``("q", "k", "v")``), restricted to
            ``targets``; the injector fuses their ``x @ A^T`` into one product. Singletons are omitted.
    """

    layers: tuple[int, ...]
    targets: tuple[str, ...]
    shapes: Mapping[str, tuple[int, int]]
    rank: int
    d_seg: int = 512
    groups: tuple[tuple[str, ...], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.rank < 1 or self.d_seg < 1:
            raise LayoutError(f"LoRA rank and d_seg must be >= 1; got rank={self.rank}, d_seg={self.d_seg}")
        if not self.layers:
            raise LayoutError("a LoRA layout needs at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise LayoutError(f"layers must be ascending and unique; got {list(self.layers)}")
        unknown = [t for t in self.targets if t not in ALL_TARGETS]
        if unknown or not self.targets:
            raise LayoutError(f"unknown or empty targets {list(self.targets)}; choose from {', '.join(ALL_TARGETS)}")
        missing = [t for t in self.targets if t not in self.shapes]
        if missing:
            raise LayoutError(f"no (in, out) shape for targets {missing}")
        for group in self.groups:
            if len(group) < 2 or any(t not in self.targets for t in group):
                raise LayoutError(f"shared-input group {group} must hold >= 2 of the layout's targets")
            if len({self.shapes[t][0] for t in group}) != 1:
                raise LayoutError(f"targets of the shared-input group {group} have different input sizes")

    # ------------------------------------------------------------------ sizes
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def in_features(self, target: str) -> int:
        return int(self.shapes[target][0])

    def out_features(self, target: str) -> int:
        return int(self.shapes[target][1])

    def segments(self, target: str, matrix: str) -> int:
        """Number of tokens for ``A`` (cut along ``in``) or ``B`` (cut along ``out``) of one target in one layer."""
        size = self.in_features(target) if matrix == "A" else self.out_features(target)
        return math.ceil(size / self.d_seg)

    @property
    def token_slices(self) -> dict[tuple[str, str], slice]:
        """``(target, "A"|"B")`` -> the slice of the ``S`` per-layer token positions emitting that matrix."""
        out: dict[tuple[str, str], slice] = {}
        pos = 0
        for matrix in ("A", "B"):
            for t in self.targets:
                n = self.segments(t, matrix)
                out[(t, matrix)] = slice(pos, pos + n)
                pos += n
        return out

    @property
    def num_a_tokens(self) -> int:
        """A tokens per layer (they come first in each layer)."""
        return sum(self.segments(t, "A") for t in self.targets)

    @property
    def tokens_per_layer(self) -> int:
        return self.num_a_tokens + sum(self.segments(t, "B") for t in self.targets)

    @property
    def num_tokens(self) -> int:
        """Parameter tokens per input (``L * S``)."""
        return self.num_layers * self.tokens_per_layer

    @property
    def num_lora_values(self) -> int:
        """LoRA values generated per input: ``L * r * sum(in + out)`` (segment padding not counted)."""
        per_layer = sum(self.in_features(t) + self.out_features(t) for t in self.targets)
        return self.num_layers * self.rank * per_layer

    def describe(self) -> str:
        return (
            f"{self.num_layers} layers x {len(self.targets)} targets ({','.join(self.targets)}), rank {self.rank}, "
            f"d_seg {self.d_seg}: {self.tokens_per_layer} tokens/layer, {self.num_tokens} tokens, "
            f"{self.num_lora_values:,} LoRA values per input"
        )


@dataclass
class LoRADeltas:
    """Per-input LoRA matrices for a batch of ``B`` inputs over the ``L`` layers of a layout.

    ``A[t]`` is ``[B, L, r, in]``, ``B[t]`` is ``[B, L, out, r]``; the update of target ``t`` in layer
    ``layers[j]`` for input ``i`` is ``scale * B[t][i, j] @ A[t][i, j]`` (so ``y = W x + scale * B (A x)``).
    """

    A: dict[str, torch.Tensor]
    B: dict[str, torch.Tensor]
    scale: float
    layers: tuple[int, ...]

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.A)

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.A.values())).shape[0])

    @property
    def rank(self) -> int:
        return int(next(iter(self.A.values())).shape[2])

    def _map(self, fn) -> LoRADeltas:
        return LoRADeltas({t: fn(a) for t, a in self.A.items()}, {t: fn(b) for t, b in self.B.items()},
                          self.scale, self.layers)

    def to(self, *args, **kwargs) -> LoRADeltas:
        return self._map(lambda x: x.to(*args, **kwargs))

    def detach(self) -> LoRADeltas:
        return self._map(torch.Tensor.detach)

    def select(self, index) -> LoRADeltas:
        """The deltas of some inputs (an int, slice, list or index tensor along the batch axis)."""
        if isinstance(index, int):
            index = [index]
        return self._map(lambda x: x[index])

    @classmethod
    def cat(cls, parts: list[LoRADeltas]) -> LoRADeltas:
        """Several batches of deltas (same layout and scale) as one batch, in order."""
        if not parts or len({(p.scale, p.layers, p.targets) for p in parts}) != 1:
            raise LayoutError("LoRADeltas.cat needs at least one part, all with the same scale, layers and targets")
        first = parts[0]
        return cls({t: torch.cat([p.A[t] for p in parts]) for t in first.A},
                   {t: torch.cat([p.B[t] for p in parts]) for t in first.B}, first.scale, first.layers)

    def nonfinite_inputs(self) -> list[int]:
        """Batch indices whose generated matrices hold NaN or inf (for the training guard)."""
        bad = torch.zeros(self.batch_size, dtype=torch.bool, device=next(iter(self.A.values())).device)
        for x in list(self.A.values()) + list(self.B.values()):
            bad |= ~torch.isfinite(x.detach()).flatten(1).all(dim=1)
        return bad.nonzero().flatten().tolist()

    def check(self, layout: LoRALayout) -> None:
        """Raise :class:`LayoutError` unless these deltas fit ``layout`` (targets, layers, shapes)."""
        if tuple(self.layers) != tuple(layout.layers):
            raise LayoutError(f"deltas cover layers {list(self.layers)}, the layout {list(layout.layers)}")
        if set(self.A) != set(layout.targets) or set(self.B) != set(layout.targets):
            raise LayoutError(f"deltas cover targets {sorted(self.A)}, the layout {list(layout.targets)}")
        n, L, r = self.batch_size, layout.num_layers, layout.rank
        for t in layout.targets:
            i, o = layout.shapes[t]
            if tuple(self.A[t].shape) != (n, L, r, i) or tuple(self.B[t].shape) != (n, L, o, r):
                raise LayoutError(
                    f"deltas of target {t!r}: A {tuple(self.A[t].shape)}, B {tuple(self.B[t].shape)}; "
                    f"expected A {(n, L, r, i)} and B {(n, L, o, r)}"
                )

    @classmethod
    def random(
        cls,
        layout: LoRALayout,
        batch_size: int,
        *,
        scale: float = 2.0,
        std: float = 0.02,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> LoRADeltas:
        """Random non-zero deltas (tests and benchmarks): ``A ~ N(0, 1/in)``, ``B ~ N(0, std^2)``."""
        L, r = layout.num_layers, layout.rank
        A, B = {}, {}
        for t in layout.targets:
            i, o = layout.shapes[t]
            A[t] = (torch.randn(batch_size, L, r, i, generator=generator) / math.sqrt(i)).to(dtype=dtype, device=device)
            B[t] = (torch.randn(batch_size, L, o, r, generator=generator) * std).to(dtype=dtype, device=device)
        return cls(A, B, float(scale), tuple(layout.layers))

"""COPRA's parameter generator: vision tokens of K frames -> one LoRA update per input.

Parameter tokens sit on a ``[L, S]`` grid (LM layer x rank-anchored segment of each target's A or B, see
:mod:`copra_bench.copra.layout`). They start from learned embeddings, optionally plus a learnable global latent
prior, and go through ``depth`` blocks of

1. intra-layer self-attention (the ``S`` tokens of one LM layer attend to each other),
2. inter-layer self-attention (the same slot across the ``L`` layers),
3. cross-attention from every token to the input's vision tokens (padded tokens masked out),
4. an MLP,

all pre-norm with residuals. Two MLP heads turn A tokens and B tokens into ``r x d_seg`` slices. B's last layer is
zero-initialised, so ``B == 0`` exactly at init and the adapted model starts as the frozen one.

Starting tokens (``global_latent``):
  * always: ``layer_embed[l] + slot_embed[s]`` (learned; ``slot_embed`` identifies target, A/B and segment);
  * ``global_latent=True`` adds ``prior[l, s]``, a free learnable ``[L, S, width]`` tensor: the dataset-level
    prior the paper ablates. With it off, tokens differ only through the factorised position/type embeddings.

A scaling: a generated A slice is divided by ``sqrt(in_features)`` so that ``x @ A^T`` keeps the scale of ``x``
whatever the target (as Kaiming-initialised LoRA A); B is used as emitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from copra_bench.errors import CopraError

from .layout import LoRADeltas, LoRALayout

__all__ = ["GeneratorError", "ParameterGenerator", "pad_vision_tokens"]


class GeneratorError(CopraError, ValueError):
    """Bad generator settings or conditioning inputs."""


def pad_vision_tokens(tokens: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of ``[T_i, D]`` -> padded ``[B, T_max, D]`` and a bool mask ``[B, T_max]`` (True = real token)."""
    if not tokens:
        raise GeneratorError("no vision tokens: the batch is empty")
    dims = {int(t.shape[-1]) for t in tokens}
    if len(dims) != 1 or any(t.dim() != 2 or t.shape[0] == 0 for t in tokens):
        shapes = [tuple(t.shape) for t in tokens]
        raise GeneratorError(f"vision tokens must be non-empty [T_i, D] with one D; got {shapes}")
    lengths = torch.tensor([int(t.shape[0]) for t in tokens], device=tokens[0].device)
    padded = nn.utils.rnn.pad_sequence(list(tokens), batch_first=True)
    mask = torch.arange(padded.shape[1], device=padded.device)[None, :] < lengths[:, None]
    return padded, mask


class _Attention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU)."""

    def __init__(self, width: int, heads: int, kv_width: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(kv_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        n, t, w = x.shape
        memory = x if memory is None else memory
        h = self.heads
        q = self.q(x).view(n, t, h, w // h).transpose(1, 2)
        k, v = self.kv(memory).view(n, memory.shape[1], 2, h, w // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]  # [n, 1, 1, T_kv], True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(n, t, w))


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_intra, self.intra = nn.LayerNorm(width), _Attention(width, heads)
        self.norm_inter, self.inter = nn.LayerNorm(width), _Attention(width, heads)
        self.norm_cross, self.cross = nn.LayerNorm(width), _Attention(width, heads)
        hidden = int(width * mlp_ratio)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, L, S, w = x.shape
        x = x + self.intra(self.norm_intra(x).reshape(b * L, S, w)).view(b, L, S, w)
        y = self.norm_inter(x).transpose(1, 2).reshape(b * S, L, w)
        x = x + self.inter(y).view(b, S, L, w).transpose(1, 2)
        x = x + self.cross(self.norm_cross(x).reshape(b, L * S, w), memory, mask).view(b, L, S, w)
        return x + self.mlp(self.norm_mlp(x))


def _head(width: int, out: int, zero: bool) -> nn.Sequential:
    head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(), nn.Linear(width, out))
    if zero:
        nn.init.zeros_(head[-1].weight)
        nn.init.zeros_(head[-1].bias)
    return head


class ParameterGenerator(nn.Module):
    """Transformer over parameter tokens that writes a per-input LoRA for the frozen LM.

    Args:
        layout: which layers/targets, their sizes, rank and ``d_seg`` (from ``BackboneMapping.layout``).
        vision_dim: size ``D`` of the conditioning vision tokens.
        width: token width. depth: number of blocks (paper: half the LM depth). heads: attention heads.
        alpha: LoRA alpha; the update is scaled by ``alpha / rank``.
        global_latent: add the learnable global latent prior to the starting tokens (see module docstring).
        mlp_ratio: hidden size of the block MLPs relative to ``width``.
        checkpointing: recompute each block in backward (activation checkpointing) to fit large layouts.
    """

    def __init__(
        self,
        layout: LoRALayout,
        *,
        vision_dim: int,
        width: int = 512,
        depth: int = 2,
        heads: int = 8,
        alpha: float = 16.0,
        global_latent: bool = True,
        mlp_ratio: float = 4.0,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if width % heads:
            raise GeneratorError(f"generator width {width} must be divisible by heads {heads}")
        if depth < 0 or vision_dim < 1:
            raise GeneratorError(f"bad generator depth {depth} or vision_dim {vision_dim}")
        self.layout = layout
        self.vision_dim = int(vision_dim)
        self.width, self.depth, self.heads = int(width), int(depth), int(heads)
        self.alpha = float(alpha)
        self.scale = self.alpha / layout.rank
        self.global_latent = bool(global_latent)
        self.checkpointing = bool(checkpointing)
        #: compute dtype of the blocks and heads under autocast (None: the parameters' float32); COPRAModel sets
        #: the backbone's 16-bit dtype. Parameters, optimiser state and the emitted LoRA values stay float32.
        self.autocast_dtype: torch.dtype | None = None
        L, S = layout.num_layers, layout.tokens_per_layer
        self.layer_embed = nn.Parameter(torch.randn(L, 1, width) * 0.02)
        self.slot_embed = nn.Parameter(torch.randn(1, S, width) * 0.02)
        self.prior = nn.Parameter(torch.randn(L, S, width) * 0.02) if self.global_latent else None
        self.vision_norm = nn.LayerNorm(vision_dim)
        self.vision_proj = nn.Linear(vision_dim, width)
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        seg = layout.rank * layout.d_seg
        self.head_a = _head(width, seg, zero=False)
        self.head_b = _head(width, seg, zero=True)

    @classmethod
    def for_backbone(
        cls,
        backbone,
        *,
        rank: int = 8,
        alpha: float = 16.0,
        targets: Sequence[str] | str = "all",
        layers: Sequence[int] | str = "all",
        d_seg: int = 512,
        depth: int | None = None,
        width: int = 512,
        heads: int = 8,
        global_latent: bool = True,
        mlp_ratio: float = 4.0,
        checkpointing: bool = False,
    ) -> ParameterGenerator:
        """The generator for a ``VLMBackbone`` from config knobs; ``depth=None`` = half the LM depth (paper).
        Its layout is ``.layout``; the family mapping is ``mapping_for(backbone)``."""
        from .mappings import mapping_for

        mapping = mapping_for(backbone)
        layout = mapping.layout(backbone, rank=rank, targets=targets, layers=layers, d_seg=d_seg)
        if depth is None:
            depth = max(1, mapping.num_layers(backbone) // 2)
        return cls(layout, vision_dim=mapping.vision_dim(backbone), width=width, depth=depth, heads=heads,
                   alpha=alpha, global_latent=global_latent, mlp_ratio=mlp_ratio, checkpointing=checkpointing)

    # ------------------------------------------------------------------ sizes for logging
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_generated_values(self) -> int:
        """LoRA values written per input (``L * r * sum(in + out)``)."""
        return self.layout.num_lora_values

    def extra_repr(self) -> str:
        return (f"width={self.width}, depth={self.depth}, heads={self.heads}, alpha={self.alpha}, "
                f"global_latent={self.global_latent}, layout: {self.layout.describe()}")

    # ------------------------------------------------------------------ forward
    def forward(self, vision_tokens, mask: torch.Tensor | None = None) -> LoRADeltas:
        """Vision tokens (list of ``[T_i, D]``, or padded ``[B, T, D]`` with bool ``mask [B, T]``, True = real)
        -> :class:`LoRADeltas` for the ``B`` inputs."""
        if isinstance(vision_tokens, (list, tuple)):
            memory, mask = pad_vision_tokens(vision_tokens)
        else:
            memory = vision_tokens
            if memory.dim() != 3:
                raise GeneratorError(f"padded vision tokens must be [B, T, D]; got {tuple(memory.shape)}")
            if mask is None:
                mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        if memory.shape[-1] != self.vision_dim:
            raise GeneratorError(f"vision tokens have D={memory.shape[-1]}, the generator expects {self.vision_dim}")
        param = self.vision_proj.weight
        memory = self.vision_proj(self.vision_norm(memory.to(device=param.device, dtype=param.dtype)))
        mask = mask.to(device=param.device, dtype=torch.bool)
        b = memory.shape[0]

        x = self.layer_embed + self.slot_embed
        if self.prior is not None:
            x = x + self.prior
        x = x.unsqueeze(0).expand(b, -1, -1, -1)
        dtype = self.autocast_dtype
        with torch.autocast(param.device.type if param.device.type in ("cuda", "cpu") else "cpu",
                            dtype=dtype or torch.bfloat16, enabled=dtype is not None and param.device.type != "meta"):
            for block in self.blocks:
                if self.checkpointing and torch.is_grad_enabled():
                    x = checkpoint(block, x, memory, mask, use_reentrant=False)
                else:
                    x = block(x, memory, mask)
            x = self.norm(x)
            na = self.layout.num_a_tokens
            a_tokens, b_tokens = self.head_a(x[:, :, :na]), self.head_b(x[:, :, na:])
        # the LoRA values stay float32 (the injection casts them to the activations' dtype once per apply)
        return self._assemble(a_tokens.float(), b_tokens.float(), na)

    def _assemble(self, a_tokens: torch.Tensor, b_tokens: torch.Tensor, na: int) -> LoRADeltas:
        """Token outputs ``[B, L, n, r * d_seg]`` -> per-target ``A [B, L, r, in]`` and ``B [B, L, out, r]``."""
        lay = self.layout
        b, L = a_tokens.shape[:2]
        r, d = lay.rank, lay.d_seg
        A, B = {}, {}
        for (target, matrix), sl in lay.token_slices.items():
            src = a_tokens[:, :, sl] if matrix == "A" else b_tokens[:, :, sl.start - na : sl.stop - na]
            n = sl.stop - sl.start
            # [B, L, n, r, d] -> [B, L, r, n * d]: segment j holds columns j*d .. (j+1)*d of every rank row
            rows = src.reshape(b, L, n, r, d).transpose(2, 3).reshape(b, L, r, n * d)
            if matrix == "A":
                size = lay.in_features(target)
                A[target] = rows[..., :size] * (1.0 / math.sqrt(size))
            else:
                B[target] = rows[..., : lay.out_features(target)].transpose(-1, -2)
        return LoRADeltas(A, B, self.scale, tuple(lay.layers))

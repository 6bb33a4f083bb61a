"""Soft prompt tuning that keeps the video's positions right, for every supported VLM family.

peft's ``PromptTuning`` prepends its virtual tokens by passing ``inputs_embeds`` to the model. Qwen-VL models compute
their 3-D rotary positions (M-RoPE: temporal, height, width for every vision token) from ``input_ids``; given only
embeddings they silently fall back to 1-D positions, and the video is read as a flat sequence.

:class:`SoftPrompt` instead inserts ``n`` placeholder ids into ``input_ids`` (at the start of each row's tokens, after
the left padding; attention mask 1, text token type) and swaps their embeddings for the learned vectors with a
forward hook on the input-embedding layer. The model then computes positions from the real ``input_ids`` as for any
text: the virtual tokens get text positions ``0..n-1`` on all three M-RoPE axes and every following token, video
included, keeps its own positions shifted by ``n`` (``tests/test_baselines.py`` compares them). The placeholder id
is an embedding row the tokenizer never produces (Qwen2-VL has ~400) or, failing that, a token absent from the
prompt; its embedding row is never read.

Whether a family's forward derives positions from ``input_ids`` is a fact of the family registry
(:attr:`VLMFamily.positions <copra_bench.vlm.families.VLMFamily.positions>`); a family without one is refused.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from copra_bench.adapters import StaticAdapter
from copra_bench.errors import CopraError
from copra_bench.vlm import VLMBackbone, registered_families


class PromptTuningError(CopraError, ValueError):
    """Prompt tuning cannot be set up for this backbone or these options."""


class SoftPrompt(StaticAdapter):
    """``num_virtual_tokens`` learned input embeddings in front of the prompt.

    Args:
        backbone: the frozen VLM.
        num_virtual_tokens: n.
        init_text: initialise from the embeddings of this text's tokens (repeated to n, as peft's ``TEXT`` init);
            ``None``: n embedding rows of the vocabulary drawn at random (``seed``).
        seed: seed of the random vocabulary draw.
    """

    count_name = "soft_prompt_values"

    def __init__(self, backbone: VLMBackbone, *, num_virtual_tokens: int = 20, init_text: str | None = None,
                 seed: int = 0) -> None:
        super().__init__(backbone)
        check_positions_supported(backbone)
        if num_virtual_tokens < 1:
            raise PromptTuningError(f"model.num_virtual_tokens must be >= 1, got {num_virtual_tokens}")
        self.num_virtual_tokens = int(num_virtual_tokens)
        embedding = backbone.model.get_input_embeddings()
        tokenizer = backbone.tokenizer
        vocab = len(tokenizer)
        if init_text:
            ids = tokenizer.encode(init_text, add_special_tokens=False)
            if not ids:
                raise PromptTuningError(f"model.init_text {init_text!r} has no tokens")
            ids = (ids * (self.num_virtual_tokens // len(ids) + 1))[: self.num_virtual_tokens]
        else:
            generator = torch.Generator().manual_seed(int(seed))
            ids = torch.randint(0, min(vocab, embedding.weight.shape[0]), (self.num_virtual_tokens,),
                                generator=generator).tolist()
        # float32 master weights whatever the backbone's dtype; cast to it inside the hook.
        self.embeddings = nn.Parameter(embedding.weight.detach()[torch.tensor(ids)].float().clone())
        self.placeholder_id = _placeholder_id(backbone)
        self._embedding = [embedding]  # a list keeps the frozen module out of this module's children

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [self.embeddings]

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the learned embeddings (``soft_prompt.safetensors``, ``[n, hidden]`` float32) and where they go
        (``soft_prompt.json``)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.detach().cpu().contiguous()}, str(path / "soft_prompt.safetensors"))
        (path / "soft_prompt.json").write_text(json.dumps({
            "num_virtual_tokens": self.num_virtual_tokens, "backbone": self.backbone.name,
            "position": "in front of the prompt, after left padding; text positions 0..n-1, the rest shifted by n",
            "system_prompt": self.backbone.system_prompt, "user_prompt": self.backbone.user_prompt}, indent=2))
        return path

    # ------------------------------------------------------------------------------------------- adaptation
    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the context every prepared batch gets the virtual tokens (the same for every row)."""
        handle = self._embedding[0].register_forward_hook(self._replace_placeholders)
        try:
            with self.backbone.transforming_inputs(self.insert):
                yield
        finally:
            handle.remove()

    def insert(self, inputs: Any) -> Any:
        """Processor outputs with n placeholder ids inserted after each row's left padding; every ``[B, L]``
        per-token tensor is extended (attention mask 1, token types 0 = text)."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        batch, length = ids.shape
        n = self.num_virtual_tokens
        start = mask.long().argmax(dim=1, keepdim=True)  # first attended token of each row
        column = torch.arange(length + n, device=ids.device).expand(batch, -1)
        virtual = (column >= start) & (column < start + n)
        source = torch.where(column < start, column, column - n).clamp(min=0)
        for key in list(inputs.keys()):
            value = inputs[key]
            if isinstance(value, torch.Tensor) and tuple(value.shape) == (batch, length):
                fill = self.placeholder_id if key == "input_ids" else 1 if key == "attention_mask" else 0
                inputs[key] = torch.where(virtual, torch.full_like(source, fill).to(value.dtype),
                                          value.gather(1, source))
        return inputs

    def _replace_placeholders(self, _module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        hit = args[0] == self.placeholder_id
        counts = hit.sum(dim=1)
        if not bool(counts.any()):
            return output  # decoding steps of generate(): no virtual token
        if bool(((counts != 0) & (counts != self.num_virtual_tokens)).any()):
            raise PromptTuningError(f"expected {self.num_virtual_tokens} virtual tokens per row, found "
                                    f"{counts.tolist()}: the placeholder id {self.placeholder_id} occurs in the text")
        rows = int((counts > 0).sum())
        source = self.embeddings.to(output.dtype).repeat(rows, 1)
        return output.masked_scatter(hit.unsqueeze(-1).expand_as(output), source)


def check_positions_supported(backbone: VLMBackbone) -> None:
    """Fail at config time when the family's forward would not derive the virtual tokens' positions itself."""
    family = backbone.family_spec
    if family.positions is None:
        known = [k for k, f in registered_families().items() if f.positions is not None]
        raise PromptTuningError(
            f"prompt tuning does not know how the {backbone.family!r} family computes token positions, so it cannot "
            f"guarantee that the video keeps its positions behind the virtual tokens. Supported: {', '.join(known)}. "
            "If this family derives positions from input_ids, give its VLMFamily a PositionScheme (positions=...) "
            f"in copra_bench/vlm/families/{backbone.family}.py.")
    needed = family.missing_position_support(backbone.model)
    if needed is not None:
        raise PromptTuningError(
            f"prompt tuning on {backbone.family!r} relies on {family.positions.description}, but this transformers "
            f"version's model has no {needed}(): the virtual tokens would shift the video's 3-D positions. Use the "
            f"transformers version in pyproject.toml or update the family's positions in "
            f"copra_bench/vlm/families/{backbone.family}.py.")


def _placeholder_id(backbone: VLMBackbone) -> int:
    rows = int(backbone.model.get_input_embeddings().weight.shape[0])
    tokenizer = backbone.tokenizer
    if len(tokenizer) < rows:
        return len(tokenizer)  # a row no text ever maps to
    used = set(tokenizer(backbone.build_prompt(with_answer_prefix=True))["input_ids"])
    used |= set(tokenizer.all_special_ids)
    for candidate in range(rows - 1, -1, -1):
        if candidate not in used:
            return candidate
    raise PromptTuningError("no token id is free to mark the virtual tokens")

"""One interface over transformers VLMs: frozen backbone, binary anomaly scoring, generation, vision features.

``VLMBackbone`` wraps a transformers ``*ForConditionalGeneration`` model of a registered family
(:mod:`copra_bench.vlm.families`) and its processor. It never downloads anything: it loads a built-in tiny model
or a local checkpoint directory (:mod:`copra_bench.vlm.loading`).

Inputs are K pre-sampled RGB frames per input (uint8 ``[K, H, W, 3]``); every input is one video in one
user turn of the chat template (:mod:`copra_bench.vlm.inputs`). Scoring teacher-forces the assistant answer prefix
and reads the logits of ``"0"`` and ``"1"`` at the last position in a single forward pass (``logits_to_keep=1``);
the pooled vision features of that same pass are captured with a forward hook (:mod:`copra_bench.vlm.vision_tokens`).
"""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .errors import BackboneError
from .families import family_of
from .generation import decoded_completions, eos_token_ids
from .inputs import (
    add_mm_token_type_ids,
    as_clip_list,
    chat_prompt,
    check_frame_counts,
    process_videos,
    single_token_ids,
    to_model,
    video_processor_kwargs,
)
from .loading import load_model
from .prompts import ANSWER_PREFIX, SYSTEM_PROMPT, USER_PROMPT
from .vision_tokens import capture_outputs, split_per_input

__all__ = ["BackboneError", "ScoreOutput", "VLMBackbone"]


@dataclass
class ScoreOutput:
    """Result of :meth:`VLMBackbone.score` for a batch of B inputs."""

    p_anomaly: torch.Tensor  # [B] float32: P("1") / (P("0") + P("1")) at the answer position
    logit_margin: torch.Tensor  # [B] float32: logit("1") - logit("0"), i.e. the log-odds of p_anomaly
    features: torch.Tensor | None = None  # [B, D] float32 mean of each input's vision tokens (post merger/projector)


class VLMBackbone(nn.Module):
    """A frozen transformers VLM with the benchmark's prompt, scoring, generation and vision-feature API.

    The wrapped model is frozen: ``requires_grad`` is False for all its parameters and it stays in eval mode
    whatever ``train()`` asks (per-input LoRA generators attach later through forward hooks).
    """

    def __init__(self, model: nn.Module, processor: Any, *, family: str, name: str,
                 system_prompt: str = SYSTEM_PROMPT, user_prompt: str = USER_PROMPT,
                 answer_prefix: str = ANSWER_PREFIX, video_fps: float = 1.0, video_kwargs: dict | None = None) -> None:
        super().__init__()
        #: the registered :class:`~copra_bench.vlm.families.VLMFamily` of ``family`` (its ``model_type``)
        self.family_spec = family_of(family, where=name)
        self.model = model
        self.processor = processor
        self.family = family
        self.name = name
        self.system_prompt = system_prompt
        self.user_prompt = user_prompt
        self.answer_prefix = answer_prefix
        #: frame rate of the K sampled frames (frames per second of clip time); Qwen2.5/3-VL use it for
        #: temporal positions / timestamps. COPRA: 8 frames over a 10 s window -> 0.8.
        self.video_fps = float(video_fps)
        #: extra keyword arguments for the video processor call,
        #: e.g. ``{"size": {"shortest_edge": ..., "longest_edge": ...}}`` to set the pixel budget of Qwen-VL frames.
        self.video_kwargs = dict(video_kwargs or {})
        self._prompt_cache: dict[tuple[str, str], str] = {}
        #: functions ``inputs -> inputs`` applied, in order, to every batch of processor outputs (see
        #: :meth:`transforming_inputs`); e.g. a soft prompt inserting its virtual tokens.
        self._input_transforms: list[Callable[[Any], Any]] = []

        self._vision = self.family_spec.vision_encoder_of(model)
        self._language = self.family_spec.language_model_of(model)
        self._feature_module = self.family_spec.vision_tokens_of(model)

        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._answer_ids = single_token_ids(tok, ("0", "1"), name)
        self._forward_params = set(inspect.signature(model.forward).parameters)
        valid = getattr(getattr(processor, "video_processor", None), "valid_kwargs", None)
        self._video_kwarg_names = set(getattr(valid, "__annotations__", {}))

        model.requires_grad_(False)
        model.eval()

    @classmethod
    def load(cls, name_or_path: str | Path, *, dtype: str = "float32", seed: int = 0,
             attn_implementation: str | None = None, device: str | torch.device | None = None,
             **backbone_kwargs: Any) -> "VLMBackbone":
        """Build a built-in tiny model (``"tiny-qwen2-vl"``, ...) or load a local checkpoint directory, offline
        (:func:`~copra_bench.vlm.loading.load_model`).

        ``backbone_kwargs`` go to the constructor (``system_prompt``, ``user_prompt``, ``answer_prefix``,
        ``video_fps``, ``video_kwargs``). ``device`` is passed as ``device_map`` when loading a checkpoint
        (weights land there directly) and used with ``.to()`` for the built-in models.
        """
        model, processor, family, name = load_model(name_or_path, dtype=dtype, seed=seed,
                                                    attn_implementation=attn_implementation, device=device)
        return cls(model, processor, family=family, name=name, **backbone_kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def answer_token_ids(self) -> tuple[int, int]:
        """Token ids of ``"0"`` (normal) and ``"1"`` (abnormal)."""
        return self._answer_ids

    @property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids of generation: the generation config's and the tokenizer's."""
        return eos_token_ids(self.model, self.tokenizer)

    @property
    def vision_module(self) -> nn.Module:
        """The frozen vision encoder (Qwen-VL: ``model.model.visual``; InternVL: ``model.model.vision_tower``)."""
        return self._vision

    @property
    def language_model(self) -> nn.Module:
        """The LM decoder (``model.model.language_model``), where LoRA deltas go."""
        return self._language

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def feature_dim(self) -> int:
        """D of :attr:`ScoreOutput.features` (the LM hidden size for the supported families)."""
        cfg = self.model.config
        text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        return int(text.hidden_size)

    def save_pretrained(self, path: str | Path) -> Path:
        """Save model + processor so that ``VLMBackbone.load(path)`` restores them offline."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(path))
        self.processor.save_pretrained(str(path))
        return path

    def train(self, mode: bool = True) -> "VLMBackbone":
        # The VLM is frozen: the wrapped model stays in eval mode whatever is asked.
        self.training = bool(mode)
        self.model.eval()
        return self

    # ------------------------------------------------------------------ prompt and inputs
    def build_prompt(self, *, with_answer_prefix: bool) -> str:
        """Chat template with the system prompt, one video and the user prompt, ending with the assistant header
        (``add_generation_prompt=True``), plus the answer prefix when asked."""
        key = (self.system_prompt, self.user_prompt)
        text = self._prompt_cache.get(key)
        if text is None:
            text = chat_prompt(self.processor, self.tokenizer, self.system_prompt, self.user_prompt)
            self._prompt_cache = {key: text}
        return text + self.answer_prefix if with_answer_prefix else text

    def prepare_inputs(self, videos, *, with_answer_prefix: bool):
        """Processor outputs (``BatchFeature``) for a batch of videos, on the model's device, left-padded."""
        return self._prepare(videos, with_answer_prefix=with_answer_prefix)[0]

    def _prepare(self, videos, *, with_answer_prefix: bool):
        clips = as_clip_list(videos)
        frames = [int(c.shape[0]) for c in clips]
        check_frame_counts(self.family_spec, frames)
        vkw = video_processor_kwargs(self.processor, self._video_kwarg_names, frames, fps=self.video_fps,
                                             device=self.device, extra=self.video_kwargs)
        inputs = process_videos(self.processor, self.build_prompt(with_answer_prefix=with_answer_prefix),
                                        clips, vkw)
        inputs = add_mm_token_type_ids(inputs, self.model.config, self._forward_params)
        for transform in self._input_transforms:
            inputs = transform(inputs)
        return to_model(inputs, self.device, self.dtype), frames

    @contextlib.contextmanager
    def transforming_inputs(self, transform: Callable[[Any], Any]) -> Iterator[None]:
        """Inside the context every prepared batch (scoring, generation, GRPO rollouts and log-probs) passes through
        ``transform(inputs) -> inputs`` after the processor, e.g. to insert a soft prompt's virtual tokens. The
        model then computes its own positions from the transformed ``input_ids`` (M-RoPE included)."""
        self._input_transforms.append(transform)
        try:
            yield
        finally:
            self._input_transforms.remove(transform)

    def reuses_vision_outputs(self, inputs) -> bool:
        """Whether the forward can take these inputs' vision-encoder outputs precomputed (``mm_encoder_outputs``)
        instead of their pixels: the family says so (:attr:`VLMFamily.reuses_vision_outputs`) and the inputs
        hold video pixels."""
        return (self.family_spec.reuses_vision_outputs and "pixel_values_videos" in inputs
                and "mm_encoder_outputs" in self._forward_params)

    # ------------------------------------------------------------------ scoring
    def answer_logits(self, videos, *, grad: bool = False) -> torch.Tensor:
        """Next-token logits ``[B, V]`` at the answer position (after the answer prefix), one forward pass with the
        last position's logits only: the supervised baselines' cross-entropy target."""
        with contextlib.nullcontext() if grad else torch.no_grad():
            inputs, _ = self._prepare(videos, with_answer_prefix=True)
            return self.model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]

    def score(self, videos, *, return_features: bool = False, grad: bool = False) -> ScoreOutput:
        """Continuous anomaly score of each input in ONE forward pass.

        The prompt ends with the answer prefix; only the last position's logits are computed
        (``logits_to_keep=1``) and restricted to the ids of ``"0"`` and ``"1"``. With ``return_features`` the
        vision tokens of the same pass are captured by a forward hook and mean-pooled per input.
        Runs under ``torch.no_grad()`` unless ``grad=True`` (then the ambient grad mode applies, e.g. for
        gradients through LoRA hooks).
        """
        with contextlib.nullcontext() if grad else torch.no_grad():
            inputs, frames = self._prepare(videos, with_answer_prefix=True)
            with capture_outputs(self._feature_module, active=return_features) as captured:
                out = self.model(**inputs, logits_to_keep=1, use_cache=False)
            p_anomaly, margin = self._answer_probability(out.logits[:, -1, :])
            features = None
            if return_features:
                per_input = split_per_input(captured, inputs, frames, self.model.config, self.family)
                features = torch.stack([t.float().mean(dim=0) for t in per_input])
        return ScoreOutput(p_anomaly=p_anomaly, logit_margin=margin, features=features)

    def score_conditioned(self, videos, condition, *, return_features: bool = False,
                          grad: bool = False) -> ScoreOutput:
        """:meth:`score` under an adaptation built from the inputs' own vision tokens, encoding the video once.

        ``condition(tokens)`` receives the vision tokens of each input (``[N_i, D]`` float32, as
        :meth:`vision_features` returns them) and returns the context manager that adapts the language model (COPRA:
        generate a LoRA per input and inject it). Where the family accepts precomputed encoder outputs (Qwen2-VL,
        Qwen2.5-VL: ``mm_encoder_outputs``) the same encoder pass conditions the adaptation and feeds the LM — the
        frozen vision encoder is a quarter of a 7B window's forward, so running it twice would cost that much again.
        Elsewhere the encoder runs twice, with identical results.
        """
        with contextlib.nullcontext() if grad else torch.no_grad():
            inputs, _frames = self._prepare(videos, with_answer_prefix=True)
            if not self.reuses_vision_outputs(inputs):
                tokens, _ = self.vision_features(videos, grad=grad)
                with condition(tokens):
                    return self.score(videos, return_features=return_features, grad=grad)
            encoded = self.model.get_video_features(pixel_values_videos=inputs["pixel_values_videos"],
                                                    video_grid_thw=inputs["video_grid_thw"])
            tokens = [t.float() for t in encoded.pooler_output]
            model_inputs = {k: v for k, v in inputs.items() if k != "pixel_values_videos"}
            with condition(tokens):
                out = self.model(**model_inputs, mm_encoder_outputs={"video": encoded}, logits_to_keep=1,
                                 use_cache=False)
            p_anomaly, margin = self._answer_probability(out.logits[:, -1, :])
            features = torch.stack([t.mean(dim=0) for t in tokens]) if return_features else None
        return ScoreOutput(p_anomaly=p_anomaly, logit_margin=margin, features=features)

    def _answer_probability(self, last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P("1") over {"0", "1"} and the logit margin from last-position logits ``[B, V]``."""
        id0, id1 = self._answer_ids
        pair = torch.stack((last[:, id0], last[:, id1]), dim=-1).float()
        return torch.softmax(pair, dim=-1)[:, 1], pair[:, 1] - pair[:, 0]

    def vision_features(self, videos, *, grad: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Vision tokens of each input after the merger/projector (``[N_i, D]`` float32) and their means ``[B, D]``,
        from the vision encoder alone (the condition encoder of COPRA)."""
        with contextlib.nullcontext() if grad else torch.no_grad():
            inputs, frames = self._prepare(videos, with_answer_prefix=False)
            with capture_outputs(self._feature_module, active=True) as captured:
                if "pixel_values_videos" in inputs:
                    self.model.get_video_features(
                        pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
                    )
                elif "pixel_values" in inputs:
                    self.model.get_image_features(pixel_values=inputs["pixel_values"])
                else:
                    raise BackboneError(f"the {self.family!r} processor produced no pixel values")
            per_input = split_per_input(captured, inputs, frames, self.model.config, self.family)
            tokens = [t.float() for t in per_input]
        return tokens, torch.stack([t.mean(dim=0) for t in tokens])

    # ------------------------------------------------------------------ generation
    def generate(self, videos, *, max_new_tokens: int = 64, do_sample: bool = False, temperature: float = 1.0,
                 num_return_sequences: int = 1, top_k: int | None = 50, top_p: float = 1.0,
                 repetition_penalty: float = 1.0) -> list[str]:
        """Decoded completions (prompt removed, special tokens skipped), in batch order with the
        ``num_return_sequences`` completions of each input consecutive.

        Sampling settings are explicit and override the checkpoint's ``generation_config`` (Qwen2-VL-Instruct
        ships top_k=1, top_p=0.001, repetition_penalty=1.05, which would make "sampling" near-greedy);
        the defaults (top_k=50, top_p=1.0, no repetition penalty) match VLM-R1's GRPO rollouts; ``top_k=None``
        disables top-k. Sampling draws from the global torch RNG: ``torch.manual_seed`` makes it reproducible.
        Always runs without gradients (GRPO recomputes log-probs of the completions in a separate forward).
        """
        if num_return_sequences > 1 and not do_sample:
            raise BackboneError("num_return_sequences > 1 needs do_sample=True (greedy decoding repeats itself)")
        with torch.no_grad():
            inputs, _ = self._prepare(videos, with_answer_prefix=False)
            return decoded_completions(self.model, self.tokenizer, inputs, max_new_tokens=max_new_tokens,
                                       do_sample=do_sample, temperature=temperature,
                                       num_return_sequences=num_return_sequences, top_k=top_k, top_p=top_p,
                                       repetition_penalty=repetition_penalty)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family!r}"

"""One interface over transformers VLMs: frozen backbone, binary anomaly scoring, generation, vision features.

``VLMBackbone`` wraps a transformers ``*ForConditionalGeneration`` model and its processor. It never downloads
anything: it loads a built-in tiny model (see :mod:`copra_bench.vlm.tiny`) or a local checkpoint directory.

Inputs are K pre-sampled RGB frames per input (uint8 ``[K, H, W, 3]``); every input is one video in one
user turn of the chat template. Scoring teacher-forces the assistant answer prefix and reads the logits of
``"0"`` and ``"1"`` at the last position in a single forward pass (``logits_to_keep=1``); the pooled vision
features of that same pass are captured with a forward hook.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from copra_bench.errors import CopraError

from .prompts import ANSWER_PREFIX, SYSTEM_PROMPT, USER_PROMPT
from .tiny import BUILTIN_MODELS

__all__ = ["BackboneError", "SUPPORTED_FAMILIES", "ScoreOutput", "VLMBackbone"]


class BackboneError(CopraError, ValueError):
    """A user-facing error about choosing, loading or feeding a VLM backbone."""


@dataclass(frozen=True)
class _Family:
    human: str
    vision: tuple[str, ...]  # candidate dotted paths (from the ConditionalGeneration model) of the vision encoder
    language: tuple[str, ...]  # ... of the language-model decoder
    feature: tuple[str, ...]  # ... of the module whose output holds the vision tokens after merger/projector


_QWEN = dict(vision=("model.visual", "visual"), language=("model.language_model", "language_model"))
_QWEN_FEATURE = ("model.visual", "visual")  # its pooler_output is the merged (post-merger) token sequence

# model_type -> how to reach its parts. To add a family, add an entry here (and to SUPPORTED_FAMILIES below is
# automatic): the vision encoder, the LM decoder and the module emitting the LM-ready vision tokens.
_FAMILIES: dict[str, _Family] = {
    "qwen2_vl": _Family("Qwen2-VL (e.g. Qwen/Qwen2-VL-7B-Instruct)", feature=_QWEN_FEATURE, **_QWEN),
    "qwen2_5_vl": _Family("Qwen2.5-VL (e.g. Qwen/Qwen2.5-VL-7B-Instruct)", feature=_QWEN_FEATURE, **_QWEN),
    "qwen3_vl": _Family("Qwen3-VL (e.g. Qwen/Qwen3-VL-8B-Instruct)", feature=_QWEN_FEATURE, **_QWEN),
    "internvl": _Family(
        "InternVL, transformers-native '-hf' checkpoints (e.g. OpenGVLab/InternVL3-8B-hf)",
        vision=("model.vision_tower", "vision_tower"),
        language=("model.language_model", "language_model"),
        feature=("model.multi_modal_projector", "multi_modal_projector"),
    ),
}

#: model_type -> human-readable family name.
SUPPORTED_FAMILIES: dict[str, str] = {k: v.human for k, v in _FAMILIES.items()}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ScoreOutput:
    """Result of :meth:`VLMBackbone.score` for a batch of B inputs."""

    p_anomaly: torch.Tensor  # [B] float32: P("1") / (P("0") + P("1")) at the answer position
    logit_margin: torch.Tensor  # [B] float32: logit("1") - logit("0"), i.e. the log-odds of p_anomaly
    features: torch.Tensor | None = None  # [B, D] float32 mean of each input's vision tokens (post merger/projector)


def _resolve(root: nn.Module, paths: Sequence[str], what: str, family: str) -> nn.Module:
    for path in paths:
        try:
            return root.get_submodule(path)
        except AttributeError:
            continue
    raise BackboneError(
        f"cannot find the {what} of this {family!r} model (tried {', '.join(paths)}); "
        "update the family entry in copra_bench/vlm/backbone.py (_FAMILIES) for this transformers version"
    )


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise BackboneError(f"unsupported dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")


class VLMBackbone(nn.Module):
    """A frozen transformers VLM with the benchmark's prompt, scoring, generation and vision-feature API.

    The wrapped model is frozen: ``requires_grad`` is False for all its parameters and it stays in eval mode
    whatever ``train()`` asks (per-input LoRA generators attach later through forward hooks).
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        *,
        family: str,
        name: str,
        system_prompt: str = SYSTEM_PROMPT,
        user_prompt: str = USER_PROMPT,
        answer_prefix: str = ANSWER_PREFIX,
        video_fps: float = 1.0,
        video_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if family not in _FAMILIES:
            raise BackboneError(_unsupported_message(family, name))
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

        spec = _FAMILIES[family]
        self._vision = _resolve(model, spec.vision, "vision encoder", family)
        self._language = _resolve(model, spec.language, "language model", family)
        self._feature_module = _resolve(model, spec.feature, "vision-token output module", family)

        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self._answer_ids = self._single_token_ids(("0", "1"))
        self._forward_params = set(inspect.signature(model.forward).parameters)
        valid = getattr(getattr(processor, "video_processor", None), "valid_kwargs", None)
        self._video_kwarg_names = set(getattr(valid, "__annotations__", {}))

        model.requires_grad_(False)
        model.eval()

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path,
        *,
        dtype: str = "float32",
        seed: int = 0,
        attn_implementation: str | None = None,
        device: str | torch.device | None = None,
        **backbone_kwargs: Any,
    ) -> "VLMBackbone":
        """Build a built-in tiny model (``"tiny-qwen2-vl"``, ...) or load a local checkpoint directory, offline.

        ``backbone_kwargs`` go to the constructor (``system_prompt``, ``user_prompt``, ``answer_prefix``,
        ``video_fps``, ``video_kwargs``). ``device`` is passed as ``device_map`` when loading a checkpoint
        (weights land there directly) and used with ``.to()`` for the built-in models.
        """
        torch_dtype = _parse_dtype(dtype)
        name = str(name_or_path)
        if name in BUILTIN_MODELS:
            model, processor = BUILTIN_MODELS[name](seed=seed, attn_implementation=attn_implementation)
            model = model.to(dtype=torch_dtype)
            if device is not None:
                model = model.to(device)
            return cls(model, processor, family=model.config.model_type, name=name, **backbone_kwargs)

        path = Path(name).expanduser()
        builtins = ", ".join(repr(n) for n in BUILTIN_MODELS)
        if not path.exists():
            raise BackboneError(
                f"model path {str(path)!r} does not exist. This project never downloads weights: download the "
                f"checkpoint yourself (e.g. `hf download Qwen/Qwen2-VL-7B-Instruct --local-dir DIR`) and pass the "
                f"local directory, or use a built-in model: {builtins}"
            )
        config_file = path / "config.json"
        if not path.is_dir() or not config_file.is_file():
            raise BackboneError(
                f"{str(path)!r} is not a transformers checkpoint directory (no config.json); "
                f"pass a local model directory or a built-in model: {builtins}"
            )
        try:
            model_type = json.loads(config_file.read_text()).get("model_type")
        except (OSError, json.JSONDecodeError) as err:
            raise BackboneError(f"cannot read {str(config_file)!r}: {err}") from err
        if model_type not in _FAMILIES:
            raise BackboneError(_unsupported_message(model_type, str(path)))

        from transformers import AutoModelForImageTextToText, AutoProcessor

        load_kwargs: dict[str, Any] = dict(dtype=torch_dtype, local_files_only=True)
        if attn_implementation is not None:
            load_kwargs["attn_implementation"] = attn_implementation
        use_device_map = device is not None and importlib.util.find_spec("accelerate") is not None
        if use_device_map:
            load_kwargs["device_map"] = device
        try:
            model = AutoModelForImageTextToText.from_pretrained(str(path), **load_kwargs)
            processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise BackboneError(
                f"failed to load the {model_type!r} checkpoint at {str(path)!r} offline: {err}"
            ) from err
        if device is not None and not use_device_map:
            model = model.to(device)
        return cls(model, processor, family=model_type, name=str(path), **backbone_kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def answer_token_ids(self) -> tuple[int, int]:
        """Token ids of ``"0"`` (normal) and ``"1"`` (abnormal)."""
        return self._answer_ids

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
            messages = [
                {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]},
                {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": self.user_prompt}]},
            ]
            templater = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
            text = templater.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            self._prompt_cache = {key: text}
        return text + self.answer_prefix if with_answer_prefix else text

    def prepare_inputs(self, videos, *, with_answer_prefix: bool):
        """Processor outputs (``BatchFeature``) for a batch of videos, on the model's device, left-padded."""
        return self._prepare(videos, with_answer_prefix=with_answer_prefix)[0]

    def _prepare(self, videos, *, with_answer_prefix: bool):
        clips = _as_clip_list(videos)
        frames = [int(c.shape[0]) for c in clips]
        if self.family == "internvl" and len(set(frames)) > 1:
            raise BackboneError(
                f"InternVL's processor needs the same number of frames for every video of a batch; got {frames}"
            )
        text = self.build_prompt(with_answer_prefix=with_answer_prefix)
        vkw: dict[str, Any] = {"do_sample_frames": False, "input_data_format": "channels_first"}
        vkw["video_metadata"] = [
            {"total_num_frames": k, "fps": self.video_fps, "frames_indices": list(range(k))} for k in frames
        ]
        vp = getattr(self.processor, "video_processor", None)
        if "cap_pixels_per_frame" in self._video_kwarg_names and getattr(vp, "cap_pixels_per_frame", 0) is None:
            vkw["cap_pixels_per_frame"] = False  # K frames per clip: the cap never binds; silences a warning
        if self.device.type != "cpu" and "device" in self._video_kwarg_names:
            # Resize/normalise/patchify on the accelerator: on CPU this costs ~0.2 s per 8 windows of real size,
            # as much as half a 7B forward on an H200.
            vkw["device"] = str(self.device)
        vkw.update(self.video_kwargs)
        inputs = self.processor(
            text=[text] * len(clips),
            videos=[c.permute(0, 3, 1, 2).contiguous() for c in clips],
            padding=True,
            padding_side="left",
            return_tensors="pt",
            videos_kwargs=vkw,
        )
        inputs = self._add_mm_token_type_ids(inputs)
        for transform in self._input_transforms:
            inputs = transform(inputs)
        device, dtype = self.device, self.dtype
        for key in list(inputs.keys()):
            value = inputs[key]
            if isinstance(value, torch.Tensor):
                if key.startswith("pixel_values") and value.is_floating_point():
                    inputs[key] = value.to(device=device, dtype=dtype)
                else:
                    inputs[key] = value.to(device)
        return inputs, frames

    def _add_mm_token_type_ids(self, inputs):
        # transformers 5.x Qwen-VL needs mm_token_type_ids (0 text, 1 image, 2 video) with video_grid_thw; the
        # processor returns them, this covers processors that do not.
        needed = "video_grid_thw" in inputs and "mm_token_type_ids" in self._forward_params
        if needed and "mm_token_type_ids" not in inputs:
            cfg = self.model.config
            ids = inputs["input_ids"]
            types = torch.zeros_like(ids)
            if getattr(cfg, "image_token_id", None) is not None:
                types[ids == cfg.image_token_id] = 1
            if getattr(cfg, "video_token_id", None) is not None:
                types[ids == cfg.video_token_id] = 2
            inputs["mm_token_type_ids"] = types
        return inputs

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
            with self._capture_vision_tokens(active=return_features) as captured:
                out = self.model(**inputs, logits_to_keep=1, use_cache=False)
            p_anomaly, margin = self._answer_probability(out.logits[:, -1, :])
            features = None
            if return_features:
                per_input = self._split_vision_tokens(captured, inputs, frames)
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
            reusable = (self.family in ("qwen2_vl", "qwen2_5_vl") and "pixel_values_videos" in inputs
                        and "mm_encoder_outputs" in self._forward_params)
            if not reusable:
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
            with self._capture_vision_tokens(active=True) as captured:
                if "pixel_values_videos" in inputs:
                    self.model.get_video_features(
                        pixel_values_videos=inputs["pixel_values_videos"], video_grid_thw=inputs["video_grid_thw"]
                    )
                elif "pixel_values" in inputs:
                    self.model.get_image_features(pixel_values=inputs["pixel_values"])
                else:
                    raise BackboneError(f"the {self.family!r} processor produced no pixel values")
            tokens = [t.float() for t in self._split_vision_tokens(captured, inputs, frames)]
        return tokens, torch.stack([t.mean(dim=0) for t in tokens])

    @contextlib.contextmanager
    def _capture_vision_tokens(self, *, active: bool):
        captured: list = []
        if not active:
            yield captured
            return
        handle = self._feature_module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            yield captured
        finally:
            handle.remove()

    def _split_vision_tokens(self, captured: list, inputs, frames: list[int]) -> list[torch.Tensor]:
        if len(captured) != 1:
            raise BackboneError(
                f"expected the vision-token module to run once per call, it ran {len(captured)} times"
            )
        out = captured[0]
        tokens = getattr(out, "pooler_output", None)
        if tokens is None:
            tokens = out[0] if isinstance(out, (tuple, list)) else out
        if isinstance(tokens, (tuple, list)):
            tokens = torch.cat(list(tokens), dim=0)
        if tokens.dim() == 2 and "video_grid_thw" in inputs:
            merge = int(self.model.config.vision_config.spatial_merge_size)
            sizes = (inputs["video_grid_thw"].prod(-1) // merge**2).tolist()
            return list(torch.split(tokens, sizes, dim=0))
        if tokens.dim() == 3 and tokens.shape[0] == sum(frames):  # [frames, tokens per frame, D] (InternVL)
            return [t.flatten(0, 1) for t in torch.split(tokens, frames, dim=0)]
        raise BackboneError(
            f"cannot split vision tokens of shape {tuple(tokens.shape)} per input for family {self.family!r}"
        )

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        videos,
        *,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        num_return_sequences: int = 1,
        top_k: int | None = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
    ) -> list[str]:
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
            tok = self.tokenizer
            gen_kwargs: dict[str, Any] = dict(
                max_new_tokens=int(max_new_tokens),
                do_sample=bool(do_sample),
                num_return_sequences=int(num_return_sequences),
                pad_token_id=tok.pad_token_id,
                eos_token_id=self._eos_ids(),
                repetition_penalty=float(repetition_penalty),
            )
            if do_sample:
                gen_kwargs.update(
                    temperature=float(temperature), top_k=0 if top_k is None else int(top_k), top_p=float(top_p)
                )
            out = self.model.generate(**inputs, **gen_kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        completions = sequences[:, inputs["input_ids"].shape[1] :]
        return tok.batch_decode(completions, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        for value in (gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]) + [self.tokenizer.eos_token_id]:
            if value is not None and int(value) not in ids:
                ids.append(int(value))
        return ids

    # ------------------------------------------------------------------ helpers
    def _single_token_ids(self, texts: Sequence[str]) -> tuple[int, ...]:
        result = []
        for text in texts:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise BackboneError(
                    f"answer {text!r} is not a single token for the {self.name!r} tokenizer (ids {ids}); "
                    "the binary score needs '0' and '1' to be single tokens"
                )
            result.append(int(ids[0]))
        return tuple(result)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, family={self.family!r}"


def _unsupported_message(model_type: str | None, where: str) -> str:
    families = "; ".join(f"{k} ({v})" for k, v in SUPPORTED_FAMILIES.items())
    hint = ""
    if model_type == "internvl_chat":
        hint = (
            " This is an original remote-code InternVL checkpoint: use its transformers-native '-hf' version "
            "(e.g. OpenGVLab/InternVL3-8B-hf), whose model_type is 'internvl'."
        )
    return (
        f"unsupported model_type {model_type!r} in {where!r}.{hint} Supported families: {families}. "
        "To add a family, add a mapping entry (model_type -> vision encoder, language model and vision-token "
        "module paths) to _FAMILIES in copra_bench/vlm/backbone.py."
    )


def _as_clip_list(videos) -> list[torch.Tensor]:
    """uint8 ``[B, K, H, W, 3]`` tensor/array or a list of ``[K, H, W, 3]`` -> list of CPU uint8 tensors."""
    if isinstance(videos, np.ndarray):
        videos = torch.from_numpy(videos)
    if isinstance(videos, torch.Tensor):
        if videos.dim() != 5:
            raise BackboneError(
                f"videos must be [B, K, H, W, 3] uint8 (or a list of [K, H, W, 3]); got shape {tuple(videos.shape)}"
            )
        clips = list(videos.unbind(0))
    elif isinstance(videos, (list, tuple)):
        clips = [torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in videos]
    else:
        raise BackboneError(
            f"videos must be a uint8 tensor [B, K, H, W, 3] or a list of [K, H, W, 3]; got {type(videos)!r}"
        )
    if not clips:
        raise BackboneError("empty batch of videos")
    for i, clip in enumerate(clips):
        if not isinstance(clip, torch.Tensor) or clip.dim() != 4 or clip.shape[-1] != 3:
            shape = tuple(clip.shape) if hasattr(clip, "shape") else type(clip)
            raise BackboneError(f"video {i} must be [K, H, W, 3] RGB frames; got {shape}")
        if clip.dtype != torch.uint8:
            raise BackboneError(f"video {i} must be uint8 (0-255); got {clip.dtype}")
    return [c.detach().cpu() for c in clips]

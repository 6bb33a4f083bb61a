"""Offline loading of a VLM: a built-in tiny model or a local checkpoint directory, never a download."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import BackboneError
from .families import BUILTIN_MODELS, family_of

__all__ = ["checkpoint_family", "load_model", "parse_dtype"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``"bfloat16"`` / ``"float16"`` (or the torch dtype itself) -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise BackboneError(f"unsupported dtype {dtype!r}; choose one of {', '.join(_DTYPES)}")


def checkpoint_family(name_or_path: str | Path):
    """The registered family of a built-in model name or a local checkpoint (its ``config.json``), without loading
    any weight; None when it cannot be told yet (loading then reports the problem)."""
    from .families import registered_families

    name = str(name_or_path)
    for family in registered_families().values():
        if family.tiny_model == name:
            return family
    config_file = Path(name).expanduser() / "config.json"
    try:
        return family_of(json.loads(config_file.read_text()).get("model_type"), where=name)
    except (OSError, json.JSONDecodeError, BackboneError):
        return None


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, Any, str, str]:
    """``(model, processor, model_type, name)`` of a built-in tiny model (``"tiny-qwen2-vl"``, ...) or of a local
    checkpoint directory of a registered family, loaded offline.

    ``device`` is passed as ``device_map`` when loading a checkpoint (weights land there directly) and used with
    ``.to()`` for the built-in models.
    """
    torch_dtype = parse_dtype(dtype)
    name = str(name_or_path)
    if name in BUILTIN_MODELS:
        model, processor = BUILTIN_MODELS[name](seed=seed, attn_implementation=attn_implementation)
        model = model.to(dtype=torch_dtype)
        if device is not None:
            model = model.to(device)
        return model, processor, model.config.model_type, name

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
    family_of(model_type, where=str(path))  # refuse an unsupported family before loading any weight

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
        raise BackboneError(f"failed to load the {model_type!r} checkpoint at {str(path)!r} offline: {err}") from err
    if device is not None and not use_device_map:
        model = model.to(device)
    return model, processor, model_type, str(path)

"""Which numeric precisions can train a method, checked from the parsed config before anything loads.

The recipe (as VLM-R1 / TRL with a bf16 checkpoint): the frozen VLM holds bf16 weights
(``model.init_args.backbone_dtype: bfloat16``); what is trained (COPRA's generator, a LoRA, a soft prompt) keeps
float32 master weights and AdamW states; COPRA's generator computes under bf16 autocast where the backbone is bf16
and writes float32 LoRA values; log-probs and the GRPO sums are float32. ``trainer.precision`` may be ``32-true``
(Lightning's default: the backbone's own dtype decides) or ``bf16-mixed`` (autocast around the whole step).

Refused for ``fit`` of a method that trains:

* ``bf16-true`` / ``16-true`` (and ``transformer-engine*``): the trained tensors and their optimiser state would be
  cast to 16 bits; an update of lr 1e-6 (the paper's) is below bf16's resolution (2^-8 relative) and is lost;
* ``16-mixed`` (fp16 autocast with a loss scaler): the scaler's overflow steps hold inf gradients on purpose, which
  the non-finite guard of :class:`~copra_bench.trained_module.TrainedModule` stops training on;
* ``backbone_dtype: float16``: fp16 activations without a loss scaler underflow in backward.
"""

from __future__ import annotations

from typing import Any

from copra_bench.errors import CopraError

__all__ = ["TRAINABLE_PRECISIONS", "PrecisionError", "check_precision", "check_training_precision"]

#: ``trainer.precision`` values a trained method accepts (Lightning's spellings, legacy ones included).
TRAINABLE_PRECISIONS: tuple[str, ...] = ("32-true", "32", "bf16-mixed", "bf16", "64-true", "64")

_FIX = ("set trainer.precision: bf16-mixed (float32 master weights, bf16 autocast) or leave it at 32-true with "
        "model.init_args.backbone_dtype: bfloat16 (the frozen VLM in bf16, the trained tensors in float32)")


class PrecisionError(CopraError, ValueError):
    """A precision setting that cannot train the method; the message names the key and the fix."""


def check_training_precision(precision: Any, backbone_dtype: str | None) -> None:
    """Raise :class:`PrecisionError` unless ``trainer.precision=precision`` with ``backbone_dtype`` can train."""
    value = "32-true" if precision is None else str(precision)
    if value in ("16-mixed", "16"):
        raise PrecisionError(
            f"trainer.precision={value} trains with fp16 autocast and a loss scaler, whose overflow steps give inf "
            f"gradients on purpose; the non-finite guard would stop training at the first one: {_FIX}")
    if value not in TRAINABLE_PRECISIONS:
        raise PrecisionError(
            f"trainer.precision={value} cannot train this method: it casts the trained parameters and their AdamW "
            f"state to 16 bits, where an update of lr 1e-6 is below the format's resolution and is lost; {_FIX}")
    if str(backbone_dtype) == "float16":
        raise PrecisionError(
            "model.init_args.backbone_dtype=float16 cannot train: fp16 activations without a loss scaler underflow "
            "in backward (and the non-finite guard refuses a scaler's overflow steps); set "
            "model.init_args.backbone_dtype: bfloat16 (same memory, float32's range)")


def check_precision(subcommand: str, config: Any) -> None:
    """:func:`check_training_precision` for ``fit`` of a method that trains, from the parsed CLI ``config``
    (reads only the model's ``class_path`` and two keys: nothing is built)."""
    if subcommand != "fit":
        return
    import importlib

    from copra_bench.trained_module import TrainedModule

    model = _get(config, "model") or {}
    module, _, name = str(_get(model, "class_path") or "").rpartition(".")
    try:
        method = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return  # the CLI reports an unknown class itself
    if not (isinstance(method, type) and issubclass(method, TrainedModule)):
        return
    check_training_precision(_get(_get(config, "trainer") or {}, "precision"),
                             _get(_get(model, "init_args") or {}, "backbone_dtype"))


def _get(mapping: Any, key: str) -> Any:
    try:
        return mapping.get(key) if hasattr(mapping, "get") else getattr(mapping, key, None)
    except (KeyError, AttributeError):
        return None

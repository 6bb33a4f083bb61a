"""The supported VLM families, one module each, and their registry (:mod:`.registry`).

Every module of this package but the registry describes one family (``qwen2_vl.py``, ``qwen2_5_vl.py``,
``qwen3_vl.py``, ``internvl.py``) and registers it on import; all of them are imported here, so adding a family is one
new file in this folder plus a subclass of the shared contract in ``tests/test_families.py``.
"""

import importlib
import pkgutil
from collections.abc import Callable

from .registry import (
    ALL_TARGETS,
    LLAMA_TARGETS,
    PositionScheme,
    VLMFamily,
    family_of,
    register_family,
    registered_families,
    unsupported_message,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

#: model_type -> human-readable name of every built-in family.
SUPPORTED_FAMILIES: dict[str, str] = {k: f.human for k, f in registered_families().items()}

#: Built-in model names -> builder ``(seed=0, attn_implementation=None) -> (model, processor)``: each family's tiny
#: random model (:mod:`copra_bench.vlm.tiny`).
BUILTIN_MODELS: dict[str, Callable[..., tuple]] = {
    f.tiny_model: f.build_tiny for f in registered_families().values() if f.tiny_model and f.build_tiny
}

__all__ = [
    "ALL_TARGETS",
    "BUILTIN_MODELS",
    "LLAMA_TARGETS",
    "PositionScheme",
    "SUPPORTED_FAMILIES",
    "VLMFamily",
    "family_of",
    "register_family",
    "registered_families",
    "unsupported_message",
]

"""COPRA: a generator that writes a per-segment LoRA update for a frozen VLM (arXiv 2605.15325).

* :mod:`~copra_bench.copra.layout` — which LoRA matrices are generated (:class:`LoRALayout`, :class:`LoRADeltas`);
* :mod:`~copra_bench.copra.mappings` — where they go in each VLM family (:class:`BackboneMapping`, a view over
  the family registered in :mod:`copra_bench.vlm.families`);
* :mod:`~copra_bench.copra.generator` — the parameter-token Transformer (:class:`ParameterGenerator`);
* :mod:`~copra_bench.copra.injection` — batched per-input injection into the frozen LM (:class:`LoRAInjector`);
* :mod:`~copra_bench.copra.torch_model` — the plain module (:class:`COPRAModel`);
* :mod:`~copra_bench.copra.lightning_model` — the benchmark method trained with GRPO (:class:`COPRA`).
"""

from typing import Any

from .generator import GeneratorError, ParameterGenerator
from .injection import InjectionError, LoRAInjector, merged_weights
from .layout import LayoutError, LoRADeltas, LoRALayout
from .mappings import BackboneMapping, MappingError, mapping_for
from .torch_model import COPRAModel

__all__ = ["BackboneMapping", "COPRA", "COPRAModel", "GeneratorError", "InjectionError", "LayoutError", "LoRADeltas",
           "LoRAInjector", "LoRALayout", "MappingError", "ParameterGenerator", "mapping_for", "merged_weights"]


def __getattr__(name: str) -> Any:
    # The LightningModule is imported on first use: the plain modules above do not need Lightning.
    if name == "COPRA":
        from .lightning_model import COPRA

        return COPRA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""COPRA: a generator that writes a per-segment LoRA update for a frozen VLM (arXiv 2605.15325).

* :mod:`~copra_bench.copra.layout` — which LoRA matrices are generated (:class:`LoRALayout`, :class:`LoRADeltas`);
* :mod:`~copra_bench.copra.mappings` — where they go in each VLM family (:class:`BackboneMapping`);
* :mod:`~copra_bench.copra.generator` — the parameter-token Transformer (:class:`ParameterGenerator`);
* :mod:`~copra_bench.copra.injection` — batched per-input injection into the frozen LM (:class:`LoRAInjector`);
* :mod:`~copra_bench.copra.torch_model` — the plain module (:class:`COPRAModel`);
* :mod:`~copra_bench.copra.lightning_model` — the benchmark method trained with GRPO (:class:`COPRA`).
"""

from .generator import ParameterGenerator
from .injection import LoRAInjector
from .layout import LoRADeltas, LoRALayout
from .lightning_model import COPRA
from .mappings import BackboneMapping, mapping_for, register_mapping
from .torch_model import COPRAModel

__all__ = ["BackboneMapping", "COPRA", "COPRAModel", "LoRADeltas", "LoRAInjector", "LoRALayout",
           "ParameterGenerator", "mapping_for", "register_mapping"]

"""The method a transfer run answers with: built from a model config, its trained state from a run or checkpoint.

``--model configs/model/<x>.yaml`` builds the method (``class_path`` / ``init_args``, the files ``fit`` reads);
``--ckpt_path`` takes a ``.ckpt`` file, a run directory (``<local_dir>/<experiment>/<run>/`` with its
``config.yaml``; the checkpoint in its ``checkpoints/``, ``last.ckpt`` first) or an MLflow run id (its ``run_dir``
tag). The model config comes from ``--model`` when given, else from the run's ``config.yaml`` (a checkpoint's run
directory is two folders up, where ``fit`` writes it). The trained tensors are loaded with the method's own
``on_load_checkpoint`` check (a checkpoint of another method or configuration is refused, naming the tensors).

How each method adapts at transfer time (:attr:`TransferMethod.adapter`):

* COPRA: its generator reads the frozen vision encoder's tokens of the document's K frames and writes one LoRA per
  document, injected while the VLM answers (``COPRAModel.condition_tokens`` -> ``generator`` -> ``injector.apply``);
* a static method (LoRA SFT, static LoRA + GRPO, prompt tuning): its trained adapter, the same for every document;
* frozen: none.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .generation import Adapter
from .task import TransferError

__all__ = ["TransferMethod", "find_run", "load_method"]


@dataclass
class TransferMethod:
    """A method ready to answer: its module, its adapter (None for frozen) and where its weights came from."""

    name: str
    module: Any
    adapter: Adapter | None
    source: str
    config: dict[str, Any]

    @property
    def backbone(self):
        return self.module.backbone


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise TransferError(f"cannot read the model config {path}: {err}") from None
    if not isinstance(data, dict):
        raise TransferError(f"{path} is not a YAML mapping")
    return data


def find_run(ckpt_path: str, tracking_uri: str) -> tuple[Path | None, Path]:
    """``(run directory or None, checkpoint file)`` of a ``.ckpt`` file, a run directory or an MLflow run id."""
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        run_dir = path.parent.parent
        return (run_dir if (run_dir / "config.yaml").is_file() else None), path
    if not path.exists() and len(ckpt_path) == 32 and ckpt_path.isalnum():
        from copra_bench.store_uri import (
            tracking_client,  # mlflow is slow to import: only here
        )

        try:
            run = tracking_client(tracking_uri).get_run(ckpt_path)
        except Exception as err:  # noqa: BLE001 - any store error: say which run and store
            raise TransferError(f"no MLflow run {ckpt_path!r} in {tracking_uri} ({err}); pass --tracking_uri, a run "
                                "directory or a .ckpt file") from None
        path = Path(run.data.tags.get("run_dir", ""))
    if not path.is_dir():
        raise TransferError(f"--ckpt_path {ckpt_path}: neither a checkpoint file, a run directory nor a run id")
    found = sorted((path / "checkpoints").glob("*.ckpt"), key=lambda p: (p.name != "last.ckpt", p.name))
    if not found:
        raise TransferError(f"run directory {path} has no checkpoints/*.ckpt (was it trained? a frozen run has "
                            "nothing to load: use --model configs/model/frozen_*.yaml)")
    return path, found[0]


def _build(model_config: dict[str, Any], where: str) -> Any:
    class_path = model_config.get("class_path")
    if not isinstance(class_path, str) or "." not in class_path:
        raise TransferError(f"{where}: the model config needs class_path (e.g. copra_bench.copra.COPRA)")
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise TransferError(f"{where}: cannot import {class_path}: {err}") from None
    return cls(**dict(model_config.get("init_args") or {}))


def _adapter_of(module: Any) -> Adapter | None:
    from copra_bench.adapters import StaticAdapter
    from copra_bench.copra.torch_model import COPRAModel

    copra = getattr(module, "model", None)
    if isinstance(copra, COPRAModel):
        return lambda clips: copra.injector.apply(copra.generator(copra.condition_tokens(clips)))
    adapter = getattr(module, "adapter", None)
    if isinstance(adapter, StaticAdapter):
        return lambda clips: adapter.adaptation(1)
    return None


def load_method(*, model: str | None = None, ckpt_path: str | None = None, tracking_uri: str = "sqlite:///mlflow.db",
                allow_untrained: bool = False, device: str | None = None) -> TransferMethod:
    """Build the method and load its trained state (see the module docstring)."""
    import torch

    if model is None and ckpt_path is None:
        raise TransferError("give --ckpt_path <run, run directory or .ckpt> or --model configs/model/<method>.yaml")
    run_dir = ckpt = None
    if ckpt_path is not None:
        run_dir, ckpt = find_run(ckpt_path, tracking_uri)
    if model is not None:
        config, where = _read_yaml(Path(model)), model
    elif run_dir is not None:
        config, where = _read_yaml(run_dir / "config.yaml").get("model") or {}, str(run_dir / "config.yaml")
    else:
        raise TransferError(f"{ckpt}: no config.yaml two folders up (the run directory); pass --model with the "
                            "model config it was trained with")
    module = _build(config, where)
    adapter = _adapter_of(module)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if "state_dict" not in state:
            raise TransferError(f"{ckpt} is not a Lightning checkpoint (no state_dict)")
        module.on_load_checkpoint(state)
        module.load_state_dict(state["state_dict"], strict=False)
    elif adapter is not None and not allow_untrained:
        raise TransferError(f"{config.get('class_path')} is trained but no --ckpt_path was given: its adapter would be "
                            "the untrained initialisation. Pass --ckpt_path, or --allow_untrained to run it anyway")
    module.eval()
    if device:
        module.to(torch.device(device))
    name = getattr(module, "method_name", type(module).__name__.lower())
    return TransferMethod(name=name, module=module, adapter=adapter, source=str(ckpt or "untrained"), config=config)

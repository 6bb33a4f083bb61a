"""Command line: ``python -m copra_bench fit|validate|test|predict --config X.yaml`` and the tool commands.

The Lightning subcommands go through :class:`CopraCLI` (LightningCLI, subclass mode for model and data, repeatable
``--config``, ``--print_config``, omegaconf interpolation). Tool commands (``data``, ``evaluate``, ``sweep``,
``report``) are plain functions named in :data:`TOOLS`, imported only when that tool runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from copra_bench.bench_module import BenchModule
from copra_bench.datamodules.base import VADDataModule
from copra_bench.errors import CopraError
from copra_bench.run_identity import CONFIG_HASH_TAG, config_hash, resumable_run_id
from copra_bench.tracking import ConfigToRun, MLFlowLogger

log = logging.getLogger("copra_bench")

#: Tool commands besides the Lightning subcommands: name -> ``"module:function"``, the function taking the tool's
#: arguments and returning the exit status. Looked up by name only, so ``python -m copra_bench fit`` (and ``--help``)
#: never imports a tool module, and a tool module never needs to import this one.
TOOLS: dict[str, str] = {
    "data": "copra_bench.datamodules.commands:data_command",
    "evaluate": "copra_bench.evaluation.command:run_evaluate",
    "sweep": "copra_bench.sweep.command:sweep_command",
    "report": "copra_bench.report.command:report_command",
}

#: Subcommands whose Trainer method defaults to ``verbose=False``: RunArtifacts prints one table per test set instead.
QUIET_SUBCOMMANDS = ("test", "predict")


def load_tool(name: str) -> Callable[[list[str]], int]:
    """The function of tool command ``name`` (a key of :data:`TOOLS`), importing its module now."""
    module, _, function = TOOLS[name].partition(":")
    return getattr(importlib.import_module(module), function)


class CopraArgumentParser(LightningArgumentParser):
    """LightningCLI's parser with the project's defaults for the Trainer-method arguments of a subcommand.

    LightningCLI builds every subcommand parser from its ``parser_class`` and adds the arguments of the Trainer method
    (``Trainer.test(..., verbose=True)``) with ``add_method_arguments``: the one place to change their defaults.
    """

    def add_method_arguments(self, class_type: type, method_name: str, *args: Any, **kwargs: Any) -> list[str]:
        added = super().add_method_arguments(class_type, method_name, *args, **kwargs)
        if issubclass(class_type, Trainer) and method_name in QUIET_SUBCOMMANDS and "verbose" in added:
            self.set_defaults(verbose=False)
        return added


class CopraCLI(LightningCLI):
    """LightningCLI with the project's conventions.

    * ``fit`` tests right after training (``--test_after_fit false`` to skip), on every test set of the DataModule.
    * A method's ``trainer_arguments`` are Trainer defaults: they apply unless the config sets that key.
    * ``data.frames_per_window`` (and the clip frame rate K / window seconds) are written once, linked into the model.
    * MLflow runs are named ``<method>-<dataset>`` and created before anything runs.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        tools = ", ".join(f"'{name}'" for name in TOOLS)
        kwargs.setdefault("parser_kwargs", {
            "parser_mode": "omegaconf",
            "description": f"copra_bench: VAD benchmark with VLMs. Lightning subcommands below; tool commands: {tools} "
                           "(python -m copra_bench <tool> --help)."})
        kwargs.setdefault("parser_class", CopraArgumentParser)
        super().__init__(BenchModule, VADDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         save_config_callback=ConfigToRun, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, test on every test set of the DataModule (fit subcommand only).")
        parser.link_arguments("data", "model.init_args.frames_per_window",
                              compute_fn=lambda data: data.frames_per_window, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.clip_fps", apply_on="instantiate",
                              compute_fn=lambda data: data.frames_per_window / data.window_spec.seconds)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The Trainer, with the method's ``trainer_arguments`` applied where the config leaves a key at Trainer's
        own default (a config value that differs from the method's is kept, and logged)."""
        config_init = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_config = config_init.get("trainer") or {}
        signature = inspect.signature(Trainer.__init__).parameters
        for key, value in getattr(self.model, "trainer_arguments", {}).items():
            default = signature[key].default
            configured = kwargs.get(key, trainer_config.get(key, default))
            if configured == default:
                kwargs[key] = value
            elif configured != value:
                log.info("trainer.%s=%r from the config overrides the method's default %r", key, configured, value)
        return super().instantiate_trainer(**kwargs)

    def resolved_config(self) -> dict[str, Any]:
        """The parsed config of the running subcommand as plain data (what ``--print_config`` shows)."""
        dumped = json.loads(self.parser.dump(self.config, format="json", skip_none=False))
        return dumped[self.subcommand] if self.subcommand else dumped

    def after_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        digest = config_hash(str(self.subcommand), self.resolved_config())
        for logger in self.trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                if logger.run_name is None:  # name known only now: the dataset name may depend on its arguments
                    logger.run_name = f"{self.model.method_name}-{self.datamodule.name}"
                logger.tags = {**(logger.tags or {}), "method": self.model.method_name,
                               "dataset": self.datamodule.name, "subcommand": str(self.subcommand),
                               CONFIG_HASH_TAG: digest}
                if self.subcommand == "fit" and config.get("ckpt_path") == "last" and logger.requested_run_id is None:
                    run_id = resumable_run_id(logger.tracking_uri, logger.experiment_name, digest)
                    if run_id is not None:
                        logger.attach_run(run_id)
                logger.start()
                # Lightning applies logger.tags only to runs it creates: runs made beforehand (a sweep's, a resumed
                # one) get them here
                logger.set_tags({**(logger.tags or {}), "run_dir": str(logger.run_dir)})

    def after_fit(self) -> None:
        if self.config["fit"].get("test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


class _NoCloudTips(logging.Filter):
    """Drop Lightning's advertisements for its cloud services: this benchmark runs offline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoCloudTips())


def _user_error(exc: BaseException) -> CopraError | None:
    """The CopraError behind ``exc``: jsonargparse re-raises errors from ``__init__`` as its own ValueError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CopraError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m copra_bench`` and the ``copra-bench`` script."""
    from_shell = argv is None
    argv = sys.argv[1:] if from_shell else list(argv)
    try:
        if argv and argv[0] in TOOLS:
            return load_tool(argv[0])(argv[1:])
        CopraCLI(args=None if from_shell else argv)
        return 0
    except Exception as exc:
        err = _user_error(exc)
        if err is None or os.environ.get("COPRA_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2

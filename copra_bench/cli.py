"""Command line: ``python -m copra_bench fit|validate|test|predict --config X.yaml`` and the tool commands.

The Lightning subcommands go through :class:`CopraCLI` (LightningCLI, subclass mode for model and data, repeatable
``--config``, ``--print_config``, omegaconf interpolation). Tool commands (``data``; later ``evaluate``,
``report``, ``sweep``) are plain functions registered in :data:`COMMANDS`.
"""

from __future__ import annotations

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
from copra_bench.tracking import ConfigToRun, MLFlowLogger

log = logging.getLogger("copra_bench")

#: Tool commands besides the Lightning subcommands: name -> function(argv) -> exit status.
COMMANDS: dict[str, Callable[[list[str]], int]] = {}


def register_command(name: str) -> Callable[[Callable[[list[str]], int]], Callable[[list[str]], int]]:
    """Decorator adding a tool command (``python -m copra_bench <name> ...``)."""
    def add(fn: Callable[[list[str]], int]) -> Callable[[list[str]], int]:
        COMMANDS[name] = fn
        return fn
    return add


class CopraCLI(LightningCLI):
    """LightningCLI with the project's conventions.

    * ``fit`` tests right after training (``--test_after_fit false`` to skip), on every test set of the DataModule.
    * A method's ``trainer_arguments`` are Trainer defaults: they apply unless the config sets that key.
    * ``data.frames_per_window`` (and the clip frame rate K / window seconds) are written once, linked into the model.
    * MLflow runs are named ``<method>-<dataset>`` and created before anything runs.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        tools = ", ".join(f"'{name}'" for name in COMMANDS)
        kwargs.setdefault("parser_kwargs", {
            "parser_mode": "omegaconf",
            "description": f"copra_bench: VAD benchmark with VLMs. Lightning subcommands below; tool commands: {tools} "
                           "(python -m copra_bench <tool> --help)."})
        super().__init__(BenchModule, VADDataModule, subclass_mode_model=True, subclass_mode_data=True,
                         save_config_callback=ConfigToRun, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=True,
                            help="After fit, test on every test set of the DataModule (fit subcommand only).")
        parser.link_arguments("data", "model.init_args.frames_per_window",
                              compute_fn=lambda data: data.frames_per_window, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.clip_fps", apply_on="instantiate",
                              compute_fn=lambda data: data.frames_per_window / data.window_spec.seconds)

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand in ("test", "predict") and "verbose" in self._subcommand_method_arguments[subcommand]:
            parser.set_defaults(verbose=False)  # RunArtifacts prints one table per test set instead
        return parser

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        signature = inspect.signature(Trainer.__init__).parameters
        for key, value in getattr(self.model, "trainer_arguments", {}).items():
            default = signature[key].default
            if config.get(key, default) == default:
                config[key] = value
            elif config[key] != value:
                log.info("trainer.%s=%r from the config overrides the method's default %r", key, config[key], value)
        return super()._instantiate_trainer(config, callbacks)

    def after_instantiate_classes(self) -> None:
        # the run identity sweeps use too (imported here: that module imports this one)
        from copra_bench.sweep.resolve import config_hash

        config = self.config[self.subcommand] if self.subcommand else self.config
        dumped = json.loads(self._parser(self.subcommand).dump(config, format="json", skip_none=False))
        digest = config_hash(str(self.subcommand), dumped)
        for logger in self.trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                if logger._run_name is None:  # name known only now: the dataset name may depend on its arguments
                    logger._run_name = f"{self.model.method_name}-{self.datamodule.name}"
                logger.tags = {**(logger.tags or {}), "method": self.model.method_name,
                               "dataset": self.datamodule.name, "subcommand": str(self.subcommand),
                               "config_hash": digest}
                if self.subcommand == "fit" and config.get("ckpt_path") == "last" and logger._run_id is None:
                    resume_run_of(logger, digest)
                logger.start()
                # Lightning applies logger.tags only to runs it creates: runs made beforehand (a sweep's, a resumed
                # one) get them here
                logger.set_tags({**(logger.tags or {}), "run_dir": str(logger.run_dir)})

    def after_fit(self) -> None:
        if self._get(self.config, "test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


def resume_run_of(logger: MLFlowLogger, digest: str) -> None:
    """``fit --ckpt_path last``: continue the latest unfinished run of the same config (its MLflow run and its
    checkpoint folder ``<local_dir>/<experiment>/<run>/checkpoints``, where Lightning then finds ``last.ckpt``)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(logger._tracking_uri)
    experiment = client.get_experiment_by_name(logger._experiment_name)
    if experiment is None:
        return
    runs = client.search_runs([experiment.experiment_id], filter_string=f"tags.config_hash = '{digest}'",
                              order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if run.info.status != "FINISHED":
            logger._run_id = run.info.run_id
            log.info("resuming MLflow run %s (status %s) of this config", run.info.run_id, run.info.status)
            return
    log.warning("--ckpt_path last: no unfinished run of this config (hash %s) in experiment %r; starting afresh",
                digest, logger._experiment_name)


#: Modules that register tool commands when imported (kept lazy: ``python -m copra_bench fit`` never imports them).
TOOL_MODULES = (
    "copra_bench.datamodules.commands", "copra_bench.evaluation.command", "copra_bench.sweep.command",
    "copra_bench.report.command",
)


def load_tool_commands() -> None:
    """Import every module of :data:`TOOL_MODULES` that exists, so its ``@register_command`` runs."""
    import importlib

    for name in TOOL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # a missing dependency of an existing tool module is a real error
                raise


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
        if not argv or argv[0] not in COMMANDS:  # a tool command, or --help listing them all
            load_tool_commands()
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        CopraCLI(args=None if from_shell else argv)
        return 0
    except Exception as exc:
        err = _user_error(exc)
        if err is None or os.environ.get("COPRA_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2

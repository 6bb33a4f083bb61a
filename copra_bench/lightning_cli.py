"""The Lightning side of the command line: :class:`CopraCLI` (LightningCLI, subclass mode for model and data,
repeatable ``--config``, ``--print_config``, omegaconf interpolation) and its parser.

Kept apart from :mod:`copra_bench.cli`, the entry point, so that ``python -m copra_bench --help`` and the tool
commands start without importing Lightning, torch or transformers; this module is imported when a Lightning
subcommand runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_only

from copra_bench.bench_module import BenchModule
from copra_bench.datamodules.base import VADDataModule
from copra_bench.errors import CopraError
from copra_bench.precision import check_precision
from copra_bench.run_identity import CONFIG_HASH_TAG, config_hash, resumable_run_id
from copra_bench.tool_table import TOOLS
from copra_bench.tracking import ConfigToRun, MLFlowLogger
from copra_bench.tracking.lifecycle import RunLifecycle
from copra_bench.tracking.rng_state import TrainingRNG
from copra_bench.tracking.run_lock import RunLock
from copra_bench.trained_module import TrainedModule

log = logging.getLogger("copra_bench")

#: Subcommands whose Trainer method defaults to ``verbose=False``: RunArtifacts prints one table per test set instead.
QUIET_SUBCOMMANDS = ("test", "predict")

#: Subcommands that score a model as it is: a method with trained parts needs ``--ckpt_path`` there.
SCORING_SUBCOMMANDS = ("validate", "test", "predict")


def check_trained_weights(subcommand: str, config: Any) -> None:
    """Refuse to score a method with trained parts (a :class:`~copra_bench.trained_module.TrainedModule`: its
    generator, adapter or prompt is freshly initialised) when no checkpoint is given, unless
    ``allow_untrained`` is set. The frozen baseline has nothing to train and always passes.

    Reads only the parsed config (the model's ``class_path``), so the error comes before any data or model is built.
    """
    if subcommand not in SCORING_SUBCOMMANDS or config.get("ckpt_path") or config.get("allow_untrained"):
        return
    class_path = str(config["model"]["class_path"])
    module, _, name = class_path.rpartition(".")
    method = getattr(importlib.import_module(module), name)
    if isinstance(method, type) and issubclass(method, TrainedModule):
        raise CopraError(
            f"`{subcommand}` of {name} without --ckpt_path would score its trained parts as freshly initialised "
            f"(untrained) weights. Pass --ckpt_path <checkpoint> (`fit` saves outputs/<experiment id>/<run id>/"
            f"checkpoints/last.ckpt), or --allow_untrained true to score the untrained method on purpose.")


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
    * MLflow runs are named ``<method>-<dataset>`` and created before anything runs; one process at a time holds a
      run (:class:`~copra_bench.tracking.run_lock.RunLock`).
    * Every Trainer gets :class:`~copra_bench.tracking.rng_state.TrainingRNG` (bit-exact resume) and
      :class:`~copra_bench.tracking.lifecycle.RunLifecycle` (stop signals, final ``last.ckpt``, end reason).
    * ``fit`` keeps its run RUNNING until the test after it is written; ``fit --ckpt_path last`` on a run whose
      training finished but whose test did not restores the final ``last.ckpt`` (no step is trained again) and tests.
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
        parser.add_argument("--allow_untrained", type=bool, default=False,
                            help="validate/test/predict: score a method with trained parts without --ckpt_path, "
                                 "i.e. with its freshly initialised weights (an error otherwise). Ignored by fit.")
        parser.link_arguments("data", "model.init_args.frames_per_window",
                              compute_fn=lambda data: data.frames_per_window, apply_on="instantiate")
        parser.link_arguments("data", "model.init_args.clip_fps", apply_on="instantiate",
                              compute_fn=lambda data: data.frames_per_window / data.window_spec.seconds)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        check_trained_weights(str(self.subcommand), config)
        check_precision(str(self.subcommand), config)  # before the backbone loads

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
        callbacks = list(kwargs.get("callbacks", trainer_config.get("callbacks")) or [])
        if kwargs.get("enable_progress_bar", trainer_config.get("enable_progress_bar")) is False:
            # the default trainer config lists a progress bar; Lightning refuses one next to enable_progress_bar=false
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        # in this order: the lifecycle's stop checkpoint needs the generators' snapshot of the same step
        for kind in (TrainingRNG, RunLifecycle):
            if not any(isinstance(c, kind) for c in callbacks):
                callbacks.append(kind())
        kwargs["callbacks"] = callbacks
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
                logger.log_once = self.subcommand == "fit"
                logger.start()
                if rank_zero_only.rank == 0:  # one lock per run, taken by the process that writes it
                    RunLock(logger.run_dir).acquire()
                if logger.requested_run_id is not None:
                    logger.reopen()
                # Lightning applies logger.tags only to runs it creates: runs made beforehand (a sweep's, a resumed
                # one) get them here
                logger.set_tags({**(logger.tags or {}), "run_dir": str(logger.run_dir)})
                logger.hold_open = self.subcommand == "fit" and bool(config.get("test_after_fit", True))

    def after_fit(self) -> None:
        for logger in self.trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.hold_open = False  # the test's end finalizes the run
        if self.config["fit"].get("test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


class _NoCloudTips(logging.Filter):
    """Drop Lightning's advertisements for its cloud services: this benchmark runs offline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoCloudTips())



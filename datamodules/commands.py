"""The ``data`` tool command: ``data synth`` (write the synthetic world in a release layout) and ``data inspect``
(the dataset doctor). :func:`data_command` is named in the CLI's tool table (``copra_bench.cli.TOOLS``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from copra_bench.datamodules.base import VADDataModule
from copra_bench.errors import DataError


def load_datamodule(config: str | Path) -> VADDataModule:
    """Instantiate the DataModule of a data config (``class_path``/``init_args``) or of an experiment config (its
    ``data`` key: a path relative to the config, or inline). Omegaconf interpolation (``${oc.env:...}``) works."""
    from jsonargparse import ArgumentParser

    config = Path(config)
    if not config.is_file():
        raise DataError(f"data config {config} does not exist")
    raw = yaml.safe_load(config.read_text())
    value: str = str(config)
    if isinstance(raw, dict) and "class_path" not in raw:
        if "data" not in raw:
            raise DataError(f"{config} is neither a data config (class_path) nor an experiment config (data)")
        data = raw["data"]
        value = str(config.parent / data) if isinstance(data, str) else yaml.safe_dump(data)
    parser = ArgumentParser(parser_mode="omegaconf", exit_on_error=False)
    parser.add_subclass_arguments(VADDataModule, "data", required=True)
    cfg = parser.parse_args(["--data", value])
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(cfg).data


def main_inspect(argv: list[str]) -> int:
    """``data inspect --config X``: print the doctor's report; 0 when the protocol can run as specified, else 1."""
    from copra_bench.datamodules.doctor import format_report, inspect_datamodule

    parser = argparse.ArgumentParser(prog="copra_bench data inspect",
                                     description="Check a dataset copy against its protocol before a run: every "
                                                 "missing/undecodable video, annotation gap and label mismatch.")
    parser.add_argument("--config", required=True, help="data config (configs/data/*.yaml) or experiment config")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all")
    parser.add_argument("--deep", action="store_true",
                        help="decode every frame of every video (slow) instead of opening the containers")
    args = parser.parse_args(argv)
    dm = load_datamodule(args.config)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    reports = inspect_datamodule(dm, deep=args.deep, splits=splits)
    print(format_report(reports), end="")
    return 0 if all(r.ok for r in reports) else 1


def data_command(argv: list[str]) -> int:
    """``data synth ...`` / ``data inspect ...``."""
    from copra_bench.datamodules.synthetic import main_synth

    tools = {"synth": main_synth, "inspect": main_inspect}
    usage = (f"usage: python -m copra_bench data {{{','.join(tools)}}} ...\n"
             "  synth     write the synthetic world in a real release layout (see data synth --help)\n"
             "  inspect   check a dataset copy against its protocol (see data inspect --help)")
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not argv or argv[0] not in tools:
        print(usage, file=sys.stderr)
        return 2
    return tools[argv[0]](argv[1:])

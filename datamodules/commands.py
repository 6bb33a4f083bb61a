"""The ``data`` tool command: ``data synth`` (write the synthetic world in a release layout) and ``data inspect``
(the dataset doctor). :func:`data_command` is named in the CLI's tool table (``copra_bench.cli.TOOLS``).

``data inspect`` reads its DataModule with the parser of ``fit`` (imported from :mod:`copra_bench.cli` when it runs;
``cli`` itself imports this module only by name), so a data config, an experiment config, several ``--config`` and
``--data.init_args.root /path`` mean what they mean for a run."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml

from copra_bench.datamodules.base import VADDataModule
from copra_bench.errors import DataError


class _ParserReady(Exception):
    def __init__(self, parser: Any) -> None:
        super().__init__("parser built")
        self.parser = parser


def fit_parser() -> Any:
    """The parser of ``python -m copra_bench fit`` (:class:`~copra_bench.cli.CopraCLI`'s, so configs compose and
    override exactly as for a run), with ``model`` optional: inspecting data needs no method. Nothing is
    instantiated."""
    from copra_bench.cli import CopraCLI

    class _ParseOnlyCLI(CopraCLI):
        def add_core_arguments_to_parser(self, parser: Any) -> None:
            add = parser.add_lightning_class_args

            def optional_model(lightning_class: Any, nested_key: str, subclass_mode: bool = False,
                               required: bool = True) -> Any:
                return add(lightning_class, nested_key, subclass_mode=subclass_mode,
                           required=required and nested_key != "model")

            parser.add_lightning_class_args = optional_model
            try:
                super().add_core_arguments_to_parser(parser)
            finally:
                del parser.add_lightning_class_args

        def parse_arguments(self, parser: Any, args: Any) -> None:
            raise _ParserReady(parser)

    try:
        _ParseOnlyCLI(args=[])
    except _ParserReady as ready:
        return ready.parser._subcommands_action._name_parser_map["fit"]
    raise RuntimeError("CopraCLI did not reach parse_arguments")  # pragma: no cover - Lightning changed


def _data_configs_as_data(args: list[str]) -> list[str]:
    """``--config X`` where X is a data config (a top-level ``class_path``) becomes ``--data X``: the doctor's
    historical form, which ``fit`` would read as an experiment config."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg, value = args[i], None
        if arg in ("--config", "-c") and i + 1 < len(args):
            value, i = args[i + 1], i + 1
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is None:
            out.append(arg)
        else:
            path = Path(value)
            raw = yaml.safe_load(path.read_text()) if path.is_file() else None
            out += ["--data" if isinstance(raw, dict) and "class_path" in raw else "--config", value]
        i += 1
    return out


def parse_datamodule(args: list[str]) -> VADDataModule:
    """The DataModule ``python -m copra_bench fit <args>`` would build (only it: no model, trainer or logger).

    Raises:
        DataError: the arguments do not parse (the parser's message, naming the key), or give no ``data``.
    """
    from jsonargparse import ArgumentParser, Namespace

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = fit_parser().parse_args(_data_configs_as_data(args))
        except SystemExit:
            message = stderr.getvalue()
            raise DataError(message[message.find("error:") + 6:].strip() if "error:" in message else
                            message.strip() or "the data arguments do not parse") from None
    if not config.get("data"):
        raise DataError("no DataModule given: pass --config (a data or experiment config) or --data")
    parser = ArgumentParser(parser_mode="omegaconf", exit_on_error=False)
    parser.add_subclass_arguments(VADDataModule, "data", required=True)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(Namespace(data=config.data)).data


def main_inspect(argv: list[str]) -> int:
    """``data inspect --config X [--data.init_args.KEY VALUE ...]``: print the doctor's report; 0 when the protocol
    can run as specified, else 1."""
    from copra_bench.datamodules.doctor import format_report, inspect_datamodule

    parser = argparse.ArgumentParser(
        prog="copra_bench data inspect", allow_abbrev=False,
        description="Check a dataset copy against its protocol before a run: every missing/undecodable video, "
                    "annotation gap and label mismatch, and how the copy's own annotation files differ from the "
                    "shipped ones. The DataModule is given as for `fit`: --config (data or experiment configs, "
                    "repeatable), --data FILE, and dotted overrides such as --data.init_args.root /path.")
    parser.add_argument("--split", choices=("train", "test", "all"), default="all",
                        help="which splits to check (default: every split the protocol reads)")
    parser.add_argument("--deep", action="store_true",
                        help="decode every frame of every video (slow) instead of opening the containers")
    parser.add_argument("--subset", action="store_true",
                        help="check only the videos present in the copy and count the missing ones (without it, "
                             "missing videos are errors)")
    args, rest = parser.parse_known_args(argv)
    dm = parse_datamodule(rest)
    splits = ("train", "test") if args.split == "all" else (args.split,)
    reports = inspect_datamodule(dm, deep=args.deep, splits=splits, subset=args.subset)
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

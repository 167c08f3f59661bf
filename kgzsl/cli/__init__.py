"""The ``kgzsl`` command: a thin layer over the library API, one subcommand a pipeline stage.

Every subcommand takes ``--json`` for a machine-readable summary on stdout; progress goes to stderr.
Bad input ends with one line ``kgzsl: error: ...`` and exit status 2.

Each subcommand is a module of this package with ``add_parser(sub)`` (its flags) and ``run(args)`` (calls the
library and prints); :data:`COMMANDS` lists them in order. The shared flags are in :mod:`kgzsl.cli.flags`, the
shared steps in :mod:`kgzsl.cli.steps`. Number flags are checked while parsing (:class:`kgzsl.cli.flags.Checked`,
with :func:`kgzsl.errors.check_number`); a library error naming a Python parameter is reported with its flag
(:data:`FLAGS`). The library is imported only inside ``run``, so ``--help`` needs neither torch nor numpy.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kgzsl import __version__
from kgzsl.cli import (
    build_graph,
    calibrate,
    demo,
    evaluate,
    explore,
    features,
    inspect_class,
    predict,
    propagate,
    splits,
    targets,
    train,
)
from kgzsl.cli.flags import Parser, UsageError
from kgzsl.errors import KgzslError

#: the subcommands in the order ``kgzsl --help`` lists them
COMMANDS = (build_graph, splits, train, targets, features, predict, demo, calibrate, evaluate, inspect_class, explore, propagate)
#: the flag of each library parameter whose flag is not ``--`` + its name with dashes (see :func:`_cli_message`)
FLAGS = {"graph_dir": "--graph", "method": "--map"}


def _cli_message(error: Exception) -> str:
    """The message of ``error``, its leading Python parameter (KgzslError.parameter) replaced by its flag."""
    text, name = str(error), getattr(error, "parameter", None)
    if not name or not text.startswith(name):
        return text
    return FLAGS.get(name, "--" + name.replace("_", "-")) + text[len(name):]


def build_parser() -> argparse.ArgumentParser:
    """The ``kgzsl`` parser: one subparser a pipeline stage, each from its module's ``add_parser``."""
    parser = Parser(
        prog="kgzsl",
        description="Knowledge-graph zero-shot image recognition. Pipeline: build-graph -> (targets) -> train -> (calibrate) -> predict / evaluate -> inspect; propagate grows a graph.",
    )
    parser.add_argument("--version", action="version", version=f"kgzsl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kgzsl`` command."""
    from kgzsl.core.signals import Terminated, raise_on_sigterm  # lazy: startup

    try:
        args = build_parser().parse_args(argv)
        with raise_on_sigterm():  # so a SIGTERM runs every writer's cleanup instead of leaving temporaries
            args.func(args)
    except (UsageError, KgzslError) as exc:
        print(f"kgzsl: error: {_cli_message(exc)}", file=sys.stderr)
        return 2
    except Terminated:
        print("kgzsl: terminated by SIGTERM (temporary files removed; no partial output was left behind)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("kgzsl: interrupted (no partial output was left behind)", file=sys.stderr)
        return 130
    return 0


def console() -> int:
    """The ``kgzsl`` program (``python -m kgzsl`` too): :func:`main` with the collector settings of
    :mod:`kgzsl.core.collector`, which start and end a command that loads torch 0.3 s sooner."""
    from kgzsl.core.collector import command_process  # lazy: startup

    with command_process():
        return main()

"""The shared flags of the ``kgzsl`` subcommands in one place: the parser, formatter and action classes,
the ``add_*`` helpers that give a flag the same name, type, checks and help in every command, and their help texts."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kgzsl.errors import KgzslError, check_number
from kgzsl.propagation.run_files import PREDICTIONS_FILE
from kgzsl.vision.backbone_identity import DEFAULT_BACKBONE  # noqa: F401 - the default of --backbone, torch-free

#: --predictions of predict, evaluate and inspect: a run folder or its predictions file (see kgzsl.propagation.run)
PREDICTIONS_HELP = f"a run folder written by kgzsl train, or its {PREDICTIONS_FILE}"
GRAPH_HELP = "graph folder (default: the shipped graphs/imagenet21k of the kgzsl project)"
JSON_HELP = "print a JSON summary on stdout"
#: --model's choices, the names of kgzsl.propagation.models.MODELS in its order (spelled out: that module imports torch,
#: which --help must not; tests/test_cli_layout.py checks they are the registry's)
MODEL_NAMES = ("gcnz", "sgcn", "dgp")
#: --arch's choices, the ResNet depths kgzsl.vision.backbones.resnet.RESNET_LAYERS builds (spelled out likewise)
RESNET_ARCHS = ("resnet50", "resnet101", "resnet152")
#: the backbone's forward-pass precisions (kgzsl.vision.speed.PRECISIONS; spelled out here: that module imports torch)
PRECISIONS = ("auto", "fp32", "bf16", "int8")


# ------------------------------------------------------------------------------------ parsing
class UsageError(Exception):
    """A command-line mistake argparse found (unknown option, bad choice, missing argument, not a number)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line ``kgzsl: error: ...`` (from :func:`kgzsl.cli.main`), not the usage block too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a flag's default once: not where it has none (None, off) or where its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False) or "default" in text.lower():
            return text
        return super()._get_help_string(action)


class RawEpilogDefaultsFormatter(DefaultsFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the epilog's line breaks (the torchrun usage)."""


class Checked(argparse.Action):
    """Store a number (or each of a list) once :func:`kgzsl.errors.check_number` accepts it with ``bounds``:
    refused while parsing, before any work, as a KgzslError naming the parameter (the flag's dest)."""

    def __init__(self, option_strings: Sequence[str], dest: str, bounds: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.bounds = bounds or {}

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        for value in values if isinstance(values, list) else [values]:
            check_number(self.dest, value, **self.bounds)
        setattr(namespace, self.dest, values)


# ------------------------------------------------------------------------------ shared flags
def subparser(sub: Any, name: str, help: str, description: str | None = None,
              formatter: type[argparse.HelpFormatter] = DefaultsFormatter,
              **kwargs: Any) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, showing defaults in its help."""
    return sub.add_parser(name, help=help, description=description, formatter_class=formatter, **kwargs)


def add_number(p: argparse.ArgumentParser, flag: str, kind: type, help: str, default: Any = None,
               nargs: str | None = None, **bounds: Any) -> None:
    """A number flag of type ``kind``, refused while parsing outside ``bounds`` (see :class:`Checked`)."""
    p.add_argument(flag, type=kind, default=default, nargs=nargs, action=Checked, bounds=bounds, help=help)


def add_json(p: argparse.ArgumentParser, help: str = JSON_HELP) -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_force(p: argparse.ArgumentParser, help: str = "replace an existing output folder") -> None:
    p.add_argument("--force", action="store_true", help=help)


def add_graph(p: argparse.ArgumentParser, help: str = GRAPH_HELP, default: Path | None = None) -> None:
    p.add_argument("--graph", type=Path, default=default, help=help)


def add_device(p: argparse.ArgumentParser, default: str, help: str) -> None:
    p.add_argument("--device", default=default, help=help)


def add_seed(p: argparse.ArgumentParser, help: str | None = None) -> None:
    p.add_argument("--seed", type=int, default=0, help=help)


def add_model(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """``--model``, one of :data:`kgzsl.propagation.models.MODELS`."""
    p.add_argument("--model", choices=MODEL_NAMES, default="dgp", help=help)


def add_arch(p: argparse.ArgumentParser, help: str) -> None:
    """``--arch``, one of the ResNet depths :data:`kgzsl.vision.backbones.resnet.RESNET_LAYERS` builds."""
    p.add_argument("--arch", choices=RESNET_ARCHS, help=help)


def add_predictions(p: argparse.ArgumentParser) -> None:
    """``--predictions`` (a run folder or its predictions file) and ``--allow-backbone-mismatch``."""
    p.add_argument("--predictions", type=Path, required=True, help=PREDICTIONS_HELP)
    p.add_argument("--allow-backbone-mismatch", action="store_true",
                   help="only warn when the backbone differs from the one the predictions were trained for")


class TargetAccuracy(Checked):
    """``--hedge``: a target accuracy in (0, 1], refused while parsing (before any model is loaded) otherwise."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        if values > 1:
            raise KgzslError(f"{self.dest} must be at most 1 (a target accuracy in (0, 1]), got {values:g}",
                             parameter=self.dest)


def add_hedge(p: argparse.ArgumentParser, help: str, default: float | None = None) -> None:
    """``--hedge``: a target accuracy in (0, 1] calibrated by ``kgzsl calibrate``."""
    p.add_argument("--hedge", type=float, default=default, action=TargetAccuracy, metavar="TARGET", help=help,
                   bounds={"above": 0, "meaning": " (a target accuracy in (0, 1])"})


def add_hedge_rule(p: argparse.ArgumentParser) -> None:
    """``--hedge-rule``: threshold (default of the calibration) or darts."""
    p.add_argument("--hedge-rule", choices=["threshold", "darts"],
                   help="how hedged answers are chosen: threshold (the most informative node at least as probable as the "
                        "calibrated threshold; the default) or darts (Deng et al.'s multiplier)")


def add_seen_rows(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--seen-rows", choices=["real", "predicted"], default="real", help=help)


def add_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the backbone's forward pass: auto = int8 for efficientnet-lite0 on a CPU with VNNI where ONNX Runtime is "
                        "installed, else fp32; "
                        "int8 (ONNX Runtime static quantisation on VNNI kernels: about 1.5x faster than fp32; features "
                        "within cosine 0.9964 mean, 0.986 min of fp32; unseen Hit@5 52.8 vs 52.0), fp32 (on the CPU "
                        "through ONNX Runtime: the same features as torch to ~1e-6), or bf16 (torch; cosine 0.9991 mean)")

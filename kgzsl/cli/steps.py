"""Steps several ``kgzsl`` subcommands share: the graph folder, the backbone check, notes, the summary
(JSON or text) and the plot-file check."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgzsl.core.resources import default_graph_dir
from kgzsl.errors import KgzslError
from kgzsl.vision.backbone_identity import BackboneIdentity

if TYPE_CHECKING:
    from kgzsl.propagation.predictions import Predictions

#: the shipped ImageNet-21k graph, inside the installed package or the checkout kgzsl runs from (not the current folder)
DEFAULT_GRAPH = default_graph_dir()


def graph_folder(given: Path | None) -> Path:
    """``--graph`` as given, else the shipped graph (a clear error where it is absent)."""
    if given is not None:
        return Path(given)
    if not (DEFAULT_GRAPH / "graph.json").is_file():
        raise KgzslError(
            f"the shipped graph {DEFAULT_GRAPH} is missing: pass --graph FOLDER, or build it with `kgzsl build-graph`"
        )
    return DEFAULT_GRAPH


def check_backbone(args: argparse.Namespace, predictions: Predictions, backbone: dict[str, Any] | None, given: str) -> None:
    """Refuse (with --allow-backbone-mismatch: warn about) a backbone other than the one the predictions were trained for."""
    mismatch = BackboneIdentity.from_record(predictions.meta).mismatch(BackboneIdentity.from_description(backbone))
    if mismatch is None:
        return
    text = f"predictions {args.predictions} were trained for {mismatch[0]} but {given} {mismatch[1]}"
    if args.allow_backbone_mismatch:
        print(f"kgzsl: warning: {text} (going on: --allow-backbone-mismatch)", file=sys.stderr)
        return
    raise KgzslError(f"{text}: use the run's backbone, or pass --allow-backbone-mismatch")


def note(text: str) -> None:
    """A note for people on stderr (stdout may be JSON)."""
    print(f"kgzsl: note: {text}", file=sys.stderr)


def emit(args: argparse.Namespace, summary: dict[str, Any], human: Callable[[dict[str, Any]], str]) -> None:
    """The summary as JSON (``--json``) or as text for people."""
    if getattr(args, "json", False):
        print(json.dumps(summary))
    else:
        print(human(summary))


def check_plot_file(path: Path) -> None:
    """Refuse, before any work, a ``--plot`` file that cannot be written."""
    from kgzsl.core.outputs import check_output_file  # lazy: startup

    check_output_file(path, "--plot file")

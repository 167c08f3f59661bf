"""A run's calibration files (``hedge.json``, ``hedge-all.json``) and the calibrations kgzsl ships for its default runs."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

from kgzsl.core.files import check_format, read_json, write_json
from kgzsl.core.resources import calibration_dir
from kgzsl.errors import KgzslError
from kgzsl.propagation.run import HEDGE_FILES, Run
from kgzsl.recognition.hedge.curves import check_curves

# ------------------------------------------------------------------------------------ run files
#: a run's hedge calibration file format (version 1: DARTS multipliers only, unseen candidates; still read)
HEDGE_FORMAT = "kgzsl.hedge"


HEDGE_VERSION = 2


#: the candidate set calibrated by default, as :func:`kgzsl.recognition.scoring.candidate_mask` names it
HEDGE_CANDIDATES = "unseen"


#: the file in a run folder holding the calibration of each candidate set
HEDGE_RULE_TEXT = {
    "unseen": ("unseen: every class of the run (not a structure-only node) whose real classifier was not used "
               "in training (the graph's unseen classes and the held-out seen classes)"),
    "all": ("all: every class of the run (not a structure-only node), seen ones scored by their real classifiers "
            "minus the calibrated-stacking gamma (generalized zero-shot)"),
}


DEFAULT_TARGETS = (0.5, 0.7, 0.9)


def hedge_file(candidates: str) -> str:
    """The file name of the calibration for ``candidates`` (``"unseen"`` or ``"all"``) in a run folder."""
    if not isinstance(candidates, str) or candidates not in HEDGE_FILES:
        raise KgzslError(f"hedging is calibrated for candidates {' or '.join(HEDGE_FILES)}, not {candidates!r}",
                         parameter="candidates")
    return HEDGE_FILES[candidates]


def read_hedge_record(path: str | Path) -> dict[str, Any]:
    """A calibration file, format checked, version 1 brought to version 2's fields (``rules``, ``gamma``); its
    ``curves`` (:mod:`kgzsl.recognition.hedge.curves`, optional: older files have none) checked where present."""
    record = check_format(read_json(path, "hedge calibration"), HEDGE_FORMAT, None, path, "hedge calibration")
    if record.get("version") == 1:
        record = {**record, "version": 2, "rules": {"darts": record["lambdas"]}, "default_rule": "darts", "gamma": 0.0,
                  "calibration_accuracy": {"darts": record.get("calibration_accuracy", {})}}
    if record.get("version") != HEDGE_VERSION:
        raise KgzslError(f"{path} is hedge calibration version {record.get('version')}; this kgzsl reads 1 and {HEDGE_VERSION}")
    if "curves" in record:
        check_curves(record["curves"], path)
    return record


def run_calibration(run: Run, candidates: str = "unseen") -> dict[str, Any] | None:
    """The calibration of hedged answers over ``candidates`` in ``run``'s folder (``hedge.json`` for unseen,
    ``hedge-all.json`` for all), format checked; None where it has none."""
    path = run.folder / hedge_file(candidates)
    return read_hedge_record(path) if path.is_file() else None


def write_calibration(run: Run, record: dict[str, Any]) -> Path:
    """Write a calibration ``record`` (:func:`kgzsl.recognition.hedge.calibration.fit_calibration`) into ``run``'s
    folder as the file of its candidate set, atomically."""
    path = Path(run.folder) / hedge_file(record["candidates"])
    write_json(path, record)
    return path


def candidate_digest(ids: Sequence[str]) -> str:
    """SHA-256 of the candidate ids in column order: which candidate set a calibration holds for."""
    return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()


def _target_key(target: float) -> str:
    return f"{float(target):g}"


# ------------------------------------------------------------------------------------ shipped calibrations
#: calibrations shipped for the default runs (the demo's, ``Recognizer.pretrained``'s), written by
#: ``scripts/calibrate_default.py``; each file names the run it holds for (:func:`kgzsl.demo.reuse_key`)
SHIPPED_DIR = calibration_dir()


SHIPPED_FORMAT = "kgzsl.shipped-hedge"


def shipped_calibration(run_key: dict[str, Any], where: Path = SHIPPED_DIR) -> dict[str, Any] | None:
    """The shipped calibration file content whose ``run`` is ``run_key``, or None."""
    for path in sorted(where.glob("*.json")) if where.is_dir() else []:
        shipped = read_json(path, "shipped calibration")
        if isinstance(shipped, dict) and shipped.get("format") == SHIPPED_FORMAT and shipped.get("run") == run_key:
            return {**shipped, "path": str(path)}
    return None


def install_shipped_calibration(folder: str | Path, run_key: dict[str, Any], where: Path = SHIPPED_DIR) -> list[str]:
    """Write the shipped calibrations for the run ``run_key`` into ``folder`` where it has none of its own;
    the names of the files written (none where nothing is shipped for that run)."""
    shipped = shipped_calibration(run_key, where)
    written = []
    for candidates, record in (shipped or {}).get("calibrations", {}).items():
        path = Path(folder) / hedge_file(candidates)
        if not path.exists():
            write_json(path, {**record, "shipped": Path(shipped["path"]).name})
            written.append(path.name)
    return written

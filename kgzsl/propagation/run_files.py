"""The files of a run folder, by name (torch-free, so that ``kgzsl --help`` can name them).

::

    model.safetensors        the trained model's state dict (metadata: format, model)
    train.json               the training record: configuration, seed, losses, graph folder and
                             fingerprint, targets source, backbone and its classifier fingerprint
    predictions.safetensors  every node's predicted classifier (:mod:`kgzsl.propagation.predictions`)
    hedge.json               (after ``kgzsl calibrate``) temperature, thresholds and DARTS multipliers
    hedge-all.json           the same for the generalized setting (``--candidates all``), with its gamma
    demo.json                what a reusable run (the demo's, ``Recognizer.pretrained``'s) was trained for
"""

from __future__ import annotations

from pathlib import Path

from kgzsl.errors import KgzslError

MODEL_FILE = "model.safetensors"
RECORD_FILE = "train.json"
PREDICTIONS_FILE = "predictions.safetensors"
#: the calibrations of hedged answers, by candidate set, written by ``kgzsl calibrate`` (:mod:`kgzsl.recognition.hedge`)
HEDGE_FILES = {"unseen": "hedge.json", "all": "hedge-all.json"}
HEDGE_FILE = HEDGE_FILES["unseen"]
#: what a reusable run (the demo's, ``Recognizer.pretrained``'s) was trained for; named after the demo
REUSE_FILE = "demo.json"


def predictions_file(path: str | Path) -> Path:
    """``path`` itself, or the ``predictions.safetensors`` inside a run folder written by ``kgzsl train``."""
    path = Path(path)
    if path.is_dir():
        inner = path / PREDICTIONS_FILE
        if not inner.is_file():
            raise KgzslError(f"folder {path} has no {PREDICTIONS_FILE}: it is not a run folder of `kgzsl train`")
        return inner
    return path

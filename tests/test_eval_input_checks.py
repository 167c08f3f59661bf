"""``kgzsl evaluate`` and ``kgzsl calibrate`` check their inputs before importing torch or loading a model (issue 24,
defect 5), and ``evaluate`` refuses photos of the run's seen classes as ``calibrate`` does (defect 6). On the stored
real ranking run (tests/data/ranking-run) and the session's small photo run with real foolbox photos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kgzsl.cli import main
from kgzsl.propagation.run import load_run
from kgzsl.vision.samples import foolbox_imagenet_images

RUN = Path(__file__).resolve().parent / "data" / "ranking-run"
#: runs ``kgzsl ARGS`` and says on stdout whether torch was imported on the way
PROBE = "import sys; from kgzsl.cli import main; code = main(sys.argv[1:]); print('torch' in sys.modules); sys.exit(code)"


def _probe(*argv: str) -> tuple[int, bool, list[str]]:
    """Run ``kgzsl argv`` in a fresh interpreter: exit code, whether torch was imported, stderr lines."""
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout.strip().splitlines()[-1] == "True", done.stderr.strip().splitlines()


@pytest.fixture
def inputs(tmp_path):
    """A copy of the ranking run without its calibrations, a folder that looks like features, a split file."""
    run = shutil.copytree(RUN, tmp_path / "run", ignore=shutil.ignore_patterns("hedge*.json"))
    feats = tmp_path / "feats"
    feats.mkdir()
    (feats / "manifest.json").write_text("{}")
    split = tmp_path / "split.txt"
    split.write_text(load_run(run).predictions.ids[-1] + "\n")
    return {"run": str(run), "feats": str(feats), "split": str(split), "tmp": tmp_path}


@pytest.mark.parametrize("case", ["no-features", "no-predictions", "no-split", "no-graph", "hedge-uncalibrated",
                                  "target-1.5", "calibrate-no-features", "calibrate-no-graph"])
def test_bad_input_is_refused_before_torch(inputs, case):
    run, feats, split, nowhere = inputs["run"], inputs["feats"], inputs["split"], str(inputs["tmp"] / "nowhere")
    evaluate = ["evaluate", "--features", feats, "--predictions", run, "--split", split]
    calibrate = ["calibrate", "--features", feats, "--predictions", run]
    argv, fragment = {
        "no-features": (["evaluate", "--features", nowhere, "--predictions", run, "--split", split], "nowhere does not exist"),
        "no-predictions": (["evaluate", "--features", feats, "--predictions", nowhere, "--split", split], "nowhere does not exist"),
        "no-split": (["evaluate", "--features", feats, "--predictions", run, "--split", nowhere], "nowhere"),
        "no-graph": ([*evaluate, "--graph", nowhere], "--graph"),
        "hedge-uncalibrated": ([*evaluate, "--hedge"], "not calibrated for candidates unseen"),
        "target-1.5": ([*calibrate, "--targets", "0.5", "1.5"], "--targets must be accuracies in (0, 1], got 1.5"),
        "calibrate-no-features": (["calibrate", "--features", nowhere, "--predictions", run], "nowhere does not exist"),
        "calibrate-no-graph": ([*calibrate, "--graph", nowhere], "--graph"),
    }[case]
    code, torch_imported, err = _probe(*argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("kgzsl: error: ") and fragment in err[0], err
    assert not torch_imported, f"{case}: torch was imported before the error"


def test_evaluate_refuses_photos_of_seen_classes(photo_run, tmp_path, capsys):
    """Photos labelled with classes the run was trained on (their real classifiers used) would score 100 % as if
    they were zero-shot: refused with one line naming the split and a seen class, as calibrate refuses them."""
    predictions = load_run(photo_run["run"]).predictions
    seen = [w for w, s, role in zip(predictions.ids, predictions.seen.tolist(), predictions.meta["roles"])
            if s and role != "internal"][:2]
    photos = foolbox_imagenet_images()[:2]
    for (path, _), wnid in zip(photos, seen):
        (tmp_path / "tree" / wnid).mkdir(parents=True)
        shutil.copy(path, tmp_path / "tree" / wnid / path.name)
    assert main(["features", str(tmp_path / "tree"), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "f"),
                 "--json"]) == 0
    split = tmp_path / "seen.txt"
    split.write_text("\n".join(seen) + "\n")
    capsys.readouterr()
    assert main(["evaluate", "--features", str(tmp_path / "f"), "--predictions", str(photo_run["run"]),
                 "--split", str(split)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--split seen" in err[0] and "seen in training" in err[0] and seen[0] in err[0], err
    # asked for the generalized setting (seen classes among the candidates), they are evaluated
    assert main(["evaluate", "--features", str(tmp_path / "f"), "--predictions", str(photo_run["run"]),
                 "--split", str(split), "--with-seen", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"][0]["images"] == 2
    # the same photos labelled with held-out classes are evaluated
    held = tmp_path / "held"
    for (path, _), wnid in zip(photos, photo_run["held"]):
        (held / wnid).mkdir(parents=True)
        shutil.copy(path, held / wnid / path.name)
    assert main(["features", str(held), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "h"), "--json"]) == 0
    split.write_text("\n".join(photo_run["held"][:2]) + "\n")
    capsys.readouterr()
    assert main(["evaluate", "--features", str(tmp_path / "h"), "--predictions", str(photo_run["run"]),
                 "--split", str(split), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"][0]["images"] == 2

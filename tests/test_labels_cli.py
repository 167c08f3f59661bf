"""``kgzsl predict`` with labels, folders, stdin and streamed formats; ``kgzsl --version``; and the predict defects
of issue 24 (reasons hidden, late checks, doubled help defaults, a taxonomy run's table), each reproduced."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import subprocess
import sys

import pytest

from kgzsl import Recognizer, __version__
from kgzsl.cli import build_parser, main
from kgzsl.cli.predict import table_text
from kgzsl.vision.samples import darknet_photo, foolbox_imagenet_images

LABELS = ["giraffe", "zebra", "Labrador retriever"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three real photos, one in a subfolder, and a text file the folder listing skips."""
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    shutil.copy(darknet_photo("giraffe.jpg"), root / "a.jpg")
    photos = [path for path, _ in foolbox_imagenet_images()[:2]]
    shutil.copy(photos[0], root / "b.jpg")
    shutil.copy(photos[1], root / "sub" / "c.jpg")
    (root / "notes.txt").write_text("not an image\n")
    return root


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("kgzsl: error: "), err
    return err[0]


def test_labels_on_a_folder_as_csv_one_row_an_image(photo_run, folder, capsys):
    args = ["predict", str(folder), "--predictions", str(photo_run["run"]), "--labels", *LABELS]
    assert main([*args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["image"] for r in rows] == [str(folder / "a.jpg"), str(folder / "b.jpg"), str(folder / "sub" / "c.jpg")]
    for row in rows:
        probabilities = [float(row[f"probability:{label}"]) for label in LABELS]
        assert abs(sum(probabilities) - 1) < 1e-4 and row["label"] in LABELS
        assert float(row["probability"]) == max(probabilities)
    assert main([*args, "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["image"] for line in lines] == [r["image"] for r in rows]
    assert all(abs(sum(t["probability"] for t in line["top"]) - 1) < 1e-4 for line in lines)
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [entry["label"] for entry in summary["labels"]] == LABELS
    assert summary["labels"][0]["synset"] == "giraffe.n.01" and summary["calibration"]["calibration"] is None
    assert main([*args[:-3], "Labrador retriever", "--top", "1"]) == 0  # a table, one answer an image
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and out[0] == str(folder / "a.jpg") and "Labrador retriever" in out[1] and "p 1.000" in out[1]


def test_paths_on_stdin_and_the_flat_probability_column(photo_run, folder, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{folder / 'b.jpg'}\n\n{folder / 'a.jpg'}\n"))
    assert main(["predict", "-", "--predictions", str(photo_run["run"]), "--top", "3", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][:5] == ["image", "id_1", "name_1", "probability_1", "score_1"] and len(rows) == 3
    assert [r[0] for r in rows[1:]] == [str(folder / "b.jpg"), str(folder / "a.jpg")]
    probabilities = [float(rows[1][k]) for k in (3, 7, 11)]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


def test_version():
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    out = subprocess.run([sys.executable, "-m", "kgzsl", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"kgzsl {__version__}"


# ------------------------------------------------------------------------------ issue 24's defects
def test_a_bad_single_input_is_one_line_naming_it_and_why(photo_run, tmp_path, capsys):
    run = ["--predictions", str(photo_run["run"])]
    assert main(["predict", "/nonexistent.jpg", *run]) == 2
    assert "/nonexistent.jpg does not exist" in _error_line(capsys)
    text = tmp_path / "text.jpg"
    text.write_text("this is not an image\n")
    assert main(["predict", str(text), *run]) == 2
    assert f"{text} is not an image file" in _error_line(capsys)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(darknet_photo("giraffe.jpg").read_bytes()[:2000])
    assert main(["predict", str(truncated), *run]) == 2
    assert f"{truncated} is corrupt or truncated" in _error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), *run]) == 2
    assert "empty holds no image files" in _error_line(capsys)
    assert main(["predict", str(text), str(truncated), *run]) == 2  # several: each skipped with why, then the error
    err = capsys.readouterr().err
    assert f"skipped {text}" in err and f"skipped {truncated}" in err and "none of the 2 images" in err


def test_missing_input_and_a_bad_target_are_refused_before_torch(photo_run):
    code = ("import sys; from kgzsl.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was loaded'; sys.exit(rc)")
    photo = str(darknet_photo("giraffe.jpg"))
    for args, message in ((["missing.jpg"], "missing.jpg does not exist"),
                          ([photo, "--hedge", "1.5"], "--hedge must be at most 1"),
                          ([photo, "--hedge", "0.8"], "is not calibrated for candidates unseen"),
                          ([photo, "--labels", "a", "--hedge", "0.9"], "leave --hedge")):
        done = subprocess.run([sys.executable, "-c", code, "predict", *args, "--predictions", str(photo_run["run"])],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_predict_help_shows_each_default_once():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["predict"]
    text = " ".join(sub.format_help().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default 0; with --hedge and --candidates all, the calibrated one)" in text
    assert "the calibrated one) (default" not in text and "(default: table)" in text


def test_a_taxonomy_run_table_prints_the_id_once_in_aligned_columns():
    row = {"image": "photo.jpg", "top": [  # hand-written rows of a taxonomy run, where ids are the class names
        {"rank": 1, "id": "lemon", "name": "lemon", "score": 3.5, "probability": 0.61},
        {"rank": 2, "id": "mandarin orange", "name": "mandarin orange", "score": 12.25, "probability": 0.3},
        {"rank": 10, "id": "fig", "name": "fig", "score": -0.5, "probability": 0.09}]}
    lines = table_text(row).splitlines()
    assert lines[0] == "photo.jpg" and all(line.count(name) == 1 for line, name in zip(lines[1:], ["lemon", "mandarin", "fig"]))
    assert len({line.index(" p ") for line in lines[1:]}) == 1 and len({len(line) for line in lines[1:]}) == 1


def test_the_recognizer_says_which_file_it_skipped_and_why(photo_run, tmp_path, caplog):
    bad = tmp_path / "notimage.jpg"
    bad.write_text("not an image")
    rec = Recognizer.from_run(photo_run["run"], progress=False)
    with caplog.at_level(logging.WARNING, logger="kgzsl"):
        found = rec.predict([bad, darknet_photo("giraffe.jpg")])
    assert len(found) == 1 and f"skipped {bad}" in caplog.text and "not an image file" in caplog.text
    with pytest.raises(Exception, match="none of the 1 images could be read: image .*notimage.jpg is not an image"):
        rec.predict([bad])

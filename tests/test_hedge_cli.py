"""`kgzsl calibrate` and `kgzsl predict --hedge` end to end on the small real photo run: the 20 foolbox
ImageNet photos (the run's held-out classes) calibrate, the darknet giraffe is named with a hedged answer."""

from __future__ import annotations

import json
import shutil

import pytest

from kgzsl.api import Recognizer
from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.propagation.run import HEDGE_FILE, load_run
from kgzsl.recognition.hedge.calibration import calibrate_run
from kgzsl.recognition.hedge.hierarchy import HedgedAnswer
from kgzsl.recognition.hedge.storage import run_calibration
from kgzsl.vision.samples import darknet_photo, foolbox_imagenet_images

TARGETS = ["0.5", "0.7", "0.9"]


def _copy_run(photo_run, where):
    """A copy of the session's photo run (calibration writes into the run folder; the original stays clean)."""
    shutil.copytree(photo_run["run"], where)
    return where


def _tree(root, photos):
    """An ImageFolder tree: each (path, label) copied into ``root/label/``."""
    for path, label in photos:
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / label / path.name)
    return root


@pytest.fixture(scope="module")
def feats(tmp_path_factory):
    """EfficientNet-Lite0 features of the 20 foolbox photos, labelled by their (held-out) wnids."""
    root = tmp_path_factory.mktemp("hedge-feats")
    assert main(["features", str(_tree(root / "tree", foolbox_imagenet_images())), "--backbone", "efficientnet-lite0",
                 "--out", str(root / "feats"), "--json"]) == 0
    return root / "feats"


@pytest.fixture(scope="module")
def calibrated(photo_run, feats, tmp_path_factory):
    """A copy of the photo run calibrated on those features: (run folder, reliability PNG, calibrate's JSON summary)."""
    folder = _copy_run(photo_run, tmp_path_factory.mktemp("hedge-run") / "run")
    plot = folder.parent / "reliability.png"
    capture = tmp_path_factory.mktemp("hedge-out") / "summary.json"
    from contextlib import redirect_stdout

    with open(capture, "w") as handle, redirect_stdout(handle):
        code = main(["calibrate", "--features", str(feats), "--predictions", str(folder), "--targets", *TARGETS,
                     "--plot", str(plot), "--json"])
    assert code == 0
    return folder, plot, json.loads(capture.read_text())


def test_calibrate_writes_hedge_json(calibrated, feats, photo_run, capsys):
    folder, plot, summary = calibrated
    record = json.loads((folder / HEDGE_FILE).read_text())
    assert run_calibration(load_run(folder)) == record
    assert record["format"] == "kgzsl.hedge" and record["version"] == 2 and record["default_rule"] == "threshold"
    assert record["temperature"] > 0 and record["gamma"] == 0 and sorted(record["rules"]) == ["darts", "threshold"]
    assert all(sorted(values) == TARGETS and all(v >= 0 for v in values.values()) for values in record["rules"].values())
    assert all(v <= 1 for v in record["rules"]["threshold"].values())
    for rule in ("darts", "threshold"):  # met on the calibration images
        assert all(record["calibration_accuracy"][rule][t] >= float(t) for t in TARGETS)
    assert record["images"] == 20 and record["classes"] == len(photo_run["held"]) and record["features"] == str(feats)
    assert record["candidates"] == "unseen" and "not used in training" in record["candidate_rule"]
    pred = load_run(folder).predictions
    unseen = [r == "unseen" for r in pred.meta["roles"]].count(True) + len(photo_run["held"])
    assert record["candidate_count"] == unseen
    assert 0 <= record["ece_after"] <= 1 and 0 <= record["ece_before"] <= 1
    assert record["nll_after"] <= record["nll_before"] + 1e-9  # the fitted temperature minimises the NLL
    assert plot.is_file() and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and summary["plot"] == str(plot)
    assert summary["out"] == str(folder / HEDGE_FILE)
    assert main(["calibrate", "--features", str(feats), "--predictions", str(folder)]) == 0  # text output
    text = capsys.readouterr().out
    assert "temperature" in text and "darts target 0.9: lambda" in text and "threshold target 0.9: threshold" in text and "ECE" in text


def test_predict_hedge_prints_a_graph_node_and_its_probability(calibrated, photo_run, capsys):
    from kgzsl.graph.class_graph import load_graph

    folder = calibrated[0]
    graph = load_graph(photo_run["graph"])
    giraffe = str(darknet_photo("giraffe.jpg"))
    capsys.readouterr()
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == giraffe and len([line for line in lines if line.strip()[:2].rstrip(".").isdigit()]) == 5
    hedged = [line for line in lines if line.strip().startswith("hedged at 0.9 (threshold):")]
    assert len(hedged) == 1
    node_id = hedged[0].split(":", 1)[1].split()[0]
    assert node_id in graph.index()
    probability = float(hedged[0].split("probability")[1].split()[0])
    assert 0 <= probability <= 1

    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hedge"] == 0.9 and summary["hedge_rule"] == "threshold"
    image = summary["images"][0]
    assert len(image["top"]) == 5
    h = image["hedged"]
    assert set(h) == {"node", "id", "name", "probability", "info_gain", "depth"}
    assert h["id"] == node_id and graph.ids[h["node"]] == h["id"] and 0 <= h["probability"] <= 1
    assert h["info_gain"] >= 0 and h["depth"] >= 0

    answer = Recognizer.from_run(folder, progress=False).predict(giraffe, hedge=0.9)
    assert isinstance(answer.hedged, HedgedAnswer) and answer.hedged.id == h["id"]
    assert answer.ids == [t["id"] for t in image["top"]]
    assert answer.hedged.probability == pytest.approx(h["probability"], abs=1e-4)
    assert Recognizer.from_run(folder, progress=False).predict(giraffe).hedged is None


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kgzsl: error: "), err
    return err[0]


def test_predict_hedge_errors(calibrated, photo_run, tmp_path, capsys):
    folder = calibrated[0]
    giraffe = str(darknet_photo("giraffe.jpg"))
    bare = _copy_run(photo_run, tmp_path / "bare")
    (bare / HEDGE_FILE).unlink(missing_ok=True)
    capsys.readouterr()
    assert main(["predict", giraffe, "--predictions", str(bare), "--hedge", "0.9"]) == 2
    assert "kgzsl calibrate" in _one_error_line(capsys)
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.8"]) == 2
    line = _one_error_line(capsys)
    assert "--hedge" in line and "0.8" in line and "0.5, 0.7, 0.9" in line
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9", "--candidates", "all"]) == 2
    assert "not calibrated for candidates all" in _one_error_line(capsys)
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge-rule", "darts"]) == 2
    assert "give --hedge" in _one_error_line(capsys)
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9", "--transductive"]) == 2
    assert "--transductive" in _one_error_line(capsys)
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0"]) == 2
    assert "--hedge must be above 0" in _one_error_line(capsys)
    with pytest.raises(KgzslError, match="not calibrated"):
        Recognizer.from_run(bare, progress=False).predict(giraffe, hedge=0.9)


def test_bad_calibration_input_leaves_no_file(photo_run, feats, tmp_path, capsys):
    folder = _copy_run(photo_run, tmp_path / "run")
    pred = load_run(folder).predictions
    seen = next(w for w, s in zip(pred.ids, pred.seen.tolist()) if s)
    photos = foolbox_imagenet_images()[:2]
    bad_tree = _tree(tmp_path / "tree", [(photos[0][0], seen), (photos[1][0], photos[1][1])])
    assert main(["features", str(bad_tree), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "bad"), "--json"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--features", str(tmp_path / "bad"), "--predictions", str(folder),
                 "--plot", str(tmp_path / "r.png")]) == 2
    line = _one_error_line(capsys)
    assert "--features" in line and "seen in training" in line and seen in line
    assert main(["calibrate", "--features", str(feats), "--predictions", str(folder), "--targets", "0.5", "1.5"]) == 2
    assert "--targets" in _one_error_line(capsys)
    assert main(["calibrate", "--features", str(feats), "--predictions", str(folder), "--targets", "0"]) == 2
    assert "--targets must be above 0" in _one_error_line(capsys)
    assert main(["calibrate", "--features", str(tmp_path / "nowhere"), "--predictions", str(folder)]) == 2
    _one_error_line(capsys)

    from kgzsl.vision.features import load_features

    run = load_run(folder)
    graph = run.load_graph()
    internal = pred.ids[pred.meta["roles"].index("internal")]
    x = load_features(feats).features[:2]
    with pytest.raises(KgzslError, match="not candidate classes") as err:
        calibrate_run(run, graph, x, [internal, internal])
    assert err.value.parameter == "features"
    with pytest.raises(KgzslError, match="not classes of the run"):
        calibrate_run(run, graph, x, ["n00000000", photo_run["held"][0]])
    assert not (folder / HEDGE_FILE).exists() and not (tmp_path / "r.png").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in photo_run["run"].iterdir())


def test_evaluate_hedge_table_and_curve(calibrated, feats, photo_run, tmp_path, capsys):
    folder = calibrated[0]
    split = tmp_path / "held.txt"
    split.write_text("\n".join(photo_run["held"]) + "\n")
    curve = tmp_path / "curve.png"
    capsys.readouterr()
    assert main(["evaluate", "--features", str(feats), "--predictions", str(folder), "--split", str(split),
                 "--hedge", "--hedge-plot", str(curve), "--json"]) == 0
    hedge = json.loads(capsys.readouterr().out)["splits"][0]["hedge"]
    rows = {r["answer"]: r for r in hedge["rows"]}
    assert list(rows) == [f"{rule} {t}" for rule in ("threshold", "darts") for t in TARGETS] + ["flat top-1", "always root"]
    for rule in ("threshold", "darts"):  # the calibration images themselves: each target is met
        for target in TARGETS:
            assert rows[f"{rule} {target}"]["acc"] >= float(target) and rows[f"{rule} {target}"]["n"] == 20
    assert rows["always root"]["acc"] == 1 and rows["always root"]["gain"] == 0
    assert rows["flat top-1"]["gain"] >= rows["threshold 0.9"]["gain"]
    assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and hedge["plot"] == str(curve)
    assert main(["evaluate", "--features", str(feats), "--predictions", str(folder), "--split", str(split), "--hedge"]) == 0
    text = capsys.readouterr().out
    assert "hedged answers, held" in text and "always root" in text and "darts 0.9 (lam" in text and "threshold 0.9 (t " in text
    assert main(["evaluate", "--features", str(feats), "--predictions", str(folder), "--split", str(split),
                 "--hedge-plot", str(tmp_path / "c2.png")]) == 2
    assert "needs --hedge" in _one_error_line(capsys) and not (tmp_path / "c2.png").exists()
    bare = _copy_run(photo_run, tmp_path / "bare")
    assert main(["evaluate", "--features", str(feats), "--predictions", str(bare), "--split", str(split), "--hedge"]) == 2
    assert "kgzsl calibrate" in _one_error_line(capsys)


def test_demo_gains_a_hedged_column_once_calibrated(photo_run, feats, tmp_path, capsys):
    from kgzsl.demo import format_demo, run_demo

    out = tmp_path / "demo"
    notes = []
    first = run_demo(out=out, graph_dir=photo_run["graph"], epochs=2, progress=False, log=notes.append)
    assert first["hedge"] is None and "hedged" not in first["rows"][0] and any("kgzsl calibrate" in n for n in notes)
    assert "hedged at" not in format_demo(first)
    capsys.readouterr()
    assert main(["calibrate", "--features", str(feats), "--predictions", str(out / "run"), "--json"]) == 0
    again = run_demo(out=out, graph_dir=photo_run["graph"], epochs=2, progress=False, log=lambda *a: None)
    assert not again["trained_now"] and again["hedge"] == 0.9
    assert all(0 <= r["hedged"]["probability"] <= 1 for r in again["rows"])
    text = format_demo(again)
    assert "hedged at 0.9" in text and again["rows"][-1]["hedged"]["name"][:22] in text
    notes.clear()
    other = run_demo(out=out, graph_dir=photo_run["graph"], epochs=2, progress=False, log=notes.append, hedge=0.8)
    assert other["hedge"] is None and any("0.5, 0.7, 0.9" in n for n in notes)  # a target not calibrated: a note, no column
    with pytest.raises(KgzslError, match="hedge must be above 0"):
        run_demo(out=out, graph_dir=photo_run["graph"], epochs=2, progress=False, log=lambda *a: None, hedge=0)


# ------------------------------------------------------------------------------ generalized setting
@pytest.fixture(scope="module")
def gzsl_run(photo_run, tmp_path_factory):
    """The photo run's graph trained again with only half of the foolbox classes held out: the other half are
    seen, their real classifiers used, so the 20 photos show seen and unseen classes (generalized setting)."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    graph = load_graph(photo_run["graph"])
    held = photo_run["held"][::2]
    result = train(graph, load_targets(), model="dgp", epochs=8, seed=0, exclude=held, progress=False, hidden_channels=256)
    folder = tmp_path_factory.mktemp("gzsl-run") / "run"
    save_run(result, graph, folder)
    return folder, held


def test_calibrate_and_predict_in_the_generalized_setting(gzsl_run, feats, photo_run, tmp_path, capsys):
    from kgzsl.propagation.run import HEDGE_FILES

    folder, held = gzsl_run
    capsys.readouterr()
    assert main(["calibrate", "--features", str(feats), "--predictions", str(folder), "--candidates", "unseen"]) == 2
    assert "seen in training" in _one_error_line(capsys)  # half the photos are of seen classes
    assert main(["calibrate", "--features", str(feats), "--predictions", str(folder), "--candidates", "all", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    record = run_calibration(load_run(folder), "all")
    assert summary["out"] == str(folder / HEDGE_FILES["all"]) and record["candidates"] == "all"
    assert not (folder / HEDGE_FILE).exists()  # the unseen candidates' calibration is another file
    pred = load_run(folder).predictions
    classes = [r != "internal" for r in pred.meta["roles"]].count(True)
    assert record["candidate_count"] == classes and record["gamma"] == summary["gamma"]
    for rule in ("darts", "threshold"):
        assert all(record["calibration_accuracy"][rule][t] >= float(t) for t in TARGETS)

    giraffe = str(darknet_photo("giraffe.jpg"))
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9", "--candidates", "all", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gamma"] == pytest.approx(record["gamma"]) and out["images"][0]["hedged"]["id"] in pred.index
    api = Recognizer.from_run(folder, progress=False).predict(giraffe, hedge=0.9, candidates="all")
    assert api.hedged.id == out["images"][0]["hedged"]["id"] and api.ids == [t["id"] for t in out["images"][0]["top"]]
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9", "--candidates", "all",
                 "--gamma", str(record["gamma"] + 1)]) == 2
    assert "leave --gamma out" in _one_error_line(capsys)
    assert main(["predict", giraffe, "--predictions", str(folder), "--hedge", "0.9", "--candidates", "all",
                 "--hedge-rule", "darts", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hedge_rule"] == "darts"

    split = tmp_path / "photos.txt"
    split.write_text("\n".join(photo_run["held"]) + "\n")
    assert main(["evaluate", "--features", str(feats), "--predictions", str(folder), "--split", str(split), "--with-seen",
                 "--hedge", "--hedge-candidates", "all", "--json"]) == 0
    hedge = json.loads(capsys.readouterr().out)["splits"][0]["hedge"]
    rows = {r["answer"]: r for r in hedge["rows"]}
    assert hedge["candidates"] == "all" and rows["threshold 0.9"]["acc"] >= 0.9 and rows["threshold 0.9"]["n"] == 20


def test_generalized_calibration_errors(gzsl_run, photo_run, tmp_path, capsys):
    folder = gzsl_run[0]
    unseen_only = _tree(tmp_path / "tree", [(p, w) for p, w in foolbox_imagenet_images() if w in gzsl_run[1]])
    assert main(["features", str(unseen_only), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "f"), "--json"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--features", str(tmp_path / "f"), "--predictions", str(folder), "--candidates", "all"]) == 2
    assert "both seen" in _one_error_line(capsys)
    assert main(["calibrate", "--features", str(tmp_path / "f"), "--predictions", str(folder), "--candidates", "all",
                 "--gamma", "0.1", "--json"]) == 0  # a given gamma needs no seen images
    assert json.loads(capsys.readouterr().out)["gamma"] == 0.1
    assert main(["calibrate", "--features", str(tmp_path / "f"), "--predictions", str(folder), "--gamma", "0.1"]) == 2
    assert "--candidates all" in _one_error_line(capsys)


def test_calibrate_and_evaluate_a_taxonomy_run_on_wnid_folders(glove, tmp_path, capsys):
    """A taxonomy graph names its classes (ids are names); photos in wnid folders still calibrate and evaluate
    it, each folder matched to the class pinned to that wnid (kgzsl.graph.names.labels_as_node_ids)."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.graph.names import labels_as_node_ids
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    (tmp_path / "t.csv").write_text(
        "animal,,animal.n.01\nbird,animal,bird.n.01\nbald eagle,bird,n01614925\ngoose,bird,n01855672\n"
        "spoonbill,bird,n02006656\ndog,animal,dog.n.01\nbull mastiff,dog,n02108422\ndalmatian,dog,n02110341\n"
        "golden retriever,dog,n02099601\n")
    graph = build_taxonomy_graph(load_taxonomy(tmp_path / "t.csv"), seen=["spoonbill", "golden retriever"], vectors=glove)
    graph = load_graph(graph.save(tmp_path / "graph"))  # a run records the folder of a saved graph
    save_run(train(graph, load_targets(), epochs=5, seed=0), graph, tmp_path / "run")
    wanted = {"n01614925", "n01855672", "n02108422", "n02110341"}
    tree = _tree(tmp_path / "tree", [(p, w) for p, w in foolbox_imagenet_images() if w in wanted])
    assert main(["features", str(tree), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "f"), "--json"]) == 0
    labels = ["n01614925", "n02110341", "goose", "n01614925"]
    assert labels_as_node_ids(labels, graph) == ["bald eagle", "dalmatian", "goose", "bald eagle"]
    with pytest.raises(KgzslError, match="n09999999"):
        labels_as_node_ids(["n09999999", "goose"], graph)
    assert labels_as_node_ids(["n09999999", "n01855672"], graph, strict=False) == ["n09999999", "goose"]
    capsys.readouterr()
    assert main(["calibrate", "--features", str(tmp_path / "f"), "--predictions", str(tmp_path / "run"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["images"] == 4 and record["classes"] == 4
    split = tmp_path / "unseen.txt"
    split.write_text("bald eagle\ngoose\nbull mastiff\ndalmatian\n")
    assert main(["evaluate", "--features", str(tmp_path / "f"), "--predictions", str(tmp_path / "run"), "--split", str(split),
                 "--hedge", "--json"]) == 0
    rows = {r["answer"]: r for r in json.loads(capsys.readouterr().out)["splits"][0]["hedge"]["rows"]}
    assert rows["threshold 0.9"]["n"] == 4 and rows["threshold 0.9"]["acc"] >= 0.9

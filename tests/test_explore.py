"""The explorer's site writer (``kgzsl explore``) without a browser, on the small real ``photo_run`` (DGP over a real
WordNet graph, EfficientNet-Lite0 targets) calibrated on the 20 real foolbox photos: its files, its size, the
deep-link data (the same nearest classes and attribution as ``kgzsl inspect --json``), photos and curves, --force."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.vision.samples import GIRAFFE_WNID, foolbox_imagenet_images

ROOT = Path(__file__).resolve().parent.parent


def read_script(path: Path) -> object:
    """The value a data script of the site sets (``window.NAME=<json>;``)."""
    text = path.read_text(encoding="ascii")
    assert text.startswith("window.") and text.rstrip().endswith(";")
    return json.loads(text.split("=", 1)[1].rstrip().rstrip(";"))


def read_details(site: Path) -> list[dict]:
    """Every node's record from the site's detail shards, in node order."""
    records = []
    for shard in sorted((site / "data").glob("detail-*.js")):
        head, _, body = shard.read_text(encoding="ascii").partition(",")
        assert head == f"KG_DETAIL({int(shard.stem.split('-')[1])}"
        records.extend(json.loads(body.rstrip().removesuffix(");")))
    return records


def build_site(photo_run: dict, root: Path, with_photos: bool = True) -> dict:
    """A calibrated copy of the photo run, the foolbox photos' features, and the site ``kgzsl explore`` writes."""
    run = root / "run"
    shutil.copytree(photo_run["run"], run)
    tree = root / "tree"
    for path, label in foolbox_imagenet_images():
        (tree / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, tree / label / path.name)
    feats = root / "feats"
    assert main(["features", str(tree), "--backbone", "efficientnet-lite0", "--out", str(feats), "--json"]) == 0
    assert main(["calibrate", "--features", str(feats), "--predictions", str(run), "--json"]) == 0
    site = root / "site"
    args = ["explore", str(run), "--out", str(site), "--json"] + (["--features", str(feats)] if with_photos else [])
    assert main(args) == 0
    return {"run": run, "feats": feats, "site": site, "graph": photo_run["graph"], "tree": tree}


@pytest.fixture(scope="module")
def built(photo_run, tmp_path_factory):
    return build_site(photo_run, tmp_path_factory.mktemp("explore"))


def test_the_site_is_complete_small_and_self_contained(built):
    site = built["site"]
    for name in ("index.html", "app.js", "style.css", "plotly.min.js", "kgzsl-site.json", "data/nodes.js", "data/meta.js",
                 "data/map.js", "data/photos.js", "data/detail-000.js"):
        assert (site / name).is_file(), name
    html = (site / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched at view time
    for src in ("data/nodes.js", "data/meta.js", "data/photos.js", "app.js", "style.css"):
        assert src in html
    size = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    assert size < 50e6
    assert json.loads((site / "kgzsl-site.json").read_text())["format"] == "kgzsl.explore"
    assert not [p for p in site.parent.iterdir() if ".kgzsl-" in p.name]  # no temporary left beside it


def test_deep_link_data_are_what_inspect_reports(built, capsys):
    nodes = read_script(built["site"] / "data" / "nodes.js")
    details = read_details(built["site"])
    assert len(details) == len(nodes["ids"]) == len(nodes["names"]) == len(nodes["parents"])
    index = {node_id: i for i, node_id in enumerate(nodes["ids"])}
    rng = np.random.default_rng(0)
    sample = [GIRAFFE_WNID] + [nodes["ids"][i] for i in rng.choice(len(nodes["ids"]), 6, replace=False)]
    for node_id in sample:
        capsys.readouterr()
        assert main(["inspect", node_id, "--predictions", str(built["run"]), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        record = details[index[node_id]]
        assert [[index[n["id"]], n["cosine"]] for n in report["nearest_by_weight"]] == record["w"], node_id
        assert [[index[a["id"]], a["weight"]] for a in report["attribution"]] == record["a"], node_id
        assert record["af"] == pytest.approx(report["attribution_faithfulness"], abs=2e-4)
        assert record["n"] == pytest.approx(report["weight_norm"], abs=1e-4)
        assert nodes["names"][index[node_id]] == report["names"] and nodes["gloss"][index[node_id]] == report["gloss"]
        parents = [a["id"] for a in report["ancestors"] if a["distance"] == 1]
        assert sorted(nodes["ids"][p] for p in nodes["parents"][index[node_id]]) == sorted(parents)
        key = next(k for k in report if k.endswith("_group_weights"))
        meta = read_script(built["site"] / "data" / "meta.js")
        assert meta["group_weights"]["descendant_phase"] == report[key]["descendant_phase"]
    by_feature = details[index[GIRAFFE_WNID]]["f"]
    assert len(by_feature) == 10 and all(a[1] >= b[1] for a, b in zip(by_feature, by_feature[1:]))
    assert index[GIRAFFE_WNID] not in [n for n, _ in by_feature]


def test_nearest_classes_are_inspects_even_with_few_candidates(photo_run):
    """The batched pick never changes nearest_by_weight's answer, also where there are fewer candidates than k."""
    from kgzsl.inspection.explain import nearest_by_weight
    from kgzsl.inspection.explore.data import nearest_by_classifier
    from kgzsl.propagation.run import load_run

    pred = load_run(photo_run["run"]).predictions.pred
    for candidates in (np.arange(0, len(pred), 7), np.array([3, 5, 8, 13])):
        got = nearest_by_classifier(pred, candidates, k=10, progress=False)
        for node in range(0, len(pred), 3):
            want = [(i, round(c, 4)) for i, c in nearest_by_weight(pred, node, candidates, 10)]
            assert got[node] == want, node


def test_the_map_places_every_node(built):
    coords = read_script(built["site"] / "data" / "map.js")
    nodes = read_script(built["site"] / "data" / "nodes.js")
    xy = np.array([coords["x"], coords["y"]]).T
    assert xy.shape == (len(nodes["ids"]), 2) and np.isfinite(xy).all()
    assert len({tuple(p) for p in xy.tolist()}) > 0.9 * len(xy)  # spread out, not collapsed


def test_photos_rank_as_recognition_does_and_have_thumbnails(built):
    from kgzsl.propagation.run import load_run
    from kgzsl.recognition.recognize import predict_features
    from kgzsl.vision.feature_folder import load_features

    photos = read_script(built["site"] / "data" / "photos.js")
    nodes = read_script(built["site"] / "data" / "nodes.js")
    feats = load_features(built["feats"])
    assert [p["path"] for p in photos["photos"]] == feats.paths and len(feats.paths) == 20
    expected = predict_features(feats.features, feats.paths, load_run(built["run"]).predictions, candidates="all", top=5)
    for photo, want in zip(photos["photos"], expected):
        assert [nodes["ids"][n] for n, _ in photo["top"]] == [t[0] for t in want.top]
        assert (built["site"] / photo["thumb"]).is_file()
    details = read_details(built["site"])
    label_node = nodes["ids"].index(photos["photos"][0]["label"])
    entries = details[label_node]["p"]
    assert len(entries) == 6 and all(a[1] >= b[1] for a, b in zip(entries, entries[1:]))


def test_a_calibrated_run_gets_its_curves(built):
    cal = read_script(built["site"] / "data" / "meta.js")["calibration"]
    record = json.loads((built["run"] / "hedge.json").read_text())
    assert cal["record"]["temperature"] == record["temperature"]
    assert set(cal["reliability"]) == {"T=1", f"T={record['temperature']:.3g}"}
    assert sum(cal["reliability"]["T=1"]["count"]) == 20 and cal["curves_from"] == "features"
    assert sorted(cal["accuracy_specificity"]["rules"]) == sorted(record["rules"])


def reliability_rows(table: dict) -> list[tuple[float, float, int]]:
    """A stored reliability curve's non-empty bins as (confidence, accuracy, count)."""
    return [(c, a, n) for c, a, n in zip(table["confidence"], table["accuracy"], table["count"]) if n]


def test_a_calibrated_run_shows_its_recorded_curves_without_photos(built, tmp_path, capsys):
    """No --features: the curves kgzsl calibrate stored in hedge.json (on the calibration photos), as drawn from
    the photos when they are given (the same 20 here: equal but for the page's 4-digit rounding)."""
    site = tmp_path / "site"
    assert main(["explore", str(built["run"]), "--out", str(site), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["photos"] is False
    cal = read_script(site / "data" / "meta.js")["calibration"]
    record = json.loads((built["run"] / "hedge.json").read_text())
    stored, after = record["curves"], f"T={record['temperature']:.3g}"
    assert cal["curves_from"] == "calibration" and "curves_skipped" not in cal
    assert set(cal["reliability"]) == {"T=1", after}
    for key, label in (("before", "T=1"), ("after", after)):
        rows = reliability_rows(stored["reliability"][key])
        shown = cal["reliability"][label]
        assert shown["count"] == [n for _, _, n in rows] and sum(shown["count"]) == 20
        assert shown["confidence"] == pytest.approx([c for c, _, _ in rows], abs=5e-5)
        assert shown["accuracy"] == pytest.approx([a for _, a, _ in rows], abs=5e-5)
    assert cal["reliability"][after]["ece"] == pytest.approx(record["ece_after"], abs=5e-5)
    trade = cal["accuracy_specificity"]
    assert sorted(trade["rules"]) == sorted(record["rules"]) and trade["images"] == 20
    assert trade["features"] == record["features"]
    for rule, sweep in trade["rules"].items():
        assert len(sweep["gain"]) == len(sweep["accuracy"]) == len(stored["accuracy_specificity"]["rules"][rule]["gain"]) > 10
        assert sweep["default"] == (rule == record["default_rule"])
        assert [t[0] for t in sweep["targets"]] == sorted(float(t) for t in record["rules"][rule])
    photos = read_script(built["site"] / "data" / "meta.js")["calibration"]
    assert photos["curves_from"] == "features"
    for label in ("T=1", after):
        assert photos["reliability"][label]["count"] == cal["reliability"][label]["count"]
        assert photos["reliability"][label]["accuracy"] == pytest.approx(cal["reliability"][label]["accuracy"], abs=1e-4)
    for rule, sweep in trade["rules"].items():
        assert photos["accuracy_specificity"]["rules"][rule]["gain"] == pytest.approx(sweep["gain"], abs=1e-4)
        assert photos["accuracy_specificity"]["rules"][rule]["accuracy"] == pytest.approx(sweep["accuracy"], abs=1e-4)
    assert photos["accuracy_specificity"]["flat"] == pytest.approx(trade["flat"], abs=1e-4)


def test_a_calibration_without_curves_shows_its_figures(built, tmp_path):
    """A record of an older kgzsl (or a shipped one) has no curves: the page shows the record's figures alone."""
    run = shutil.copytree(built["run"], tmp_path / "run")
    record = json.loads((run / "hedge.json").read_text())
    (run / "hedge.json").write_text(json.dumps({k: v for k, v in record.items() if k != "curves"}))
    assert main(["explore", str(run), "--out", str(tmp_path / "site"), "--json"]) == 0
    cal = read_script(tmp_path / "site" / "data" / "meta.js")["calibration"]
    assert cal["record"]["temperature"] == record["temperature"] and cal["record"]["ece_after"] == record["ece_after"]
    assert "reliability" not in cal and "accuracy_specificity" not in cal and "curves_from" not in cal


def test_force_replaces_only_a_site(built, tmp_path):
    run, site = str(built["run"]), built["site"]
    with pytest.raises(KgzslError, match="already exists: pass --force"):
        from kgzsl.inspection.explore.site import check_site_dir

        check_site_dir(site)
    check_site_dir(site, force=True)
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    assert main(["explore", run, "--out", str(other), "--force"]) == 2
    assert (other / "mine.txt").read_text() == "keep"
    assert main(["explore", run, "--out", str(tmp_path / "file.txt"), "--features", str(tmp_path / "nowhere")]) == 2
    assert main(["explore", run, "--out", str(tmp_path / "file.txt"), "--features", str(other)]) == 2  # not a feature folder
    assert not (tmp_path / "file.txt").exists()


def test_force_rewrites_a_site_without_photos(built, tmp_path, capsys):
    site = tmp_path / "site"
    shutil.copytree(built["site"], site)
    capsys.readouterr()
    assert main(["explore", str(built["run"]), "--out", str(site), "--force", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["map_cached"] is True and summary["photos"] is False  # the map came from kgzsl's cache
    assert not (site / "data" / "photos.js").exists() and not (site / "thumbs").exists()
    assert "data/photos.js" not in (site / "index.html").read_text()


def test_explore_help_imports_neither_torch_nor_numpy():
    script = ("import sys\nfrom kgzsl.cli import main\ntry:\n    main(['explore', '--help'])\nexcept SystemExit as e:\n"
              "    assert e.code == 0\nassert not [m for m in ('torch', 'numpy') if m in sys.modules]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: kgzsl explore" in result.stdout

"""``kgzsl explore`` on a run over a user's taxonomy, a new domain (issue 23, item 6): the shipped bird taxonomy
(ids are names there, with spaces) built with real GloVe, a short real DGP run on it (EfficientNet-Lite0 targets),
and the site ``kgzsl explore`` writes: its files, a bird's class page data against ``kgzsl inspect --json``, and
the deep link ``index.html#<bird>`` in Debian's headless Chromium (``--dump-dom``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path
from urllib.parse import quote

import pytest
from test_explore import read_details, read_script

from kgzsl.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "taxonomies"
NODE = "bald eagle"  # a seen bird two levels under the root (bird > raptor > eagle > bald eagle)
HELD = "pelican"  # held out of training: a bird whose classifier is propagated
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def birds(tmp_path_factory, glove) -> dict[str, Path]:
    """The bird taxonomy graph (GloVe node features), a 40-epoch DGP run on it (64 hidden units, the pelican held
    out) and its explorer site, written by ``kgzsl explore`` through the CLI."""
    from kgzsl.core.idlists import read_id_list
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train

    root = tmp_path_factory.mktemp("explore-birds")
    seen = read_id_list(DATA / "birds-seen.txt", "seen")
    build_taxonomy_graph(load_taxonomy(DATA / "birds.csv"), seen, vectors=glove).save(root / "graph")
    graph = load_graph(root / "graph")
    result = train(graph, load_targets(), model="dgp", epochs=40, seed=0, exclude=[HELD], progress=False,
                   hidden_channels=64)
    save_run(result, graph, root / "run")
    assert main(["explore", str(root / "run"), "--out", str(root / "site"), "--top", "5", "--json"]) == 0
    return {"graph": root / "graph", "run": root / "run", "site": root / "site"}


def inspect_json(capsys, node: str, run: Path) -> dict:
    capsys.readouterr()
    assert main(["inspect", node, "--predictions", str(run), "--top", "5", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_site_of_a_taxonomy_run_is_complete(birds):
    site = birds["site"]
    for name in ("index.html", "app.js", "style.css", "plotly.min.js", "kgzsl-site.json", "data/nodes.js",
                 "data/meta.js", "data/map.js", "data/detail-000.js"):
        assert (site / name).is_file(), name
    nodes = read_script(site / "data" / "nodes.js")
    birds_csv = [line.split(",")[0] for line in (DATA / "birds.csv").read_text().splitlines()[1:] if line]
    assert sorted(nodes["ids"]) == sorted(birds_csv)  # every bird of the user's taxonomy, by its name
    meta = read_script(site / "data" / "meta.js")
    assert meta["nodes"] == len(birds_csv) and meta["model"] == "dgp"
    coords = read_script(site / "data" / "map.js")
    assert len(coords["x"]) == len(coords["y"]) == len(birds_csv)
    assert not [p for p in site.parent.iterdir() if ".kgzsl-" in p.name]


@pytest.mark.parametrize("node", [NODE, HELD])
def test_a_birds_class_page_data_are_what_inspect_reports(birds, capsys, node):
    nodes = read_script(birds["site"] / "data" / "nodes.js")
    details = read_details(birds["site"])
    index = {node_id: i for i, node_id in enumerate(nodes["ids"])}
    report = inspect_json(capsys, node, birds["run"])
    i = index[node]
    assert nodes["names"][i][0] == node and report["names"][0] == node
    assert nodes["names"][i] == report["names"] and nodes["gloss"][i] == report["gloss"]
    parents = [a["id"] for a in report["ancestors"] if a["distance"] == 1]
    assert sorted(nodes["ids"][p] for p in nodes["parents"][i]) == sorted(parents) and parents
    # the page's path to the root follows first parents up to "bird", the taxonomy's root
    path, seen = [i], {i}
    while nodes["parents"][path[0]] and nodes["parents"][path[0]][0] not in seen:
        path.insert(0, nodes["parents"][path[0]][0])
        seen.add(path[0])
    assert nodes["ids"][path[0]] == "bird" and not nodes["parents"][path[0]]
    assert {nodes["ids"][p] for p in path[:-1]} <= {a["id"] for a in report["ancestors"]}
    record = details[i]
    assert len(report["nearest_by_weight"]) == 5
    assert [[index[n["id"]], n["cosine"]] for n in report["nearest_by_weight"]] == record["w"], node
    assert [[index[a["id"]], a["weight"]] for a in report["attribution"]] == record["a"], node
    assert bool(nodes["trained"][i]) == (node != HELD)  # the held-out pelican's classifier is propagated


def test_the_deep_link_shows_the_bird_in_headless_chromium(birds, capsys):
    if not CHROMIUM:
        pytest.skip("no Debian chromium here (apt-get install chromium; scripts/setup.sh does)")
    nearest = inspect_json(capsys, NODE, birds["run"])["nearest_by_weight"][0]["id"]
    url = (birds["site"] / "index.html").resolve().as_uri() + "#" + quote(NODE)
    args = [CHROMIUM, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--virtual-time-budget=10000"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    result = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    title = re.search(r'<h1 id="class-name">(.*?)</h1>', dom)
    assert title and unescape(title.group(1)) == NODE, dom[:3000]
    table = re.search(r'<table id="nearest-weight">(.*?)</table>', dom, re.DOTALL)
    assert table, dom[:3000]
    first = re.search(r'<tr data-id="([^"]*)"', table.group(1))
    assert first and unescape(first.group(1)) == nearest
    assert f">{nearest}</a>" in table.group(1)  # shown by its name, a link to its own page

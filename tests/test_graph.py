"""Graph builder: parity with DGP's ImageNet graph, structure, format, bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SEEN, SMALL_UNSEEN

from kgzsl.cli import main
from kgzsl.core.idlists import read_id_list
from kgzsl.errors import KgzslError
from kgzsl.graph.class_graph import ancestor_pairs, build_wordnet_graph, load_graph

DGP_DENSE = [32324, 32544, 32629, 30750, 26542, 19320, 11815, 6642, 3700, 2030, 1036, 539, 182, 29]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kgzsl", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_dgp_imagenet_graph_parity(reference, tmp_path):
    """The standard ImageNet lists without closure give exactly DGP's graph."""
    out = tmp_path / "dgp"
    result = run_cli(
        "build-graph", "--seen", str(reference / "imagenet1k-wnids.txt"),
        "--unseen", str(reference / "imagenet21k-test-wnids.txt"),
        "--extra-nodes", str(reference / "imagenet-structure-wnids.txt"),
        "--no-closure", "--vectors", "glove-6b-50d", "--out", str(out), "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["nodes"] == 32324
    assert summary["edges"] == 32544
    assert summary["dense_pairs_by_distance"] == DGP_DENSE
    assert summary["seen"] == 1000 and summary["unseen"] == 20842
    assert isinstance(summary["oov_nodes"], list) and summary["seconds"] > 0
    graph = load_graph(out)
    assert graph.ids[:1000] == read_id_list(reference / "imagenet1k-wnids.txt", "seen")  # classifier order


@pytest.mark.slow
def test_reference_closure_adds_512_nodes(reference, glove):
    lists = [read_id_list(reference / f, f) for f in
             ("imagenet1k-wnids.txt", "imagenet21k-test-wnids.txt", "imagenet-structure-wnids.txt")]
    graph = build_wordnet_graph(*lists, closure=True, instance_hypernyms=False, vectors=glove)
    assert graph.num_nodes == 32836


def test_small_graph_structure(small_graph):
    g = small_graph
    index = g.index()
    assert g.ids[: len(SMALL_SEEN)] == SMALL_SEEN
    assert g.summary()["roots"] == 1  # closed upward to one root
    root = index["n00001740"]  # entity
    assert root not in set(g.edge_index[0].tolist())
    # every direct WordNet hypernym of golden retriever is an edge
    from kgzsl.graph.wordnet import hypernym_wnids

    retriever = hypernym_wnids("n02099601")
    assert all((index["n02099601"], index[p]) in set(map(tuple, g.edge_index.T.tolist())) for p in retriever)
    # the dense relation holds (node, itself, 0) for every node and reaches the root from every node
    pairs = {(a, b): d for a, b, d in zip(*g.dense_index.tolist(), g.dense_distance.tolist())}
    assert all(pairs[(i, i)] == 0 for i in range(g.num_nodes))
    assert all((i, root) in pairs for i in range(g.num_nodes))
    assert pairs[(index["n02099712"], index["n02084071"])] >= 2  # Labrador is below dog
    assert (index["n02084071"], index["n02099712"]) not in pairs  # ancestors only, not descendants
    # features are unit norm where a vector exists
    norms = np.linalg.norm(g.features[g.has_vector], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_no_closure_keeps_listed_nodes_only(glove):
    g = build_wordnet_graph(SMALL_SEEN, SMALL_UNSEEN, closure=False, vectors=glove)
    assert g.num_nodes == len(SMALL_SEEN) + len(SMALL_UNSEEN)
    # only the direct hypernym pairs inside the listed set remain: pug -> dog, tabby -> domestic cat
    # (Labrador's parent, retriever, is not listed, so Labrador gets no edge)
    edges = {(g.ids[a], g.ids[b]) for a, b in g.edge_index.T.tolist()}
    assert edges == {("n02110958", "n02084071"), ("n02123045", "n02121808")}
    assert g.dense_pairs_by_distance() == [g.num_nodes, 2]


def test_bfs_distances_shortest_on_a_dag():
    # 0 -> 1 -> 3, 0 -> 2 -> 4 -> 3: shortest distance 0 -> 3 is 2
    index, dist = ancestor_pairs([[1, 2], [3], [4], [], [3]])
    pairs = {(a, b): d for a, b, d in zip(*index.tolist(), dist.tolist())}
    assert pairs[(0, 3)] == 2 and pairs[(0, 4)] == 2 and pairs[(2, 3)] == 2 and pairs[(3, 3)] == 0
    assert len(pairs) == 5 + 4 + 2 + 2 + 0  # 0:{0,1,2,3,4} 1:{1,3} 2:{2,4,3} 4:{4,3} 3:{3}


def test_save_load_roundtrip(small_graph, tmp_path):
    out = small_graph.save(tmp_path / "g")
    g = load_graph(out)
    assert g.ids == small_graph.ids and g.roles == small_graph.roles and g.names == small_graph.names
    assert g.features.dtype == np.float32  # stored as float16, read back as float32
    assert np.array_equal(g.features, small_graph.features.astype(np.float16).astype(np.float32))
    assert np.array_equal(g.dense_index, small_graph.dense_index)
    header = json.loads((out / "graph.json").read_text())
    assert header["format"] == "kgzsl.graph" and header["version"] == 1
    # no pickle anywhere: the tensors are a safetensors file
    assert (out / "tensors.safetensors").read_bytes()[8:9] == b"{"


def test_existing_output_refused_unless_force(small_graph, tmp_path):
    out = small_graph.save(tmp_path / "g")
    with pytest.raises(KgzslError, match="already exists.*--force"):
        small_graph.save(out)
    small_graph.save(out, force=True)
    assert load_graph(out).num_nodes == small_graph.num_nodes


def test_interrupted_write_leaves_nothing(small_graph, tmp_path, monkeypatch):
    import kgzsl.graph.class_graph as graph_module

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(graph_module, "save_tensors", boom)
    with pytest.raises(KeyboardInterrupt):
        small_graph.save(tmp_path / "g")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling


def test_interrupted_force_keeps_old_graph(small_graph, tmp_path, monkeypatch):
    import kgzsl.graph.class_graph as graph_module

    out = small_graph.save(tmp_path / "g")
    before = (out / "nodes.json").read_bytes()
    monkeypatch.setattr(graph_module, "save_tensors", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        small_graph.save(out, force=True)
    assert (out / "nodes.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


# ------------------------------------------------------------------------------ bad inputs (CLI)
def _wnid_file(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.mark.parametrize(
    "seen_lines, message",
    [
        (["n02085620", "n01440765"], "n01440765 is not a noun synset"),  # unknown offset
        (["n02085620", "dog"], "'dog' is not a WordNet noun id"),  # malformed
        (["n0208562"], "'n0208562' is not a WordNet noun id"),  # malformed
        ([], "empty"),
    ],
)
def test_bad_wnid_lists(tmp_path, capsys, seen_lines, message):
    seen = _wnid_file(tmp_path, "seen.txt", seen_lines)
    unseen = _wnid_file(tmp_path, "unseen.txt", SMALL_UNSEEN)
    code = main(["build-graph", "--seen", str(seen), "--unseen", str(unseen), "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "seen" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g").exists()


def test_seen_and_unseen_overlap(tmp_path, capsys):
    seen = _wnid_file(tmp_path, "seen.txt", SMALL_SEEN)
    unseen = _wnid_file(tmp_path, "unseen.txt", SMALL_UNSEEN + [SMALL_SEEN[0]])
    assert main(["build-graph", "--seen", str(seen), "--unseen", str(unseen), "--out", str(tmp_path / "g")]) == 2
    assert "both as seen and unseen" in capsys.readouterr().err


def test_cli_refuses_existing_output(tmp_path, capsys):
    (tmp_path / "g").mkdir()
    seen = _wnid_file(tmp_path, "seen.txt", SMALL_SEEN)
    unseen = _wnid_file(tmp_path, "unseen.txt", SMALL_UNSEEN)
    assert main(["build-graph", "--seen", str(seen), "--unseen", str(unseen), "--out", str(tmp_path / "g")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_json_summary(tmp_path, capsys):
    seen = _wnid_file(tmp_path, "seen.txt", SMALL_SEEN)
    unseen = _wnid_file(tmp_path, "unseen.txt", SMALL_UNSEEN)
    code = main(["build-graph", "--seen", str(seen), "--unseen", str(unseen), "--out", str(tmp_path / "g"), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("nodes", "edges", "seen", "unseen", "dense_pairs_by_distance", "oov_nodes", "seconds"):
        assert key in summary
    assert summary["seen"] == len(SMALL_SEEN) and summary["unseen"] == len(SMALL_UNSEEN)
    assert summary["dense_pairs_by_distance"][0] == summary["nodes"]
    assert summary["dense_pairs_by_distance"][1] == summary["edges"]


def test_load_graph_errors(tmp_path):
    with pytest.raises(KgzslError, match="does not exist"):
        load_graph(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "graph.json").write_text('{"format": "something-else"}')
    with pytest.raises(KgzslError, match="not a kgzsl graph"):
        load_graph(tmp_path / "bad")


# ------------------------------------------------------------------------------ determinism
def test_builds_are_byte_identical_across_hash_seeds(tmp_path):
    """nltk keeps hypernym pointers in a set and safetensors writes metadata from a hash map: neither
    order may reach the files. Two processes with different PYTHONHASHSEED give the same bytes."""
    import os

    from kgzsl.graph.class_graph import graph_fingerprint

    seen = _wnid_file(tmp_path, "seen.txt", SMALL_SEEN)
    unseen = _wnid_file(tmp_path, "unseen.txt", SMALL_UNSEEN)
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"g{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run(
            [sys.executable, "-m", "kgzsl", "build-graph", "--seen", str(seen), "--unseen", str(unseen),
             "--vectors", "glove-6b-50d", "--out", str(out), "--json"],
            capture_output=True, text=True, env=env,
        )
        assert result.returncode == 0, result.stderr
        outs.append(out)
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir()) == ["graph.json", "nodes.json", "tensors.safetensors"]
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    a, b = load_graph(outs[0]), load_graph(outs[1])
    assert graph_fingerprint(a.ids, a.edge_index) == graph_fingerprint(b.ids, b.edge_index)
    # a node with two hypernyms (dog: canine and domestic animal) lists them in sorted order
    index = a.index()
    parents = [a.ids[p] for c, p in a.edge_index.T.tolist() if c == index["n02084071"]]
    assert len(parents) == 2 and parents == sorted(parents)


def test_fingerprint_follows_edges_not_their_order(small_graph):
    from kgzsl.graph.class_graph import graph_fingerprint

    base = graph_fingerprint(small_graph.ids, small_graph.edge_index)
    shuffled = small_graph.edge_index[:, np.random.default_rng(0).permutation(small_graph.num_edges)]
    assert graph_fingerprint(small_graph.ids, shuffled) == base
    assert graph_fingerprint(small_graph.ids, shuffled[:, 1:]) != base  # an edge fewer is another graph
    assert graph_fingerprint(list(reversed(small_graph.ids)), small_graph.edge_index) != base


def test_safetensors_metadata_is_written_sorted(tmp_path):
    from kgzsl.core.files import load_tensors, save_tensors

    save_tensors(tmp_path / "t.safetensors", {"b": np.zeros(3), "a": np.ones(2)},
                 metadata={"zeta": "1", "alpha": "2", "mid": "ünï"})
    raw = (tmp_path / "t.safetensors").read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + size])
    assert list(header["__metadata__"]) == ["alpha", "mid", "zeta"] and size % 8 == 0
    tensors, meta = load_tensors(tmp_path / "t.safetensors")
    assert meta == {"zeta": "1", "alpha": "2", "mid": "ünï"} and tensors["a"].tolist() == [1.0, 1.0]


@pytest.mark.slow
def test_default_graph_builds_identically_and_matches_the_shipped_one(tmp_path):
    """Issue 10's check: the default build in two processes with different PYTHONHASHSEED gives the same
    bytes, and the shipped graphs/imagenet21k is that build (ids and edges exactly; features within float16
    rounding, since sentence-encoder kernels may round differently on another CPU)."""
    import os

    outs = []
    for seed in ("7", "8"):
        out = tmp_path / f"default-{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run([sys.executable, "-m", "kgzsl", "build-graph", "--out", str(out), "--json"],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        outs.append(out)
    for name in ("graph.json", "nodes.json", "tensors.safetensors"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    fresh, shipped = load_graph(outs[0]), load_graph(Path(__file__).resolve().parent.parent / "graphs" / "imagenet21k")
    assert fresh.ids == shipped.ids and fresh.roles == shipped.roles
    assert np.array_equal(np.asarray(fresh.edge_index), np.asarray(shipped.edge_index))
    np.testing.assert_allclose(np.asarray(fresh.features, dtype=np.float32), np.asarray(shipped.features, dtype=np.float32), atol=2e-3)

"""kgzsl.core.outputs's one format/version check, as every file format uses it (graph.json, train.json, predictions, manifests)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from kgzsl.core.files import check_format, save_tensors
from kgzsl.errors import KgzslError


def test_check_format_returns_a_matching_header_and_names_what_is_wrong():
    header = {"format": "kgzsl.graph", "version": 1, "nodes": 3}
    assert check_format(header, "kgzsl.graph", 1, "g/graph.json", "graph") is header
    with pytest.raises(KgzslError, match=r"^g/graph.json is not a kgzsl graph \(format 'kgzsl.train'\)$"):
        check_format({"format": "kgzsl.train", "version": 1}, "kgzsl.graph", 1, "g/graph.json", "graph")
    with pytest.raises(KgzslError, match=r"is graph format version 2; this kgzsl reads 1"):
        check_format({"format": "kgzsl.graph", "version": 2}, "kgzsl.graph", 1, "g/graph.json", "graph")
    with pytest.raises(KgzslError, match=r"format version 1; this kgzsl reads 1"):  # safetensors metadata holds "1"
        check_format({"format": "kgzsl.graph", "version": 1}, "kgzsl.graph", "1", "p.safetensors", "predictions file")
    with pytest.raises(KgzslError, match=r"is not a kgzsl feature manifest \(format 'list'\)"):
        check_format([1, 2], 1, None, "m.json", "feature manifest")
    assert check_format({"format": 1, "shards": []}, 1, None, "m.json", "feature manifest")  # no separate version


def test_every_file_format_is_checked_by_it(tmp_path, small_graph):
    """A graph folder, a predictions file, a run's train.json and a feature manifest of a newer version are refused alike."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.predictions import load_predictions, save_predictions
    from kgzsl.propagation.run import RECORD_FILE, read_record
    from kgzsl.vision.feature_folder import MANIFEST_FILE, read_manifest

    small_graph.save(tmp_path / "graph")
    header = json.loads((tmp_path / "graph" / "graph.json").read_text())
    (tmp_path / "graph" / "graph.json").write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(KgzslError, match="graph.json is graph format version 99; this kgzsl reads 1"):
        load_graph(tmp_path / "graph")

    path = save_predictions(tmp_path / "p.safetensors", ["a"], torch.ones(1, 2), torch.tensor([True]))
    with safe_open(str(path), framework="pt") as handle:
        meta, tensors = handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}
    save_tensors(path, tensors, metadata={**meta, "version": "99"})
    with pytest.raises(KgzslError, match="is predictions file format version 99; this kgzsl reads 1"):
        load_predictions(path)

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RECORD_FILE).write_text(json.dumps({"format": "kgzsl.train", "version": 99}))
    with pytest.raises(KgzslError, match="is training record format version 99"):
        read_record(tmp_path / "run")

    (tmp_path / "feats").mkdir()
    (tmp_path / "feats" / MANIFEST_FILE).write_text(json.dumps({"format": 99, "shards": []}))
    with pytest.raises(KgzslError, match=r"is not a kgzsl feature manifest \(format 99\)"):
        read_manifest(tmp_path / "feats")

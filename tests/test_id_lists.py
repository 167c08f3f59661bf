"""One reader for every id-list file (seen/unseen/extra, --exclude, --wnids, splits, candidates):
whole lines, comments, duplicates, and unknown entries reported with their file and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import SMALL_SEEN, SMALL_UNSEEN

from kgzsl.cli import main
from kgzsl.core.idlists import IdList, read_id_list
from kgzsl.errors import KgzslError
from kgzsl.propagation.targets import Targets, read_wnid_file


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------- the reader
def test_whole_lines_comments_and_line_numbers(tmp_path):
    path = _write(tmp_path, "list.txt", "# held-out classes\n\nfrying pan\n  golf cart  \nn03400231  # a wnid with a note\nC#\n\t\n")
    ids = read_id_list(path, "exclude")
    assert ids == ["frying pan", "golf cart", "n03400231", "C#"]  # never the first word alone
    assert isinstance(ids, IdList) and ids.lines == [3, 4, 5, 6]
    assert ids.where("golf cart") == f"{path}:4"


def test_crlf_and_byte_order_mark(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes("\ufeffgolf cart\r\nn02084071\r\n".encode("utf-8"))
    assert read_id_list(path) == ["golf cart", "n02084071"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("dog\ncat\ndog\n", "lists dog twice (lines 1 and 3)"),
        ("n02084071\nn01440764 tench, Tinca tinca\n", ":2: wnid list line 'n01440764 tench, Tinca tinca' holds a wnid followed by more text"),
        ("# nothing\n\n", "is empty"),
    ],
)
def test_bad_lists_name_the_file_and_line(tmp_path, text, message):
    path = _write(tmp_path, "wnids.txt", text)
    with pytest.raises(KgzslError, match=re.escape(message)) as info:
        read_id_list(path, "wnid list")
    assert str(path) in str(info.value)


def test_not_text_and_not_a_file(tmp_path):
    binary = tmp_path / "list.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(KgzslError, match="not UTF-8 text"):
        read_id_list(binary, "split")
    with pytest.raises(KgzslError, match="is a folder"):
        read_id_list(tmp_path, "split")
    with pytest.raises(KgzslError, match="does not exist"):
        read_id_list(tmp_path / "nope.txt", "split")


def test_wnid_file_of_targets_uses_the_same_reader(tmp_path):
    path = _write(tmp_path, "rows.txt", "golf cart\nn02084071 # dog\n")
    assert read_wnid_file(path) == ["golf cart", "n02084071"]  # first-token reading dropped 'cart'


def test_require_known_names_line_and_entry(tmp_path):
    path = _write(tmp_path, "c.txt", "a\n\nb c\nd\n")
    ids = read_id_list(path, "candidates")
    ids.require_known({"a", "b c", "d"}, "a class")
    with pytest.raises(KgzslError, match=re.escape(f"{path}:3: candidates entry 'b c' is not a class (1 more")):
        ids.require_known({"a"}, "a class")


def test_reference_lists_read_as_before(reference):
    """The standard split and class lists (one wnid a line) read exactly as their lines."""
    sizes = {"imagenet1k-wnids.txt": 1000, "split-2-hops.txt": 1549, "split-3-hops.txt": 7860, "split-all.txt": 20842}
    for name, size in sizes.items():
        ids = read_id_list(reference / name, name)
        assert len(ids) == size
        assert ids == (reference / name).read_text().split()


# ------------------------------------------------------------------------- callers that resolve
def test_build_graph_names_the_line_of_a_bad_wnid(tmp_path, capsys):
    seen = _write(tmp_path, "seen.txt", "# dogs\n" + "\n".join(SMALL_SEEN[:2]) + "\nfrying pan\n")
    unseen = _write(tmp_path, "unseen.txt", "\n".join(SMALL_UNSEEN) + "\n")
    code = main(["build-graph", "--seen", str(seen), "--unseen", str(unseen), "--vectors", "glove-6b-50d",
                 "--out", str(tmp_path / "g")])
    err = capsys.readouterr().err
    assert code == 2 and f"{seen}:4: 'frying pan' is not a WordNet noun id" in err
    assert not (tmp_path / "g").exists()


KITCHEN = "kitchenware,\npan,kitchenware\nfrying pan,pan,frying_pan.n.01\nwok,pan,wok.n.01\nteapot,kitchenware,teapot.n.01\nkettle,kitchenware\n"


@pytest.fixture(scope="module")
def kitchen(tmp_path_factory, glove):
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    folder = tmp_path_factory.mktemp("kitchen")
    (folder / "kitchen.csv").write_text(KITCHEN)
    return build_taxonomy_graph(load_taxonomy(folder / "kitchen.csv"), seen=["frying pan", "wok", "teapot"], vectors=glove)


def _targets(graph) -> Targets:
    wnids = [w for w, r in zip(graph.wnids, graph.roles) if r == "seen" and w]
    return Targets(wnids, torch.randn(len(wnids), 9, generator=torch.Generator().manual_seed(0)), "hand-made rows")


def test_exclude_of_a_multi_word_class_excludes_it(kitchen, tmp_path):
    from kgzsl.propagation.training import train

    exclude = read_id_list(_write(tmp_path, "held.txt", "# held out\nfrying pan\n"), "exclude")
    result = train(kitchen, _targets(kitchen), epochs=1, exclude=exclude, progress=False, hidden_channels=8)
    index = kitchen.index()
    assert result.config["excluded"] == ["frying pan"] and result.config["counts"]["excluded"] == 1
    assert not result.seen[index["frying pan"]] and result.seen[index["wok"]] and result.seen[index["teapot"]]


def test_unknown_exclude_entry_is_an_error_naming_the_line(kitchen, small_graph, tmp_path):
    from kgzsl.propagation.training import train

    exclude = read_id_list(_write(tmp_path, "held.txt", "wok\nfrying\n"), "exclude")
    with pytest.raises(KgzslError, match=re.escape(f"{tmp_path / 'held.txt'}:2: exclude entry 'frying' is not a node id")):
        train(kitchen, _targets(kitchen), epochs=1, exclude=exclude, progress=False)
    # a WordNet graph's ids are wnids: a name is refused, with the wnid it names
    exclude = read_id_list(_write(tmp_path, "names.txt", f"{SMALL_SEEN[0]}\ntiger\n"), "exclude")
    targets = Targets(SMALL_SEEN[:3], torch.ones(3, 5), "hand-made rows")
    with pytest.raises(KgzslError, match=r"names\.txt:2: exclude entry 'tiger' .*it is a name of n02129604"):
        train(small_graph, targets, epochs=1, exclude=exclude, progress=False)
    with pytest.raises(KgzslError, match="exclude: 1 entries are no node id"):
        train(small_graph, targets, epochs=1, exclude=["n99999999"], progress=False)


def test_taxonomy_seen_list_names_the_line(tmp_path, glove):
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    taxonomy = load_taxonomy(_write(tmp_path, "k.csv", KITCHEN))
    seen = read_id_list(_write(tmp_path, "seen.txt", "wok\nfrying  pan\n"), "seen")
    with pytest.raises(KgzslError, match=re.escape(f"{tmp_path / 'seen.txt'}:2: seen entry 'frying  pan' is not a class of taxonomy")):
        build_taxonomy_graph(taxonomy, seen=seen, vectors=glove)


def test_predict_candidates_name_the_line(tmp_path, capsys):
    from kgzsl.propagation.predictions import save_predictions

    ids = ["golf cart", "go-kart", "n02084071"]
    save_predictions(tmp_path / "p.safetensors", ids, torch.randn(3, 1281), torch.tensor([False, False, True]),
                     meta={"names": ["golf cart", "go-kart", "dog"], "backbone": "efficientnet-lite0"})
    candidates = _write(tmp_path, "cands.txt", "golf cart\ngo-kart\ndog\n")
    photo = _write(tmp_path, "photo.jpg", "not read: the candidates are refused first\n")
    code = main(["predict", str(photo), "--predictions", str(tmp_path / "p.safetensors"),
                 "--candidates", str(candidates)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{candidates}:3: candidates entry 'dog' is not a class of the predictions" in err and "n02084071" in err


def test_candidate_mask_keeps_multi_word_ids(tmp_path):
    from kgzsl.propagation.predictions import Predictions
    from kgzsl.recognition.scoring import candidate_mask

    preds = Predictions(["golf cart", "golf", "cart"], torch.zeros(3, 4), torch.zeros(3, dtype=torch.bool))
    mask = candidate_mask(preds, read_id_list(_write(tmp_path, "c.txt", "golf cart\n"), "candidates"))
    assert mask.tolist() == [True, False, False]


def test_evaluate_split_entries_resolve_whole(tmp_path, capsys):
    """A split of multi-word class ids evaluates every class; an unknown one is an error naming its line."""
    import json

    from kgzsl.core.files import save_tensors
    from kgzsl.propagation.predictions import save_predictions
    from kgzsl.vision.features import MANIFEST_FILE

    feats = tmp_path / "feats"
    feats.mkdir()
    labels = ["golf cart", "go-kart", "golf cart"]
    meta = {"kgzsl": json.dumps({"shard": 0, "paths": ["a.jpg", "b.jpg", "c.jpg"], "labels": labels})}
    save_tensors(feats / "shard-000000.safetensors", {"features": torch.eye(3, 4)}, metadata=meta)
    (feats / MANIFEST_FILE).write_text(json.dumps({"format": 1, "dim": 4, "features": 3, "bad_files": [],
                                                   "shards": [{"file": "shard-000000.safetensors", "rows": 3, "images": 3}]}))
    ids = ["golf cart", "go-kart", "golf", "cart"]
    pred = torch.nn.functional.normalize(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)), dim=1)
    save_predictions(tmp_path / "p.safetensors", ids, pred, torch.zeros(4, dtype=torch.bool))
    split = _write(tmp_path, "split.txt", "golf cart\ngo-kart\n")
    argv = ["evaluate", "--features", str(feats), "--predictions", str(tmp_path / "p.safetensors"), "--split", str(split), "--json"]
    assert main(argv) == 0, capsys.readouterr().err
    entry = json.loads(capsys.readouterr().out)["splits"][0]
    assert entry["candidates"] == 2 and entry["images"] == 3
    split.write_text("golf cart\n# karts\ngo kart\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{split}:3: split entry 'go kart' is not a class of the predictions" in err and len(err.strip().splitlines()) == 1

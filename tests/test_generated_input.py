"""Generated bad input (issue 24): every reader of a user file, fed Hypothesis-generated damage of one small valid
real file of its kind: cut short, bits flipped, emptied, replaced by a file of another type, blown up, spliced
with junk, and (JSON files, safetensors metadata) values of the wrong type or keys removed. Each case must end in the reader's normal result
(the damage left the file valid) or a :class:`~kgzsl.errors.KgzslError` whose message names the file (or its
folder) - never another exception - and must write nothing. The counts are printed at the end of the run.

Cases a reader: :data:`EXAMPLES` (200: the issue's minimum), derandomized so that CI is reproducible.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_SEEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgzsl.errors import KgzslError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = 200
GENERATED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, print_blob=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: reader -> outcome -> count, printed by :class:`_Counts` at the end of the session
COUNTS: dict[str, Counter] = defaultdict(Counter)


class _Counts:
    """A pytest plugin (registered by the ``counts`` fixture) that prints the cases run for each reader."""

    @staticmethod
    def pytest_terminal_summary(terminalreporter: Any) -> None:
        if not COUNTS:
            return
        terminalreporter.section("generated bad input (tests/test_generated_input.py)")
        for reader, counts in sorted(COUNTS.items()):
            terminalreporter.write_line(
                f"{reader:<28} {sum(counts.values()):>4} cases: {counts['KgzslError']:>4} refused with a KgzslError naming "
                f"the file, {counts['valid']:>4} still valid, {counts['other']} other exceptions")


@pytest.fixture(scope="module", autouse=True)
def counts(request):
    if not request.config.pluginmanager.has_plugin("kgzsl-generated-counts"):
        request.config.pluginmanager.register(_Counts(), "kgzsl-generated-counts")


# ------------------------------------------------------------------------------------ damage
def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, bit in flips:
        if out:
            out[position % len(out)] ^= 1 << bit
    return bytes(out)


OTHER_TYPES = {  # small valid files of other kinds, as a user may give the wrong one
    "png": bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108020000009077053e0000000c4944415408d763f8cf"
                         "c0000003010100c9fe92ef0000000049454e44ae426082"),
    "json": b'{"format": "kgzsl.graph", "version": 1, "nodes": 3}\n',
    "text": b"n02084071\nn02121808\n",
    "zeros": bytes(4096),
    "safetensors": b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
}


def damaged(data: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    """``(kind of damage, bytes)`` made from the valid ``data``."""
    size = max(len(data), 1)
    position = st.one_of(st.integers(0, min(size, 64) - 1), st.integers(0, size - 1))  # headers more often
    return st.one_of(
        st.integers(0, size - 1).map(lambda k: ("truncated", data[:k])),
        st.lists(st.tuples(position, st.integers(0, 7)), min_size=1, max_size=6).map(lambda f: ("bit-flipped", _flip(data, f))),
        st.just(("empty", b"")),
        st.sampled_from(sorted(OTHER_TYPES)).map(lambda k: (f"wrong type ({k})", OTHER_TYPES[k])),
        st.sampled_from([2, 64]).map(lambda k: ("oversized", data * k + bytes(2 ** 20))),
        st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=64)).map(
            lambda t: ("spliced", data[:t[0]] + t[1] + data[t[0]:])),
        st.binary(min_size=1, max_size=512).map(lambda b: ("random bytes", b)),
    )


WRONG_VALUES = [None, 0, -1, 10 ** 20, 1.5, float("nan"), "", "x", [], [1, 2], {}, {"a": 1}, True, "a" * 5000]


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(obj, dict):
        for key, value in list(obj.items())[:40]:
            found += _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj[:8]):
            found += _paths(value, prefix + (i,))
    return found


def _replace(obj: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if not rest and delete:
        if isinstance(obj, dict):
            obj.pop(head, None)
        else:
            del obj[head]
        return obj
    obj[head] = _replace(obj[head], rest, value, delete)
    return obj


@st.composite
def json_damaged(draw: Callable, data: bytes) -> tuple[str, bytes]:
    """A JSON file with one value replaced by one of another type, or one key or item removed."""
    obj = json.loads(data)
    path = draw(st.sampled_from(_paths(obj)))
    delete = bool(path) and draw(st.booleans())
    value = draw(st.sampled_from(WRONG_VALUES))
    text = json.dumps(_replace(obj, path, value, delete))
    return (f"JSON {'without' if delete else 'wrong value at'} {'/'.join(map(str, path)) or 'top'}", text.encode())


@st.composite
def metadata_damaged(draw: Callable, data: bytes) -> tuple[str, bytes]:
    """A safetensors file whose string metadata (kgzsl's JSON-encoded values) has one value of the wrong type
    (inside its JSON too), a value that is no JSON, or a key removed; the tensors are left as they were."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = header.setdefault("__metadata__", {})
    key = draw(st.sampled_from(sorted(meta)))
    how = draw(st.sampled_from(["inside", "value", "not JSON", "removed"]))
    if how == "removed":
        del meta[key]
    elif how == "not JSON":
        meta[key] = draw(st.sampled_from(["", "{", "[1, 2", "nan", "x" * 3000]))
    else:
        try:
            inner = json.loads(meta[key])
        except ValueError:
            inner = meta[key]
        path = draw(st.sampled_from(_paths(inner))) if how == "inside" else ()
        meta[key] = json.dumps(_replace(inner, path, draw(st.sampled_from(WRONG_VALUES)), False))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return f"metadata {key}: {how}", len(text).to_bytes(8, "little") + text + data[8 + size:]


def any_damage(data: bytes, name: str) -> st.SearchStrategy[tuple[str, bytes]]:
    if name.endswith(".json"):
        return st.one_of(damaged(data), json_damaged(data))
    if name.endswith(".safetensors"):
        return st.one_of(damaged(data), metadata_damaged(data))
    return damaged(data)


# ------------------------------------------------------------------------------------ the valid files
@pytest.fixture(scope="module")
def valid(tmp_path_factory, small_graph, glove) -> dict[str, Path]:
    """One small valid real file (or folder) a reader: a graph folder, a run on it, a feature folder of two real
    photos, its predictions and targets files, a .npy matrix of real classifier rows, the bird taxonomy as CSV / JSON / YAML, an id list, a JPEG and a PNG
    photo, GloVe text and word2vec binary vectors (real GloVe rows of a few bird words and the 40 commonest words)."""
    import numpy as np
    import yaml
    from PIL import Image

    from kgzsl.cli import main
    from kgzsl.graph.taxonomy import load_taxonomy
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train
    from kgzsl.vision.samples import foolbox_imagenet_images

    root = tmp_path_factory.mktemp("generated-valid")
    small_graph.save(root / "graph")
    save_run(train(small_graph, load_targets(), model="dgp", epochs=2, seed=0, progress=False), small_graph, root / "run")
    photos = [path for path, _ in foolbox_imagenet_images()[:2]]
    for photo, wnid in zip(photos, SMALL_SEEN[:2]):
        (root / "tree" / wnid).mkdir(parents=True)
        shutil.copy(photo, root / "tree" / wnid / photo.name)
    assert main(["features", str(root / "tree"), "--backbone", "efficientnet-lite0", "--out", str(root / "feats"),
                 "--device", "cpu", "--json"]) == 0
    assert main(["targets", str(root / "feats"), "--graph", str(root / "graph"), "--out", str(root / "targets.safetensors"),
                 "--folds", "2", "--json"]) == 0
    shutil.copy(root / "run" / "predictions.safetensors", root / "predictions.safetensors")
    lite0 = load_targets()
    np.save(root / "matrix.npy", lite0.weights[:3].numpy())  # real classifier rows with their bias column
    (root / "wnids.txt").write_text("".join(f"{wnid}\n" for wnid in lite0.wnids[:3]))
    shutil.copy(ROOT / "data" / "taxonomies" / "birds.csv", root / "birds.csv")
    taxonomy = load_taxonomy(root / "birds.csv")
    children: dict[str | None, list[str]] = defaultdict(list)
    for name in taxonomy.names:
        for parent in taxonomy.parents[name] or [None]:
            children[parent].append(name)

    def nested(parent: str | None) -> dict:
        return {name: nested(name) or None for name in children[parent]}

    tree = {"tree": nested(None), "synsets": taxonomy.synsets, "descriptions": taxonomy.descriptions}
    (root / "birds.json").write_text(json.dumps(tree, indent=1))
    (root / "birds.yaml").write_text(yaml.safe_dump(tree, allow_unicode=True))
    shutil.copy(ROOT / "data" / "taxonomies" / "birds-seen.txt", root / "seen.txt")
    shutil.copy(photos[0], root / "photo.jpg")
    Image.open(photos[1]).convert("RGB").resize((32, 24)).save(root / "photo.png")
    birds = ["eagle", "owl", "duck", "pelican", "robin", "nightingale", "goldfinch", "finch", "thrush", "bird", "mallard"]
    words = birds + [w for w in glove.keyed.index_to_key[:40] if w not in birds]
    (root / "glove.txt").write_text("".join(f"{w} {' '.join(f'{v:.5f}' for v in glove.keyed[w])}\n" for w in words))
    from gensim.models import KeyedVectors

    small = KeyedVectors(vector_size=glove.dim)
    small.add_vectors(words, np.stack([glove.keyed[w] for w in words]))
    small.save_word2vec_format(str(root / "vectors.bin"), binary=True)
    return {"root": root, "graph": root / "graph"}


# ------------------------------------------------------------------------------------ readers
def _read_graph(path: Path, valid: dict) -> Any:
    from kgzsl.graph.class_graph import load_graph

    return load_graph(path)


def _read_run(path: Path, valid: dict) -> Any:
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.propagation.run import load_run

    run = load_run(path)
    _ = run.record, run.model_name, run.backbone
    return run.load_model(load_graph(valid["graph"]))


def _read_features(path: Path, valid: dict) -> Any:
    from kgzsl.vision.feature_folder import load_features

    return load_features(path)


def _read_predictions(path: Path, valid: dict) -> Any:
    from kgzsl.propagation.predictions import load_predictions

    return load_predictions(path)


def _read_targets(path: Path, valid: dict) -> Any:
    from kgzsl.propagation.targets import load_fitted_targets, load_targets

    load_fitted_targets(path)
    return load_targets(path)


def _read_matrix(path: Path, valid: dict) -> Any:
    from kgzsl.propagation.targets import load_targets

    return load_targets(path, valid["root"] / "wnids.txt")


def _read_taxonomy(path: Path, valid: dict) -> Any:
    from kgzsl.graph.embeddings import load_vector_file
    from kgzsl.graph.taxonomy import build_taxonomy_graph, load_taxonomy

    taxonomy = load_taxonomy(path)
    seen = taxonomy.leaves()[:2]
    vectors = load_vector_file(valid["root"] / "glove.txt")
    return build_taxonomy_graph(taxonomy, seen, vectors=vectors) if seen else taxonomy


def _read_id_list(path: Path, valid: dict) -> Any:
    from kgzsl.core.idlists import read_id_list

    return read_id_list(path, "seen")


def _read_image(path: Path, valid: dict) -> Any:
    from kgzsl.vision.images import load_image

    return load_image(path)


def _read_vectors(path: Path, valid: dict) -> Any:
    from kgzsl.graph.embeddings import load_vector_file

    return load_vector_file(path)


#: reader -> (the valid file or folder under ``valid["root"]``, the files of it that are damaged, how it is read)
READERS: dict[str, tuple[str, list[str], Callable]] = {
    "graph folder": ("graph", ["graph.json", "nodes.json", "tensors.safetensors"], _read_graph),
    "run folder": ("run", ["train.json", "model.safetensors", "predictions.safetensors"], _read_run),
    "feature folder": ("feats", ["manifest.json", "shard-000000.safetensors"], _read_features),
    "predictions file": ("predictions.safetensors", [""], _read_predictions),
    "targets file": ("targets.safetensors", [""], _read_targets),
    "targets matrix .npy": ("matrix.npy", [""], _read_matrix),
    "taxonomy CSV": ("birds.csv", [""], _read_taxonomy),
    "taxonomy JSON": ("birds.json", [""], _read_taxonomy),
    "taxonomy YAML": ("birds.yaml", [""], _read_taxonomy),
    "id list": ("seen.txt", [""], _read_id_list),
    "image JPEG": ("photo.jpg", [""], _read_image),
    "image PNG": ("photo.png", [""], _read_image),
    "vectors GloVe text": ("glove.txt", [""], _read_vectors),
    "vectors word2vec binary": ("vectors.bin", [""], _read_vectors),
}


def _snapshot(folder: Path) -> dict[str, tuple]:
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size if p.is_file() else 0, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def _case(reader: str, valid: dict, member: str, damage: tuple[str, bytes]) -> None:
    """Damage ``member`` of a fresh copy of the reader's valid input, read it, and check the outcome."""
    name, _, read = READERS[reader]
    with tempfile.TemporaryDirectory(prefix="kgzsl-generated-") as work:
        source = valid["root"] / name
        target = Path(work) / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
        damaged_file = target / member if member else target
        damaged_file.write_bytes(damage[1])
        before = _snapshot(Path(work))
        try:
            read(target, valid)
        except KgzslError as exc:
            COUNTS[reader]["KgzslError"] += 1
            message = str(exc)
            assert str(target) in message, f"{reader}, {damage[0]} {member}: the message does not name it: {message}"
            assert "\n" not in message.strip(), f"{reader}: a message of several lines: {message}"
        except Exception as exc:
            COUNTS[reader]["other"] += 1
            raise AssertionError(f"{reader}, {damage[0]} {member or name}: {type(exc).__name__}: {exc}") from exc
        else:
            COUNTS[reader]["valid"] += 1
        assert _snapshot(Path(work)) == before, f"{reader}: reading wrote or changed files"


def _damage_of(reader: str, valid_root: Path) -> st.SearchStrategy[tuple[str, tuple[str, bytes]]]:
    name, members, _ = READERS[reader]
    return st.one_of([
        any_damage(((valid_root / name / member) if member else valid_root / name).read_bytes(),
                   member or name).map(lambda d, m=member: (m, d))
        for member in members
    ])


@pytest.mark.parametrize("reader", list(READERS))
def test_generated_bad_input_ends_in_a_kgzsl_error_naming_the_file(reader, valid):
    @GENERATED
    @given(_damage_of(reader, valid["root"]))
    def case(damage):
        _case(reader, valid, *damage)

    case()
    assert sum(COUNTS[reader].values()) >= EXAMPLES

"""Bad input across every subcommand (issue 10): one table of cases, each run in-process in a fresh
workspace; each must end with exit status 2 and exactly one stderr line ``kgzsl: error: ...``, and no
file or folder anywhere the case can reach (workspace, its parent, the shared graph/run/feature folders,
the project's graphs) may be created, changed or deleted.

Case ids name the issue's defect they cover (``d1-`` ... ``d12-``); the rest are the bad inputs a new
user tries: missing files, wrong file types, empty files, bad numbers, unknown ids, models and backbones.
Argument placeholders: ``{G}`` the shared graph, ``{G2}`` the same graph built again, ``{R}`` a run
trained on ``{G}`` (Lite0), ``{RO}`` a run whose graph is gone, ``{F0}`` / ``{F2}`` Lite0 / Lite2 features of two unseen-class images,
``{ROOT}`` the kgzsl project, ``{HOME}`` the (test's) home folder, ``{BIRDS}`` data/taxonomies.
Workspace files every case gets: see :func:`_workspace`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import SMALL_SEEN, SMALL_UNSEEN

from kgzsl.cli import main

ROOT = Path(__file__).resolve().parents[1]
UNSEEN = ["n02084071", "n02121808"]  # dog, domestic cat: unseen nodes of the small graph
TINY_VECTORS = "dog 0.1 0.2 0.3\ncat 0.4 0.5 0.6\nbird 0.7 0.8 0.9\n"  # a valid GloVe text file, read in no time
BIRDS_ARGS = ["--taxonomy", "{BIRDS}/birds.csv", "--seen", "{BIRDS}/birds-seen.txt", "--vectors", "tiny.vec"]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def shared(tmp_path_factory, small_graph, glove):
    """The folders cases read but must never change: a small graph (and a rebuild of it), a DGP run
    on it (3 epochs) and Lite0 / Lite2 features of two real images of its unseen classes."""
    from kgzsl.graph.class_graph import build_wordnet_graph, load_graph
    from kgzsl.propagation.run import save_run
    from kgzsl.propagation.targets import load_targets
    from kgzsl.propagation.training import train
    from kgzsl.vision.samples import foolbox_imagenet_images

    root = tmp_path_factory.mktemp("bad-input-shared")
    graph = load_graph(small_graph.save(root / "graph"))
    build_wordnet_graph(SMALL_SEEN, SMALL_UNSEEN, vectors=glove, progress=False).save(root / "graph2")  # a rebuild
    lite0 = load_targets()
    save_run(train(graph, lite0, model="dgp", epochs=3, seed=0, progress=False), graph, root / "run")
    gone = load_graph(small_graph.save(root / "gone-graph"))  # a run whose graph was deleted (or moved) since
    save_run(train(gone, lite0, model="dgp", epochs=2, seed=0, progress=False), gone, root / "orphan-run")
    shutil.rmtree(root / "gone-graph")
    images = foolbox_imagenet_images()[:2]
    tree = root / "tree"
    for (path, _), wnid in zip(images, UNSEEN):
        (tree / wnid).mkdir(parents=True)
        shutil.copy(path, tree / wnid / path.name)
    for variant in ("lite0", "lite2"):
        code = main(["features", str(tree), "--backbone", f"efficientnet-{variant}", "--out", str(root / variant),
                     "--device", "cpu", "--json"])
        assert code == 0
    return {"G": root / "graph", "G2": root / "graph2", "R": root / "run", "RO": root / "orphan-run", "F0": root / "lite0", "F2": root / "lite2",
            "ROOT": ROOT, "BIRDS": ROOT / "data" / "taxonomies", "image": images[0][0]}


def _workspace(work: Path, shared: dict) -> None:
    """The files a user has lying around, some of them precious."""
    from PIL import Image

    work.mkdir()
    shutil.copy(shared["image"], work / "photo.jpg")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(work / "picture.png")
    (work / "notes.txt").write_text("my notes\n")
    (work / "empty.txt").write_text("")
    (work / "thesis").mkdir()
    (work / "thesis" / "thesis.tex").write_text("\\documentclass{article}\n")
    (work / "thesis" / "run.json").write_text('{"mine": true}\n')
    (work / "split.txt").write_text("\n".join(UNSEEN) + "\n")
    (work / "text.pth").write_text("not a checkpoint\n")
    (work / "tiny.vec").write_text(TINY_VECTORS)
    (work / "images" / UNSEEN[0]).mkdir(parents=True)
    shutil.copy(shared["image"], work / "images" / UNSEEN[0] / "photo.jpg")


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``, hidden ones included: folders, links, and files by size and sha256."""
    entries: dict[str, tuple] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            entries[name] = ("link", os.readlink(path))
        elif path.is_dir():
            entries[name] = ("dir",)
        else:
            data = path.read_bytes()
            entries[name] = ("file", len(data), hashlib.sha256(data).hexdigest())
    return entries


def _project_graphs() -> dict[str, tuple]:
    """The shipped graphs, by size and modification time (hashing 30 MB a case would be slow)."""
    return {str(p.relative_to(ROOT)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else ("dir",)
            for p in sorted((ROOT / "graphs").rglob("*"))}


class _StderrNow(logging.Handler):
    """What the installed command does with kgzsl's log warnings (Python's last-resort handler): stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        import sys

        sys.stderr.write(self.format(record) + "\n")


# --------------------------------------------------------------------------------- case helpers
def files(entries: dict[str, str | bytes]) -> Callable[[Path, dict], None]:
    """Prepare: write workspace files (text or bytes)."""

    def prepare(work: Path, shared: dict) -> None:
        for name, content in entries.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)

    return prepare


def matrix(name: str, rows: int, cols: int, wnids: list[str] | None = None) -> Callable[[Path, dict], None]:
    """Prepare: a plain .npy target matrix (and, given, its wnid list as ``wnids.txt``)."""

    def prepare(work: Path, shared: dict) -> None:
        np.save(work / name, np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32))
        if wnids is not None:
            (work / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))

    return prepare


def copy_shared(key: str, name: str) -> Callable[[Path, dict], None]:
    def prepare(work: Path, shared: dict) -> None:
        shutil.copytree(shared[key], work / name)

    return prepare


def both(*steps: Callable[[Path, dict], None]) -> Callable[[Path, dict], None]:
    def prepare(work: Path, shared: dict) -> None:
        for step in steps:
            step(work, shared)

    return prepare


def cut_off(source: str, name: str) -> Callable[[Path, dict], None]:
    """Prepare: the first half of workspace file ``source`` as ``name`` (a download cut short)."""

    def prepare(work: Path, shared: dict) -> None:
        data = (work / source).read_bytes()
        (work / name).write_bytes(data[: len(data) // 2])

    return prepare


def strings_npy(name: str) -> Callable[[Path, dict], None]:
    def prepare(work: Path, shared: dict) -> None:
        np.save(work / name, np.array([["a", "b"], ["c", "d"]]))

    return prepare


def escaping_manifest(work: Path, shared: dict) -> None:
    """A copy of the Lite0 features whose manifest names ``../outside.safetensors`` (defect 9)."""
    shutil.copytree(shared["F0"], work / "feats")
    manifest = json.loads((work / "feats" / "manifest.json").read_text())
    first = manifest["shards"][0]["file"]
    shutil.copy(work / "feats" / first, work / "outside.safetensors")
    manifest["shards"][0]["file"] = "../outside.safetensors"
    (work / "feats" / "manifest.json").write_text(json.dumps(manifest))


def absolute_shard(work: Path, shared: dict) -> None:
    """A copy of the Lite0 features whose manifest names an absolute path (defect 9)."""
    shutil.copytree(shared["F0"], work / "feats")
    manifest = json.loads((work / "feats" / "manifest.json").read_text())
    manifest["shards"][0]["file"] = str(work / "feats" / manifest["shards"][0]["file"])
    (work / "feats" / "manifest.json").write_text(json.dumps(manifest))


def linked_shard(work: Path, shared: dict) -> None:
    """A copy of the Lite0 features whose shard is a link to a file outside the folder (defect 9)."""
    shutil.copytree(shared["F0"], work / "feats")
    shard = work / "feats" / json.loads((work / "feats" / "manifest.json").read_text())["shards"][0]["file"]
    shutil.move(shard, work / "outside.safetensors")
    shard.symlink_to(Path("..") / "outside.safetensors")


def live_writer_temporary(work: Path, shared: dict) -> None:
    """A temporary of a running kgzsl writer (this process) and a user's own dot-folder beside the output."""
    import re
    import socket

    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24]
    for name in (f".g.kgzsl-{os.getpid()}-{host}-abcdefgh.tmp", ".g.backup"):
        (work / name).mkdir()
        (work / name / "nodes.json").write_text("[]")


def needs_proc(work: Path, shared: dict) -> None:
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc here")


def case(case_id: str, argv: list[str], *says: str, prepare: Callable[[Path, dict], None] | None = None):
    """One row: the arguments, fragments the error line must hold, and how to prepare the workspace."""
    return pytest.param(argv, says, prepare, id=case_id)


BIRDS_OUT = ["build-graph", *BIRDS_ARGS, "--out"]
TRAIN = ["train", "--graph", "{G}", "--epochs", "2"]
FEATURES = ["features", "images", "--backbone", "efficientnet-lite0", "--device", "cpu"]
PREDICT = ["predict", "photo.jpg", "--predictions", "{R}"]
EVALUATE = ["evaluate", "--features", "{F0}", "--predictions", "{R}", "--split", "split.txt"]
INSPECT = ["inspect", "dog", "--predictions", "{R}"]

CASES = [
    # ------------------------------------------------------------------ the command line itself
    case("cli-no-command", [], "required", "COMMAND"),
    case("cli-unknown-command", ["build-graf"], "invalid choice", "build-graph"),
    case("cli-unknown-option", [*TRAIN, "--out", "run", "--colour", "red"], "unrecognized arguments", "--colour"),
    case("cli-missing-required-option", ["train", "--graph", "{G}"], "required", "--out"),
    case("cli-number-not-a-number", [*PREDICT, "--top", "five"], "--top", "five"),

    # ------------------------------------------------------------------ build-graph
    case("d1-build-graph-force-unrelated-folder", [*BIRDS_OUT, "thesis", "--force"], "thesis", "choose"),
    case("d1-build-graph-force-plain-file", [*BIRDS_OUT, "notes.txt", "--force"], "notes.txt", "not a folder"),
    case("d1-build-graph-out-dot", [*BIRDS_OUT, ".", "--force"], "the current folder"),
    case("d1-build-graph-out-parent", [*BIRDS_OUT, "..", "--force"], "a parent of the current folder"),
    case("d1-build-graph-out-project", [*BIRDS_OUT, "{ROOT}", "--force"], "the kgzsl project folder"),
    case("d1-build-graph-out-project-graphs-folder", [*BIRDS_OUT, "{ROOT}/graphs", "--force"], "not a kgzsl graph folder"),
    case("d1-build-graph-out-home", [*BIRDS_OUT, "{HOME}", "--force"], "the home folder"),
    case("d1-build-graph-out-root", [*BIRDS_OUT, "/", "--force"], "the root folder"),
    case("d1-build-graph-existing-graph-without-force", [*BIRDS_OUT, "{G}"], "already exists", "--force"),
    case("d1-build-graph-force-over-a-run", [*BIRDS_OUT, "{R}", "--force"], "training run folder, not a graph folder"),
    case("d2-build-graph-out-below-a-file", [*BIRDS_OUT, "notes.txt/graph"], "is a file, not a folder"),
    case("d2-build-graph-out-unwritable", [*BIRDS_OUT, "/proc/kgzsl-graph"], "not writable", prepare=needs_proc),
    case("d3-build-graph-refused-leaves-temporaries-alone",
         ["build-graph", "--taxonomy", "{BIRDS}/birds.csv", "--seen", "{BIRDS}/birds-seen.txt", "--vectors", "picture.png",
          "--out", "g"], "picture.png", prepare=live_writer_temporary),
    case("d11-build-graph-default-out-is-the-shipped-graph", ["build-graph", *BIRDS_ARGS], "imagenet21k", "already exists"),
    case("d12-build-graph-vectors-png", [*BIRDS_OUT, "g", "--vectors", "picture.png"], "not a text vector file"),
    case("d12-build-graph-wordnet-only-seen-given",
         ["build-graph", "--seen", "seen.txt", "--vectors", "tiny.vec", "--out", "g"], "n02084071", "--unseen",
         prepare=files({"seen.txt": "n02084071\n"})),
    case("build-graph-vectors-missing-file", [*BIRDS_OUT, "g", "--vectors", "nowhere.vec"], "nowhere.vec", "does not exist"),
    case("build-graph-vectors-empty-file", [*BIRDS_OUT, "g", "--vectors", "empty.txt"], "empty.txt", "empty"),
    case("build-graph-vectors-unknown-name", [*BIRDS_OUT, "g", "--vectors", "word2vec-google-news"], "word2vec-google-news"),
    case("build-graph-vectors-garbled-text", [*BIRDS_OUT, "g", "--vectors", "notes.txt"], "notes.txt", "line 1"),
    case("build-graph-seen-missing-file", ["build-graph", "--seen", "nowhere.txt", "--unseen", "split.txt", "--out", "g"],
         "nowhere.txt", "does not exist"),
    case("build-graph-seen-empty-file", ["build-graph", "--seen", "empty.txt", "--unseen", "split.txt", "--out", "g"],
         "empty.txt", "empty"),
    case("build-graph-seen-png", ["build-graph", "--seen", "picture.png", "--unseen", "split.txt", "--out", "g"],
         "picture.png", "not UTF-8 text"),
    case("build-graph-seen-is-a-folder", ["build-graph", "--seen", "thesis", "--unseen", "split.txt", "--out", "g"],
         "thesis", "is a folder"),
    case("build-graph-seen-unknown-wnid",
         ["build-graph", "--seen", "seen.txt", "--unseen", "split.txt", "--vectors", "tiny.vec", "--out", "g"], "n99999999",
         prepare=files({"seen.txt": "n02085620\nn99999999\n"})),
    case("build-graph-seen-and-unseen-overlap",
         ["build-graph", "--seen", "split.txt", "--unseen", "split.txt", "--vectors", "tiny.vec", "--out", "g"],
         "both as seen and unseen"),
    case("d4-build-graph-seen-wnid-then-words",
         ["build-graph", "--seen", "seen.txt", "--unseen", "split.txt", "--vectors", "tiny.vec", "--out", "g"],
         "seen.txt:2", "followed by more text", prepare=files({"seen.txt": "n02085620\nn02099601 golden retriever\n"})),
    case("d4-build-graph-seen-listed-twice",
         ["build-graph", "--seen", "seen.txt", "--unseen", "split.txt", "--vectors", "tiny.vec", "--out", "g"],
         "twice", "lines 1 and 3", prepare=files({"seen.txt": "n02085620\n# pug next\nn02085620\n"})),
    case("d8-build-graph-taxonomy-seen-not-in-taxonomy",
         ["build-graph", "--taxonomy", "{BIRDS}/birds.csv", "--seen", "seen.txt", "--vectors", "tiny.vec", "--out", "g"],
         "dodo", prepare=files({"seen.txt": "bald eagle\ndodo\n"})),
    case("d8-build-graph-taxonomy-without-seen",
         ["build-graph", "--taxonomy", "{BIRDS}/birds.csv", "--vectors", "tiny.vec", "--out", "g"], "--seen"),
    case("build-graph-taxonomy-missing-file", [*BIRDS_OUT, "g", "--taxonomy", "nowhere.csv"], "nowhere.csv", "does not exist"),
    case("build-graph-taxonomy-png", [*BIRDS_OUT, "g", "--taxonomy", "picture.png"], "picture.png"),
    case("build-graph-taxonomy-empty-csv", [*BIRDS_OUT, "g", "--taxonomy", "empty.csv"], "empty.csv",
         prepare=files({"empty.csv": ""})),
    case("build-graph-taxonomy-cycle", [*BIRDS_OUT, "g", "--taxonomy", "cycle.csv", "--seen", "seen.txt"], "cycle",
         prepare=files({"cycle.csv": "a,\nb,a\nc,b\nb,c\n", "seen.txt": "b\n"})),
    case("build-graph-taxonomy-undeclared-parent", [*BIRDS_OUT, "g", "--taxonomy", "typo.csv", "--seen", "seen.txt"], "typo.csv",
         prepare=files({"typo.csv": "animal,\ndog,animl\n", "seen.txt": "dog\n"})),
    case("build-graph-taxonomy-bad-json", [*BIRDS_OUT, "g", "--taxonomy", "tree.json"], "tree.json", "not valid JSON",
         prepare=files({"tree.json": '{"animal": {"dog": '})),
    case("build-graph-bad-choice", [*BIRDS_OUT, "g", "--instance-hypernyms", "maybe"], "--instance-hypernyms", "maybe"),

    # ------------------------------------------------------------------ splits
    case("d10-splits-hops-zero", ["splits", "--graph", "{G}", "--hops", "0"], "--hops must be at least 1"),
    case("d10-splits-hops-negative", ["splits", "--graph", "{G}", "--hops", "2", "-1"], "--hops must be at least 1"),
    case("d10-splits-out-existing-file", ["splits", "--graph", "{G}", "--out", "notes.txt"], "notes.txt", "is a file"),
    case("d2-splits-out-below-a-file", ["splits", "--graph", "{G}", "--out", "notes.txt/splits"], "is a file"),
    case("d11-splits-graph-is-a-file", ["splits", "--graph", "{G}/graph.json"], "is a file, not a graph folder"),
    case("splits-graph-missing", ["splits", "--graph", "nowhere"], "nowhere", "does not exist"),
    case("d12-splits-graph-unrelated-folder", ["splits", "--graph", "thesis"], "thesis has no graph.json"),
    case("splits-compare-missing-file", ["splits", "--graph", "{G}", "--hops", "1", "--compare", "nowhere.txt"],
         "nowhere.txt", "does not exist"),
    case("splits-compare-png", ["splits", "--graph", "{G}", "--hops", "1", "--compare", "picture.png"], "picture.png"),
    case("splits-hops-not-a-number", ["splits", "--graph", "{G}", "--hops", "two"], "--hops", "two"),

    # ------------------------------------------------------------------ train
    case("d1-train-force-unrelated-folder", [*TRAIN, "--out", "thesis", "--force"], "thesis", "choose"),
    case("d1-train-force-plain-file", [*TRAIN, "--out", "notes.txt", "--force"], "not a folder"),
    case("d1-train-out-dot", [*TRAIN, "--out", ".", "--force"], "the current folder"),
    case("d1-train-out-home", [*TRAIN, "--out", "{HOME}", "--force"], "the home folder"),
    case("d1-train-existing-run-without-force", [*TRAIN, "--out", "{R}"], "already exists", "--force"),
    case("d1-train-force-over-a-graph", [*TRAIN, "--out", "{G}", "--force"], "graph folder, not a training run folder"),
    case("d2-train-out-below-a-file", [*TRAIN, "--out", "notes.txt/run"], "is a file, not a folder"),
    case("d2-splits-out-unwritable", ["splits", "--graph", "{G}", "--out", "/proc/kgzsl-splits"], "not writable",
         prepare=needs_proc),
    case("d2-features-out-unwritable", [*FEATURES, "--out", "/proc/kgzsl-feats"], "not writable", prepare=needs_proc),
    case("d2-train-out-unwritable", [*TRAIN, "--out", "/proc/kgzsl-run"], "not writable", prepare=needs_proc),
    case("d3-train-refused-after-the-output-probe", [*TRAIN, "--out", "run", "--backbone", "nowhere.pth"], "nowhere.pth"),
    case("d10-train-patience-negative", [*TRAIN, "--patience", "-1", "--out", "run"], "--patience must be at least 0"),
    case("train-epochs-zero", ["train", "--graph", "{G}", "--epochs", "0", "--out", "run"], "--epochs", "at least 1"),
    case("train-epochs-negative", ["train", "--graph", "{G}", "--epochs", "-5", "--out", "run"], "--epochs", "at least 1"),
    case("train-lr-zero", [*TRAIN, "--lr", "0", "--out", "run"], "--lr"),
    case("train-lr-negative", [*TRAIN, "--lr", "-0.01", "--out", "run"], "--lr"),
    case("train-lr-nan", [*TRAIN, "--lr", "nan", "--out", "run"], "--lr", "nan"),
    case("train-lr-infinite", [*TRAIN, "--lr", "inf", "--out", "run"], "--lr", "inf"),
    case("train-val-fraction-one", [*TRAIN, "--val-fraction", "1", "--out", "run"], "--val-fraction"),
    case("train-val-fraction-negative", [*TRAIN, "--val-fraction", "-0.1", "--out", "run"], "--val-fraction"),
    case("train-val-fraction-nan", [*TRAIN, "--val-fraction", "nan", "--out", "run"], "--val-fraction"),
    case("train-model-unknown", [*TRAIN, "--model", "resnet", "--out", "run"], "--model", "resnet"),
    case("train-device-unknown", [*TRAIN, "--device", "tpu", "--out", "run"], "tpu"),
    case("train-backbone-unknown-name", [*TRAIN, "--backbone", "efficientnet-b7", "--out", "run"], "efficientnet-b7"),
    case("train-backbone-missing-file", [*TRAIN, "--backbone", "nowhere.pth", "--out", "run"], "nowhere.pth"),
    case("d12-train-backbone-text-pth", [*TRAIN, "--backbone", "text.pth", "--out", "run"],
         "text.pth is not a torch state-dict file"),
    case("train-backbone-png", [*TRAIN, "--backbone", "picture.png", "--out", "run"], "picture.png", "unknown type"),
    case("train-backbone-empty-npy", [*TRAIN, "--backbone", "empty.npy", "--wnids", "split.txt", "--out", "run"], "empty.npy",
         prepare=files({"empty.npy": b""})),
    case("train-backbone-text-npy", [*TRAIN, "--backbone", "m.npy", "--wnids", "split.txt", "--out", "run"], "m.npy",
         "not a .npy file", prepare=files({"m.npy": "1 2 3\n4 5 6\n"})),
    case("train-backbone-cut-off-npy", [*TRAIN, "--backbone", "cut.npy", "--wnids", "split.txt", "--out", "run"], "cut.npy",
         "not a readable .npy file", prepare=both(matrix("m.npy", 2, 1281), cut_off("m.npy", "cut.npy"))),
    case("train-backbone-npy-of-strings", [*TRAIN, "--backbone", "s.npy", "--wnids", "split.txt", "--out", "run"], "s.npy",
         "not numbers", prepare=strings_npy("s.npy")),
    case("d6-train-no-bias-on-a-checkpoint", [*TRAIN, "--no-bias", "--out", "run"], "plain matrix"),
    case("d6-train-bias-column-on-a-checkpoint", [*TRAIN, "--bias-column", "--out", "run"], "plain matrix"),
    case("d6-train-no-bias-and-bias-column", [*TRAIN, "--backbone", "m.npy", "--wnids", "split.txt", "--no-bias", "--bias-column",
                                              "--out", "run"], "--bias-column", "not allowed", prepare=matrix("m.npy", 2, 1280)),
    case("train-matrix-without-wnids", [*TRAIN, "--backbone", "m.npy", "--out", "run"], "--wnids", prepare=matrix("m.npy", 2, 1281)),
    case("train-matrix-rows-differ-from-wnids", [*TRAIN, "--backbone", "m.npy", "--wnids", "wnids.txt", "--out", "run"],
         "3 entries", "2 rows", prepare=matrix("m.npy", 2, 1281, ["n02085620", "n02099601", "n02110958"])),
    case("d4-train-wnids-listed-twice", [*TRAIN, "--backbone", "m.npy", "--wnids", "wnids.txt", "--out", "run"], "twice",
         prepare=matrix("m.npy", 2, 1281, ["n02085620", "n02085620"])),
    case("d8-train-no-seen-class-has-a-target", [*TRAIN, "--backbone", "m.npy", "--wnids", "wnids.txt", "--out", "run"],
         "none of the 8 seen classes", "n02085620", prepare=matrix("m.npy", 2, 1281, ["n01440764", "n01443537"])),
    case("d12-train-graph-is-a-file", ["train", "--graph", "{G}/graph.json", "--out", "run"], "is a file, not a graph folder"),
    case("train-graph-missing", ["train", "--graph", "nowhere", "--out", "run"], "nowhere", "does not exist"),
    case("d12-train-graph-is-a-run", ["train", "--graph", "{R}", "--out", "run"], "{R} has no graph.json"),
    case("d4-train-exclude-two-word-entry", [*TRAIN, "--exclude", "held-out.txt", "--out", "run"],
         "held-out.txt:2", "'frying pan'", prepare=files({"held-out.txt": "n02085620\nfrying pan\n"})),
    case("d4-train-exclude-unknown-wnid", [*TRAIN, "--exclude", "held-out.txt", "--out", "run"],
         "held-out.txt:1", "n99999999", prepare=files({"held-out.txt": "n99999999  # a typo\n"})),
    case("train-exclude-every-seen-class", [*TRAIN, "--exclude", "held-out.txt", "--out", "run"], "no targets left",
         prepare=files({"held-out.txt": "".join(f"{w}\n" for w in SMALL_SEEN)})),
    case("train-exclude-empty", [*TRAIN, "--exclude", "empty.txt", "--out", "run"], "empty.txt", "empty"),

    # ------------------------------------------------------------------ features
    case("d1-features-force-unrelated-folder", [*FEATURES, "--out", "thesis", "--force"], "thesis"),
    case("d1-features-force-plain-file", [*FEATURES, "--out", "notes.txt", "--force"], "not a folder"),
    case("d1-features-out-dot", [*FEATURES, "--out", ".", "--force"], "the current folder"),
    case("d1-features-out-a-run", [*FEATURES, "--out", "{R}", "--force"], "training run folder, not a feature folder"),
    case("d1-features-existing-run-of-other-images", [*FEATURES, "--out", "{F0}"], "different extraction", "--force"),
    case("d2-features-out-below-a-file", [*FEATURES, "--out", "notes.txt/feats"], "is a file, not a folder"),
    case("features-image-dir-missing", ["features", "nowhere", "--backbone", "efficientnet-lite0", "--out", "feats"],
         "nowhere", "does not exist"),
    case("features-image-dir-is-a-file", ["features", "photo.jpg", "--backbone", "efficientnet-lite0", "--out", "feats"],
         "photo.jpg", "not a folder"),
    case("features-image-dir-without-class-folders",
         ["features", "thesis", "--backbone", "efficientnet-lite0", "--out", "feats"], "no class sub-folders"),
    case("features-image-dir-without-images", ["features", "docs", "--backbone", "efficientnet-lite0", "--out", "feats"],
         "no image files", prepare=files({"docs/n02084071/readme.txt": "no pictures here\n"})),
    case("features-backbone-unknown", [*FEATURES[:3], "efficientnet-b7", "--out", "feats"], "efficientnet-b7"),
    case("d12-features-backbone-text-pth", [*FEATURES[:3], "text.pth", "--out", "feats"], "is not a torch state-dict file"),
    case("features-backbone-png", [*FEATURES[:3], "picture.png", "--out", "feats"], "picture.png"),
    case("features-batch-size-zero", [*FEATURES, "--batch-size", "0", "--out", "feats"], "batch"),
    case("features-shard-size-negative", [*FEATURES, "--shard-size", "-4", "--out", "feats"], "shard"),
    case("features-workers-negative", [*FEATURES, "--workers", "-1", "--out", "feats"], "workers"),
    case("features-device-unknown", [*FEATURES[:4], "--device", "tpu", "--out", "feats"], "tpu"),
    case("features-arch-on-a-lite-backbone", [*FEATURES, "--arch", "resnet50", "--out", "feats"], "--arch"),

    # ------------------------------------------------------------------ predict
    case("d10-predict-top-negative", [*PREDICT, "--top", "-1"], "--top must be at least 1"),
    case("d10-predict-top-zero", [*PREDICT, "--top", "0"], "--top must be at least 1"),
    case("d5-predict-another-backbone", [*PREDICT, "--backbone", "efficientnet-lite1"],
         "efficientnet-lite0", "efficientnet-lite1", "--allow-backbone-mismatch"),
    case("d11-predict-folder-that-is-no-run", ["predict", "photo.jpg", "--predictions", "thesis"],
         "no predictions.safetensors"),
    case("d11-predict-graph-folder-as-run", ["predict", "photo.jpg", "--predictions", "{G}"], "no predictions.safetensors"),
    case("predict-predictions-missing", ["predict", "photo.jpg", "--predictions", "nowhere.safetensors"], "nowhere.safetensors"),
    case("predict-predictions-png", ["predict", "photo.jpg", "--predictions", "picture.png"], "picture.png"),
    case("predict-predictions-empty-file", ["predict", "photo.jpg", "--predictions", "empty.safetensors"], "empty.safetensors",
         prepare=files({"empty.safetensors": b""})),
    case("predict-predictions-other-tensor-file", ["predict", "photo.jpg", "--predictions", "{R}/model.safetensors"],
         "model.safetensors"),
    case("d4-predict-candidates-two-word-entry", [*PREDICT, "--candidates", "cands.txt"], "cands.txt:2", "'golf cart'",
         prepare=files({"cands.txt": "n02084071\ngolf cart\n"})),
    case("d4-predict-candidates-a-name-not-an-id", [*PREDICT, "--candidates", "cands.txt"], "cands.txt:1", "list ids",
         prepare=files({"cands.txt": "dog\n"})),
    case("d4-predict-candidates-unknown-wnid", [*PREDICT, "--candidates", "cands.txt"], "cands.txt:2", "n99999999",
         prepare=files({"cands.txt": "# candidates\nn99999999\n"})),
    case("predict-candidates-missing-file", [*PREDICT, "--candidates", "nowhere.txt"], "nowhere.txt"),
    case("predict-candidates-empty-file", [*PREDICT, "--candidates", "empty.txt"], "empty.txt", "empty"),
    case("predict-gamma-nan", [*PREDICT, "--candidates", "all", "--gamma", "nan"], "--gamma", "nan"),
    case("predict-seen-rows-bad-choice", [*PREDICT, "--seen-rows", "fake"], "--seen-rows", "fake"),
    case("predict-backbone-unknown", [*PREDICT, "--backbone", "efficientnet-b7"], "efficientnet-b7"),
    case("predict-image-missing", ["predict", "nowhere.jpg", "--predictions", "{R}", "--json"], "nowhere.jpg", "does not exist"),
    case("predict-image-folder-without-images", ["predict", "thesis", "--predictions", "{R}", "--json"], "thesis"),
    case("predict-image-is-text", ["predict", "notes.txt", "--predictions", "{R}", "--json"], "notes.txt", "not an image file"),

    # ------------------------------------------------------------------ evaluate
    case("d10-evaluate-plot-without-gzsl", [*EVALUATE, "--plot", "curve.png"], "--plot", "--gzsl"),
    case("d2-evaluate-plot-is-a-folder", [*EVALUATE, "--gzsl", "--plot", "thesis"], "is a folder"),
    case("d2-evaluate-plot-below-a-file", [*EVALUATE, "--gzsl", "--plot", "notes.txt/curve.png"], "is a file, not a folder"),
    case("d5-evaluate-lite2-features-on-a-lite0-run", ["evaluate", "--features", "{F2}", "--predictions", "{R}", "--split",
                                                        "split.txt"], "efficientnet-lite0", "efficientnet-lite2"),
    case("d9-evaluate-manifest-shard-outside-the-folder",
         ["evaluate", "--features", "feats", "--predictions", "{R}", "--split", "split.txt"], "../outside.safetensors",
         "inside", prepare=escaping_manifest),
    case("d9-evaluate-manifest-absolute-shard-path",
         ["evaluate", "--features", "feats", "--predictions", "{R}", "--split", "split.txt"], "not a file inside",
         prepare=absolute_shard),
    case("d9-evaluate-shard-linked-out-of-the-folder",
         ["evaluate", "--features", "feats", "--predictions", "{R}", "--split", "split.txt"], "a link out of",
         prepare=linked_shard),
    case("d7-evaluate-rebuilt-graph-is-the-same-graph", [*EVALUATE[:-1], "held-out.txt", "--graph", "{G2}"],
         "held-out.txt:1", "n99999999", prepare=files({"held-out.txt": "n99999999\n"})),
    case("evaluate-gzsl-without-seen-images", [*EVALUATE, "--gzsl", "--plot", "curve.png"], "seen and unseen"),
    case("evaluate-split-of-classes-without-images", [*EVALUATE[:-1], "seen.txt"], "no image has a label",
         prepare=files({"seen.txt": "n02085620\n"})),
    case("d11-evaluate-graph-of-another-run", [*EVALUATE, "--graph", "{ROOT}/graphs/birds"], "not the graph"),
    case("d4-evaluate-split-two-word-entry", [*EVALUATE[:-1], "held-out.txt"], "held-out.txt:3", "'frying pan'",
         prepare=files({"held-out.txt": "n02084071\nn02121808\nfrying pan\n"})),
    case("d4-evaluate-split-unknown-wnid", [*EVALUATE[:-1], "held-out.txt"], "held-out.txt:1", "n99999999",
         prepare=files({"held-out.txt": "n99999999\n"})),
    case("evaluate-split-missing-file", [*EVALUATE[:-1], "nowhere.txt"], "nowhere.txt", "does not exist"),
    case("evaluate-split-empty-file", [*EVALUATE[:-1], "empty.txt"], "empty.txt", "empty"),
    case("evaluate-features-missing", ["evaluate", "--features", "nowhere", "--predictions", "{R}", "--split", "split.txt"],
         "nowhere", "does not exist"),
    case("d12-evaluate-features-unrelated-folder-with-a-run-json",
         ["evaluate", "--features", "thesis", "--predictions", "{R}", "--split", "split.txt"], "no manifest.json",
         "not the output of `kgzsl features`"),
    case("evaluate-features-are-a-graph", ["evaluate", "--features", "{G}", "--predictions", "{R}", "--split", "split.txt"],
         "manifest.json"),
    case("evaluate-predictions-png", ["evaluate", "--features", "{F0}", "--predictions", "picture.png", "--split", "split.txt"],
         "picture.png"),

    # ------------------------------------------------------------------ inspect
    case("d10-inspect-top-negative", [*INSPECT, "--top", "-1"], "--top must be at least 1"),
    case("d10-inspect-top-zero", [*INSPECT, "--top", "0"], "--top must be at least 1"),
    case("d2-inspect-plot-is-a-folder", [*INSPECT, "--plot", "thesis"], "is a folder"),
    case("d2-inspect-plot-below-a-file", [*INSPECT, "--plot", "notes.txt/map.png"], "is a file, not a folder"),
    case("d5-inspect-targets-of-another-backbone", [*INSPECT, "--targets", "efficientnet-lite1"],
         "efficientnet-lite0", "efficientnet-lite1"),
    case("d7-inspect-rebuilt-graph-is-the-same-graph", ["inspect", "unicorn", "--predictions", "{R}", "--graph", "{G2}"],
         "no class 'unicorn'"),
    case("d11-inspect-graph-of-another-run", [*INSPECT, "--graph", "{ROOT}/graphs/birds"], "not the graph"),
    case("d11-inspect-folder-that-is-no-run", ["inspect", "dog", "--predictions", "thesis"], "no predictions.safetensors"),
    case("d11-inspect-recorded-graph-gone", ["inspect", "dog", "--predictions", "{RO}"], "is not there", "--graph"),
    case("inspect-unknown-class", ["inspect", "unicorn", "--predictions", "{R}"], "no class 'unicorn'"),
    case("inspect-predictions-missing", ["inspect", "dog", "--predictions", "nowhere"], "nowhere"),
    case("inspect-targets-unknown", [*INSPECT, "--targets", "efficientnet-b7"], "efficientnet-b7"),
    case("inspect-map-bad-choice", [*INSPECT, "--map", "umap"], "--map", "umap"),

    # ------------------------------------------------------------------ demo
    case("d1-demo-out-plain-file", ["demo", "--out", "notes.txt"], "notes.txt", "is a file, not a folder"),
    case("d1-demo-run-folder-is-a-graph", ["demo", "--out", "mine"], "graph folder, not a training run folder",
         prepare=copy_shared("G", "mine/run")),
    case("d1-demo-run-folder-is-unrelated", ["demo", "--out", "mine"], "not a kgzsl training run folder",
         prepare=files({"mine/run/thesis.tex": "\\documentclass{article}\n"})),
    case("d12-demo-graph-is-a-file", ["demo", "--graph", "notes.txt", "--out", "demo"], "--graph notes.txt is a file"),
    case("d12-demo-graph-unrelated-folder", ["demo", "--graph", "thesis", "--out", "demo"],
         "--graph thesis is a folder without graph.json"),
    case("demo-epochs-zero", ["demo", "--epochs", "0", "--out", "demo"], "--epochs", "at least 1"),
    case("demo-model-unknown", ["demo", "--model", "vgg"], "--model", "vgg"),
]


# ------------------------------------------------------------------------------------------ test
@pytest.mark.parametrize("argv, says, prepare", CASES)
def test_bad_input(argv, says, prepare, shared, tmp_path, monkeypatch, capsys):
    work, home = tmp_path / "work", tmp_path / "home"
    _workspace(work, shared)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    if prepare is not None:
        prepare(work, shared)
    monkeypatch.chdir(work)
    places = {key: str(value) for key, value in shared.items()} | {"HOME": str(home)}
    args = [arg.format(**places) for arg in argv]
    watched = {key: Path(places[key]) for key in ("G", "G2", "R", "RO", "F0", "F2")}
    before = (_snapshot(tmp_path), {key: _snapshot(path) for key, path in watched.items()}, _project_graphs())

    logger = logging.getLogger("kgzsl")
    monkeypatch.setattr(logger, "propagate", False)
    handler = _StderrNow()
    logger.addHandler(handler)
    capsys.readouterr()
    try:
        code = main(args)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()

    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("kgzsl: error: "), err
    for fragment in says:
        assert fragment.format(**places) in lines[0], (fragment, lines[0])
    after = (_snapshot(tmp_path), {key: _snapshot(path) for key, path in watched.items()}, _project_graphs())
    assert after[0] == before[0], "the workspace changed"
    assert after[1] == before[1], "a shared input folder changed"
    assert after[2] == before[2], "the project's graphs changed"


def test_the_table_covers_every_defect_and_command():
    ids = [param.id for param in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)
    for defect in range(1, 13):
        assert any(i.startswith(f"d{defect}-") for i in ids), f"no case for defect {defect}"
    for command in ("build-graph", "splits", "train", "features", "predict", "evaluate", "inspect", "demo"):
        assert sum(command in i for i in ids) >= 3, command

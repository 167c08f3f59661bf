"""Feature extraction over a real ImageNet image tree: shards, bad files, resume after a crash or a kill, torchrun."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from kgzsl.cli import main
from kgzsl.errors import KgzslError
from kgzsl.vision.backbones import load_backbone
from kgzsl.vision.features import (
    MANIFEST_FILE,
    RUN_FILE,
    extract_features,
    load_features,
    read_manifest,
)
from kgzsl.vision.images import DRAFT_FACTOR, load_image
from kgzsl.vision.onnx_backend import onnx_available

ROOT = Path(__file__).resolve().parents[1]


def _foolbox_photos() -> list[tuple[Path, int]]:
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the foolbox wheel (real ImageNet sample images) is not installed")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return [(p, int(re.fullmatch(r"imagenet_\d+_(\d+)", p.stem).group(1))) for p in sorted(folder.glob("imagenet_*.jpg"))]


@pytest.fixture
def tree(tmp_path) -> Path:
    """The 20 real ImageNet validation photos of the foolbox wheel as an ImageFolder tree of wnid folders."""
    from kgzsl.core.imagenet import imagenet1k_wnids

    wnids = imagenet1k_wnids()
    root = tmp_path / "images"
    for path, label in _foolbox_photos():
        (root / wnids[label]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, root / wnids[label] / path.name)
    return root


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet-lite0")


def _run(tree, backbone, out, **kwargs):
    kwargs.setdefault("batch_size", 3)
    kwargs.setdefault("shard_size", 6)
    return extract_features(tree, backbone, out, progress=False, **kwargs)


def test_extract_and_load(tree, lite0, tmp_path):
    summary = _run(tree, lite0, tmp_path / "out")
    assert summary["images"] == summary["features"] == 20 and summary["bad_files"] == []
    assert summary["shards"] == summary["shards_written"] == 4 and summary["shards_resumed"] == 0
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == [MANIFEST_FILE, RUN_FILE] + [f"shard-{k:06d}.safetensors" for k in range(4)]
    features, labels, paths = load_features(tmp_path / "out")
    assert features.shape == (20, 1280) and features.dtype == torch.float32
    assert paths == sorted(paths) and len(set(paths)) == 20
    assert labels == [p.split("/")[0] for p in paths]
    # each row is the backbone's feature of that very image
    batch = torch.stack([lite0.transform(load_image(tree / p)) for p in paths[:5]])
    assert torch.allclose(features[:5], lite0.features(batch), atol=1e-5)
    # and the real classifier still recognises most of them from the stored features
    from kgzsl.core.imagenet import imagenet1k_wnids

    predicted = [imagenet1k_wnids()[i] for i in lite0.logits(features).argmax(1).tolist()]
    assert sum(p == label for p, label in zip(predicted, labels)) >= 15
    manifest = read_manifest(tmp_path / "out")
    assert manifest["dim"] == 1280 and manifest["backbone"]["name"] == "efficientnet-lite0"
    assert manifest["labels"] == sorted(set(labels))


def test_same_images_same_features(tree, lite0, tmp_path):
    _run(tree, lite0, tmp_path / "a")
    _run(tree, lite0, tmp_path / "b")
    a, b = load_features(tmp_path / "a"), load_features(tmp_path / "b")
    assert torch.equal(a.features, b.features) and a.paths == b.paths


def test_bad_files_are_reported_and_skipped(tree, lite0, tmp_path):
    first = sorted(tree.iterdir())[0]
    (first / "page.jpg").write_text("<html>404</html>")
    Image.new("RGB", (1, 1)).save(first / "dot.png")
    photo = next(first.glob("imagenet_*.jpg"))
    (first / "cut.jpg").write_bytes(photo.read_bytes()[:2000])
    summary = _run(tree, lite0, tmp_path / "out", shard_size=1, batch_size=2)  # some shards hold only a bad file
    assert summary["images"] == 23 and summary["features"] == 20 and summary["shards"] == 23
    reasons = {bad["path"]: bad["reason"] for bad in summary["bad_files"]}
    assert set(reasons) == {f"{first.name}/page.jpg", f"{first.name}/dot.png", f"{first.name}/cut.jpg"}
    assert "minimum" in reasons[f"{first.name}/dot.png"] and str(first / "page.jpg") in reasons[f"{first.name}/page.jpg"]
    loaded = load_features(tmp_path / "out")
    assert loaded.features.shape == (20, 1280) and not set(reasons) & set(loaded.paths)


def test_image_modes_extract(tree, lite0, tmp_path):
    photo = load_image(next(tree.glob("*/*.jpg")))
    odd = tree / "n99999999"
    odd.mkdir()
    photo.convert("L").save(odd / "gray.jpg")
    photo.convert("CMYK").save(odd / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(odd / "palette.gif")
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(odd / "alpha.png")
    for path in list(tree.iterdir()):
        if path != odd:
            shutil.rmtree(path)
    summary = _run(tree, lite0, tmp_path / "out")
    assert summary["bad_files"] == [] and summary["features"] == 4
    features = load_features(tmp_path / "out").features
    assert torch.isfinite(features).all() and (features.norm(dim=1) > 0).all()


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash(tree, lite0, tmp_path):
    clean = tmp_path / "clean"
    _run(tree, lite0, clean)

    def crash_after_second(k: int) -> None:
        if k == 1:
            raise Crash

    out = tmp_path / "out"
    with pytest.raises(Crash):
        _run(tree, lite0, out, on_shard=crash_after_second)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-000000.safetensors", "shard-000001.safetensors"]
    with pytest.raises(KgzslError, match="unfinished extraction"):
        load_features(out)
    (out / "shard-000001.safetensors").write_bytes(b"damaged on disk")  # not a shard any more: redone
    written = []
    summary = _run(tree, lite0, out, on_shard=written.append)
    assert written == [1, 2, 3] and summary["shards_resumed"] == 1 and summary["images_extracted_now"] == 14
    resumed, reference = load_features(out), load_features(clean)
    assert resumed.paths == reference.paths and resumed.labels == reference.labels
    assert torch.equal(resumed.features, reference.features)
    # a finished run restarted does nothing
    again = _run(tree, lite0, out, on_shard=written.append)
    assert written == [1, 2, 3] and again["shards_resumed"] == 4 and again["features"] == 20


def test_resume_after_a_kill(tree, lite0, tmp_path):
    """SIGKILL after the first shard (no cleanup at all), then a restart: same rows as a clean run."""
    out = tmp_path / "out"
    script = (
        "import os, signal, sys\n"
        "from kgzsl.vision.backbones import load_backbone\n"
        "from kgzsl.vision.features import extract_features\n"
        "def kill(k):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "extract_features(sys.argv[1], load_backbone('efficientnet-lite0'), sys.argv[2], batch_size=3, shard_size=6,\n"
        "                 progress=False, on_shard=kill)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tree), str(out)], cwd=ROOT, capture_output=True, timeout=300)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    assert [p.name for p in out.glob("shard-*")] == ["shard-000000.safetensors"]
    (out / ".shard-000001.safetensors.abc.tmp").write_bytes(b"half a shard")  # what a kill mid-write leaves
    summary = _run(tree, lite0, out)
    assert summary["shards_resumed"] == 1 and summary["shards_written"] == 3
    assert not list(out.glob(".*.tmp"))
    _run(tree, lite0, tmp_path / "clean")
    resumed, reference = load_features(out), load_features(tmp_path / "clean")
    assert resumed.paths == reference.paths and len(set(resumed.paths)) == 20
    assert torch.equal(resumed.features, reference.features)


def test_output_folder_guards(tree, lite0, tmp_path):
    out = tmp_path / "out"
    _run(tree, lite0, out)
    with pytest.raises(KgzslError, match="differs in: shard_size.*--force"):
        _run(tree, lite0, out, shard_size=5)
    summary = _run(tree, lite0, out, shard_size=5, force=True)
    assert summary["shards"] == summary["shards_written"] == 4
    assert sorted(p.name for p in out.glob("shard-*"))[-1] == "shard-000003.safetensors"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(KgzslError, match="not empty"):
        _run(tree, lite0, foreign)
    with pytest.raises(KgzslError, match="no manifest.json"):
        load_features(foreign)
    with pytest.raises(KgzslError, match="batch size"):
        _run(tree, lite0, tmp_path / "x", batch_size=0)


@pytest.mark.skipif(not onnx_available(), reason="int8 runs on ONNX Runtime, which is not installed")
def test_a_folder_of_another_precision_says_which_flag_resumes_it(tree, lite0, tmp_path):
    """A folder extracted in fp32 (the default before int8) is refused by an int8 run with the flag that resumes it."""
    out = tmp_path / "out"
    _run(tree, load_backbone("efficientnet-lite0", precision="fp32"), out)
    with pytest.raises(KgzslError, match="its features are fp32, these would be int8: pass --precision fp32"):
        _run(tree, load_backbone("efficientnet-lite0", precision="int8"), out)


def test_load_features_checks_shards(tree, lite0, tmp_path):
    out = tmp_path / "out"
    _run(tree, lite0, out)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    manifest["dim"] = 512
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(KgzslError, match=r"shard-000000.safetensors has features of shape \[6, 1280\], expected \[n, 512\]"):
        load_features(out)
    (out / "shard-000002.safetensors").unlink()
    manifest["dim"] = 1280
    (out / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(KgzslError, match="shard-000002.safetensors does not exist"):
        load_features(out)


def test_cli(tree, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["features", str(tree), "--backbone", "efficientnet-lite0", "--out", str(out), "--batch-size", "4",
                 "--shard-size", "8", "--workers", "2", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["features"] == 20 and summary["shards"] == 3 and summary["dim"] == 1280
    assert load_features(out).features.shape == (20, 1280)
    code = main(["features", str(tmp_path / "nothing"), "--backbone", "efficientnet-lite0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "image folder" in err and "does not exist" in err
    with pytest.raises(SystemExit):
        main(["features", "--help"])
    assert "torchrun --nnodes" in capsys.readouterr().out


def _torchrun(args: list[str], nproc: int, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "kgzsl", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_two_torchrun_ranks_match_one_rank(tree, lite0, tmp_path):
    """2 gloo ranks under torchrun give the rows of a 1-rank run; then an interrupted run resumes under torchrun."""
    single = tmp_path / "single"
    _run(tree, lite0, single, shard_size=4, batch_size=2)
    args = ["features", str(tree), "--backbone", "efficientnet-lite0", "--shard-size", "4", "--batch-size", "2", "--json"]
    result = _torchrun([*args, "--out", str(tmp_path / "two")], 2, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["ranks"] == 2 and summaries[0]["shards_written"] == 5
    one, two = load_features(single), load_features(tmp_path / "two")
    assert two.paths == one.paths and two.labels == one.labels
    assert torch.allclose(two.features, one.features, atol=1e-4, rtol=1e-4)
    # rank r wrote shards r, r+2, ...: disjoint slices
    ranks = [json.loads(load_shard_meta(tmp_path / "two" / f"shard-{k:06d}.safetensors"))["rank"] for k in range(5)]
    assert ranks == [0, 1, 0, 1, 0]

    # a 1-rank run that crashed after shard 1, resumed by 2 ranks
    def crash(k: int) -> None:
        if k == 1:
            raise Crash

    with pytest.raises(Crash):
        _run(tree, lite0, tmp_path / "mixed", shard_size=4, batch_size=2, on_shard=crash)
    result = _torchrun([*args, "--out", str(tmp_path / "mixed")], 2, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["shards_resumed"] == 2 and summary["shards_written"] == 3
    mixed = load_features(tmp_path / "mixed")
    assert mixed.paths == one.paths and torch.allclose(mixed.features, one.features, atol=1e-4, rtol=1e-4)


def load_shard_meta(path: Path) -> str:
    from kgzsl.core.files import load_tensors

    return load_tensors(path)[1]["kgzsl"]


@pytest.mark.parametrize("name", ["../outside.safetensors", "ABSOLUTE", "sub/../../outside.safetensors", "..", "LINK"])
def test_manifest_shards_must_be_inside_the_folder(tmp_path, name):
    """A manifest naming a shard outside its folder (edited or copied) is refused; nothing outside is read."""
    from kgzsl.core.files import save_tensors

    folder = tmp_path / "feats"
    folder.mkdir()
    outside = tmp_path / "outside.safetensors"
    meta = {"kgzsl": json.dumps({"shard": 0, "paths": ["x.jpg"], "labels": ["n02084071"]})}
    save_tensors(outside, {"features": torch.zeros(1, 4)}, metadata=meta)
    if name == "ABSOLUTE":
        name = str(outside)
    elif name == "LINK":
        (folder / "shard-000000.safetensors").symlink_to(outside)
        name = "shard-000000.safetensors"
    manifest = {"format": 1, "dim": 4, "features": 1, "bad_files": [], "shards": [{"file": name, "rows": 1, "images": 1}]}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(KgzslError, match="only files inside the feature folder are read") as info:
        load_features(folder)
    assert str(folder) in str(info.value) and "Traceback" not in str(info.value)
    # the same shard inside the folder is read
    shutil.copy(outside, folder / "shard-000001.safetensors")
    manifest["shards"] = [{"file": "shard-000001.safetensors", "rows": 1, "images": 1}]
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert load_features(folder).labels == ["n02084071"]


def test_manifest_shard_entries_are_checked(tmp_path):
    folder = tmp_path / "feats"
    folder.mkdir()
    (folder / MANIFEST_FILE).write_text(json.dumps({"format": 1, "dim": 4, "features": 0, "shards": [{"rows": 1}]}))
    with pytest.raises(KgzslError, match="shard entry without a file name"):
        load_features(folder)


# ------------------------------------------------------------------------------------ decoding ahead of torch
def _cli_args(tree: Path, out: Path, *extra: str) -> list[str]:
    return ["features", str(tree), "--backbone", "efficientnet-lite0", "--out", str(out), "--batch-size", "3",
            "--shard-size", "8", "--json", *extra]


def test_decoding_ahead_writes_the_same_files(tree, tmp_path, monkeypatch, capsys):
    """The CLI's decode-ahead (started before torch loads) is used, and the feature folder is byte-identical to a
    run without it - bad files' reasons included."""
    import kgzsl.cli.features as cli_features

    first = sorted(tree.iterdir())[0]
    (first / "page.jpg").write_text("<html>404</html>")
    (first / "cut.jpg").write_bytes(next(first.glob("imagenet_*.jpg")).read_bytes()[:2000])
    taken = []
    take = cli_features.DecodeAhead.take
    monkeypatch.setattr(cli_features.DecodeAhead, "take", lambda self, path: taken.append(take(self, path)) or taken[-1])
    monkeypatch.setattr(cli_features.DecodeAhead, "settle", lambda self: None)  # every image decoded early
    assert main(_cli_args(tree, tmp_path / "ahead")) == 0
    assert sum(future is not None for future in taken) == 22  # every image came from the threads started early
    monkeypatch.setattr(cli_features, "start_decoding", lambda *args, **kwargs: None)
    assert main(_cli_args(tree, tmp_path / "plain")) == 0
    capsys.readouterr()
    files = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "ahead").iterdir()) and len(files) == 5
    for name in files:
        if name != MANIFEST_FILE:  # the manifest records the run's duration
            assert (tmp_path / "plain" / name).read_bytes() == (tmp_path / "ahead" / name).read_bytes(), name
    assert len(read_manifest(tmp_path / "ahead")["bad_files"]) == 2


def test_decoding_ahead_uses_the_backbones_preprocessing(tree, tmp_path):
    """The transform the CLI decodes with before torch is imported is each known backbone's own; resumed, torchrun,
    worker-process and checkpoint-file runs decode nothing early."""
    import argparse

    from kgzsl.cli.features import start_decoding
    from kgzsl.vision import backbones
    from kgzsl.vision.backbones.efficientnet_lite import lite_transform

    def args(**kw) -> argparse.Namespace:
        base = {"image_dir": tree, "backbone": "efficientnet-lite0", "out": tmp_path / "new", "force": False, "workers": 0}
        return argparse.Namespace(**{**base, **kw})

    for name in backbones.KNOWN_BACKBONES:
        ahead = start_decoding(args(backbone=name), limit=2)
        try:
            assert ahead.transform == lite_transform(name) and ahead.draft == DRAFT_FACTOR * ahead.transform.resize
            assert len(ahead.futures) == 2
        finally:
            ahead.close()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / RUN_FILE).write_text("{}")
    assert start_decoding(args(out=tmp_path / "used")) is None
    assert start_decoding(args(workers=2)) is None and start_decoding(args(backbone=str(tree))) is None
    assert start_decoding(args(image_dir=tmp_path / "nothing")) is None


def test_decoded_images_of_another_preprocessing_are_not_used(tree, lite0, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    from kgzsl.cli.features import DecodeAhead

    other = replace(lite0.transform, resize=300)
    ahead = DecodeAhead(other, 2 * other.resize, ThreadPoolExecutor(1))
    ahead.futures = {path: ahead.pool.submit(lambda: pytest.fail("decoded with the wrong transform")) for path in tree.rglob("*.jpg")}
    try:
        _run(tree, lite0, tmp_path / "a", ahead=ahead)
    finally:
        ahead.close()
    _run(tree, lite0, tmp_path / "b")
    assert torch.equal(load_features(tmp_path / "a").features, load_features(tmp_path / "b").features)


def test_images_not_begun_when_the_network_is_ready_are_decoded_by_the_loader(tree, lite0, tmp_path):
    """``settle`` (called once the network is ready) drops the early decoding not begun yet; the loader decodes those
    images itself, with the same features."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from kgzsl.cli.features import DecodeAhead
    from kgzsl.vision.features import _draft_side

    busy = threading.Event()
    ahead = DecodeAhead(lite0.transform, _draft_side(lite0), ThreadPoolExecutor(1))
    ahead.pool.submit(busy.wait, 60)  # holds the one early thread: no image has begun when the network is ready
    ahead.futures = {path: ahead.pool.submit(lambda: pytest.fail("decoded after settle")) for path in tree.rglob("*.jpg")}
    futures = list(ahead.futures.values())
    try:
        _run(tree, lite0, tmp_path / "a", ahead=ahead)
    finally:
        busy.set()
        ahead.close()
    assert all(future.cancelled() for future in futures) and not ahead.futures  # each was asked for, then decoded anew
    _run(tree, lite0, tmp_path / "b")
    assert torch.equal(load_features(tmp_path / "a").features, load_features(tmp_path / "b").features)

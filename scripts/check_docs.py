#!/usr/bin/env python
"""Run every example of README.md and docs/*.md, so that the documentation cannot drift from the code.

Each fenced block is taken by its language tag:

* ```bash / ```sh / ```console: run through bash (``set -euo pipefail``) with the virtualenv's bin/ first on PATH
  and PYTHONPATH set to this project;
* ```python: exec'd in a fresh namespace by the same interpreter;
* anything else (```text, ```json, ```csv): shown output or a file format, not run.
  A block without a language tag is a failure.

Every page runs in its own scratch folder laid out like a checkout (hard-linked copies of graphs/ and data/,
scripts/ linked, .venv linking the virtualenv this script runs under, ../shared linking the project's
../shared when present), its blocks in page order, each block in a fresh process for shell blocks.

An HTML comment on the line before a fence marks a block:

* ``<!-- docs-check: slow (why) -->``: too slow for CI (a full training, the demo, a benchmark, the set-up
  itself); run only with ``--all``;
* ``<!-- docs-check: needs shared -->``: needs ../shared/images; skipped, with that reason, where it is absent;
* ``<!-- docs-check: needs cuda -->``: needs a CUDA GPU; skipped, with that reason, where torch sees none.

Marks combine, comma-separated: ``<!-- docs-check: slow, needs shared (why) -->``.

Hidden set-up (printed when it runs): a page may need files its examples take for granted, listed in FIXTURES
below. They are real, only smaller than what the page's own slow block makes: ``photo.jpg`` is the darknet
giraffe photo that scripts/setup.sh installs, ``photos/`` three of the foolbox ImageNet validation images,
and ``runs/dgp`` / ``runs/demo/run`` are a DGP run trained for 3 epochs (instead of 500) on the shipped
graph, standing in for `kgzsl train --out runs/dgp` and for `kgzsl demo`'s run.

Prints one line per block (page, line, ok / FAILED / skipped, seconds) and ``N passed, N failed, N skipped``;
exits 1 if any block failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHELL = {"bash", "sh", "console", "shell"}
PYTHON = {"python", "py"}
FENCE = re.compile(r"^```(.*)$")
MARK = re.compile(r"^<!--\s*docs-check:\s*(.*?)\s*-->$")

# Hidden set-up per page: which fixtures its scratch folder starts with (see the module docstring).
FIXTURES = {
    "README.md": ["giraffe", "demo-run"],
    # runs/dgp is made by the page's own slow block: the stand-in only where that block does not run
    "docs/recognition.md": ["giraffe", "photos", "dgp-run:quick"],
    "docs/file-formats.md": ["giraffe", "dgp-run"],
    "docs/inspection.md": ["demo-run"],
    "docs/new-domains.md": ["giraffe"],
    "docs/training.md": ["giraffe"],
}


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marks: str  # the docs-check comment's text, "" if none

    @property
    def slow(self) -> bool:
        return "slow" in self.marks

    @property
    def needs_shared(self) -> bool:
        return "needs shared" in self.marks

    @property
    def needs_cuda(self) -> bool:
        return "needs cuda" in self.marks


def pages() -> list[Path]:
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of one page, with their language tag and docs-check mark."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    rel = path.relative_to(ROOT).as_posix()
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1).strip()
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        if j == len(lines):
            raise SystemExit(f"{rel}:{start + 1}: unclosed code fence")
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = MARK.match(lines[k].strip()) if k >= 0 else None
        out.append(Block(rel, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n", mark.group(1) if mark else ""))
        i = j + 1
    return out


def _link_copy(src: Path, dst: Path) -> None:
    """A copy of a tree made of hard links (falling back to copies): kgzsl writes by renaming, so a command
    writing into the scratch copy never changes the project's files."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link, symlinks=True)


class Fixtures:
    """The hidden set-up, built once into ``base`` and linked into each page's scratch folder on demand."""

    def __init__(self, base: Path, env: dict[str, str]):
        self.base, self.env, self.made = base, env, {}

    def _kgzsl(self, *args: str) -> None:
        subprocess.run([sys.executable, "-m", "kgzsl", *args], cwd=self.base, env=self.env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def get(self, name: str) -> tuple[Path, str]:
        """(the fixture's path relative to a scratch folder, built if needed, under self.base)."""
        if name not in self.made:
            t = time.time()
            if name == "giraffe":
                from kgzsl.vision.samples import darknet_photo

                shutil.copy(darknet_photo("giraffe.jpg"), self.base / "photo.jpg")
                self.made[name] = ("photo.jpg", "photo.jpg: the darknet giraffe photo")
            elif name == "photos":
                from kgzsl.vision.samples import foolbox_imagenet_images

                (self.base / "photos").mkdir()
                for path, _ in foolbox_imagenet_images()[:3]:
                    shutil.copy(path, self.base / "photos" / Path(path).name)
                self.made[name] = ("photos", "photos/: 3 foolbox ImageNet validation images")
            elif name in ("dgp-run", "demo-run"):
                if not (self.base / "runs" / "dgp").exists():
                    self._kgzsl("train", "--graph", str(ROOT / "graphs" / "imagenet21k"), "--model", "dgp",
                                "--epochs", "3", "--out", "runs/dgp")
                if name == "dgp-run":
                    self.made[name] = ("runs/dgp", "runs/dgp: kgzsl train --model dgp --epochs 3 on graphs/imagenet21k")
                else:
                    (self.base / "runs" / "demo").mkdir(parents=True, exist_ok=True)
                    _link_copy(self.base / "runs" / "dgp", self.base / "runs" / "demo" / "run")
                    self.made[name] = ("runs/demo/run", "runs/demo/run: the same 3-epoch DGP run, standing in for the demo's")
            else:
                raise KeyError(name)
            print(f"  set-up: {self.made[name][1]} ({time.time() - t:.1f} s)", flush=True)
        return self.made[name]

    def install(self, name: str, scratch: Path) -> None:
        rel, _ = self.get(name)
        src, dst = self.base / rel, scratch / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            _link_copy(src, dst)
        else:
            shutil.copy(src, dst)


def scratch_for(page: str, tmp: Path, venv: Path, shared: Path | None) -> Path:
    """A folder laid out like a checkout for one page."""
    folder = tmp / "pages" / page.replace("/", "-").removesuffix(".md")
    folder.mkdir(parents=True)
    _link_copy(ROOT / "graphs", folder / "graphs")
    _link_copy(ROOT / "data", folder / "data")
    (folder / "scripts").symlink_to(ROOT / "scripts")
    (folder / ".venv").symlink_to(venv)
    if shared is not None and not (tmp / "pages" / "shared").exists():
        (tmp / "pages" / "shared").symlink_to(shared)
    return folder


def run_block(block: Block, cwd: Path, env: dict[str, str], timeout: float) -> tuple[bool, str]:
    if block.lang in SHELL:
        try:
            done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block.code], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout:.0f} s"
        return done.returncode == 0, (done.stdout[-3000:] + done.stderr[-3000:]) if done.returncode else ""
    old_cwd, old_env, printed = os.getcwd(), dict(os.environ), io.StringIO()
    try:
        os.chdir(cwd)
        os.environ.update(env)
        with contextlib.redirect_stdout(printed):
            exec(compile(block.code, f"{block.page}:{block.line}", "exec"), {"__name__": "docs_check"})
        return True, ""
    except BaseException:  # noqa: BLE001 - a failing example is reported, not raised
        return False, printed.getvalue()[-1500:] + traceback.format_exc()[-3000:]
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also run the blocks marked slow")
    parser.add_argument("--page", nargs="*", help="only these pages (e.g. README.md docs/graphs.md)")
    parser.add_argument("--keep", type=Path, help="scratch folder to use and keep (default: a temporary one)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per block")
    parser.add_argument("--verbose", "-v", action="store_true", help="print failing blocks' output in full")
    args = parser.parse_args(argv)

    venv = Path(sys.prefix)
    shared = ROOT.parent / "shared"
    has_images = (shared / "images").is_dir()
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    env = dict(os.environ)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(ROOT))

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="kgzsl-docs-"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "fixtures").mkdir(exist_ok=True)
    fixtures = Fixtures(tmp / "fixtures", env)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    try:
        for path in pages():
            page = path.relative_to(ROOT).as_posix()
            if args.page and page not in args.page:
                continue
            blocks = blocks_of(path)
            scratch = None
            for block in blocks:
                if not block.lang:
                    print(f"{page}:{block.line}  FAILED  0.0 s  (a code block without a language tag)")
                    counts["failed"] += 1
                    continue
                if block.lang not in SHELL | PYTHON:
                    continue
                if block.slow and not args.all:
                    print(f"{page}:{block.line}  skipped  ({block.marks}; run with --all)")
                    counts["skipped"] += 1
                    continue
                if block.needs_shared and not has_images:
                    print(f"{page}:{block.line}  skipped  (needs shared: {shared / 'images'} is absent)")
                    counts["skipped"] += 1
                    continue
                if block.needs_cuda and not has_cuda:
                    print(f"{page}:{block.line}  skipped  (needs cuda: no CUDA GPU)")
                    counts["skipped"] += 1
                    continue
                if scratch is None:
                    scratch = scratch_for(page, tmp, venv, shared if shared.is_dir() else None)
                    for name in FIXTURES.get(page, []):
                        name, _, when = name.partition(":")
                        if not (when == "quick" and args.all):
                            fixtures.install(name, scratch)
                t = time.time()
                ok, output = run_block(block, scratch, env, args.timeout)
                counts["passed" if ok else "failed"] += 1
                print(f"{page}:{block.line}  {'ok' if ok else 'FAILED'}  {time.time() - t:.1f} s", flush=True)
                if not ok:
                    print("    " + (output if args.verbose else output[-1500:]).replace("\n", "\n    "))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

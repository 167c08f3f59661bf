"""Predictions are read lazily: the file stays memory-mapped and a candidate set's rows are gathered straight from
it, the same floats (and so the same scores) as gathering them from the whole classifier matrix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kgzsl.propagation.predictions import load_predictions, save_predictions
from kgzsl.recognition.scoring import candidate_mask, class_scores

RUN = Path(__file__).resolve().parent / "data" / "ranking-run"


def test_candidate_rows_are_the_classifier_rows_bit_for_bit():
    """On the stored real run: every candidate set (unseen, all, a list mixing seen and unseen classes) and both seen-row
    modes give exactly ``classifiers(seen_rows)[columns]``, on torch's 64-byte alignment, and score the same."""
    predictions = load_predictions(RUN)
    seen = predictions.seen.nonzero().view(-1)
    assert predictions.seen_true is not None and len(seen) > 2
    listed = torch.cat([seen[:2], (~predictions.seen).nonzero().view(-1)[:3]]).flip(0)
    features = torch.from_numpy(np.load(RUN / "features.npy"))
    for columns in (candidate_mask(predictions, "unseen").nonzero().view(-1),
                    candidate_mask(predictions, "all").nonzero().view(-1), listed):
        for seen_rows in ("real", "predicted"):
            rows = predictions.candidate_rows(columns, seen_rows)
            whole = predictions.classifiers(seen_rows)[columns]
            assert torch.equal(rows, whole) and rows.is_contiguous() and rows.data_ptr() % 64 == 0
            assert torch.equal(class_scores(features[:1], rows), class_scores(features[:1], whole))
            assert torch.equal(class_scores(features, rows), class_scores(features, whole))
            assert predictions.candidate_rows(columns, seen_rows) is rows  # gathered once
            again = predictions.candidate_rows(columns.tolist(), seen_rows, keep=False)  # what evaluate gathers
            assert again is not rows and torch.equal(again, rows) and again.data_ptr() % 64 == 0
    real, predicted = predictions.candidate_rows(listed, "real"), predictions.candidate_rows(listed, "predicted")
    assert not torch.equal(real[-2:], predicted[-2:]) and torch.equal(real[:-2], predicted[:-2])


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads /proc (Linux)")
def test_loading_maps_the_file_and_a_few_candidates_copy_only_their_rows(tmp_path):
    """A hand-written 100 MB predictions file (random rows, a fifth of them seen with real rows): loading it and
    gathering 10 candidates' rows, seen ones included, adds a few MB of private memory, not the file's size."""
    generator = torch.Generator().manual_seed(0)
    n, width = 20_000, 1281
    seen = torch.arange(n) % 5 == 0
    path = save_predictions(tmp_path / "predictions.safetensors", [f"n{i:08d}" for i in range(n)],
                            torch.randn(n, width, generator=generator), seen,
                            meta={"roles": ["seen" if s else "unseen" for s in seen.tolist()]},
                            seen_true=torch.randn(int(seen.sum()), width, generator=generator))
    probe = f"""
import torch
from kgzsl.propagation.predictions import load_predictions
def anon():
    return int(next(l for l in open('/proc/self/status') if l.startswith('RssAnon')).split()[1]) // 1024
before = anon()
predictions = load_predictions({str(path)!r})
pointer = predictions.pred.untyped_storage().data_ptr()
mapped = any(l.split()[-1] == {str(path)!r} and int(l.split()[0].split('-')[0], 16) <= pointer < int(l.split()[0].split('-')[1], 16)
             for l in open('/proc/self/maps'))
rows = predictions.candidate_rows(torch.arange(0, 100, 10), "real")
print(mapped, anon() - before, bool(rows[0].eq(predictions.seen_true[0]).all()))
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    mapped, grown, real_row = done.stdout.split()
    assert mapped == "True" and real_row == "True"
    assert int(grown) < 30, f"private memory grew by {grown} MB for a 100 MB file"

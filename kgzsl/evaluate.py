"""Stage 4: evaluation in the ImageNet-21k zero-shot protocol (Frome et al. 2013; GCNZ; DGP).

For a split (a list of unseen wnids, e.g. 2-hops / 3-hops / All), the test images are those of the
split's classes, the candidates are the split's classes (``with_seen`` adds the seen classes: the
generalized "+1K" form), and Hit@k is the fraction of images whose true class ranks within the top k,
averaged over images, ties counting against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kgzsl.errors import KgzslError
from kgzsl.recognize import class_scores, ranks_of_true

DEFAULT_KS = (1, 2, 5, 10, 20)


@dataclass
class SplitResult:
    """Hit@k for one split, with the counts that say what was measured."""

    split: str
    with_seen: bool
    images: int
    classes_with_images: int
    candidates: int
    hit: dict[int, float]
    missing_classes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "with_seen": self.with_seen,
            "images": self.images,
            "classes_with_images": self.classes_with_images,
            "candidates": self.candidates,
            **{f"hit@{k}": round(v, 4) for k, v in self.hit.items()},
            "missing_classes": len(self.missing_classes),
        }


def _labelled_rows(labels: list[str], position: dict[str, int], columns: list[int], n_label_columns: int) -> tuple[list[int], torch.Tensor]:
    """The images whose label is among the first ``n_label_columns`` candidate ``columns`` (rows of the
    predictions, via ``position``), and each one's true column among the candidates."""
    column_of = {c: j for j, c in enumerate(columns)}
    rows, truth = [], []
    for i, label in enumerate(labels):
        j = column_of.get(position.get(label, -1))
        if j is not None and j < n_label_columns:
            rows.append(i)
            truth.append(j)
    return rows, torch.tensor(truth, dtype=torch.long)


def evaluate_split(
    features: torch.Tensor,
    labels: list[str],
    class_ids: list[str],
    weights: torch.Tensor,
    split: list[str],
    seen_ids: list[str] | None = None,
    with_seen: bool = False,
    ks: tuple[int, ...] = DEFAULT_KS,
    name: str = "split",
    batch_size: int = 4096,
) -> SplitResult:
    """Hit@k over the images whose label is in ``split``, against the split's classes (+ ``seen_ids``)."""
    position = {c: i for i, c in enumerate(class_ids)}
    missing = [w for w in split if w not in position]
    split_cols = [position[w] for w in split if w in position]
    if not split_cols:
        raise KgzslError(f"none of the {len(split)} classes of split {name} has a predicted classifier: wrong predictions file?")
    columns = list(split_cols)
    if with_seen:
        if not seen_ids:
            raise KgzslError("--with-seen needs the seen classes: the predictions file lists none")
        split_set = set(split_cols)
        columns += [position[w] for w in seen_ids if w in position and position[w] not in split_set]
    rows, truth = _labelled_rows(labels, position, columns, len(split_cols))
    if not rows:
        raise KgzslError(f"no image has a label in split {name} ({len(split)} classes): are these the right features?")
    w = torch.as_tensor(weights, dtype=torch.float32)[columns]
    ranks = []
    for start in range(0, len(rows), batch_size):
        chunk = torch.as_tensor(features[rows[start:start + batch_size]], dtype=torch.float32)
        ranks.append(ranks_of_true(class_scores(chunk, w), truth[start:start + batch_size]))
    rank = torch.cat(ranks)
    hit = {k: float((rank <= k).float().mean()) for k in ks}
    classes = len({labels[i] for i in rows})
    return SplitResult(name, with_seen, len(rows), classes, len(columns), hit, missing)


def format_table(results: list[SplitResult]) -> str:
    """A plain-text table: one row per split, Hit@k in percent."""
    ks = list(results[0].hit) if results else []
    head = f"{'split':<16}{'cands':>7}{'images':>8}" + "".join(f"{'@' + str(k):>7}" for k in ks)
    lines = [head, "-" * len(head)]
    for r in results:
        name = r.split + (" +seen" if r.with_seen else "")
        lines.append(f"{name:<16}{r.candidates:>7}{r.images:>8}" + "".join(f"{100 * r.hit[k]:>7.1f}" for k in ks))
    return "\n".join(lines)


def mean_hits(results: list[SplitResult]) -> dict[int, float]:
    """Image-weighted mean Hit@k over several results (for a summary line)."""
    total = sum(r.images for r in results)
    return {k: sum(r.hit[k] * r.images for r in results) / total for k in results[0].hit} if total else {}


def gzsl_evaluate(
    features: torch.Tensor,
    labels: list[str],
    class_ids: list[str],
    weights: torch.Tensor,
    unseen_ids: list[str],
    seen_ids: list[str],
    calibration_fraction: float = 0.5,
    seed: int = 0,
):
    """Generalized zero-shot with calibrated stacking: gamma chosen on a seeded slice of the images,
    accuracies (seen, unseen, harmonic mean) reported on the rest. Returns (test result, calibration result)."""
    from kgzsl.recognize import calibrate, evaluate_gzsl

    position = {c: i for i, c in enumerate(class_ids)}
    unseen_cols = [position[w] for w in unseen_ids if w in position]
    seen_cols = [position[w] for w in seen_ids if w in position and w not in set(unseen_ids)]
    columns = unseen_cols + seen_cols
    rows, truth = _labelled_rows(labels, position, columns, len(columns))
    if not rows:
        raise KgzslError("no image is labelled with a seen or unseen candidate class")
    seen_mask = torch.tensor([False] * len(unseen_cols) + [True] * len(seen_cols))
    if seen_mask[truth].all() or not seen_mask[truth].any():
        raise KgzslError("generalized zero-shot needs images of both seen and unseen classes")
    scores = class_scores(torch.as_tensor(features, dtype=torch.float32)[rows], torch.as_tensor(weights)[columns])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(rows)))
    n_cal = max(1, int(round(calibration_fraction * len(rows))))
    cal, test = order[:n_cal], order[n_cal:]
    if len(test) == 0:
        raise KgzslError("too few images to hold some out for calibration")
    chosen = calibrate(scores[cal], truth[cal], seen_mask)
    return evaluate_gzsl(scores[test], truth[test], seen_mask, chosen.gamma), chosen

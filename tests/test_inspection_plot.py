"""``kgzsl inspect --plot`` (issue 24, defect 7): in a dense cluster the subtree's labels do not overlap (those
without room are listed below the map), and the held-out histogram counts classes in whole numbers. Real data:
the photo run of conftest (a real WordNet graph, Lite0 targets, the foolbox photos' classes held out)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest


@pytest.fixture(scope="module")
def figure(photo_run):
    """The inspection figure of the class whose parent has the largest subtree (the densest labelled cluster)."""
    from kgzsl.graph.class_graph import load_graph
    from kgzsl.inspection.explain import neighbourhood
    from kgzsl.inspection.plots import inspection_figure, pyplot
    from kgzsl.propagation.run import load_checkpoint, load_run
    from kgzsl.propagation.targets import load_targets

    graph = load_graph(photo_run["graph"])
    run = load_run(photo_run["run"])
    index = graph.index()

    def family(i: int) -> int:
        ancestors = neighbourhood(graph, i)["ancestors"]
        return len(neighbourhood(graph, index[ancestors[0][0]])["descendants"]) if ancestors else 0

    classes = [i for i, role in enumerate(graph.roles) if role != "internal"]
    node = max(classes, key=lambda i: (family(i), -i))
    model, _ = load_checkpoint(photo_run["run"], graph)
    fig = inspection_figure(graph, run.predictions, node, model=model, targets=load_targets())
    yield fig, family(node)
    pyplot().close(fig)


def test_subtree_labels_never_overlap_and_the_rest_are_listed(figure):
    fig, size = figure
    assert size > 25, "the test needs a subtree larger than the labels tried"
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == "subtree-label"]
    boxes = [t.get_window_extent(renderer) for t in labels]
    frame = ax.get_window_extent(renderer)
    assert len(labels) >= 3
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "two labels overlap"
    for box in boxes:
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(box.overlaps(legend) for box in boxes)
    listed = ax.get_xlabel()
    assert listed.startswith("not labelled (no room): ") and "more" in listed  # the subtree is larger than 25 labels


def test_held_out_histogram_counts_whole_classes(figure):
    fig, _ = figure
    hist = fig.axes[-1]
    assert hist.get_ylabel() == "held-out classes"
    ticks = [t for t in hist.get_yticks() if hist.get_ylim()[0] <= t <= hist.get_ylim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    assert np.all(np.diff(ticks) >= 1)

"""Hedged, hierarchy-aware answers with calibrated confidence (Deng et al., CVPR 2012, "DARTS").

1. Calibration (:mod:`.temperature`): ``p = softmax(scores / T)`` over the candidate classes, with the temperature
   ``T`` minimising the negative log-likelihood of the true classes of labelled calibration images.
2. Hierarchical posteriors (:mod:`.hierarchy`): ``P(v) = sum of p(c) over the candidates c in the subtree of v`` (v
   itself included), for every node v of a :class:`kgzsl.graph.class_graph.ClassGraph` (``edge_index`` holds the
   ``child -> parent`` edges; a DAG is fine: a candidate counts once under each of its ancestors).
3. Hedging (:mod:`.rules`). Every node v has a reward, its information gain
   ``r(v) = log2(#candidates) - log2(#candidates in the subtree of v)`` (0 at the root, the most at a
   leaf candidate). Two rules pick the answer; an answer v is correct iff the true class is in its subtree.

   * ``threshold`` (default): the most informative node whose posterior is at least a threshold ``t``;
     ``t`` is the lowest threshold (bisection) whose hierarchical accuracy on calibration images
     reaches the target ``1 - eps``. Each answer states its own probability, at least ``t``.
   * ``darts`` (Deng et al.'s DARTS): ``argmax_v (r(v) + lambda) * P(v)`` with the smallest
     ``lambda >= 0`` (binary search) reaching the target. It maximises the mean information gain at
     that accuracy, by falling back to the root on the images it is least sure of.

4. Generalized setting: with seen classes among the candidates (scored by their real classifiers),
   the calibrated-stacking offset ``gamma`` is subtracted from their scores before the softmax;
   ``gamma`` is fitted first (harmonic mean of seen and unseen accuracy), then ``T``, then the rules.

A run's fitted parameters (:mod:`.calibration`) live in its ``hedge.json`` / ``hedge-all.json`` (:mod:`.storage`);
:mod:`.reporting` tabulates hedged answers on labelled photos; the record keeps its reliability and
accuracy-specificity curves on the calibration images (:mod:`.curves`).

Ties: nodes whose subtrees hold the same candidates are one answer (the deepest of them, then the
lowest node index, represents them); remaining ties in reward go to the deeper node, then the lower
node index. Depth = hops on the shortest path up to a root (a node without parents).
"""

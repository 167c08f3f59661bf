"""The explorer (``kgzsl explore``): a self-contained static site to browse a run's propagated weights.

Search over every node, a class page per node (deep-linked as ``index.html#WNID``: what ``kgzsl inspect`` reports,
each neighbour a link), a 2-D map of every classifier, photos with ``--features`` and a calibrated run's curves.
:func:`~kgzsl.inspection.explore.build.explore` writes it; the page's files are package data under ``templates/``.
"""

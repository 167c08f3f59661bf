"""Stage 2, propagation: a graph network (GCNZ, SGCN, DGP) trained to regress the seen classes' real
classifiers predicts a classifier for every node. Targets, training, the run folder it writes, and growing
a trained run onto a larger graph without retraining."""

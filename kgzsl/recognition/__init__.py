"""Stage 3, recognition: image features dotted with the propagated classifiers; zero-shot, generalized
(calibrated stacking) and transductive scoring; hedged answers up the hierarchy; evaluation and baselines."""

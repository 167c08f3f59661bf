"""Stage 4, inspection: what a propagated classifier is close to and was built from, and the plots."""

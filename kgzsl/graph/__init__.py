"""Stage 1, the graph: a class hierarchy (WordNet noun hypernyms or a user's taxonomy) with a feature
vector for every node (word vectors and/or sentence-encoder embeddings), saved as a graph folder;
plus the standard hop-distance splits of its unseen classes."""

"""Plumbing every stage shares: atomic output files and folders, safetensors and JSON files, id lists,
where offline resources live (WordNet, ImageNet class lists, the data kgzsl ships) and device choice."""

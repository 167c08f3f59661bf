"""The image side: pretrained CNN backbones in plain torch, image decoding and preprocessing, and
feature extraction into sharded feature folders. The backbone's classifier is what propagation regresses;
its pooled features are what recognition scores."""

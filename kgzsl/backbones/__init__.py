"""Pretrained CNN backbones in plain torch (torchvision does not import beside the CPU torch here).

Weights and builders are kept apart: :mod:`kgzsl.backbones.weights` finds and safely loads checkpoint
files; the builder modules turn a state dict into a feature extractor.
"""
